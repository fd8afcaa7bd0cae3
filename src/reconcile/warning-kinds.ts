/**
 * The plan's warnings counted by kind (plan/types.ts WARNING_KINDS), for the `kind` label of vlan_gateway_warnings.
 * Each warning carries its kind from the code that makes it (plan/warnings.ts, apply/conntrack.ts); its text is not
 * read here. Pure.
 */
import { WARNING_KINDS, type Warning, type WarningKind } from '../plan/types.js';

/** How many of `warnings` are of each kind, every kind present (0 where none is). */
export function countByKind(warnings: Iterable<Warning>): Record<WarningKind, number> {
  const counts = Object.fromEntries(WARNING_KINDS.map((kind) => [kind, 0])) as Record<WarningKind, number>;
  for (const warning of warnings) counts[warning.kind]++;
  return counts;
}
