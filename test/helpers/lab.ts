/**
 * Shared bits for kernel-tier tests that build labs: whether we may create namespaces, and lab names that do not
 * collide with another test run on the same machine (lab names are at most 8 characters: see src/lab/topology.ts).
 */
import { randomBytes } from 'node:crypto';

export const isRoot = (): boolean => process.getuid?.() === 0;

/** Appended to the title of a kernel test that is skipped for want of root. */
export const NEEDS_ROOT = isRoot() ? '' : ' (skipped: needs root to create network namespaces; CI runs as root)';

/** A fresh lab name: `tag` (a letter, or a few) then random base-36 characters, 8 in all (a lab name's most). */
export function uniqueLabName(tag = 't'): string {
  const n = randomBytes(6).readUIntBE(0, 6).toString(36).padStart(7, '0').slice(-7);
  return `${tag}${n}`.slice(0, 8);
}
