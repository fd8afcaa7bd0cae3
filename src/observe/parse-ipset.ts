/** Parser for `ipset save` output, keeping only our sets (VGW-*). Pure. */
import type { SavedSet } from './facts.js';

export function parseIpsetSave(text: string): Map<string, SavedSet> {
  const sets = new Map<string, { type: string; members: Map<string, { packets: number; bytes: number }> }>();
  for (const line of text.split('\n')) {
    const create = /^create (VGW-\S+) (\S+)/.exec(line);
    if (create) {
      sets.set(create[1]!, { type: create[2]!, members: new Map() });
      continue;
    }
    const add = /^add (VGW-\S+) (\S+)(?: packets (\d+) bytes (\d+))?/.exec(line);
    if (add) sets.get(add[1]!)?.members.set(add[2]!, { packets: Number(add[3] ?? 0), bytes: Number(add[4] ?? 0) });
  }
  return sets;
}
