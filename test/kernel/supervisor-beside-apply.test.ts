/**
 * `apply` and `down` beside a running supervisor (`docker exec gw vlan-gateway down` while the container's `run`
 * works). The supervisor puts back whatever differs from its config at its next check: an `apply` of another config
 * lasted seconds, and a `down` left the VLANs routed with no policy at all until then (in a container ip_forward
 * stays on: Docker's --sysctl set it, not the gateway). Both are now refused, changing nothing, and say what to do.
 * The other way round, a supervisor started while an `apply` writes waits for it before its start pass.
 */
import test from 'ava';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { InstanceLock, namespaceInode, WRITE_LOCK_TIMEOUT_MS, WriteLock } from '../../src/cli/instance-lock.js';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { runMain } from '../helpers/main.js';
import { bareNamespace, GatewayProcess, iptablesSave, REPO, sleep, vgwLines } from '../helpers/supervisor.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const { namespace, bundle } = bareNamespace(test, 'b');
const example = join(REPO, 'examples', 'lab.yaml');
const noNat = join(REPO, 'test', 'fixtures', 'nat-none.yaml');


kernel(`apply and down beside a running supervisor are refused, naming it, and change nothing${NEEDS_ROOT}`, async (t) => {
  // A bare namespace: the example's NICs are not there, so the VLANs wait; the start pass writes the policy chains.
  const gateway = await GatewayProcess.start({ bundle: bundle().path, netns: namespace, config: example });
  try {
    await gateway.waitReady();
    const before = vgwLines(await iptablesSave(namespace));
    t.true(before.length > 0, 'the supervisor wrote its chains');

    const apply = await runMain('apply', '--netns', namespace, '--config', noNat);
    t.is(apply.code, 1);
    t.is(apply.stderr.trim(), `vlan-gateway: vlan-gateway run (pid ${gateway.pid}) manages network namespace ${namespace} and would undo this apply at its next check: change its config file instead: it applies a change within a second (or on SIGHUP); nothing was changed`);
    const down = await runMain('down', '--netns', namespace, '--config', example);
    t.is(down.code, 1);
    t.regex(down.stderr, new RegExp(`run \\(pid ${gateway.pid}\\) manages network namespace ${namespace} and would undo this down at its next check: stop it first .*nothing was changed`));
    t.deepEqual(vgwLines(await iptablesSave(namespace)), before, 'the tables are as the supervisor left them');

    const plan = await runMain('plan', '--netns', namespace, '--config', example, '--detailed-exitcode');
    t.is(plan.code, 0, `plan reads and does not write, so it still runs: ${plan.stderr}`);
  } finally {
    await gateway.stop();
  }
  const down = await runMain('down', '--netns', namespace, '--config', example);
  t.is(down.code, 0, `with the supervisor stopped, down runs: ${down.stderr}`);
  t.deepEqual(vgwLines(await iptablesSave(namespace)), []);
});

kernel(`a supervisor started while an apply writes waits for it before its start pass${NEEDS_ROOT}`, async (t) => {
  // This test process plays the apply: it holds the namespace's write lock as `apply` does while it writes.
  const writer = await WriteLock.wait(namespace, { timeoutMs: WRITE_LOCK_TIMEOUT_MS, onWait: () => undefined });
  const gateway = await GatewayProcess.start({ bundle: bundle().path, netns: namespace, config: example });
  try {
    // It says what it waits for (a fixed 2 s stood here: a start slowed past it by a loaded machine would fail the test).
    await gateway.waitForLog('the wait', (l) => l.level === 40
      && /^waiting for another vlan-gateway apply or down \(pid \d+\) to finish with network namespace /.test(String(l.msg)), 15_000);
    await sleep(500); // time for a start pass that did not wait to write
    t.is(gateway.exit, undefined, `it waits, it does not fail: ${gateway.stderr}`);
    t.deepEqual(vgwLines(await iptablesSave(namespace)), [], 'nothing written beside the apply');
    await writer.release();
    await gateway.waitReady();
    t.true(vgwLines(await iptablesSave(namespace)).length > 0, 'once the apply is done, the start pass writes');
  } finally {
    await writer.release();
    await gateway.stop();
    await runMain('down', '--netns', namespace, '--config', example);
  }
});

kernel(`a supervisor stopped while it waits for an apply exits at once, having written nothing${NEEDS_ROOT}`, async (t) => {
  const writer = await WriteLock.wait(namespace, { timeoutMs: WRITE_LOCK_TIMEOUT_MS, onWait: () => undefined });
  const gateway = await GatewayProcess.start({ bundle: bundle().path, netns: namespace, config: example, extraArgs: ['--cleanup-on-exit'] });
  try {
    await gateway.waitForLog('the wait', (l) => /^waiting for another vlan-gateway apply or down/.test(String(l.msg)));
    const stopped = await gateway.stop('SIGTERM', 5000);
    t.deepEqual([stopped.code, stopped.signal], [0, null], `a stop signal ends the wait: ${gateway.stderr}\n${gateway.describeLogs()}`);
    t.true(stopped.ms < 3000, `it stopped in ${Math.round(stopped.ms)} ms, not once the apply was done`);
    t.deepEqual(vgwLines(await iptablesSave(namespace)), [], 'nothing written beside the apply');
  } finally {
    await writer.release();
    await gateway.stop();
  }
});

