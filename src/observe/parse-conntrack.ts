/** `conntrack -L` output as entries. Pure. */

interface ConntrackTuple {
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
}

/** One entry: the tuple its first packet had (original), and the one its replies have (reply, after NAT). */
export interface ConntrackEntry {
  readonly proto: string;
  readonly original: ConntrackTuple;
  readonly reply: ConntrackTuple;
}

/**
 * One line of `conntrack -L` (conntrack-tools 1.4.7, checked on this machine): `udp 17 29 src=A dst=B sport=P
 * dport=Q [UNREPLIED] src=B dst=A sport=Q dport=P mark=0 use=1`, the original tuple's fields first, the reply's
 * second (`-o extended` puts the family first: `ipv4 2 udp 17 …`). A line without both tuples' ports is none.
 */
export function parseConntrackLine(line: string): ConntrackEntry | undefined {
  const words = line.trim().split(/\s+/);
  const proto = words[0] === 'ipv4' || words[0] === 'ipv6' ? words[2] : words[0];
  if (!proto) return undefined;
  const fields: Array<Record<string, string>> = [{}, {}];
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq <= 0) continue;
    const key = word.slice(0, eq);
    if (key !== 'src' && key !== 'dst' && key !== 'sport' && key !== 'dport') continue;
    const tuple = fields[0]![key] === undefined ? fields[0]! : fields[1]!;
    if (tuple[key] === undefined) tuple[key] = word.slice(eq + 1);
  }
  const tuples = fields.map((f) => (f.src && f.dst && /^\d+$/.test(f.sport ?? '') && /^\d+$/.test(f.dport ?? '')
    ? { src: f.src, dst: f.dst, sport: Number(f.sport), dport: Number(f.dport) } : undefined));
  return tuples[0] && tuples[1] ? { proto, original: tuples[0], reply: tuples[1] } : undefined;
}

/**
 * The original tuple's destination port of a line (the first `dport=`), without parsing the rest: a listing of
 * 100,000 entries is mostly flows to other ports, which need no more look than that. Undefined when there is none.
 */
export function originalDport(line: string): number | undefined {
  const at = line.indexOf(' dport=');
  if (at < 0) return undefined;
  let port = 0;
  let i = at + 7;
  for (; i < line.length; i++) {
    const digit = line.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) break;
    port = port * 10 + digit;
  }
  return i > at + 7 ? port : undefined;
}

/** Entries of `conntrack -L` (see parseConntrackLine). */
export function parseConntrackList(text: string): ConntrackEntry[] {
  return text.split('\n').flatMap((line) => parseConntrackLine(line) ?? []);
}

/**
 * The addresses of a `conntrack -L` line, whatever its protocol (an ICMP entry has no ports): the original tuple's
 * (the first `src=` and `dst=`) and the reply tuple's (the second ones; they differ from the original's, swapped,
 * when the flow was NATed). Undefined when there are not both.
 */
export function entryAddresses(line: string): { readonly src: string; readonly dst: string; readonly replySrc: string; readonly replyDst: string } | undefined {
  const src = [...line.matchAll(/ src=(\S+)/g)];
  const dst = [...line.matchAll(/ dst=(\S+)/g)];
  return src.length >= 2 && dst.length >= 2 ? { src: src[0]![1]!, dst: dst[0]![1]!, replySrc: src[1]![1]!, replyDst: dst[1]![1]! } : undefined;
}
