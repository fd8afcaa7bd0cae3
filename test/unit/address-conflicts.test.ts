/**
 * Address conflict detection (src/reconcile/conflicts.ts) driven by the Supervisor, with the netfilter fake as the
 * namespace and a small arping of its own: `-U` (the announce) sends at once and exits 100 ms later, as iputils'
 * does a second later; `-D` (the probe) answers with the output iputils prints, from a table of who else holds which
 * address. Covers the order (each address's probe after its announce has gone out, and after the pass has ended),
 * what is reported, no arping at all (one line, nothing reported, nothing spawned again), and a stop that kills the
 * probes running. The real thing, in namespaces: test/kernel/supervisor-address-conflict.test.ts.
 */
import test, { type ExecutionContext } from 'ava';
import { pino } from 'pino';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseConfigText } from '../../src/config/load.js';
import { ExecaRunner } from '../../src/exec/execa-runner.js';
import { CommandError, type Child, type CommandRunner, type RunOptions, type RunResult } from '../../src/exec/runner.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { AddressConflicts, RECHECK_FREE_MS } from '../../src/reconcile/conflicts.js';
import { statusDocument } from '../../src/reconcile/status.js';
import { Supervisor } from '../../src/reconcile/supervisor.js';
import { loadTemplates } from '../../src/template/load.js';
import { FakeNetns } from '../fakes/netfilter.js';
import { parseMetrics } from '../helpers/supervisor.js';
import { until } from '../helpers/wait.js';
import { FakeClock } from '../helpers/clock.js';
import type { Clock } from '../../src/clock.js';

const templates = await loadTemplates();
const labText = await readFile(fileURLToPath(new URL('../../examples/lab.yaml', import.meta.url)), 'utf8');
const lab = parseConfigText(labText, 'lab.yaml');
const OTHER = '36:df:f8:37:10:31';

type Arping = 'fake' | 'missing' | 'hangs';

/** The fake namespace, whose `arping` is this runner's own (see the file's comment). */
class ArpingRunner implements CommandRunner {
  readonly events: string[] = [];
  /** The NICs whose probe has returned (a turn after it started). */
  readonly answered: string[] = [];
  /** Addresses another device on the VLAN holds, and its MAC. */
  readonly others = new Map<string, string>();
  /** NICs gone when their probe runs (Docker disconnected them after the pass that found them): arping's error. */
  readonly away = new Set<string>();
  /** NICs without carrier (cable out, peer down): a probe there goes nowhere and hears nobody, as iputils' does (exit 0). */
  readonly deaf = new Set<string>();
  private readonly real = new ExecaRunner();

  constructor(readonly ns: FakeNetns, private readonly arping: Arping) {}

  async run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    if (argv[0] !== 'arping') return this.ns.run(argv, options);
    const [nic, address] = argv.slice(-2) as [string, string];
    this.events.push(`probe ${nic} ${address}`);
    // A process's exit is an event of a later turn of the loop, never of the turn that spawned it (a probe that
    // ended in the same turn would start the next one in that turn too, as no real one can).
    await new Promise((resolve) => setImmediate(resolve));
    this.answered.push(nic);
    if (this.arping === 'missing') throw new CommandError(argv, null, 'spawn arping ENOENT', '', true);
    if (this.arping === 'hangs') return this.real.run(['sleep', '30'], options);
    if (this.away.has(nic)) return { exitCode: 2, stdout: '', stderr: `arping: Device ${nic} not available.\n` };
    const mac = this.deaf.has(nic) ? undefined : this.others.get(address);
    const head = `ARPING ${address} from 0.0.0.0 ${nic}\n`;
    return mac === undefined
      ? { exitCode: 0, stderr: '', stdout: `${head}Sent 2 probes (2 broadcast(s))\nReceived 0 response(s)\n` }
      : { exitCode: 1, stderr: '', stdout: `${head}Unicast reply from ${address} [${mac.toUpperCase()}]  0.540ms\nSent 1 probes (1 broadcast(s))\nReceived 1 response(s)\n` };
  }

  start(argv: readonly string[]): Child {
    if (argv[0] !== 'arping') return this.ns.start(argv);
    if (this.arping === 'missing') throw new CommandError(argv, null, 'spawn arping ENOENT', '', true);
    const [nic, address] = argv.slice(-2) as [string, string];
    this.events.push(`announce ${nic} ${address}`);
    const exited = new Promise<number | null>((resolve) => setTimeout(() => {
      this.events.push(`announced ${nic} ${address}`);
      resolve(0);
    }, 100));
    return { pid: undefined, onLine: () => {}, exited, stop: async () => void (await exited) };
  }
}

