import type { Facts } from '../../src/observe/facts.js';

/** Each table's chains, and each chain's rules by hash (ours) or text (the rest): what plans are made from. */
export const tableShape = (tables: Facts['tables']) => Object.fromEntries(Object.entries(tables).map(([table, saved]) => [table, {
  chains: [...saved.chains].sort(),
  rules: Object.fromEntries([...saved.rules].filter(([, rules]) => rules.length > 0).sort(([a], [b]) => a.localeCompare(b))
    .map(([chain, rules]) => [chain, rules.map((r) => r.hash ?? r.body)])),
}]));
