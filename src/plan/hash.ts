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

const COMMENT_PREFIX = 'vgw:';

/** How every rule of ours begins: its hash follows, then a space and its body (see ruleLine). */
export const RULE_COMMENT = `-m comment --comment ${COMMENT_PREFIX}`;

/** A rule of ours as it is written after `-A CHAIN `: the comment with its hash, then its body. */
export const ruleLine = (hash: string, body: string): string => `${RULE_COMMENT}${hash} ${body}`;

/** The body of a rule line (ruleLine's), or the line as it is where it is a body already. */
export const ruleBody = (line: string): string => (line.startsWith(RULE_COMMENT) ? line.slice(line.indexOf(' ', RULE_COMMENT.length) + 1) : line);

/** A digest to key caches by (a chain's inputs can be tens of kilobytes of JSON; the key need not be). */
export const digest = (text: string): string => hash('sha1', text, 'base64url');
