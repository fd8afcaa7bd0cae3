/** `lab check`'s result as a person reads it: a matrix of zones, or one line per pair when that is too wide. */
import type { CheckResult, CheckRow } from './check.js';
import { INTERNET } from './probe-plan.js';

/** Wider than this, the matrix is printed as one line per pair of zones. */
const MATRIX_WIDTH = 120;

/**
 * A pair's probes in a few words: grouped by the hosts they were sent between, then by protocol and result, ports
 * joined: "ping ✓ tcp/22,80 ✓ tcp/23 ✗ [from 192.168.10.50] tcp/22 ✗". A `!` marks a result the config does not
 * allow, and the Internet column says which source the Internet host saw ("as 203.0.113.2").
 */
function pairText(rows: readonly CheckRow[], toInternet: boolean): string {
  const groups = new Map<string, { hosts: string; head: string; ports: number[]; mark: string }>();
  for (const r of rows) {
    const mark = `${r.actual === 'pass' ? '✓' : '✗'}${r.ok ? '' : '!'}`;
    const head = r.forward ? `fwd ${r.proto}` : r.proto === 'icmp' ? 'ping' : r.proto;
    const key = `${r.hosts}|${head}|${mark}`;
    const group = groups.get(key) ?? { hosts: r.hosts, head, ports: [], mark };
    if (r.port !== undefined) group.ports.push(r.port);
    groups.set(key, group);
  }
  const parts: string[] = [];
  let hosts = '';
  // The zones' own hosts first (port forwards included), then each pair of hosts a rule names.
  for (const g of [...groups.values()].sort((x, y) => Number(x.hosts !== '') - Number(y.hosts !== ''))) {
    if (g.hosts !== hosts) {
      parts.push(`[${g.hosts}]`);
      hosts = g.hosts;
    }
    parts.push(`${g.head}${g.ports.length > 0 ? `/${portList(g.ports)}` : ''} ${g.mark}`);
  }
  const seen = toInternet ? rows.find((r) => r.peer !== undefined && r.hosts === '')?.peer : undefined;
  return seen ? `${parts.join(' ')} as ${seen}` : parts.join(' ');
}

/** Ports as written in a rule: "22,80,9000-9011" (three or more in a row as a range). */
function portList(ports: readonly number[]): string {
  const sorted = [...new Set(ports)].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    if (j - i >= 2) out.push(`${sorted[i]}-${sorted[j]}`);
    else out.push(...sorted.slice(i, j + 1).map(String));
    i = j + 1;
  }
  return out.join(',');
}

/** A matrix (rows: from, columns: to), or one line per pair when that is too wide, the mismatches spelled out,
 *  what was not probed, and a summary line. */
export function formatMatrix(result: CheckResult): string {
  const zones = result.zones;
  const cell = (from: string, to: string): string => {
    if (from === to) return '·';
    const rows = result.rows.filter((r) => r.from === from && r.to === to);
    return rows.length === 0 ? '' : pairText(rows, to === INTERNET);
  };
  const header = ['from \\ to', ...zones];
  const table = zones.map((from) => [from, ...zones.map((to) => cell(from, to))]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const out = [`lab ${result.lab}: ✓ passed, ✗ blocked, ! not what the config allows`];
  const matrix = [line(header), ...table.filter((row) => row.slice(1).some((c) => c !== '' && c !== '·')).map(line)];
  if (matrix.every((l) => l.length <= MATRIX_WIDTH)) {
    out.push(...matrix);
  } else {
    const pairs = zones.flatMap((from) => zones.filter((to) => to !== from).map((to) => [`${from} → ${to}`, cell(from, to)] as const)).filter(([, c]) => c !== '');
    const width = Math.max(...pairs.map(([p]) => p.length));
    out.push(...pairs.map(([p, c]) => `${p.padEnd(width)}  ${c}`));
  }
  const bad = result.rows.filter((r) => !r.ok);
  if (bad.length > 0) {
    out.push('', 'mismatches:');
    for (const r of bad) {
      const why = r.actual !== r.expected
        ? `the config says ${r.expected}, got ${r.actual}`
        : r.actual === 'blocked'
          ? `blocked, but not as configured (expected it ${r.expectedStop === 'refused' ? 'refused: a TCP reset or an ICMP port unreachable' : 'dropped: no answer'})`
          : `passed, but not as configured (expected the server to see ${r.expectedPeer ?? 'the sender'}${r.expectedLocal ? ` on ${r.expectedLocal}` : ''})`;
      out.push(`  ${r.from} → ${r.to} ${r.probe}: ${why} (${r.detail})`);
    }
  }
  if (result.notes.length > 0) out.push('', ...result.notes);
  const seconds = (result.durationMs / 1000).toFixed(1);
  out.push('', result.ok
    ? `${result.rows.length} probes, all as the config allows (${seconds} s): OK`
    : `${result.rows.length} probes, ${bad.length} not as the config allows (${seconds} s): MISMATCH`);
  return out.join('\n');
}

