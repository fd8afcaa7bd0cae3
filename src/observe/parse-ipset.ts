/** Parser for `ipset save` output, keeping only our sets (VGW-*). Pure. */
import type { SavedSet } from './facts.js';

const CREATE = /^create (VGW-\S+) (\S+)/;
const ADD = /^add (VGW-\S+) (\S+)(?: packets (\d+) bytes (\d+))?/;

/**
 * Each member of our sets, with its counters, line by line: no map is built (the stats collector reads 10,000
 * members every few seconds at 100 VLANs and keeps none of them).
 */
export function forEachIpsetMember(text: string, visit: (set: string, member: string, packets: number, bytes: number) => void): void {
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end === -1) end = text.length;
    if (text.startsWith('add VGW-', start)) {
      const add = ADD.exec(text.slice(start, end));
      if (add) visit(add[1]!, add[2]!, Number(add[3] ?? 0), Number(add[4] ?? 0));
    }
    start = end + 1;
  }
}

export function parseIpsetSave(text: string): Map<string, SavedSet> {
  const sets = new Map<string, { type: string; members: Map<string, { packets: number; bytes: number }> }>();
  for (const line of text.split('\n')) {
    const create = CREATE.exec(line);
    if (create) sets.set(create[1]!, { type: create[2]!, members: new Map() });
  }
  forEachIpsetMember(text, (set, member, packets, bytes) => sets.get(set)?.members.set(member, { packets, bytes }));
  return sets;
}
