/**
 * `vlan-gateway run` (the bundle users run) against the lab's router namespace, with real iptables, real netlink
 * events and real packets (ready within 1 s of process start is timed/ready.test.ts's): drift (a flushed chain, a
 * deleted jump, a removed gateway address, ip_forward switched off) repaired by the next scheduled check and counted
 * by kind; the netlink monitor restarted when it dies; SIGTERM / SIGINT exit 0 within 5 s leaving no process behind
 * and the dataplane in place, or removing it with --cleanup-on-exit. Two fixed bugs are pinned down at the end as
 * regression tests:
 * SIGTERM after an `ip monitor` restart still exits 0 (and --cleanup-on-exit still runs down), and a repaired
 * FORWARD jump keeps its ip_forward note, so --cleanup-on-exit still switches forwarding off.
 *
 * Timing assertions are the issue's bounds (loose ones here: exit within 5 s), measured on whatever load the machine
 * has; a measurement over the bound is taken once more before the test fails, and every figure is printed (t.log).
 */
import test, { type ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { dump as stringify, load as parse } from 'js-yaml';
import { listensToRouteEvents } from '../../src/observe/netlink-listening.js';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import {
  addressesOf, alive, EXAMPLE_GATEWAYS, exampleLab, GatewayProcess, iptablesSave, namespacePids, pingUntilReply,
  runner, sleep, waitFor, type LogLine,
} from '../helpers/supervisor.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const setup = exampleLab(test, 'v', 'vgw-supervisor-');
const { office, lab, router, dataplane, reset: resetRouter } = setup;
const { office: OFFICE_GATEWAY, lab: LAB_GATEWAY } = EXAMPLE_GATEWAYS;

const start = (extra: Partial<Parameters<typeof GatewayProcess.start>[0]> = {}) =>
  GatewayProcess.start({ bundle: setup.bundle.path, netns: router(), config: setup.configPath, ...extra });

/** Office's client can reach lab's client through the router (the gateway's FORWARD rules, addresses, sysctl). */
const officeReachesLab = () => pingUntilReply(office().client.namespace, lab().client.address, 5000);

/** The FORWARD jump's comment may carry a note ("vgw:hook-fwd-was-0": the gateway switched ip_forward on); the
 *  drift tests compare what routes packets, so they read it without the note. That a repaired jump keeps its note
 *  is the regression test's at the end ("a repaired FORWARD jump keeps the ip_forward memory"). */
const withoutJumpNote = (state: Awaited<ReturnType<typeof dataplane>>) => ({
  ...state, vgw: state.vgw.map((l) => l.replace(/"vgw:hook-[^"]*"/, '"vgw:hook"')),
});

/** Deletes the FORWARD jump as a person would: by its position in FORWARD (its comment may carry a note). */
async function deleteForwardJump(): Promise<void> {
  const rules = (await runner.run(['ip', 'netns', 'exec', router(), 'iptables', '-S', 'FORWARD'])).stdout.split('\n').filter((l) => l.startsWith('-A FORWARD '));
  const position = rules.findIndex((l) => / -j VGW-FORWARD$/.test(l)) + 1;
  if (position === 0) throw new Error(`no jump to VGW-FORWARD in FORWARD: ${rules.join(' | ')}`);
  await runner.run(['ip', 'netns', 'exec', router(), 'iptables', '-D', 'FORWARD', String(position)]);
}

let driftGateway: GatewayProcess | undefined;

/** Two gateways in one namespace would repair each other's drift: the other tests stop the drift tests' one. */
async function stopDriftGateway(): Promise<void> {
  if (driftGateway && !driftGateway.exit) await driftGateway.stop();
}

// ---- drift ----------------------------------------------------------------------------------------------------------

/** One gateway for the drift tests, checking every second. */
async function drifting(): Promise<GatewayProcess> {
  if (driftGateway && !driftGateway.exit) return driftGateway;
  driftGateway = await start({ schedule: '*/1 * * * * *' });
  await driftGateway.waitReady();
  return driftGateway;
}

const isRepair = (kind: string) => (l: LogLine) =>
  l.msg === 'reconciled: changes applied' && Array.isArray(l.drift) && (l.drift as string[]).includes(kind);

interface DriftCase {
  readonly kind: 'rules' | 'jump' | 'address' | 'sysctl';
  readonly damage: () => Promise<unknown>;
  /**
   * Which triggers may do the repair: the schedule; the stats collector (`drift`), whose reading checks our chains,
   * jumps and ip_forward too, when it reads first; netlink events for addresses.
   */
  readonly triggers: readonly string[];
}

async function driftIsRepaired(t: ExecutionContext, c: DriftCase): Promise<void> {
  const gateway = await drifting();
  // In sync first: the lab is fully applied and a pass found nothing to do.
  await gateway.waitForLog('an in-sync pass', (l) => l.msg === 'reconciled: in sync', 5000, gateway.logs.length);
  const healthy = await dataplane();
  t.is(healthy.forward, '1');

  const attempt = async (n: number): Promise<{ ms: number; line: LogLine }> => {
    const before = await gateway.metric('vlan_gateway_drift_repairs_total', { kind: c.kind });
    const statusBefore = (await gateway.status()).driftRepairs[c.kind] ?? 0;
    const from = gateway.logs.length;
    await c.damage();
    // Timed from the damage done: the command that does it (a process spawned into the namespace) is not the
    // gateway's time, and on a loaded machine it took up the bound's slack.
    const damagedAt = Date.now();
    const line = await gateway.waitForLog(`a pass repairing ${c.kind} drift`, isRepair(c.kind), 5000, from);
    const ms = Date.parse(line.time) - damagedAt;
    await waitFor('the dataplane as before', async () => JSON.stringify(withoutJumpNote(await dataplane())) === JSON.stringify(withoutJumpNote(healthy)), 3000)
      .catch(async (error: Error) => {
        throw new Error(`${error.message}: before ${JSON.stringify(healthy)}, now ${JSON.stringify(await dataplane())}`);
      });
    const after = await waitFor(`drift_repairs_total{kind="${c.kind}"} to move`, async () => {
      const v = await gateway.metric('vlan_gateway_drift_repairs_total', { kind: c.kind });
      return v > before ? v : undefined;
    }, 3000);
    t.is(after.value - before, 1, `one ${c.kind} repair counted`);
    t.is((await gateway.status()).driftRepairs[c.kind], statusBefore + 1, '/status counts it too');
    t.true(c.triggers.includes(String(line.trigger)), `repaired by a ${String(line.trigger)} pass`);
    t.log(`${c.kind} (attempt ${n}): repaired ${ms} ms after the damage by a ${String(line.trigger)} pass `
      + `(pass ${String(line.durationMs)} ms; changes: ${JSON.stringify(line.changes)})`);
    return { ms, line };
  };

  let { ms, line } = await attempt(1);
  // The next scheduled check: within one period (1 s) plus the repairing pass itself, plus 300 ms of slack
  // for the cron tick and the log line on a loaded machine.
  const bound = (l: LogLine) => 1000 + Number(l.durationMs ?? 0) + 300;
  if (ms > bound(line)) {
    t.log(`over the bound (${Math.round(bound(line))} ms): damaging once more`);
    await gateway.waitForLog('an in-sync pass', (l) => l.msg === 'reconciled: in sync', 5000, gateway.logs.length);
    ({ ms, line } = await attempt(2));
  }
  t.true(ms <= bound(line), `repaired after ${ms} ms; the next scheduled check is at most 1 s away, plus the pass`);
  const pingMs = await officeReachesLab();
  t.log(`office → lab answers again (${Math.round(pingMs)} ms to the first reply)`);
}

kernel(`drift: iptables -F on one of our chains is repaired by the next check, counted as kind "rules"${NEEDS_ROOT}`, async (t) => {
  await driftIsRepaired(t, {
    kind: 'rules',
    triggers: ['schedule', 'drift'],
    damage: () => runner.run(['ip', 'netns', 'exec', router(), 'iptables', '-F', 'VGW-FROM-10']),
  });
});

kernel(`drift: a deleted FORWARD jump is repaired by the next check, counted as kind "jump"${NEEDS_ROOT}`, async (t) => {
  await driftIsRepaired(t, {
    kind: 'jump',
    triggers: ['schedule', 'drift'],
    damage: deleteForwardJump,
  });
});

kernel(`drift: a removed gateway address is put back (netlink or the next check), counted as kind "address"${NEEDS_ROOT}`, async (t) => {
  await driftIsRepaired(t, {
    kind: 'address',
    triggers: ['schedule', 'netlink'],
    damage: () => runner.run(['ip', '-n', router(), 'addr', 'del', OFFICE_GATEWAY, 'dev', office().routerInterface]),
  });
});

kernel(`drift: ip_forward=0 is repaired by the next check, counted as kind "sysctl"${NEEDS_ROOT}`, async (t) => {
  await driftIsRepaired(t, {
    kind: 'sysctl',
    // The stats collector reads ip_forward too, and asks for a pass when it is off (sysctlsDrifted): when its reading
    // comes before the schedule's next check, that `drift` pass repairs it.
    triggers: ['schedule', 'drift'],
    damage: () => runner.run(['ip', 'netns', 'exec', router(), 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=0']),
  });
});

kernel(`with a collector reading more often than the schedule checks, passes plan from the tables they know, and the collector's next reading finds drift in them${NEEDS_ROOT}`, async (t) => {
  await stopDriftGateway();
  const gateway = await start({ schedule: '*/1 * * * * *', statsIntervalMs: 500 });
  try {
    await gateway.waitReady();
    const quiet = await gateway.waitForLog('a pass planning from the tables it knows', (l) => l.msg === 'reconciled: in sync' && l.tables === 'known', 8000);
    t.log(`a pass that read no table: ${String(quiet.durationMs)} ms`);
    await waitFor('/status to say so', async () => ((await gateway.status()).lastReconcile?.tables === 'known' ? true : undefined), 3000);
    const healthy = await dataplane();
    const from = gateway.logs.length;
    await runner.run(['ip', 'netns', 'exec', router(), 'iptables', '-F', 'VGW-FROM-10']);
    const damagedAt = Date.now(); // the flush done (its command's own time is not the gateway's)
    const line = await gateway.waitForLog('a pass repairing rules drift', isRepair('rules'), 5000, from);
    const ms = Date.parse(line.time) - damagedAt;
    t.is(line.tables, 'read', 'the repairing pass read the tables');
    await waitFor('the dataplane as before', async () => JSON.stringify(withoutJumpNote(await dataplane())) === JSON.stringify(withoutJumpNote(healthy)), 3000);
    t.log(`repaired ${ms} ms after the damage by a ${String(line.trigger)} pass (pass ${String(line.durationMs)} ms)`);
    // The collector reads every 500 ms: no later than the 1 s schedule would have found it, plus the pass and slack.
    t.true(ms <= 1000 + Number(line.durationMs ?? 0) + 300, `repaired after ${ms} ms`);
  } finally {
    await gateway.stop();
  }
});

const isMonitor = (p: { cmd: string }) => /^ip -o monitor\b/.test(p.cmd);

/**
 * Whether process `pid` listens to rtnetlink events (its socket bound to groups): an `ip monitor` that events reach from
 * now on. Its process is in `ps` a moment before that, longer on a busy machine; a change made in between is never told
 * to the supervisor (the product waits for the same sign before its start pass: netlink-listening.ts).
 */
const listensToNetlink = async (pid: number) => (await listensToRouteEvents(pid)) === true;

/** Kills the gateway's `ip monitor` child and waits for the supervisor to start a new one, listening. */
async function killMonitor(t: ExecutionContext, gateway: GatewayProcess): Promise<void> {
  const monitor = await waitFor('the ip monitor child', async () => (await gateway.descendants()).find(isMonitor), 3000);
  const from = gateway.logs.length;
  process.kill(monitor.value.pid, 'SIGKILL');
  const warned = await gateway.waitForLog('the restart warning', (l) => /^ip monitor /.test(l.msg), 5000, from);
  t.is(warned.msg, 'ip monitor was killed by a signal; restarting it', 'killed (SIGKILL), as it was');
  t.log(`restart logged: ${JSON.stringify(warned)}`);
  const { value: next } = await waitFor('a new ip monitor child', async () => (await gateway.descendants()).find((p) => isMonitor(p) && p.pid !== monitor.value.pid), 5000);
  await waitFor('the new ip monitor to listen', () => listensToNetlink(next.pid), 5000, 10);
}

kernel(`the ip monitor child is restarted when it dies, the restart is logged, and events work again${NEEDS_ROOT}`, async (t) => {
  await stopDriftGateway();
  const gateway = await start(); // the default schedule (30 s): a fast repair below can only come from netlink
  try {
    await gateway.waitReady();
    const from = gateway.logs.length;
    await killMonitor(t, gateway);
    // Events flow again: a removed gateway address comes back long before the 30 s schedule.
    const damagedAt = Date.now();
    await runner.run(['ip', '-n', router(), 'addr', 'del', OFFICE_GATEWAY, 'dev', office().routerInterface]);
    const line = await gateway.waitForLog('the address repair', isRepair('address'), 5000, from);
    t.is(line.trigger, 'netlink');
    t.log(`address repaired ${Date.parse(line.time) - damagedAt} ms after its removal, by a netlink-triggered pass`);
    t.true((await addressesOf(router(), office().routerInterface)).includes(OFFICE_GATEWAY));
  } finally {
    gateway.killGroup(); // how this one stops is the next test's subject
    await gateway.exited;
  }
});

/** A directory holding an `ip` that runs `ip … monitor …` only after `delay` seconds (as a busy machine may): first on the PATH. */
async function slowMonitorIp(delay: number): Promise<string> {
  const real = (await runner.run(['sh', '-c', 'command -v ip'])).stdout.trim();
  const dir = await mkdtemp(join(tmpdir(), 'vgw-slow-monitor-'));
  await writeFile(join(dir, 'ip'), `#!/bin/sh\nfor a in "$@"; do [ "$a" = monitor ] && { sleep ${delay}; break; }; done\nexec ${real} "$@"\n`, { mode: 0o755 });
  return dir;
}

// `ip monitor` listens a moment after it starts (longer on a busy machine). A pass that read the namespace in that
// moment (the start pass; the catch-up pass after a restart, run as the new monitor was spawned) and a change made
// after its read but before the subscription: nobody saw the change until the drift schedule (30 s by default), a
// NIC attached then left unrouted. Here the monitor listens seconds late: the changes made meanwhile are repaired
// as soon as it listens.
kernel(`an ip monitor slow to listen, at the start and after a restart: a change made before it listens is repaired once it does, not at the schedule${NEEDS_ROOT}`, async (t) => {
  await stopDriftGateway();
  const slow = await slowMonitorIp(2);
  // A drift check once a year: within the seconds the monitor takes to listen, only it can bring a repair.
  const gateway = await start({ env: { PATH: `${slow}:${process.env.PATH ?? ''}` }, schedule: '0 0 0 1 1 *' });
  // The monitor's processes: the slow ip (a shell, then ip itself), and the shell that ends it with the gateway.
  const monitors = async () => (await gateway.descendants()).filter((p) => / monitor link address route$/.test(p.cmd));
  const listening = async (among: ReadonlyArray<{ pid: number }>) => (await Promise.all(among.map((p) => listensToNetlink(p.pid)))).some(Boolean);
  const removeOfficeGateway = () => runner.run(['ip', '-n', router(), 'addr', 'del', OFFICE_GATEWAY, 'dev', office().routerInterface]);
  try {
    await gateway.waitReady();
    t.true((await addressesOf(router(), office().routerInterface)).includes(OFFICE_GATEWAY), 'the start pass applied');
    let from = gateway.logs.length;
    t.false(await listening(await monitors()), 'removed before the monitor listens');
    await removeOfficeGateway();
    let line = await gateway.waitForLog('the address repair, once the monitor listens', isRepair('address'), 10_000, from);
    t.is(line.trigger, 'netlink');
    t.true((await addressesOf(router(), office().routerInterface)).includes(OFFICE_GATEWAY));

    // The same after a restart: the catch-up pass waits for the new monitor to listen.
    const monitor = (await waitFor('the monitor listening', async () => {
      for (const p of await monitors()) if (await listensToNetlink(p.pid)) return p;
      return undefined;
    }, 10_000)).value;
    const before = new Set((await monitors()).map((p) => p.pid));
    from = gateway.logs.length;
    process.kill(monitor.pid, 'SIGKILL');
    await gateway.waitForLog('the restart warning', (l) => /^ip monitor /.test(l.msg), 5000, from);
    await waitFor('a new monitor started', async () => (await monitors()).some((p) => !before.has(p.pid)), 5000);
    await sleep(300); // the catch-up pass, had it run at the spawn, would be done
    t.false(await listening(await monitors()), 'removed before the new monitor listens');
    await removeOfficeGateway();
    line = await gateway.waitForLog('the address repair, once the new monitor listens', isRepair('address'), 10_000, from);
    t.is(line.trigger, 'netlink');
    t.true((await addressesOf(router(), office().routerInterface)).includes(OFFICE_GATEWAY));
  } finally {
    gateway.killGroup();
    await gateway.exited;
    await rm(slow, { recursive: true, force: true });
  }
});

// ---- stop -----------------------------------------------------------------------------------------------------------

/** Waits until none of `pids` runs any more (a zombie, not yet reaped by init, counts as gone). */
async function gone(pids: readonly number[]): Promise<number[]> {
  const running = (pid: number) => {
    if (!alive(pid)) return false;
    try {
      return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return false;
    }
  };
  try {
    await waitFor('the children to exit', async () => pids.every((p) => !running(p)), 2000, 50);
  } catch {
    // reported below
  }
  return pids.filter(running);
}

/** Stops the gateway with `signal` and checks: exit 0 within 5 s, nothing it started still runs. */
async function stopsCleanly(t: ExecutionContext, gateway: GatewayProcess, signal: NodeJS.Signals): Promise<void> {
  const children = await gateway.descendants();
  t.true(children.some((p) => /\bip -o monitor\b/.test(p.cmd)), `the monitor child runs: ${JSON.stringify(children)}`);
  t.not((await namespacePids(router())).length, 0, 'the monitor lives in the router namespace');
  const exit = await gateway.stop(signal, 15_000);
  t.log(`${signal}: exited ${exit.code ?? exit.signal} after ${Math.round(exit.ms)} ms; children before: ${children.map((c) => `${c.pid} ${c.cmd}`).join('; ')}`);
  t.is(exit.signal, null, `exited by itself, not killed by ${String(exit.signal)}`);
  t.is(exit.code, 0, gateway.stderr);
  t.true(exit.ms <= 5000, `exited ${Math.round(exit.ms)} ms after ${signal}; the bound is 5000 ms`);
  t.deepEqual(await gone(children.map((c) => c.pid)), [], 'no child process left behind');
  t.deepEqual(await namespacePids(router()), [], 'nothing of ours left in the router namespace (ip netns pids)');
  t.true(gateway.logs.some((l) => l.msg === 'stopped'), 'the stop is logged');
}

/** Runs `body` with a fresh gateway, and makes sure it is gone afterwards whatever happens. */
async function withGateway(extra: Parameters<typeof start>[0], body: (gateway: GatewayProcess) => Promise<void>): Promise<void> {
  await stopDriftGateway();
  const gateway = await start(extra);
  try {
    await gateway.waitReady();
    await body(gateway);
  } finally {
    if (!gateway.exit) {
      gateway.killGroup();
      await gateway.exited;
    }
  }
}

// The full render check (every template as if every NIC were attached) runs after a good start, not before it:
// a template that only breaks once the waiting VLAN's NIC arrives still stops the gateway with exit 2, a moment
// after /readyz, and the running rules stay as applied.
kernel(`a template that breaks only with every NIC attached: ready first, then exit 2 naming the template${NEEDS_ROOT}`, async (t) => {
  await stopDriftGateway();
  const dir = join(setup.scratch, 'late-check');
  await mkdir(join(dir, 'rules.d', 'filter'), { recursive: true });
  await writeFile(join(dir, 'rules.d', 'filter', 'forward.hbs'), '{{#unless waiting.length}}\n-j VGW-NOT-DECLARED\n{{/unless}}\n');
  const spare = '  - {name: spare, id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.1}\n';
  const text = (await readFile(setup.configPath, 'utf8')).replace(/^forwarding:/m, `${spare}forwarding:`);
  await writeFile(join(dir, 'gateway.yaml'), `${text}\nrules:\n  dir: rules.d\n`);
  const gateway = await start({ config: join(dir, 'gateway.yaml') });
  try {
    const readyMs = await gateway.waitReady();
    t.log(`ready after ${Math.round(readyMs)} ms with spare waiting`);
    const exit = await Promise.race([gateway.exited, sleep(5000).then(() => undefined)]);
    t.truthy(exit, `still running 5 s after ready: ${gateway.describeLogs()}`);
    t.is(exit!.code, 2);
    t.regex(gateway.stderr, /forward\.hbs/);
    t.regex(gateway.stderr, /VGW-NOT-DECLARED/);
    t.true((await dataplane()).vgw.length > 0, 'the rules applied at start are left in place');
  } finally {
    if (!gateway.exit) {
      gateway.killGroup();
      await gateway.exited;
    }
  }
});

// Outside a container (`run --netns` on a host, systemd's KillMode=process), no PID namespace ends a killed gateway's
// children: its `ip monitor` was reparented to init and ran for ever, one more per restart.
kernel(`SIGKILL of the gateway alone: its ip monitor ends too, not left running under init${NEEDS_ROOT}`, async (t) => {
  await stopDriftGateway();
  const gateway = await start();
  try {
    await gateway.waitReady();
    const { value: monitor } = await waitFor('the ip monitor child', async () => (await gateway.descendants()).find(isMonitor), 3000);
    gateway.signal('SIGKILL'); // the gateway alone, not its process group
    await gateway.exited;
    t.deepEqual(await gone([monitor.pid]), [], `the monitor (${monitor.pid}) still runs after its gateway was killed`);
  } finally {
    gateway.killGroup(); // its process group: whatever it left, the monitor included
    await gateway.exited;
  }
});

kernel(`SIGTERM: exit 0 within 5 s, no child left, the dataplane left as is (traffic keeps flowing)${NEEDS_ROOT}`, async (t) => {
  await withGateway({ schedule: '*/1 * * * * *' }, async (gateway) => {
    await sleep(1200); // let a scheduled pass and a stats read happen, so stop has something to interrupt
    const before = await dataplane();
    t.true(before.vgw.length > 0);
    await stopsCleanly(t, gateway, 'SIGTERM');
    t.deepEqual(await dataplane(), before, 'chains, jumps, addresses and ip_forward untouched');
    await officeReachesLab();
  });
});

/** Waits until the gateway holds `path` open (a FIFO config: its read has begun). */
async function opened(gateway: GatewayProcess, path: string): Promise<void> {
  await waitFor(`the gateway to open ${path}`, async () => {
    const fds = await readdir(`/proc/${gateway.pid}/fd`).catch(() => []);
    const targets = await Promise.all(fds.map((fd) => readlink(`/proc/${gateway.pid}/fd/${fd}`).catch(() => '')));
    return targets.includes(path);
  }, 15_000);
}

// Before the supervisor's own handlers are installed (the config being read, the port bound), the default action
// of SIGHUP and SIGTERM killed the process (exit 129, 143): a `docker stop` or a reload right after a start. The
// config is a FIFO, and the signals are sent while the gateway waits in its read, before the config is written:
// they are sure to arrive before its own handlers. (Sent after the config was written, as this test once did, they
// could land after them: the SIGHUP's reload then opened the FIFO again, waited for a writer for ever, and kept the
// stopped process alive, a failure of the test's making.)
kernel(`a SIGHUP and a SIGTERM while the start reads the config: it starts, then stops cleanly with exit 0${NEEDS_ROOT}`, async (t) => {
  await stopDriftGateway();
  const fifo = join(dirname(setup.configPath), 'gateway.fifo');
  await runner.run(['mkfifo', fifo]);
  // Opened for reading and writing, a FIFO does not wait for a partner: the gateway's open returns at once, and its
  // read waits until this end writes the config and closes.
  const writer = await open(fifo, 'r+');
  const gateway = await start({ config: fifo });
  try {
    await opened(gateway, fifo); // its start reading it
    gateway.child.kill('SIGHUP');
    gateway.child.kill('SIGTERM');
    await sleep(100); // handled (held) while the read still waits
    t.is(gateway.exit, undefined, `the signals killed it: ${gateway.stderr}`);
    await writer.writeFile(await readFile(setup.configPath));
    await writer.close();
    const exit = await Promise.race([gateway.exited, sleep(15_000).then(() => undefined)]);
    t.truthy(exit, `it exited; its last log lines:\n${gateway.describeLogs()}`);
    t.is(exit!.signal, null, `not killed by ${String(exit!.signal)}: ${gateway.stderr}`);
    t.is(exit!.code, 0, gateway.stderr);
    t.true(gateway.logs.some((l) => l.msg === 'stopping' && l.why === 'SIGTERM'), JSON.stringify(gateway.logs.map((l) => l.msg)));
  } finally {
    await writer.close().catch(() => undefined);
    if (!gateway.exit) {
      gateway.killGroup();
      await gateway.exited;
    }
    await rm(fifo, { force: true });
  }
});

// A config given as a pipe (--config <(envsubst < gateway.tmpl)) is there once: a SIGHUP's reload read it again and
// waited for a writer for ever, and the SIGTERM after it never ended the process. Now the SIGHUP is answered with a
// warning, and the stop goes through.
kernel(`a config given as a pipe: a SIGHUP says there is nothing to reload, and a SIGTERM still stops it${NEEDS_ROOT}`, async (t) => {
  await stopDriftGateway();
  const fifo = join(dirname(setup.configPath), 'pipe.fifo');
  await runner.run(['mkfifo', fifo]);
  const writer = await open(fifo, 'r+');
  const gateway = await start({ config: fifo });
  try {
    // What a FIFO holds is gone when the last process holding it open closes it: written once the gateway has it open.
    await opened(gateway, fifo);
    await writer.writeFile(await readFile(setup.configPath));
    await writer.close();
    await gateway.waitReady();
    gateway.signal('SIGHUP');
    const warned = await gateway.waitForLog('the pipe warning', (l) => /the config is a pipe/.test(l.msg));
    t.is(warned.why, 'SIGHUP');
    gateway.signal('SIGTERM');
    const exit = await Promise.race([gateway.exited, sleep(15_000).then(() => undefined)]);
    t.truthy(exit, `it exited; its last log lines:\n${gateway.describeLogs()}`);
    t.is(exit!.code, 0, gateway.stderr);
  } finally {
    await writer.close().catch(() => undefined);
    if (!gateway.exit) {
      gateway.killGroup();
      await gateway.exited;
    }
    await rm(fifo, { force: true });
  }
});

// Two supervisors on one namespace repair each other's "drift" for ever (with two configs, the policy flips every
// second). The second is refused before it touches anything, naming the first; the first goes on.
kernel(`a second run on the same namespace (another port) exits 1 naming the first, which goes on${NEEDS_ROOT}`, async (t) => {
  await withGateway({}, async (gateway) => {
    const before = await dataplane();
    const second = await start();
    const exit = await Promise.race([second.exited, sleep(15_000).then(() => undefined)]);
    if (!exit) second.killGroup();
    t.is(exit?.code, 1, second.stderr);
    t.regex(second.stderr, new RegExp(`another vlan-gateway run \\(pid ${gateway.child.pid}\\) already manages network namespace ${router()}`));
    t.deepEqual(await dataplane(), before, 'nothing touched');
    t.is((await gateway.get('/readyz')).status, 200, 'the first goes on');
  });
});

kernel(`SIGINT behaves as SIGTERM${NEEDS_ROOT}`, async (t) => {
  await withGateway({}, async (gateway) => {
    const before = await dataplane();
    await stopsCleanly(t, gateway, 'SIGINT');
    t.deepEqual(await dataplane(), before);
  });
});

kernel(`--cleanup-on-exit: SIGTERM removes our chains, jumps and gateway addresses, switches ip_forward back off, exits 0${NEEDS_ROOT}`, async (t) => {
  await stopDriftGateway();
  await resetRouter(); // forwarding off, as in a fresh container: the gateway switches it on, and so back off
  await withGateway({ extraArgs: ['--cleanup-on-exit'] }, async (gateway) => {
    t.is((await dataplane()).forward, '1');
    t.true((await dataplane()).office.includes(OFFICE_GATEWAY));
    await stopsCleanly(t, gateway, 'SIGTERM');
    const after = await dataplane();
    t.deepEqual(after.vgw, [], 'no VGW- chain or jump left');
    t.false(after.office.includes(OFFICE_GATEWAY), 'office gateway address removed');
    t.false(after.lab.includes(LAB_GATEWAY), 'lab gateway address removed');
    t.true(after.office.includes(`${office().routerAddress}/24`), 'Docker\'s own address stays');
    t.is(after.forward, '0', 'ip_forward was off before the gateway: off again');
    t.true(gateway.logs.some((l) => l.msg === 'stopping' && l.cleanup === true));
  });
});

kernel(`a restart finds in the plan cache what the run before it parsed and rendered (at its start, and at its stop after a reload): nothing parsed or rendered again, the same state${NEEDS_ROOT}`, async (t) => {
  const cache = join(setup.scratch, 'plan-cache');
  const env = { VLAN_GATEWAY_PLAN_CACHE: cache };
  /** A start into a namespace as a restarted container's (nothing of ours in it); `then` runs before SIGTERM. */
  const startOnce = async (then: (gateway: GatewayProcess) => Promise<void> = async () => undefined) => {
    await resetRouter();
    let result: { log: LogLine; state: Awaited<ReturnType<typeof dataplane>>; files: string[] } | undefined;
    await withGateway({ env }, async (gateway) => {
      const log = await gateway.waitForLog('the plan cache line', (l) => l.msg === 'plan cache after the start pass', 10_000);
      await officeReachesLab();
      result = { log, state: await dataplane(), files: (await readdir(cache)).sort() };
      await then(gateway);
      t.is((await gateway.stop('SIGTERM')).code, 0);
    });
    return result!;
  };
  const first = await startOnce();
  t.like(first.log, { config: 'parsed', rules: 'rendered', dir: cache });
  t.deepEqual(first.files.map((f) => f.replace(/-.*/, '')), ['config', 'desired'], 'the first start wrote what it parsed and rendered');
  const second = await startOnce();
  t.like(second.log, { config: 'cached', rules: 'cached' });
  t.deepEqual(second.files, first.files, 'nothing new written');
  t.deepEqual(second.state, first.state, 'the same chains, rules, addresses and ip_forward');

  // An edited file is parsed again; the rules are rendered again only when the config they come from changed.
  const original = await readFile(setup.configPath, 'utf8');
  try {
    await writeFile(setup.configPath, `${original}\n# a comment: the same config\n`);
    // While it runs, a reload to another config: at its stop the gateway keeps that config and its state.
    let reloaded: Awaited<ReturnType<typeof dataplane>> | undefined;
    const third = await startOnce(async (gateway) => {
      const from = gateway.logs.length;
      const example = parse(original) as Record<string, unknown>;
      await writeFile(setup.configPath, stringify({ ...example, forwarding: { default: 'accept', rules: [{ from: 'lab', to: 'office', proto: 'tcp', ports: 81, action: 'drop' }] } }));
      await gateway.waitForLog('the reload pass', (l) => l.trigger === 'reload' && l.msg === 'reconciled: changes applied', 5000, from);
      reloaded = await dataplane();
    });
    t.like(third.log, { config: 'parsed', rules: 'cached' });
    t.deepEqual(third.state, first.state);
    t.true(reloaded!.vgw.some((l) => /--dports? 81 .*-j DROP/.test(l)), 'the reload applied its rule');
    const fourth = await startOnce();
    t.like(fourth.log, { config: 'cached', rules: 'cached' }, 'the restart after the reload finds both kept at the stop');
    t.deepEqual(fourth.state, reloaded);
  } finally {
    await writeFile(setup.configPath, original);
  }
});

/*
 * Regression: execa (cleanup: true) loads signal-exit while a child runs and unloads it when none is left; its
 * SIGTERM listener re-raises the signal when it finds itself the only listener. After the `ip monitor` child was
 * restarted, signal-exit's listener came after the product's, and a `once` listener (removed before it runs) let
 * it re-raise SIGTERM mid-stop. The product now listens with `process.on`.
 */
const regression = isRoot() ? test.serial : test.serial.skip;
regression(`SIGTERM after an ip monitor restart still exits 0, and --cleanup-on-exit still runs down${NEEDS_ROOT}`, async (t) => {
  await withGateway({ extraArgs: ['--cleanup-on-exit'] }, async (gateway) => {
    await killMonitor(t, gateway);
    await sleep(500);
    const exit = await gateway.stop('SIGTERM', 15_000);
    t.log(`SIGTERM after a monitor restart: exit code ${String(exit.code)}, signal ${String(exit.signal)}, after ${Math.round(exit.ms)} ms; `
      + `last log: ${gateway.logs.at(-1)?.msg ?? ''}`);
    const vgw = (await dataplane()).vgw;
    t.is(exit.signal, null, 'exited by itself, not killed by the signal');
    t.is(exit.code, 0);
    t.deepEqual(vgw, [], '--cleanup-on-exit removed our chains');
  });
});

/*
 * Regression: the fact "the gateway switched ip_forward on, so `down` must switch it off" lives in the FORWARD
 * jump's comment (vgw:hook-fwd-was-0). When someone deletes that jump, the repair used to re-add it as plain
 * "vgw:hook" (ip_forward is 1 by then), losing the memory; the supervisor now carries it from pass to pass.
 */
regression(`a repaired FORWARD jump keeps the ip_forward memory: --cleanup-on-exit still switches forwarding off${NEEDS_ROOT}`, async (t) => {
  await stopDriftGateway();
  await resetRouter();
  await withGateway({ extraArgs: ['--cleanup-on-exit'], schedule: '*/1 * * * * *' }, async (gateway) => {
    const hook = async () => (await iptablesSave(router())).split('\n').find((l) => / -j VGW-FORWARD$/.test(l) && l.startsWith('-A FORWARD'));
    const original = await hook();
    const from = gateway.logs.length;
    await deleteForwardJump();
    await gateway.waitForLog('the jump repair', isRepair('jump'), 5000, from);
    const repaired = await hook();
    t.log(`FORWARD jump before: ${original ?? '-'}; after the repair: ${repaired ?? '-'}`);
    const exit = await gateway.stop('SIGTERM');
    t.is(exit.code, 0);
    const forward = (await dataplane()).forward;
    t.log(`ip_forward after --cleanup-on-exit: ${forward}`);
    t.is(repaired, original, 'the repaired jump is the jump we had');
    t.is(forward, '0', 'forwarding was off before the gateway: off again after cleanup');
  });
});