function rig(t: ExecutionContext, arping: Arping, clock?: Clock, extraLinks: ReadonlyArray<{ name: string; mac: string }> = []) {
  const ns = new FakeNetns({
    links: [{ name: 'eth0', addresses: ['203.0.113.2/24'] }, { name: 'eth1', addresses: ['192.168.10.2/24'] }, { name: 'eth2', addresses: ['192.168.20.2/24'] }, ...extraLinks],
    defaultRoute: { gateway: '203.0.113.1', dev: 'eth0' },
    dockerDns: true,
  });
  const runner = new ArpingRunner(ns, arping);
  const metrics = new Metrics('0.0.0-test');
  const logs: Array<{ level: number; msg: string; [key: string]: unknown }> = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as (typeof logs)[number]) });
  const supervisor = new Supervisor(runner, metrics, log, { path: 'gateway.yaml', text: labText, config: lab, templates },
    { minIntervalMs: 10, healthTimeoutMs: 60_000, backoffInitialMs: 20, backoffMaxMs: 80 });
  const conflicts = new AddressConflicts(runner, metrics, log, clock);
  supervisor.conflicts = conflicts;
  t.teardown(async () => {
    await conflicts.stop();
    await supervisor.stop();
  });
  const series = async () => parseMetrics(await metrics.text()).filter((s) => s.name === 'vlan_gateway_address_conflict')
    .map((s) => ({ vlan: s.labels.vlan, interface: s.labels.interface, mac: s.labels.mac, value: s.value }));
  return { runner, supervisor, conflicts, logs, series, status: () => statusDocument(supervisor, { errors: [], reads: 0 }, '0.0.0-test') as { warnings: string[] } };
}

test('each added gateway address is probed after its announce has gone out, after the pass; the conflict is reported', async (t) => {
  const r = rig(t, 'fake');
  r.runner.others.set('192.168.10.1', OTHER);
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  t.deepEqual(r.runner.events.filter((e) => e.startsWith('probe')), [], 'nothing probed before the pass ended');
  await until('both probes', () => r.runner.events.filter((e) => e.startsWith('probe')).length === 2);
  for (const [nic, address] of [['eth1', '192.168.10.1'], ['eth2', '192.168.20.1']] as const) {
    const at = (what: string) => r.runner.events.indexOf(`${what} ${nic} ${address}`);
    t.true(at('announce') >= 0 && at('announce') < at('announced') && at('announced') < at('probe'), r.runner.events.join('\n'));
  }
  await until('the gauge', () => r.logs.some((l) => l.level === 40 && /^address conflict/.test(l.msg)) && r.runner.answered.length === 2);
  t.deepEqual((await r.series()).sort((a, b) => (a.vlan! < b.vlan! ? -1 : 1)), [
    { vlan: 'lab', interface: 'eth2', mac: '', value: 0 },
    { vlan: 'office', interface: 'eth1', mac: OTHER, value: 1 },
  ]);
  t.is(r.status().warnings.length, 1);
  t.regex(r.status().warnings[0]!, /^vlan office: another device \(36:df:f8:37:10:31\) answers ARP for the gateway address 192\.168\.10\.1 on eth1 too/);
});

