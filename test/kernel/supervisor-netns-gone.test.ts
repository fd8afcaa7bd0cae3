/**
 * A `run --netns NAME` whose namespace is deleted under it (`ip netns del`, a lab or a test torn down). It used to
 * go on running for ever, every pass failing, and to keep its one-supervisor lock, which is named after the
 * namespace's inode: the kernel gives a deleted namespace's inode to the next namespace made, so the lock came to
 * name a new, unrelated namespace, whose own supervisor was refused ("another vlan-gateway run (pid N) already
 * manages network namespace NEW"). Now the supervisor stops (exit 1, saying why), and a holder asked about its
 * lock after its namespace went lets it go to the newcomer.
 *
 * The inode's reuse is the kernel's to choose; the tests give the locked namespace a second name instead (a bind
 * mount of the first, as `ip netns add` makes) and delete the first: the same inode, now under another name.
 */
import test from 'ava';
import { join } from 'node:path';
import { InstanceLock } from '../../src/cli/instance-lock.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { GatewayProcess, killAllGateways, prepareBundle, REPO, runner, sleep, waitFor, type Bundle } from '../helpers/supervisor.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const prefix = `vgwk-${uniqueLabName('g')}`;
const made: string[] = [];

let bundle: Bundle | undefined;

async function addNamespace(suffix: string): Promise<string> {
  const name = `${prefix}-${suffix}`;
  await runner.run(['ip', 'netns', 'add', name]);
  made.push(name);
  return name;
}

/** A second name for namespace `of`, as `ip netns add` makes one: a file in /run/netns with the namespace bind-mounted on it. */
async function alias(of: string, suffix: string): Promise<string> {
  const name = `${prefix}-${suffix}`;
  made.push(name);
  await runner.run(['touch', `/run/netns/${name}`]);
  await runner.run(['mount', '--bind', `/run/netns/${of}`, `/run/netns/${name}`]);
  return name;
}

const deleteNamespace = (name: string) => runner.run(['ip', 'netns', 'del', name], { allowFailure: true });

test.before(async () => {
  if (!isRoot()) return;
  bundle = await prepareBundle();
});

test.after.always('stop the gateways, delete the namespaces', async () => {
  if (!isRoot()) return;
  await killAllGateways();
  for (const name of made) await deleteNamespace(name);
  await bundle?.remove();
});

kernel(`a --netns lock whose namespace is gone is let go to the supervisor of the namespace that has its inode now${NEEDS_ROOT}`, async (t) => {
  const first = await addNamespace('a');
  const lock = await InstanceLock.take(first);
  let lost = 0;
  lock.watch(() => lost++, 60_000); // the periodic check out of the way: the newcomer's question is what is tested
  try {
    const second = await alias(first, 'b');
    const refused = await InstanceLock.take(second).then(() => 'taken', (error: Error) => error.message);
    t.regex(refused, new RegExp(`already manages network namespace ${second}`), 'while the first name is there, the holder keeps it');
    t.is(lost, 0);

    await deleteNamespace(first); // the namespace lives on under its second name, as a new one given the old inode
    const taken = await InstanceLock.take(second);
    t.is(lost, 1, 'the holder was told its namespace is gone');
    await taken.release();
  } finally {
    await lock.release();
  }
});

kernel(`a --netns lock checks its namespace by itself, and says when it is gone${NEEDS_ROOT}`, async (t) => {
  const name = await addNamespace('c');
  const lock = await InstanceLock.take(name);
  let lost = 0;
  lock.watch(() => lost++, 100);
  await sleep(300);
  t.is(lost, 0, 'there: nothing to say');
  await deleteNamespace(name);
  // Its check (every 100 ms) is a stat that answers on a later turn: waited for, not a fixed 400 ms, which a busy
  // machine could outlast; then three more periods in which it must not be said again.
  await waitFor('the loss said', async () => (lost > 0 ? true : undefined), 5000, 10);
  await sleep(300);
  t.is(lost, 1, 'gone: said once');
  await lock.release();
});

kernel(`run --netns stops (exit 1, saying why) when its namespace is deleted${NEEDS_ROOT}`, async (t) => {
  const name = await addNamespace('d');
  // A bare namespace: the example's NICs are not there, so every VLAN and the uplink wait; the start pass applies the rest.
  const gateway = await GatewayProcess.start({ bundle: bundle!.path, netns: name, config: join(REPO, 'examples', 'lab.yaml') });
  await gateway.waitReady();
  await deleteNamespace(name);
  const exit = await Promise.race([gateway.exited, sleep(10_000).then(() => undefined)]);
  if (!exit) gateway.killGroup();
  t.is(exit?.code, 1, `still running 10 s after its namespace was deleted; last logs:\n${gateway.describeLogs()}`);
  t.regex(gateway.stderr, new RegExp(`network namespace ${name} is gone`));
  t.true(gateway.logs.some((l) => l.msg === 'stopping' && l.cleanup === false), 'nothing to clean up in a namespace that is gone');
});
