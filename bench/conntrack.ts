/**
 * Clearing stale UDP flows (src/apply/conntrack.ts) against a big conntrack table: `npm run bench:conntrack`.
 *
 * One throwaway namespace (bench/netns.ts) is filled with real conntrack entries (`conntrack -R` of `-I` lines, in
 * batches): TABLE entries in all, of which 10 per changed port are stale (a client that sent to the gateway's own
 * address before the port was forwarded) and the rest are VLAN hosts' own masqueraded flows to remote ports, some of
 * them to the changed ports (never stale). For 1, 10 and 100 changed ports it times clearStaleFlows (the listing,
 * the pick and the deletes) and the longest the event loop went without a turn meanwhile (a 1 ms timer, in wall and
 * in CPU time; the supervisor serves /metrics from that loop), checks that exactly the stale entries went, and
 * prints a table.
 *
 * Needs root (namespaces, conntrack). Options: --table N (default 100000), --runs N (default 3), --ports 1,10,100,
 * --compare FILE (a module exporting another clearStaleFlows, e.g. an older build's src/apply/conntrack.ts: each run
 * then times both, one after the other on the same table size, so a busy machine weighs on both alike).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { clearStaleFlows, type FlowsCleared } from '../src/apply/conntrack.js';
import { ExecaRunner } from '../src/exec/execa-runner.js';
import { inNamespace, type CommandRunner } from '../src/exec/runner.js';
import type { ConntrackClear } from '../src/plan/types.js';
import { stats } from './measure.js';
import { Namespaces } from './netns.js';

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
};
const TABLE = Number(option('table', '100000'));
const RUNS = Number(option('runs', '3'));
const PORT_COUNTS = option('ports', '1,10,100').split(',').map(Number);
const COMPARE = option('compare', '');
const STALE_PER_PORT = 10;
const GATEWAY = '203.0.113.2';
const FIRST_PORT = 20000;

/** `conntrack -I` lines: the stale clients of `ports` changed ports, and the VLAN hosts' own flows up to `total`. */
function fillLines(ports: number, total: number): string[] {
  const lines: string[] = [];
  for (let p = FIRST_PORT; p < FIRST_PORT + ports; p++) {
    for (let c = 0; c < STALE_PER_PORT; c++) {
      const client = `198.51.100.${100 + c}`;
      lines.push(`-I -p udp -s ${client} -d ${GATEWAY} --sport ${40000 + c} --dport ${p} -r ${GATEWAY} -q ${client} --reply-port-src ${p} --reply-port-dst ${40000 + c} -t 600`);
    }
  }
  for (let i = 0; lines.length < total; i++) {
    // (host, source port) is unique per flow: a host of three VLANs each, 600 hosts, from a port of its own.
    const host = `192.168.${10 + (i % 3) * 10}.${10 + (Math.floor(i / 3) % 200)}`;
    const remote = `198.51.100.${1 + (i % 250)}`;
    const [sport, dport] = [10000 + Math.floor(i / 600), FIRST_PORT - 500 + (i % 1000)];
    lines.push(`-I -p udp -s ${host} -d ${remote} --sport ${sport} --dport ${dport} -r ${remote} -q ${GATEWAY} --reply-port-src ${dport} --reply-port-dst ${sport} -t 600 -u SEEN_REPLY`);
  }
  return lines;
}

/** CPU time this process has used, in milliseconds. */
const cpuMs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
};

/**
 * The longest the event loop went without running a 1 ms timer while `work` ran: in wall time (what a scrape waits
 * for), and in this process's CPU time (the same stretch less the time the machine gave to others, which is what the
 * code can be blamed for on a busy machine).
 */
