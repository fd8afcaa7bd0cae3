/**
 * NIC churn against a running supervisor, as Docker makes it when a Compose project with many VLAN networks starts,
 * stops or is re-created (issue 3's hot-plug target under load). The bundled CLI runs `run --netns` as the image
 * runs it, with a config of N VLANs (default 100) and no VLAN NIC attached; every VLAN is a parent link (`p<i>`, a
 * veth) in a "switch" namespace, and each NIC is a macvlan child of it, moved into the router namespace under a
 * Docker-like name (`eth<k>`) and given the network's first free address (.2), as `docker network connect` does.
 * A prober namespace holds a macvlan on every parent (address .100) and pings every gateway address 20 times a
 * second; two hosts on two VLANs ping each other through the gateway at the end. Phases:
 *
 *   attach     all N at once, as fast as a script can: until every gateway address answers, and the first one
 *   detach     all N deleted at once: until every VLAN waits and no rule names a NIC
 *   reattach   all N in a random order, under shuffled names
 *   twice      a second NIC on one VLAN's network (the same network attached twice), then removed
 *   swap       two VLANs' NICs exchange their addresses, then exchange them back
 *   flap       one NIC set down and up 100 times in 10 s
 *
 * Throughout: /metrics and /healthz every 100 ms (time, status), RSS every 500 ms, the gateway's log lines (info)
 * per phase, its passes and restores (metrics), its CPU (own and its commands'). Afterwards `plan --detailed-exitcode`,
 * a ping between two VLAN hosts, and a search for stale addresses, set members and rules.
 *
 *   sudo npm run bench:churn -- [VLANS]     (CHURN_LOG=FILE keeps the gateway's log lines, each with its time;
 *                                            CHURN_DUMP=PREFIX keeps the router's ipset save, iptables-save, addresses
 *                                            and the final plan as PREFIX.ipset, .iptables, .addr, .plan)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dump as stringify } from 'js-yaml';
import { ExecaRunner } from '../src/exec/execa-runner.js';
import { generateConfig, gatewayOf, nicAddressOf, subnetOf, UPLINK_ADDRESS, UPLINK_NIC, type ConfigShape } from './configs.js';
import { Namespaces } from './netns.js';
import { ensureBundle } from './startup.js';
import { IMAGE_NODE_ARGS, imageEnv, untilReady } from './supervisor-bench.js';

const N = Number(process.argv[2] ?? 100);
if (!(N >= 4 && N <= 250)) throw new Error('usage: bench/churn.ts [VLANS, 4..250]');
const shape: ConfigShape = { vlans: N, partners: 1, rulesPerPair: 2, uplink: true };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const runner = new ExecaRunner();
const namespaces = new Namespaces(runner);
const dir = await mkdtemp(join(tmpdir(), 'vgwbench-churn-'));
// The gateways' state (clears left to do) in the scratch directory, not the machine's /run/vlan-gateway/state.
process.env.VLAN_GATEWAY_STATE_DIR = join(dir, 'state');
const children: ChildProcess[] = [];
const cleanup = async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await namespaces.cleanup();
  await rm(dir, { recursive: true, force: true });
};
process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)));
process.once('SIGTERM', () => void cleanup().finally(() => process.exit(143)));

const hostOf = (i: number, last: number) => gatewayOf(i).replace(/\.1$/, `.${last}`);
const shuffle = <T>(xs: T[]): T[] => {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
};
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * p))]! : NaN;
};

try {
  const router = await namespaces.create('churn-r');
  const sw = await namespaces.create('churn-sw');
  const probe = await namespaces.create('churn-pr');
  const hostA = await namespaces.create('churn-ha');
  const hostB = await namespaces.create('churn-hb');
  const [A, B] = [1, Math.ceil(N / 2)];
  const ipn = (ns: string, ...args: string[]) => runner.run(['ip', '-n', ns, ...args]);
  const batch = (ns: string, lines: string[]) => runner.run(['ip', '-n', ns, '-batch', '-'], { input: `${lines.join('\n')}\n` });

  // The uplink (both ends inside the router, as the other benchmarks have it), the VLANs' parents, the prober's and
  // the two hosts' macvlans.
  await batch(router, [`link add ${UPLINK_NIC} type veth peer name ${UPLINK_NIC}p`, `addr add ${UPLINK_ADDRESS}/24 dev ${UPLINK_NIC}`,
    `link set ${UPLINK_NIC}p up`, `link set ${UPLINK_NIC} up`]);
  const swLines: string[] = [];
  for (let i = 1; i <= N; i++) {
    swLines.push(`link add p${i} type veth peer name b${i}`, `link set b${i} up`, `link set p${i} up`,
      `link add link p${i} name c${i} type macvlan mode bridge`, `link set c${i} netns ${probe}`);
  }
  swLines.push(`link add link p${A} name h0 type macvlan mode bridge`, `link set h0 netns ${hostA}`);
  swLines.push(`link add link p${B} name h1 type macvlan mode bridge`, `link set h1 netns ${hostB}`);
  await batch(sw, swLines);
  const prLines: string[] = [];
  for (let i = 1; i <= N; i++) prLines.push(`addr add ${hostOf(i, 100)}/24 dev c${i}`, `link set c${i} up`);
  await batch(probe, prLines);
  await batch(hostA, [`addr add ${hostOf(A, 10)}/24 dev h0`, 'link set h0 up', `route add default via ${gatewayOf(A)}`]);
  await batch(hostB, [`addr add ${hostOf(B, 10)}/24 dev h1`, 'link set h1 up', `route add default via ${gatewayOf(B)}`]);

  const configPath = join(dir, 'gateway.yaml');
  await writeFile(configPath, stringify(generateConfig(shape)));
  const bundle = await ensureBundle(runner);
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const url = `http://127.0.0.1:${port}`;
  const gateway = spawn(process.execPath, [...IMAGE_NODE_ARGS, bundle, 'run', '--netns', router, '--config', configPath,
    '--listen', `127.0.0.1:${port}`, '--log-level', 'info'],
  { stdio: ['ignore', 'pipe', 'inherit'], env: { ...imageEnv(), VLAN_GATEWAY_PLAN_CACHE: 'off' } });
  children.push(gateway);
  const logs: Array<{ at: number; line: string }> = [];
  let partial = '';
  gateway.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    for (const line of lines) if (line) logs.push({ at: performance.now(), line });
  });
  const pid = gateway.pid!;
  await untilReady(gateway, url, 30_000);

  // Background watchers: scrapes, health, RSS.
  const scrapes: Array<{ at: number; ms: number }> = [];
  const health: Array<{ at: number; status: number; body: string }> = [];
  const rss: Array<{ at: number; mb: number }> = [];
  let watching = true;
  const watchers = (async () => {
    let n = 0;
    while (watching) {
      const t = performance.now();
      const ok = await fetch(`${url}/metrics`).then(async (r) => (await r.text(), r.ok), () => false);
      scrapes.push({ at: t, ms: ok ? performance.now() - t : NaN });
      const h = await fetch(`${url}/healthz`).then(async (r) => ({ status: r.status, body: await r.text() }), () => ({ status: 0, body: 'no answer' }));
      health.push({ at: performance.now(), ...h });
      if (n++ % 5 === 0) rss.push({ at: performance.now(), mb: Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024 });
      await sleep(100);
    }
  })();

  const cpu = () => {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    const tick = 100; // USER_HZ
    return { own: (Number(f[11]) + Number(f[12])) / tick, children: (Number(f[13]) + Number(f[14])) / tick };
  };
  const metric = async (name: string) => {
    const text = await (await fetch(`${url}/metrics`)).text();
    return [...text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`, 'gm'))].reduce((n, m) => n + Number(m[2]), 0);
  };
  const status = async () => (await (await fetch(`${url}/status`)).json()) as { waiting: string[]; vlans: Array<{ name: string; state: string; interface: string | null }> };

  /** Pings every listed VLAN's gateway from the prober, 20 a second each, until each answered (or timeout). */
  async function pingAll(vlans: number[], t0: number, timeoutMs = 15_000): Promise<Map<number, number>> {
    const first = new Map<number, number>();
    const pingers = vlans.map((i) => {
      const p = spawn('ip', ['netns', 'exec', probe, 'ping', '-n', '-i', '0.05', '-W', '1', '-I', `c${i}`, gatewayOf(i)], { stdio: ['ignore', 'pipe', 'ignore'] });
      children.push(p);
      p.stdout.setEncoding('utf8').on('data', (s: string) => {
        if (!first.has(i) && /bytes from/.test(s)) {
          first.set(i, performance.now() - t0);
          p.kill('SIGINT');
        }
      });
      return p;
    });
    const deadline = performance.now() + timeoutMs;
    while (first.size < vlans.length && performance.now() < deadline) await sleep(20);
    for (const p of pingers) if (p.exitCode === null) p.kill('SIGINT');
    return first;
  }

  type Phase = { name: string; t0: number; t1: number; cpu0: ReturnType<typeof cpu>; cpu1: ReturnType<typeof cpu>; passes: number; restores: number; logs: number; notes: string[] };
  const phases: Phase[] = [];
  async function phase(name: string, body: (t0: number, notes: string[]) => Promise<void>, settleMs = 3000) {
    const [passes0, restores0, cpu0, logs0] = [await metric('vlan_gateway_reconciles_total'), await metric('vlan_gateway_iptables_restores_total'), cpu(), logs.length];
    const notes: string[] = [];
    const t0 = performance.now();
    await body(t0, notes);
    await sleep(settleMs); // the passes the events asked for, done
    const t1 = performance.now();
    phases.push({ name, t0, t1, cpu0, cpu1: cpu(), passes: (await metric('vlan_gateway_reconciles_total')) - passes0,
      restores: (await metric('vlan_gateway_iptables_restores_total')) - restores0, logs: logs.length - logs0, notes });
    console.log(`${name}: ${notes.join('; ')}`);
  }

  const names = new Map<number, string>(); // VLAN → its NIC's name in the router
  const attachedAt = new Map<number, number>(); // VLAN → when the script had moved its NIC in (before its address)
  /** Docker's connect for each VLAN in `order`, one after the other as fast as a script can. */
  async function attach(order: number[], nameOf: (i: number, k: number) => string) {
    for (const [k, i] of order.entries()) {
      const nic = nameOf(i, k);
      names.set(i, nic);
      await batch(sw, [`link add link p${i} name m${i} type macvlan mode bridge`, `link set m${i} netns ${router} name ${nic}`]);
      attachedAt.set(i, performance.now());
      await batch(router, [`addr add ${nicAddressOf(i)}/24 dev ${nic}`, `link set ${nic} up`]);
    }
  }
  async function attachPhase(label: string, order: number[], nameOf: (i: number, k: number) => string) {
    await phase(label, async (t0, notes) => {
      const all = [...order];
      const pinging = pingAll(all, t0);
      await attach(order, nameOf);
      const scriptMs = performance.now() - t0;
      const first = await pinging;
      const times = all.map((i) => first.get(i) ?? Infinity);
      notes.push(`script attached ${N} NICs in ${scriptMs.toFixed(0)} ms`);
      notes.push(`first attached (v${order[0]}) answered after ${times[0]!.toFixed(0)} ms`);
      notes.push(`all answered after ${Math.max(...times).toFixed(0)} ms (${first.size}/${N}; median ${pct(times, 0.5).toFixed(0)}, p90 ${pct(times, 0.9).toFixed(0)})`);
      // How long after its own NIC was moved in each gateway answered: the 1 s target, per NIC.
      const own = all.map((i) => t0 + (first.get(i) ?? Infinity) - attachedAt.get(i)!);
      notes.push(`per NIC, moved in → answers: median ${pct(own, 0.5).toFixed(0)} ms, p90 ${pct(own, 0.9).toFixed(0)}, max ${Math.max(...own).toFixed(0)}; over 1 s: ${own.filter((x) => x > 1000).length}`);
      notes.push(`unanswered: ${all.filter((i) => !first.has(i)).map((i) => `v${i}`).join(',') || 'none'}`);
    });
  }

  // 1. Attach all at once.
  await attachPhase('attach', Array.from({ length: N }, (_, i) => i + 1), (_i, k) => `eth${k + 1}`);

  // 2. Detach all at once.
  await phase('detach', async (t0, notes) => {
    await batch(router, [...names.values()].map((nic) => `link del ${nic}`));
    names.clear();
    for (;;) {
      const s = await status();
      if (s.waiting.length === N) break;
      if (performance.now() - t0 > 20_000) break;
      await sleep(20);
    }
    notes.push(`every VLAN waiting after ${(performance.now() - t0).toFixed(0)} ms`);
  });

  // 3. Re-attach in a random order under shuffled names.
  const order = shuffle(Array.from({ length: N }, (_, i) => i + 1));
  const eths = shuffle(Array.from({ length: N }, (_, k) => `eth${k + 1}`));
  await attachPhase('reattach (random order, shuffled names)', order, (_i, k) => eths[k]!);

  // 4. The same network attached twice: a second NIC in VLAN A's subnet.
  await phase('same network twice', async (t0, notes) => {
    await batch(sw, [`link add link p${A} name m2nd type macvlan mode bridge`, `link set m2nd netns ${router} name ethx`]);
    await batch(router, [`addr add ${hostOf(A, 3)}/24 dev ethx`, 'link set ethx up']);
    await sleep(2000);
    const s = await status();
    notes.push(`v${A} now ${JSON.stringify(s.vlans.find((v) => v.name === `v${A}`))}`);
    const first = await pingAll([A], performance.now(), 3000);
    notes.push(`v${A}'s gateway answers: ${first.has(A)}`);
    await ipn(router, 'link', 'del', 'ethx');
    notes.push(`(took ${(performance.now() - t0).toFixed(0)} ms)`);
  });

  // 5. Two VLANs' NICs exchange addresses, then exchange them back.
  const [X, Y] = [2, 3];
  const swap = async () => {
    const [nx, ny] = [names.get(X)!, names.get(Y)!];
    await batch(router, [`addr flush dev ${nx} scope global`, `addr flush dev ${ny} scope global`,
      `addr add ${nicAddressOf(Y)}/24 dev ${nx}`, `addr add ${nicAddressOf(X)}/24 dev ${ny}`]);
    names.set(X, ny);
    names.set(Y, nx);
  };
  await phase('swap two NICs\' addresses', async (_t0, notes) => {
    await swap();
    await sleep(2000);
    const s = await status();
    notes.push(`after the swap: ${JSON.stringify(s.vlans.filter((v) => v.name === `v${X}` || v.name === `v${Y}`))}`);
    const gw = (await runner.run(['ip', '-n', router, '-o', '-4', 'addr', 'show'])).stdout.split('\n').filter((l) => l.includes(gatewayOf(X) + '/') || l.includes(gatewayOf(Y) + '/'));
    notes.push(`gateway addresses: ${gw.map((l) => l.split(/\s+/).slice(1, 4).join(' ')).join(' | ')}`);
    await swap();
    const first = await pingAll([X, Y], performance.now(), 5000);
    notes.push(`swapped back; both gateways answer: ${first.size === 2} (${[...first.values()].map((v) => v.toFixed(0)).join(', ')} ms)`);
  });

  // 6. One NIC flapped down and up 100 times in 10 s.
  await phase('flap one NIC 100 times in 10 s', async (t0, notes) => {
    const nic = names.get(A)!;
    for (let k = 0; k < 100; k++) {
      await ipn(router, 'link', 'set', nic, 'down');
      await sleep(45);
      await ipn(router, 'link', 'set', nic, 'up');
      await sleep(45);
    }
    notes.push(`flapped ${nic} in ${(performance.now() - t0).toFixed(0)} ms`);
    const first = await pingAll([A], performance.now(), 5000);
    notes.push(`v${A}'s gateway answers after: ${first.has(A)} (${first.get(A)?.toFixed(0)} ms)`);
  }, 5000);

  watching = false;
  await watchers;

  // After the churn.
  const plan = await runner.run(['env', 'VLAN_GATEWAY_PLAN_CACHE=off', process.execPath, bundle, 'plan', '--netns', router, '--config', configPath, '--detailed-exitcode'], { allowFailure: true });
  const pingAB = await runner.run(['ip', 'netns', 'exec', hostA, 'ping', '-c', '3', '-i', '0.2', '-W', '1', hostOf(B, 10)], { allowFailure: true });
  const addrs = (await runner.run(['ip', '-n', router, '-o', '-4', 'addr', 'show'])).stdout;
  const ours = addrs.split('\n').filter((l) => / metric 7010 /.test(l) || /\.1\/24/.test(l));
  const links = new Set((await runner.run(['ip', '-n', router, '-o', 'link', 'show'])).stdout.split('\n').map((l) => l.split(': ')[1]?.split('@')[0]).filter(Boolean));
  const wrongGw = [];
  for (let i = 1; i <= N; i++) {
    const holders = ours.filter((l) => l.includes(` ${gatewayOf(i)}/24`)).map((l) => l.split(/\s+/)[1]);
    if (holders.length !== 1 || holders[0] !== names.get(i)) wrongGw.push(`v${i}: ${holders.join(',') || 'none'} (NIC ${names.get(i)})`);
  }
  const save = (await runner.run(['ip', 'netns', 'exec', router, 'iptables-save'])).stdout;
  const ifaces = new Set([...save.matchAll(/ -[io] (\S+)/g)].map((m) => m[1]!));
  const staleRules = [...ifaces].filter((n) => !links.has(n));
  const sets = (await runner.run(['ip', 'netns', 'exec', router, 'ipset', 'save'])).stdout;
  const setIfaces = new Set([...sets.matchAll(/^add \S+ \S+,(\S+)/gm)].map((m) => m[1]!));
  const staleMembers = [...setIfaces].filter((n) => !links.has(n));
  if (process.env.CHURN_DUMP) {
    await writeFile(`${process.env.CHURN_DUMP}.ipset`, sets);
    await writeFile(`${process.env.CHURN_DUMP}.iptables`, save);
    await writeFile(`${process.env.CHURN_DUMP}.addr`, addrs);
    await writeFile(`${process.env.CHURN_DUMP}.plan`, plan.stdout + plan.stderr);
  }
  const s = await status();
  const finalMetrics = await (await fetch(`${url}/metrics`)).text();
  gateway.kill('SIGTERM');
  const code = await new Promise<number | null>((r) => gateway.once('exit', r));

  console.log('\nper phase:');
  for (const p of phases) {
    const inPhase = <T extends { at: number }>(xs: T[]) => xs.filter((x) => x.at >= p.t0 && x.at <= p.t1);
    const sc = inPhase(scrapes).map((x) => x.ms);
    const bad = inPhase(health).filter((h) => h.status !== 200);
    const mem = inPhase(rss).map((x) => x.mb);
    const lines = logs.filter((l) => l.at >= p.t0 && l.at <= p.t1);
    const warns = lines.filter((l) => /"level":(40|50|60)/.test(l.line));
    console.log(`- ${p.name}: ${((p.t1 - p.t0) / 1000).toFixed(1)} s; passes ${p.passes}, restores ${p.restores}; CPU ${(p.cpu1.own - p.cpu0.own).toFixed(2)} s own + `
      + `${(p.cpu1.children - p.cpu0.children).toFixed(2)} s commands; scrape median ${pct(sc, 0.5).toFixed(2)} ms, p99 ${pct(sc, 0.99).toFixed(2)}, max ${Math.max(...sc).toFixed(1)} (${sc.length}, ${sc.filter(Number.isNaN).length} failed); `
      + `healthz not 200: ${bad.length}/${inPhase(health).length}${bad.length ? ` (${bad[0]!.body.slice(0, 200)})` : ''}; RSS ${Math.min(...mem).toFixed(1)}–${Math.max(...mem).toFixed(1)} MB; `
      + `log lines ${lines.length} (warn+ ${warns.length})`);
    const msgs = new Map<string, number>();
    for (const l of lines) {
      const m = /"msg":"((?:[^"\\]|\\.)*)"/.exec(l.line)?.[1] ?? l.line;
      const key = `${/"level":(\d+)/.exec(l.line)?.[1]} ${m.replace(/\d+/g, '#').slice(0, 140)}`;
      msgs.set(key, (msgs.get(key) ?? 0) + 1);
    }
    for (const [m, n] of [...msgs].sort((a, b) => b[1] - a[1]).slice(0, 8)) console.log(`    ${n}× ${m}`);
  }
  const allRss = rss.map((x) => x.mb);
  console.log(`\nRSS: ${allRss[0]!.toFixed(1)} MB at the first sample, max ${Math.max(...allRss).toFixed(1)}, last ${allRss.at(-1)!.toFixed(1)}`);
  console.log(`scrapes overall: ${scrapes.length}, median ${pct(scrapes.map((x) => x.ms), 0.5).toFixed(2)} ms, p99 ${pct(scrapes.map((x) => x.ms), 0.99).toFixed(2)}, max ${Math.max(...scrapes.map((x) => x.ms)).toFixed(1)}`);
  console.log(`after: plan --detailed-exitcode ${plan.exitCode}${plan.exitCode !== 0 ? `\n${plan.stdout}\n${plan.stderr}` : ''}`);
  console.log(`after: ping v${A} host → v${B} host: ${pingAB.exitCode === 0 ? 'ok' : `FAILED\n${pingAB.stdout}`}`);
  console.log(`after: gateway addresses not exactly on their VLAN's NIC: ${wrongGw.length ? wrongGw.join('; ') : 'none'}`);
  console.log(`after: rules naming a NIC that is gone: ${staleRules.join(', ') || 'none'}; set members naming one: ${staleMembers.join(', ') || 'none'}`);
  console.log(`after: waiting ${s.waiting.length}; subnets ${subnetOf(1)}…; drift repairs: ${[...finalMetrics.matchAll(/^vlan_gateway_drift_repairs_total\{([^}]*)\} (\S+)$/gm)].filter((m) => m[2] !== '0').map((m) => `${m[1]} ${m[2]}`).join(', ') || 'none'}`);
  console.log(`stop: exit ${code}`);
  console.log(`log: ${logs.length} lines in all`);
  if (process.env.CHURN_LOG) await writeFile(process.env.CHURN_LOG, logs.map((l) => `${l.at.toFixed(0)} ${l.line}`).join('\n'));
} finally {
  await cleanup();
  const left = await namespaces.leftovers();
  console.log(`namespaces left behind: ${left.length === 0 ? 'none' : left.join(', ')}`);
}
