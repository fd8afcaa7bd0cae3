import { hash } from 'node:crypto';

/**
 * A rule's identity: a short hash of its table, chain and body, carried in its comment. Reading the hashes back
 * from iptables-save tells whether a chain still holds exactly what we wrote, without parsing rules (which the
 * kernel prints back normalised: reordered matches, `RELATED,ESTABLISHED`).
 */
export function ruleHash(table: string, chain: string, body: string): string {
  // One-shot crypto.hash: about ten times cheaper than createHash() per rule, which matters at 10,000 rules.
  return hash('sha256', `${table}\u0000${chain}\u0000${body}`, 'base64url').slice(0, 16);
}

export const COMMENT_PREFIX = 'vgw:';

/** A digest to key caches by (a chain's inputs can be tens of kilobytes of JSON; the key need not be). */
export const digest = (text: string): string => hash('sha1', text, 'base64url');