test('no arping: one line says detection is off, nothing is reported, and nothing is tried again', async (t) => {
  const r = rig(t, 'missing');
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  await until('the line', () => r.logs.some((l) => /conflict detection is off/.test(l.msg)));
  await quiet(r);
  // The probes start one per turn of the event loop: the first one's failure said arping is missing before the
  // second would have started, and none is tried after.
  const tried = r.runner.events.filter((e) => e.startsWith('probe'));
  t.deepEqual(tried, ['probe eth1 192.168.10.1']);
  r.conflicts.recheck();
  r.supervisor.trigger('schedule');
  await r.supervisor.idle();
  r.conflicts.recheck();
  await quiet(r);
  const said = r.logs.filter((l) => /conflict/.test(l.msg));
  t.deepEqual(said.map((l) => [l.level, l.msg]), [[40, 'address conflict detection is off: arping is not installed (iputils-arping)']]);
  t.is(r.runner.events.filter((e) => e.startsWith('probe')).length, 1, 'none after');
  t.deepEqual(await r.series(), []);
  t.deepEqual(r.status().warnings, []);
});

// A Compose project's `down` disconnects every VLAN network at once, while the probes of their addresses run or wait
// (100 VLANs: 25 s of them after an `up`). Each used to log `address conflict probe told nothing: exit 2: arping:
// Device eth7 not available.`, a line per VLAN, beside the pass's own line for each NIC lost.
test('a probe whose NIC went before it ran says nothing; the others are reported as before', async (t) => {
  const r = rig(t, 'fake');
  r.runner.away.add('eth1');
  r.runner.others.set('192.168.20.1', OTHER);
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  await until('both probes', () => r.runner.events.filter((e) => e.startsWith('probe')).length === 2);
  await until('the conflict on lab', () => r.logs.some((l) => l.level === 40 && /^address conflict on vlan lab/.test(l.msg)));
  await quiet(r);
  t.deepEqual(r.logs.filter((l) => /probe/.test(l.msg)).map((l) => l.msg), []);
  t.deepEqual(await r.series(), [{ vlan: 'lab', interface: 'eth2', mac: OTHER, value: 1 }]);
});

test('a stop kills the probes running, at once', async (t) => {
  const r = rig(t, 'hangs');
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  await until('the probes', () => r.runner.events.filter((e) => e.startsWith('probe')).length === 2);
  const started = performance.now();
  await r.conflicts.stop();
  t.true(performance.now() - started < 1000, `stopped in ${Math.round(performance.now() - started)} ms`);
  t.deepEqual(r.logs.filter((l) => /conflict/.test(l.msg)), [], 'a probe killed by the stop says nothing');
});

type Rig = ReturnType<typeof rig>;

/**
 * What the probes started do, done: none running or queued (each judged), a moment for anything that should not come,
 * and none again. A fixed 50 ms wait read the series before a probe was judged, in CI runs under load.
 */
async function quiet(r: Rig): Promise<void> {
  await until('the probes judged', () => r.conflicts.probing === 0);
  await new Promise((resolve) => setTimeout(resolve, 50));
  await until('the probes judged', () => r.conflicts.probing === 0);
}

/**
 * A drift check's probes (sorted), `before` done first (the clock moved). Each check once the probes before it have
 * ended and been judged, and read once its own have: one still running is not queued again (a CI run under load once
 * moved the clock while the last probe's result was still being handled, 50 ms after it began).
 */
async function driftCheck(r: Rig, before?: () => void): Promise<string[]> {
  await until('the probes before it judged', () => r.conflicts.probing === 0);
  const from = r.runner.events.length;
  before?.();
  r.conflicts.recheck();
  await until('its probes judged', () => r.conflicts.probing === 0);
  return r.runner.events.slice(from).sort();
}

test('at the drift checks, a VLAN in conflict is probed again at each, one that heard nobody else every 5 minutes', async (t) => {
  const clock = new FakeClock();
  const start = clock.monotonicMs;
  const r = rig(t, 'fake', clock);
  r.runner.others.set('192.168.10.1', OTHER);
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  const probes = () => r.runner.events.filter((e) => e.startsWith('probe')).sort();
  await until('the first probes', () => probes().length === 2 && r.conflicts.conflicts.has('office'));
  await quiet(r);
  t.deepEqual(probes(), ['probe eth1 192.168.10.1', 'probe eth2 192.168.20.1']);
  const recheckAt = async (ms: number, expected: string[]) =>
    t.deepEqual(await driftCheck(r, () => clock.advance(start + ms - clock.monotonicMs)), expected, `the drift check ${ms} ms after the first probes`);
  await recheckAt(30_000, ['probe eth1 192.168.10.1']);
  r.runner.others.delete('192.168.10.1'); // put right
  await recheckAt(60_000, ['probe eth1 192.168.10.1']);
  t.deepEqual(r.status().warnings, [], 'the conflict put right went at the next check');
  await recheckAt(90_000, []);
  await recheckAt(RECHECK_FREE_MS, ['probe eth2 192.168.20.1']);
  await recheckAt(60_000 + RECHECK_FREE_MS, ['probe eth1 192.168.10.1']);
});