kernel(`an apply that stalls as it asks for the supervisor (a loaded machine) still finds it${NEEDS_ROOT}`, async (t) => {
  // This test process holds the supervisor's lock, and plays the apply that asks who holds it.
  const lock = await InstanceLock.take(namespace);
  const setTimeout = Socket.prototype.setTimeout;
  try {
    t.is(await InstanceLock.holder(namespace), String(process.pid));
    // The asking process is not scheduled for 1.2 s just after it connects: its one-second timer then fires before
    // it sees the connection made. Nobody answering in time is not nobody there.
    Socket.prototype.setTimeout = function (this: Socket, ...args: Parameters<Socket['setTimeout']>) {
      const socket = setTimeout.apply(this, args);
      const until = Date.now() + 1200;
      while (Date.now() < until); // stalled
      return socket;
    };
    const stalled = await InstanceLock.holder(namespace);
    Socket.prototype.setTimeout = setTimeout;
    t.not(stalled, undefined, 'the supervisor is there: the apply must refuse');
  } finally {
    Socket.prototype.setTimeout = setTimeout;
    await lock.release();
  }
  t.is(await InstanceLock.holder(namespace), undefined, 'released: nobody holds it');
});

// Anyone can connect to an abstract socket. One who connected to the supervisor's lock and reset the connection
// before its answer (EPIPE or ECONNRESET on the holder's side, with no handler) ended the supervisor: shown with a
// user without any privilege against `run --netns`, which binds its lock in the machine's own namespace.
kernel(`a supervisor is not ended by askers of its lock that reset the connection${NEEDS_ROOT}`, async (t) => {
  const gateway = await GatewayProcess.start({ bundle: bundle().path, netns: namespace, config: example });
  try {
    await gateway.waitReady();
    const name = `vlan-gateway-run-${await namespaceInode(namespace)}`;
    const script = `const net = require('node:net'); let n = 0;
      const ask = () => { const s = net.createConnection({ path: '\\0' + process.argv[1] });
        s.on('connect', () => s.destroy()); s.on('error', () => undefined); s.on('close', () => (++n < 2000 ? ask() : process.exit(0))); };
      ask();`;
    await execa('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, '-e', script, name]);
    await sleep(500);
    t.is(gateway.exit, undefined, `the supervisor still runs: ${gateway.stderr}`);
    t.is(await InstanceLock.holder(namespace), String(gateway.pid), 'and still holds its lock');
  } finally {
    await gateway.stop();
    await runMain('down', '--netns', namespace, '--config', example);
  }
});

/**
 * The locks are abstract sockets, which have no owner: on a host, where `run --netns` and `apply --netns` bind
 * theirs in the machine's own namespace, any local user could bind a lock's name first and answer any pid. `run`
 * then refused to start, naming the pid the squatter chose ("another vlan-gateway run (pid 1) already manages …;
 * stop it first"), and every `apply` waited 60 s and failed the same way. The holder is now looked up (not asked),
 * and another user's process is named as what it is, at once; it is no supervisor to refuse an apply beside.
 */
async function squat(names: readonly string[]): Promise<{ pid: number; stop(): Promise<void> }> {
  const script = `const net = require('node:net'); let n = 0;
    for (const name of JSON.parse(process.argv[1])) net.createServer((s) => s.end('1\\n')).listen({ path: '\\0' + name }, () => { if (++n === ${names.length}) console.log('listening'); });`;
  const child = execa('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, '-e', script, JSON.stringify(names)]);
  child.catch(() => undefined);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d) => String(d).includes('listening') && resolve());
    child.once('exit', () => reject(new Error(`the squatter exited: ${child.stderr}`)));
  });
  return { pid: child.pid!, stop: async () => void child.kill('SIGKILL') };
}

kernel(`another user's process on the supervisor's lock name is named as such, and an apply is not refused for it${NEEDS_ROOT}`, async (t) => {
  const name = `vlan-gateway-run-${await namespaceInode(namespace)}`;
  const squatter = await squat([name]);
  try {
    await t.throwsAsync(InstanceLock.take(namespace), {
      message: `cannot manage network namespace ${namespace}: the name of its lock (the abstract socket @${name}) is held by pid ${squatter.pid} `
        + '(node, uid 65534), a process of another user, not a vlan-gateway of uid 0: stop that process',
    });
    t.is(await InstanceLock.holder(namespace), undefined, 'no supervisor of ours');
    const apply = await runMain('apply', '--netns', namespace, '--config', example);
    t.is(apply.code, 0, apply.stderr);
  } finally {
    await squatter.stop();
    await runMain('down', '--netns', namespace, '--config', example);
  }
});

kernel(`another user's process on the write lock's name fails an apply at once, naming it${NEEDS_ROOT}`, async (t) => {
  const name = `vlan-gateway-write-${await namespaceInode(namespace)}`;
  const squatter = await squat([name]);
  try {
    const started = Date.now();
    const apply = await runMain('apply', '--netns', namespace, '--config', example);
    t.is(apply.code, 1);
    t.is(apply.stderr.trim(), `vlan-gateway: cannot write to network namespace ${namespace}: the name of its lock (the abstract socket @${name}) is held by `
      + `pid ${squatter.pid} (node, uid 65534), a process of another user, not a vlan-gateway of uid 0: stop that process; nothing was changed`);
    t.true(Date.now() - started < 10_000, 'not after a minute of waiting');
    t.deepEqual(vgwLines(await iptablesSave(namespace)), []);
  } finally {
    await squatter.stop();
  }
});
