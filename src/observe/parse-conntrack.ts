/** `conntrack -L` output as entries. Pure. */

export interface ConntrackTuple {
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
 * Entries of `conntrack -L` (conntrack-tools 1.4.7, checked on this machine): `udp 17 29 src=A dst=B sport=P
 * dport=Q [UNREPLIED] src=B dst=A sport=Q dport=P mark=0 use=1`, the original tuple's fields first, the reply's
 * second (`-o extended` puts the family first: `ipv4 2 udp 17 …`). A line without both tuples' ports is skipped.
 */
export function parseConntrackList(text: string): ConntrackEntry[] {
  const entries: ConntrackEntry[] = [];
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    const proto = words[0] === 'ipv4' || words[0] === 'ipv6' ? words[2] : words[0];
    if (!proto) continue;
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
    if (tuples[0] && tuples[1]) entries.push({ proto, original: tuples[0], reply: tuples[1] });
  }
  return entries;
}