// A probe on a NIC without carrier is sent into a dead link and hears nobody (arping exits 0: "Received 0
// response(s)"): the drift check said "address conflict ... is over", the gauge went to 0 and the alert resolved while
// nothing was put right, and the conflict came back (a new "since") up to 5 minutes after the carrier did.
test('a VLAN in conflict whose NIC loses its carrier: its probe hears nobody, and the conflict is not said to be over', async (t) => {
  const clock = new FakeClock();
  const r = rig(t, 'fake', clock);
  r.runner.others.set('192.168.10.1', OTHER);
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  // Both first probes judged (lab's series is there at 0 only then: a CI run under load read it before).
  await until('the conflict, and both probes judged', () => r.conflicts.conflicts.has('office')
    && r.runner.events.filter((e) => e.startsWith('probe')).length === 2 && r.conflicts.probing === 0);
  const since = r.conflicts.conflicts.get('office')!.since;
  r.runner.ns.setCarrier('eth1', false);
  r.runner.deaf.add('eth1');
  r.supervisor.trigger('netlink');
  await until('the carrier\'s pass', () => r.logs.some((l) => /has no carrier/.test(l.msg)));
  await r.supervisor.idle();
  await driftCheck(r, () => clock.advance(30_000));
  t.deepEqual(r.logs.filter((l) => /address conflict on vlan office is over/.test(l.msg)).map((l) => l.msg), []);
  t.deepEqual(await r.series(), [{ vlan: 'office', interface: 'eth1', mac: OTHER, value: 1 }, { vlan: 'lab', interface: 'eth2', mac: '', value: 0 }]);
  t.is(r.conflicts.conflicts.get('office')?.since, since);
  // The carrier back: probed at the next drift check (still in conflict), and still the same conflict.
  r.runner.ns.setCarrier('eth1', true);
  r.runner.deaf.delete('eth1');
  r.supervisor.trigger('netlink');
  await until('the carrier back', () => r.logs.some((l) => /has its carrier again/.test(l.msg)));
  await r.supervisor.idle();
  t.true((await driftCheck(r, () => clock.advance(30_000))).includes('probe eth1 192.168.10.1'), 'probed again');
  t.is(r.conflicts.conflicts.get('office')?.since, since);
  t.is(r.logs.filter((l) => l.level === 40 && /address conflict/.test(l.msg)).length, 1, 'told once');
});

// The gaps between probes were counted on the wall clock: set back an hour, a conflict put right stayed reported
// (and a new one unfound) for that hour; set forward, every drift check probed every VLAN at once.
test('the gaps between probes count time passing, not the wall clock: set back or forward, the checks probe as before', async (t) => {
  const clock = new FakeClock();
  const r = rig(t, 'fake', clock);
  r.runner.others.set('192.168.10.1', OTHER);
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  await until('the first probes', () => r.runner.events.filter((e) => e.startsWith('probe')).length === 2 && r.conflicts.conflicts.has('office'));
  await quiet(r);
  const recheck = async (expected: string[], why: string) => t.deepEqual(await driftCheck(r), expected, why);
  clock.step(3_600_000);
  clock.advance(1000);
  await recheck([], 'a second after the last probes, the time of day an hour on: none again yet');
  r.runner.others.delete('192.168.10.1'); // put right
  clock.step(-7_200_000);
  clock.advance(30_000);
  await recheck(['probe eth1 192.168.10.1'], '30 s on, the time of day an hour back: the VLAN in conflict is probed');
  t.deepEqual(r.status().warnings, [], 'and the conflict put right is gone');
});

