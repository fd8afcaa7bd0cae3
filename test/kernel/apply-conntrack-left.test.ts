/**
 * A one-shot `vlan-gateway apply` killed (Ctrl-C, a CI job's timeout, the OOM killer) while it cleared the UDP flows a
 * port forward it had just added leaves going to the gateway itself. The forward was written, the clear was not: the
 * next apply found the nat table as planned and cleared nothing, and a client that keeps sending from one port (a
 * WireGuard or SIP peer) never reached the forward's host. Only `run`'s start repaired it. The next apply clears them
 * now, and says so; an apply with nothing left to clear runs no conntrack at all (a no-op apply reads the tables and
 * nothing else).
 */
import test from 'ava';
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { dump as stringify, load as parse } from 'js-yaml';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { exampleLab, GatewayProcess, killProcessGroups, REPO, runner, sleep, waitFor } from '../helpers/supervisor.js';
import { heard, listeningUdp, sendUdp } from '../helpers/udp.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const PORT = 6102;
const CLIENT_PORT = 40102;

/** The applies started here and not yet ended (killed with their process group at the teardown). */
const running = new Set<number>();
const setup = exampleLab(test, 'kn', 'vgw-kn-apply-left-', { stopFirst: () => killProcessGroups(running) });
const { router } = setup;
const hold = () => join(setup.scratch, 'hold');
const held = () => join(setup.scratch, 'held');
const calls = () => join(setup.scratch, 'conntrack-calls');
const fail = () => join(setup.scratch, 'fail');

test.before(async () => {
  if (!isRoot()) return;
  const bin = join(setup.scratch, 'bin');
  await mkdir(bin);
  const real = (await execa('sh', ['-c', 'command -v conntrack'])).stdout.trim();
  // A conntrack that notes each call, and whose `-D` hangs while the file `hold` exists (saying so in `held`), and
  // fails while `fail` does.
  await writeFile(join(bin, 'conntrack'), `#!/bin/sh\necho "$*" >> '${calls()}'\n`
    + `case " $* " in *" -D "*) if [ -e '${fail()}' ]; then echo 'conntrack v1.4.7 (conntrack-tools): Operation failed: staged' >&2; exit 1; fi\n`
    + `  if [ -e '${hold()}' ]; then echo $$ > '${held()}'; exec sleep 600; fi;; esac\nexec '${real}' "$@"\n`);
  await chmod(join(bin, 'conntrack'), 0o755);
});

/** `vlan-gateway apply` in its own process group, with the conntrack above first on the PATH. */
function apply(config: string) {
  const child = execa(process.execPath, [setup.bundle.path, 'apply', '--config', config, '--netns', router()], {
    cwd: REPO,
    reject: false,
    timeout: 60_000,
    detached: true, // its own process group, killed whole
    stripFinalNewline: true,
    env: {
      LC_ALL: 'C',
      PATH: `${join(setup.scratch, 'bin')}:${process.env.PATH ?? ''}`,
      VLAN_GATEWAY_PLAN_CACHE: 'off',
      VLAN_GATEWAY_STATE_DIR: join(setup.scratch, 'state'),
    },
  });
  running.add(child.pid!);
  void child.finally(() => running.delete(child.pid!));
  return child;
}

/** The lab's configs without and with the UDP forward, and what the tests send and look at. */
async function setting() {
  const lab = setup.lab();
  const u = setup.topology.uplink;
  const example = parse(await readFile(join(REPO, 'examples', 'lab.yaml'), 'utf8')) as { portForwards: unknown[] };
  const without = join(setup.scratch, 'without.yaml');
  const withForward = join(setup.scratch, 'with.yaml');
  const env = { PATH: `${join(setup.scratch, 'bin')}:${process.env.PATH ?? ''}`, VLAN_GATEWAY_STATE_DIR: join(setup.scratch, 'state') };
  await writeFile(without, stringify(example));
  await writeFile(withForward, stringify({ ...example, portForwards: [...example.portForwards, { proto: 'udp', port: PORT, to: lab.client.address }] }));
  const send = (text: string) => sendUdp(runner, { namespace: setup.topology.inet, address: u.internetHost, port: CLIENT_PORT }, { address: u.routerAddress, port: PORT }, text);
  const entry = async () => (await runner.run(['ip', 'netns', 'exec', router(), 'conntrack', '-L', '-p', 'udp', '--orig-port-src', String(CLIENT_PORT)])).stdout;
  const toGateway = new RegExp(`dport=${PORT} \\[UNREPLIED\\] src=${u.routerAddress.replaceAll('.', '\\.')} `);
  const listening = (body: (received: string[]) => Promise<void>, mode: 'listen' | 'echo' = 'listen') =>
    listeningUdp({ namespace: lab.client.namespace, address: lab.client.address, port: PORT }, body, mode);
  return { without, withForward, env, send, entry, toGateway, listening };
}

const CLEARED = `vlan-gateway: cleared 1 UDP flow to ${PORT} that reached the gateway itself although the port is forwarded: `
  + 'left by an earlier apply or down that did not get to clear them';

