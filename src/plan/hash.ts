import { createHash } from 'node:crypto';

/**
 * A rule's identity: a short hash of its table, chain and body, carried in its comment. Reading the hashes back
 * from iptables-save tells whether a chain still holds exactly what we wrote, without parsing rules (which the
 * kernel prints back normalised: reordered matches, `RELATED,ESTABLISHED`).
 */
export function ruleHash(table: string, chain: string, body: string): string {
  return createHash('sha256').update(`${table}\u0000${chain}\u0000${body}`).digest('base64url').slice(0, 16);
}

export const COMMENT_PREFIX = 'vgw:';