test('a gateway moved by a reload before the old address\'s announce has gone out: the old address is not probed nor reported', async (t) => {
  const r = rig(t, 'fake');
  // The old router still holds .1, which is why the user moves office's gateway to .254, within a second of the start.
  r.runner.others.set('192.168.10.1', OTHER);
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  const moved = { ...lab, vlans: lab.vlans.map((v) => (v.name === 'office' ? { ...v, gateway: '192.168.10.254' } : v)) };
  r.supervisor.replaceConfig({ path: 'gateway.yaml', text: labText, config: moved, templates });
  r.supervisor.trigger('reload');
  await r.supervisor.idle();
  await until('the probes of the addresses held', () => r.runner.events.includes('probe eth1 192.168.10.254') && r.runner.events.includes('probe eth2 192.168.20.1'));
  await until('both probed', () => r.conflicts.conflicts.size === 0 && r.runner.events.filter((e) => e.startsWith('probe')).length === 2);
  await quiet(r);
  t.deepEqual((await r.series()).sort((a, b) => (a.vlan! < b.vlan! ? -1 : 1)), [
    { vlan: 'lab', interface: 'eth2', mac: '', value: 0 },
    { vlan: 'office', interface: 'eth1', mac: '', value: 0 },
  ]);
  t.true(r.runner.events.includes('announced eth1 192.168.10.1'), r.runner.events.join('\n'));
  t.false(r.runner.events.includes('probe eth1 192.168.10.1'), r.runner.events.join('\n'));
  // Before: "address conflict on vlan office: another device (…) answers ARP for the gateway address 192.168.10.1 on
  // eth1 too; … (the gateway keeps the address, as configured)", for an address it had just given up.
  t.deepEqual(r.logs.filter((l) => /address conflict/.test(l.msg)).map((l) => l.msg), []);
  t.deepEqual(r.status().warnings, []);
});

test('an announce heard before its pass has returned (a slow accounting fill) is probed once the pass says the address is held', async (t) => {
  const runner = new ArpingRunner(new FakeNetns({ links: [] }), 'fake');
  runner.others.set('192.168.10.1', OTHER);
  const metrics = new Metrics('0.0.0-test');
  const logs: Array<{ level: number; msg: string }> = [];
  const conflicts = new AddressConflicts(runner, metrics, pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as (typeof logs)[number]) }));
  t.teardown(() => conflicts.stop());
  const office = lab.vlans.find((v) => v.name === 'office')!;
  const step = { kind: 'address-add', nic: 'eth1', address: '192.168.10.1', prefix: 24, vlan: 'office' } as const;
  const view = (addresses: string[]) => ({
    vlans: [{ vlan: office, nic: { name: 'eth1' } }],
    uplink: {},
    links: [{ index: 2, name: 'eth1', mac: '02:42:c0:a8:0a:02', up: true, loopback: false, addresses: addresses.map((a) => ({ address: a, prefix: 24 })) }],
    routes: [],
  }) as unknown as Parameters<AddressConflicts['passed']>[0];
  conflicts.announced(step);
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.deepEqual(runner.events, [], 'not before its pass has returned');
  conflicts.passed(view(['192.168.10.2', '192.168.10.1']), [step]);
  await until('the conflict', () => logs.some((l) => l.level === 40));
  t.deepEqual(runner.events, ['probe eth1 192.168.10.1']);
  t.is(conflicts.conflicts.get('office')?.mac, OTHER);
});

