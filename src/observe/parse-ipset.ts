/** Parsers for `ipset save` and `ipset list -t` output, keeping only our sets (VGW-*). Pure. */
import type { SavedSet } from './facts.js';

const CREATE = /^create (VGW-\S+) (\S+)/;
const ADD = /^add (VGW-\S+) (\S+)(?: packets (\d+) bytes (\d+))?/;

/**
 * Each member of our sets, with its counters, line by line: no map is built (the stats collector reads 10,000
 * members every few seconds at 100 VLANs and keeps none of them). From offset `from` (a line's start), the lines
 * that start before `from + limit`; returns where the next line starts (`text.length` at the end), so a caller
 * can read a long text a part at a time.
 */
export function forEachIpsetMember(text: string, visit: (set: string, member: string, packets: number, bytes: number) => void, from = 0, limit = Infinity): number {
  let start = from;
  const stop = from + limit;
  while (start < text.length && start < stop) {
    let end = text.indexOf('\n', start);
    if (end === -1) end = text.length;
    if (text.startsWith('add VGW-', start)) {
      const add = ADD.exec(text.slice(start, end));
      if (add) visit(add[1]!, add[2]!, Number(add[3] ?? 0), Number(add[4] ?? 0));
    }
    start = end + 1;
  }
  return Math.min(start, text.length);
}

/**
 * ADD's set and member, by one scan of the text for a line that starts so (after a newline: the first line apart),
 * each line's counters left unread. A scan by the regular expression engine, not a loop over lines: `vlan-gateway
 * apply` parses this once per run, before its code has warmed up.
 */
const ADD_LINE = /\nadd (VGW-\S+) (\S+)/g;
const ADD_FIRST_LINE = /add (VGW-\S+) (\S+)/y;

/**
 * Our sets with their members (the counters left out). Read by every `vlan-gateway apply`, which knows no members
 * (10,000 at 100 VLANs): the create lines are found by searching the text, the add lines by one scan.
 */
export function parseIpsetSave(text: string): Map<string, SavedSet> {
  const sets = new Map<string, { type: string; members: Set<string>; noCounters?: boolean; family?: string; hashsize?: number; maxelem?: number; bucketsize?: number }>();
  for (let at = text.startsWith('create ') ? 0 : lineAfter(text, '\ncreate ', 0); at !== -1; at = lineAfter(text, '\ncreate ', at)) {
    const end = text.indexOf('\n', at);
    const line = text.slice(at, end === -1 ? text.length : end);
    const create = CREATE.exec(line);
    if (create) sets.set(create[1]!, { type: create[2]!, members: new Set(), ...(/ counters\b/.test(line) ? {} : { noCounters: true }), ...familyOf(line), ...sizeOf(line) });
  }
  if (sets.size === 0) return sets;
  // Members come set by set: the set's lookup is reused while it lasts.
  let members: Set<string> | undefined;
  let of = '';
  const add = ([, set, member]: RegExpExecArray) => {
    if (set !== of) {
      of = set!;
      members = sets.get(of)?.members;
    }
    members?.add(member!);
  };
  ADD_FIRST_LINE.lastIndex = 0;
  const first = ADD_FIRST_LINE.exec(text);
  if (first) add(first);
  ADD_LINE.lastIndex = 0;
  for (let match = ADD_LINE.exec(text); match !== null; match = ADD_LINE.exec(text)) add(match);
  return sets;
}

/** Where the next line that starts with `prefix` (given with its newline) starts after `from`, or -1. */
function lineAfter(text: string, prefix: string, from: number): number {
  const at = text.indexOf(prefix, from);
  return at === -1 ? -1 : at + 1;
}

/** `family inet6` in a create line or a header; inet (the gateway's) is left out. */
function familyOf(text: string): { family?: string } {
  const family = / family (\S+)/.exec(text)?.[1];
  return family && family !== 'inet' ? { family } : {};
}

/** `hashsize N`, `maxelem N` and `bucketsize N` in a create line or a header, where shown. */
function sizeOf(text: string): { hashsize?: number; maxelem?: number; bucketsize?: number } {
  const hashsize = / hashsize (\d+)/.exec(text)?.[1];
  const maxelem = / maxelem (\d+)/.exec(text)?.[1];
  const bucketsize = / bucketsize (\d+)/.exec(text)?.[1];
  return {
    ...(hashsize ? { hashsize: Number(hashsize) } : {}), ...(maxelem ? { maxelem: Number(maxelem) } : {}), ...(bucketsize ? { bucketsize: Number(bucketsize) } : {}),
  };
}

/** A set as `ipset list -t` shows it: no members, only how many there are. */
export interface SetHeader {
  readonly type: string;
  readonly entries: number;
  readonly noCounters?: boolean;
  readonly family?: string;
  readonly hashsize?: number;
  readonly maxelem?: number;
  readonly bucketsize?: number;
}

/**
 * `ipset list -t`: per set a block of `Key: value` lines (Name, Type, Revision, Header, Size in memory, References,
 * Number of entries), blocks separated by a blank line.
 */
export function parseIpsetHeaders(text: string): Map<string, SetHeader> {
  const sets = new Map<string, SetHeader>();
  for (const block of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of block.split('\n')) {
      const colon = line.indexOf(':');
      if (colon > 0) fields.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    const name = fields.get('Name');
    const type = fields.get('Type');
    const entries = Number(fields.get('Number of entries'));
    const counters = / counters\b/.test(` ${fields.get('Header') ?? ''} `);
    if (name?.startsWith('VGW-') && type && Number.isInteger(entries)) {
      const header = ` ${fields.get('Header') ?? ''}`;
      sets.set(name, { type, entries, ...(counters ? {} : { noCounters: true }), ...familyOf(header), ...sizeOf(header) });
    }
  }
  return sets;
}

/** From `ipset list -t`: how many rules (or sets) of the kernel's use each of our sets ("References"). */
export function parseIpsetReferences(text: string): Map<string, number> {
  const references = new Map<string, number>();
  let name: string | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('Name: ')) name = line.slice('Name: '.length).trim();
    else if (line.startsWith('References: ') && name?.startsWith('VGW-')) {
      const n = Number(line.slice('References: '.length).trim());
      if (Number.isInteger(n)) references.set(name, n);
    }
  }
  return references;
}