kernel(`an apply killed while it cleared the flows a UDP forward left with the gateway: the next apply clears them, and says so${NEEDS_ROOT}`, async (t) => {
  const { without, withForward, send, entry, toGateway, listening } = await setting();
  const first = await apply(without);
  t.is(first.exitCode, 0, first.stderr);
  await send('before the forward'); // to the gateway itself, which has nothing on the port
  t.regex(await entry(), toGateway);

  // The forward added; the apply killed, with everything it started, while its `conntrack -D` runs.
  await writeFile(hold(), '');
  const killed = apply(withForward);
  await waitFor('the conntrack -D under way', async () => ((await readFile(held(), 'utf8').catch(() => '')) !== '' ? true : undefined), 30_000);
  process.kill(-killed.pid!, 'SIGKILL');
  t.is((await killed).signal, 'SIGKILL');
  await rm(hold());
  await send('while nobody clears it');
  t.regex(await entry(), toGateway, 'the forward is in the nat table, the flow still with the gateway');

  await listening(async (received) => {
    const second = await apply(withForward);
    t.is(second.exitCode, 0, second.stderr);
    t.regex(second.stdout, /^No changes: the namespace is in sync\.$/m, 'the nat table was as planned');
    t.is(second.stderr, CLEARED);
    await send('after the apply');
    await heard(received);
    t.deepEqual(received, ['after the apply']);
    t.notRegex(await entry(), toGateway);

    // Nothing left to clear: nothing said, and no conntrack run at all.
    await writeFile(calls(), '');
    const third = await apply(withForward);
    t.is(third.exitCode, 0, third.stderr);
    t.is(third.stderr, '');
    t.is(await readFile(calls(), 'utf8'), '', 'a no-op apply lists no conntrack table');
  });
});

// The clear failed (the tool there, but failing) used to leave the flows for good as well, with a warning to clear
// them by hand: the next apply tries again.
kernel(`an apply whose clear failed: the next apply clears the flows${NEEDS_ROOT}`, async (t) => {
  const { without, withForward, send, entry, toGateway, listening } = await setting();
  const first = await apply(without);
  t.is(first.exitCode, 0, first.stderr);
  await send('before the forward');
  t.regex(await entry(), toGateway);
  await writeFile(fail(), '');
  const failed = await apply(withForward);
  await rm(fail());
  t.is(failed.exitCode, 0, 'the rules are applied');
  t.regex(failed.stdout, new RegExp(`^warning: the UDP flows to ${PORT} \\(port forward added\\) could not be cleared: .*Operation failed: staged`, 'm'));
  t.regex(await entry(), toGateway);
  await listening(async (received) => {
    const again = await apply(withForward);
    t.is(again.exitCode, 0, again.stderr);
    t.is(again.stderr, CLEARED);
    await send('after the next apply');
    await heard(received);
    t.deepEqual(received, ['after the next apply']);
  });
});

// A supervisor that follows the killed apply in the namespace (the one-shot set-up, then `run`) does what the
// apply left: here the clears of a removed forward, which its own look at the forwarded ports at start does not
// cover, and whose flow (answered: established) kept reaching the old host though nothing forwards the port any more.
kernel(`a supervisor started after an apply killed while it cleared a removed forward's flows clears them, and says so${NEEDS_ROOT}`, async (t) => {
  const { without, withForward, env, send, listening } = await setting();
  const first = await apply(withForward);
  t.is(first.exitCode, 0, first.stderr);
  await listening(async (received) => {
    await send('through the forward');
    await waitFor('the forward\'s host to hear it', async () => (received.length === 1 ? true : undefined), 5000);
    await rm(held(), { force: true }); // an earlier test's
    await writeFile(hold(), '');
    const killed = apply(without);
    await waitFor('the conntrack -D under way', async () => ((await readFile(held(), 'utf8').catch(() => '')) !== '' ? true : undefined), 30_000);
    process.kill(-killed.pid!, 'SIGKILL');
    t.is((await killed).signal, 'SIGKILL');
    await rm(hold());
    await send('after the removal');
    await waitFor('the old host to hear it still', async () => (received.length === 2 ? true : undefined), 5000);
    t.deepEqual(received, ['through the forward', 'after the removal'], 'the forward is gone, its flow is not');

    const gateway = await GatewayProcess.start({ bundle: setup.bundle.path, netns: router(), config: without, env });
    try {
      await gateway.waitReady(30_000);
      const said = await gateway.waitForLog('the clear of what the apply left', (l) => /^cleared \d+ UDP flows? to /.test(l.msg), 20_000);
      t.is(said.msg, `cleared 1 UDP flow to ${PORT} that a port forward removed or changed had sent to its old host: left by an earlier apply or down that did not get to clear them`);
      await send('after the supervisor started');
      await sleep(300);
      t.deepEqual(received, ['through the forward', 'after the removal'], 'nothing reaches the old host any more');
      t.deepEqual(await readdir(join(setup.scratch, 'state')), [], 'nothing left to clear');
    } finally {
      await gateway.stop();
    }
  }, 'echo');
});