// Linux answers ARP for any address of its namespace on any NIC (arp_ignore=0): where two of the gateway's networks
// share one segment (their parents bridged, two NICs cabled to one switch VLAN), lab's NIC eth2 (MAC 02:42:c0:a8:14:02,
// as Docker makes it from 192.168.20.2) answers office's probe for 192.168.10.1 on eth1, as it answers office's hosts,
// some of which take its MAC and have their packets dropped as forged. Before: one info line, "address conflict probe
// told nothing: a NIC of the gateway's own answered", and nothing in /status.
test('lab\'s NIC answers office\'s probe (two of the gateway\'s networks on one segment, Linux\'s default ARP): a warning names both NICs and the sysctls, until it stops', async (t) => {
  const clock = new FakeClock(Date.now());
  const r = rig(t, 'fake', clock);
  r.runner.others.set('192.168.10.1', '02:42:c0:a8:14:02');
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  await until('the warning', () => r.logs.some((l) => l.level === 40));
  const said = 'vlan office: the gateway\'s NIC eth2 (vlan lab, 02:42:c0:a8:14:02) answers ARP on eth1 for the gateway address 192.168.10.1: eth1 '
    + 'and eth2 are on one network segment, where each NIC of the gateway\'s answers for all of its addresses (Linux\'s default, arp_ignore=0), so a '
    + 'host may take the wrong NIC\'s MAC and have its packets dropped as forged (reason="spoofed"); start the gateway with --sysctl '
    + 'net.ipv4.conf.all.arp_ignore=1 --sysctl net.ipv4.conf.all.arp_announce=2 (README, "Which NIC answers ARP")';
  t.deepEqual(r.logs.filter((l) => /ARP|conflict/.test(l.msg)).map((l) => [l.level, l.msg]), [[40, said]]);
  t.like(r.logs.find((l) => l.level === 40), { vlan: 'office', interface: 'eth1', sharedWith: 'eth2', mac: '02:42:c0:a8:14:02' });
  const warnings = r.status().warnings;
  t.is(warnings.length, 1, warnings.join('\n'));
  t.is(warnings[0]!.replace(/ \(seen since [^)]*\)$/, ''), said);
  t.is(/ \(seen since ([^)]*)\)$/.exec(warnings[0]!)?.[1], new Date(clock.wallMs).toISOString(), 'the time of day it was first heard');
  // Not another device: no conflict is reported for it.
  await until('both probes', () => r.runner.events.filter((e) => e.startsWith('probe')).length === 2);
  await quiet(r);
  t.deepEqual(await r.series(), [{ vlan: 'lab', interface: 'eth2', mac: '', value: 0 }]);

  // Heard again at the next drift check: said once.
  clock.advance(6000);
  r.conflicts.recheck();
  await until('the second probe', () => r.runner.events.filter((e) => e === 'probe eth1 192.168.10.1').length === 2);
  await quiet(r);
  t.is(r.logs.filter((l) => l.level === 40).length, 1);

  // The sysctls set (each NIC answers for its own addresses): the next probe hears nobody, and the warning goes.
  r.runner.others.delete('192.168.10.1');
  clock.advance(6000);
  r.conflicts.recheck();
  await until('the line that it is over', () => r.logs.some((l) => /no longer answers/.test(l.msg)));
  t.deepEqual(r.logs.filter((l) => /no longer answers/.test(l.msg)).map((l) => [l.level, l.msg]), [
    [30, 'vlan office: eth2 (vlan lab) no longer answers ARP on eth1 for 192.168.10.1'],
  ]);
  t.deepEqual(r.status().warnings, []);
});