async function withLoopWatch<T>(work: () => Promise<T>): Promise<{ value: T; ms: number; blockedMs: number; blockedCpuMs: number }> {
  let [last, lastCpu] = [performance.now(), cpuMs()];
  let [blockedMs, blockedCpuMs] = [0, 0];
  const look = () => {
    const [now, cpu] = [performance.now(), cpuMs()];
    blockedMs = Math.max(blockedMs, now - last);
    blockedCpuMs = Math.max(blockedCpuMs, cpu - lastCpu);
    [last, lastCpu] = [now, cpu];
  };
  const timer = setInterval(look, 1);
  const start = performance.now();
  try {
    const value = await work();
    const ms = performance.now() - start;
    look();
    return { value, ms, blockedMs, blockedCpuMs };
  } finally {
    clearInterval(timer);
  }
}

async function main(): Promise<void> {
  const host = new ExecaRunner();
  const namespaces = new Namespaces(host);
  const dir = await mkdtemp(join(tmpdir(), 'vgw-ct-bench-'));
  const stop = () => void namespaces.cleanup().finally(() => process.exit(130));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const ns = await namespaces.create('ct');
    const inside: CommandRunner = inNamespace(host, ns);
    const count = async () => Number((await inside.run(['conntrack', '-C'])).stdout.trim());
    type Clear = (runner: CommandRunner, clears: readonly ConntrackClear[]) => Promise<FlowsCleared>;
    const impls: Array<[string, Clear]> = [['this build', clearStaleFlows]];
    if (COMPARE) impls.unshift([COMPARE, ((await import(resolve(COMPARE))) as { clearStaleFlows: Clear }).clearStaleFlows]);
    const rows: string[] = [];
    for (const ports of PORT_COUNTS) {
      const times = impls.map((): number[] => []);
      const blocked = impls.map((): number[] => []);
      const blockedCpu = impls.map((): number[] => []);
      for (let sample = 0; sample < RUNS * impls.length; sample++) {
        const which = sample % impls.length;
        const clearStale = impls[which]![1];
        await inside.run(['conntrack', '-F'], { allowFailure: true });
        const lines = fillLines(ports, TABLE);
        for (let i = 0; i < lines.length; i += 20000) {
          const file = join(dir, 'fill');
          await writeFile(file, `${lines.slice(i, i + 20000).join('\n')}\n`);
          await inside.run(['conntrack', '-R', file]);
        }
        const before = await count();
        if (before !== TABLE) throw new Error(`the table holds ${before} entries, not ${TABLE}`);
        const clear: ConntrackClear = { kind: 'conntrack-clear', ports: [FIRST_PORT, FIRST_PORT + ports - 1], forward: 'added', local: [GATEWAY, '192.168.10.1'] };
        const { value, ms, blockedMs, blockedCpuMs } = await withLoopWatch(() => clearStale(inside, [clear]));
        if (value.warning || value.missing) throw new Error(`the clear failed: ${value.warning ?? 'conntrack missing'}`);
        const after = await count();
        const stale = ports * STALE_PER_PORT;
        if (value.cleared !== stale || before - after !== stale) {
          throw new Error(`${ports} ports: cleared ${value.cleared}, the table went from ${before} to ${after}; expected exactly ${stale} to go`);
        }
        times[which]!.push(ms);
        blocked[which]!.push(blockedMs);
        blockedCpu[which]!.push(blockedCpuMs);
      }
      impls.forEach(([name], i) => {
        const [t, b, c] = [stats(times[i]!), stats(blocked[i]!), stats(blockedCpu[i]!)];
        rows.push(`| ${name} | ${ports} | ${ports * STALE_PER_PORT} | ${(t.median / 1000).toFixed(2)} s (${(t.min / 1000).toFixed(2)}-${(t.max / 1000).toFixed(2)}) `
          + `| ${b.median.toFixed(0)} ms (max ${b.max.toFixed(0)}) | ${c.median.toFixed(0)} ms (max ${c.max.toFixed(0)}) |`);
        console.log(rows.at(-1));
      });
    }
    console.log(`\n${TABLE} entries, ${RUNS} runs each (median, min-max)\n`);
    console.log('| build | changed ports | stale entries | clear | event loop blocked (wall) | (CPU) |\n| --- | --- | --- | --- | --- | --- |');
    for (const row of rows) console.log(row);
  } finally {
    await namespaces.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