// The warning above names the other NIC by the network it carries. A reload that takes that network out of the config
// (or renames it) leaves the NIC in the namespace, still answering: a fresh start would find no warning (a NIC of none
// of the gateway's networks, above and below), but the running gateway kept saying "eth2 (vlan lab, …)" in /status
// for as long as it ran, of a VLAN it no longer had.
test('the other NIC\'s network taken out of the config by a reload: its shared-segment warning goes, not said of a VLAN that is gone', async (t) => {
  const clock = new FakeClock(Date.now());
  const r = rig(t, 'fake', clock);
  r.runner.others.set('192.168.10.1', '02:42:c0:a8:14:02'); // eth2, lab's NIC, answers office's probe
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  await until('the warning', () => r.status().warnings.length === 1);
  t.regex(r.status().warnings[0]!, /^vlan office: the gateway's NIC eth2 \(vlan lab, /);

  // A reload renames lab: the same NIC, another name for its network.
  const renamedText = labText.replace('  - name: lab\n', '  - name: bench\n');
  r.supervisor.replaceConfig({ path: 'gateway.yaml', text: renamedText, config: parseConfigText(renamedText, 'lab.yaml'), templates });
  const passes = () => r.logs.filter((l) => /^reconciled/.test(l.msg)).length;
  await until('the rename\'s pass', () => passes() === 2);
  t.deepEqual(r.status().warnings.map((w) => /^vlan office: the gateway's NIC eth2 \(([^,]*),/.exec(w)?.[1]), ['vlan bench'], r.status().warnings.join('\n'));

  // A reload takes bench out: eth2 stays in the namespace, answering, a NIC of none of the gateway's networks now.
  const withoutText = labText.replace(/ {2}- name: lab\n( {4}.*\n)+/, '');
  r.supervisor.replaceConfig({ path: 'gateway.yaml', text: withoutText, config: parseConfigText(withoutText, 'lab.yaml'), templates });
  await until('the removal\'s pass', () => passes() === 3);
  t.deepEqual(r.status().warnings, [], 'no warning of a network the gateway no longer has');
  t.deepEqual(r.logs.filter((l) => /no longer/.test(l.msg)).map((l) => [l.level, l.msg]), [
    [30, 'vlan office: eth2 is no longer the NIC of one of the gateway\'s networks (it was vlan bench\'s): its answers for 192.168.10.1 on eth1 are no longer warned of'],
  ]);
  // And the next drift check's probe, answered by eth2 again, says what it says of any such NIC, nothing more.
  clock.advance(6000);
  r.conflicts.recheck();
  await until('the second probe', () => r.runner.events.filter((e) => e === 'probe eth1 192.168.10.1').length === 2);
  await quiet(r);
  t.deepEqual(r.status().warnings, []);
  t.is(r.logs.filter((l) => l.level === 40).length, 1, 'the one warning, at the start');
});

// Docker replaced lab's NIC (a disconnect and connect; random MACs since Docker 25): eth2 again, another MAC. The
// warning was of the old MAC and goes, but its line said eth2 was "no longer the NIC of one of the gateway's networks".
test('the other NIC replaced under the same name with another MAC: its warning goes, and the line says what changed', async (t) => {
  const r = rig(t, 'fake');
  r.runner.others.set('192.168.10.1', '02:42:c0:a8:14:02'); // eth2, lab's NIC, answers office's probe
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  await until('the warning', () => r.status().warnings.length === 1);
  r.runner.ns.removeLink('eth2');
  r.runner.ns.addLink({ name: 'eth2', mac: '02:00:00:00:00:99', addresses: ['192.168.20.2/24'] });
  r.supervisor.trigger('netlink');
  await until('the pass', () => r.logs.filter((l) => /^reconciled/.test(l.msg)).length === 2);
  t.deepEqual(r.status().warnings, []);
  t.deepEqual(r.logs.filter((l) => l.level === 30 && l.sharedWith !== undefined).map((l) => l.msg), [
    'vlan office: eth2 (vlan lab) has another MAC now (02:00:00:00:00:99): the answers of 02:42:c0:a8:14:02 for 192.168.10.1 on eth1 are no longer warned of',
  ]);
});

// The same warning's own VLAN (office) moved or taken out by a reload: its entry went with no line, so the log's last
// word on it was the warning, for a gateway address the gateway no longer holds (a conflict's warning gets its end).
test('a VLAN whose probe another of the gateway\'s NICs answered, its gateway moved by a reload: a line says the warning is no longer watched', async (t) => {
  const r = rig(t, 'fake');
  r.runner.others.set('192.168.10.1', '02:42:c0:a8:14:02'); // eth2, lab's NIC, answers office's probe
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  await until('the warning', () => r.status().warnings.length === 1);
  const moved = { ...lab, vlans: lab.vlans.map((v) => (v.name === 'office' ? { ...v, gateway: '192.168.10.254' } : v)) };
  r.supervisor.replaceConfig({ path: 'gateway.yaml', text: labText, config: moved, templates });
  r.supervisor.trigger('reload');
  await until('the reload\'s pass', () => r.logs.filter((l) => l.msg === 'reconciled: changes applied').length === 2);
  t.deepEqual(r.status().warnings, []);
  t.deepEqual(r.logs.filter((l) => l.sharedWith !== undefined).map((l) => [l.level, l.msg.replace(/: eth1 and eth2 are on one .*/, '')]), [
    [40, 'vlan office: the gateway\'s NIC eth2 (vlan lab, 02:42:c0:a8:14:02) answers ARP on eth1 for the gateway address 192.168.10.1'],
    [30, 'vlan office: eth2 (vlan lab) answering ARP on eth1 for 192.168.10.1 is no longer watched: the gateway no longer holds 192.168.10.1 on eth1'],
  ]);
});

test('a NIC of the namespace that carries none of the gateway\'s networks (a veth peer left in it) answers a probe: no other device, no warning', async (t) => {
  // The 100-VLAN bench namespace keeps its veths' peers: each answers every probe there, harmlessly (no host sends
  // through it). Before the warning above, this was what every NIC of the gateway's own got too.
  const r = rig(t, 'fake', undefined, [{ name: 'vgwb1', mac: '02:00:00:00:00:33' }]);
  r.runner.others.set('192.168.10.1', '02:00:00:00:00:33');
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  await until('both probes', () => r.runner.events.filter((e) => e.startsWith('probe')).length === 2);
  await until('office probed', () => r.logs.some((l) => /probe told nothing/.test(l.msg)));
  await quiet(r);
  t.deepEqual(r.logs.filter((l) => /conflict|ARP/.test(l.msg)).map((l) => [l.level, l.msg]), [
    [30, 'address conflict probe told nothing: a NIC of the gateway\'s own answered (another of its NICs is on that network)'],
  ]);
  t.deepEqual(r.status().warnings, []);
  t.deepEqual(await r.series(), [{ vlan: 'lab', interface: 'eth2', mac: '', value: 0 }]);
});

test('a VLAN in conflict whose gateway a reload moves: a line says its conflict is no longer watched, and it goes', async (t) => {
  const r = rig(t, 'fake');
  r.runner.others.set('192.168.10.1', OTHER);
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  await until('the conflict', () => r.conflicts.conflicts.has('office'));
  const moved = { ...lab, vlans: lab.vlans.map((v) => (v.name === 'office' ? { ...v, gateway: '192.168.10.254' } : v)) };
  r.supervisor.replaceConfig({ path: 'gateway.yaml', text: labText, config: moved, templates });
  r.supervisor.trigger('reload');
  await until('the reload\'s pass', () => r.logs.filter((l) => l.msg === 'reconciled: changes applied').length === 2);
  t.deepEqual(r.logs.filter((l) => /address conflict/.test(l.msg)).map((l) => [l.level, l.msg]), [
    [40, 'address conflict on vlan office: another device (36:df:f8:37:10:31) answers ARP for the gateway address 192.168.10.1 on eth1 too; '
      + 'the VLAN\'s hosts send to whichever answered them last (the gateway keeps the address, as configured)'],
    [30, 'address conflict on vlan office is no longer watched: the gateway no longer holds 192.168.10.1 on eth1'],
  ]);
  t.deepEqual(r.status().warnings, []);
});

// 100 VLANs attached at once: a probe or an announce is a spawn, which holds the event loop a few milliseconds (the
// fork, and the wait for the child's exec), and the eight of each that started together kept a scrape waiting.
test('the probes and the announces start one per turn of the event loop, not all at once', async (t) => {
  const r = rig(t, 'fake');
  let turn = 0;
  let turning = true;
  const tick = () => {
    turn++;
    if (turning) setImmediate(tick);
  };
  setImmediate(tick);
  t.teardown(() => void (turning = false));
  const at = new Map<string, number>();
  const { run, start } = r.runner;
  r.runner.run = (argv, options) => {
    if (argv[0] === 'arping') at.set(`probe ${argv.at(-2)}`, turn);
    return run.call(r.runner, argv, options);
  };
  r.runner.start = (argv) => {
    if (argv[0] === 'arping') at.set(`announce ${argv.at(-2)}`, turn);
    return start.call(r.runner, argv);
  };
  r.supervisor.trigger('start');
  await r.supervisor.firstPass;
  await until('both probes', () => at.has('probe eth1') && at.has('probe eth2'));
  t.not(at.get('announce eth1'), at.get('announce eth2'), JSON.stringify([...at]));
  // Both announces went out (100 ms each) before either probe: the probes were queued together, started apart.
  t.not(at.get('probe eth1'), at.get('probe eth2'), JSON.stringify([...at]));
});
