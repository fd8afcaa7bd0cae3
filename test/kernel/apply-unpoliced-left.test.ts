/**
 * A container's start with ip_forward already on (Docker's --sysctl net.ipv4.ip_forward=1): what the namespace forwards
 * before the gateway's policy is there goes through with no policy, and conntrack keeps that verdict for as long as a
 * flow goes on. The pass that puts the policy in clears those flows once the tables are written (Plan.unpoliced). An
 * apply killed between the two (kill -9, the OOM killer, a `docker restart` of a container still starting) left
 * the tables as planned and the flows uncleared: the next apply found nothing to do, and a flow the policy denies (lab
 * to office here) went on being forwarded for good, answered and all. The next apply clears them now, and says so.
 *
 * The kill point is deterministic: a conntrack first on the PATH whose plain `-L` (the listing of that clear, after the
 * tables are in) hangs while the file `hold` exists, saying so in `held`.
 */
import test from 'ava';
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { dump as stringify, load as parse } from 'js-yaml';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { clientsKnowGatewayMac, exampleLab, GatewayProcess, inNs, killProcessGroups, REPO, runner, waitFor } from '../helpers/supervisor.js';
import { askUdp, udpResponder } from '../helpers/udp.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const ECHO_PORT = 7111;
const CLIENT_PORT = 40111;

/** The applies started here and not yet ended (killed with their process group at the teardown). */
const running = new Set<number>();
const setup = exampleLab(test, 'kp', 'vgw-kp-unpoliced-left-', { stopFirst: () => killProcessGroups(running) });
const { router } = setup;
const hold = () => join(setup.scratch, 'hold');
const held = () => join(setup.scratch, 'held');
/** The conntrack above first on the PATH, and the state directory of the scratch. */
const env = () => ({ PATH: `${join(setup.scratch, 'bin')}:${process.env.PATH ?? ''}`, VLAN_GATEWAY_PLAN_CACHE: 'off', VLAN_GATEWAY_STATE_DIR: join(setup.scratch, 'state') });

test.before(async () => {
  if (!isRoot()) return;
  const bin = join(setup.scratch, 'bin');
  await mkdir(bin);
  const real = (await execa('sh', ['-c', 'command -v conntrack'])).stdout.trim();
  await writeFile(join(bin, 'conntrack'), `#!/bin/sh\nif [ "$*" = "-L" ] && [ -e '${hold()}' ]; then echo $$ > '${held()}'; exec sleep 600; fi\nexec '${real}' "$@"\n`);
  await chmod(join(bin, 'conntrack'), 0o755);
  // The config: the example with lab → office dropped (the lab, built from the example, is the same).
  const example = parse(await readFile(setup.configPath, 'utf8')) as Record<string, unknown>;
  await writeFile(setup.configPath, stringify({ ...example, forwarding: { default: 'accept', rules: [{ from: 'lab', to: 'office', action: 'drop' }] } }));
  // A container's namespace: Docker's --sysctl net.ipv4.ip_forward=1, and its embedded DNS rule (as in every container
  // on a user-defined network), whose DNAT has conntrack track what the namespace forwards from the start.
  await inNs(router(), 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
  await inNs(router(), 'iptables', '-t', 'nat', '-N', 'DOCKER_OUTPUT');
  await inNs(router(), 'iptables', '-t', 'nat', '-A', 'OUTPUT', '-d', '127.0.0.11/32', '-j', 'DOCKER_OUTPUT');
  await inNs(router(), 'iptables', '-t', 'nat', '-A', 'DOCKER_OUTPUT', '-d', '127.0.0.11/32', '-p', 'udp', '--dport', '53', '-j', 'DNAT',
    '--to-destination', '127.0.0.11:53');
});

/** `vlan-gateway apply` (or down) in its own process group, with the conntrack above first on the PATH. */
function apply(verb: 'apply' | 'down' = 'apply') {
  const child = execa(process.execPath, [setup.bundle.path, verb, '--config', setup.configPath, '--netns', router()], {
    cwd: REPO,
    reject: false,
    timeout: 60_000,
    detached: true, // its own process group, killed whole
    stripFinalNewline: true,
    env: { LC_ALL: 'C', ...env() },
  });
  running.add(child.pid!);
  void child.finally(() => running.delete(child.pid!));
  return child;
}

kernel(`an apply killed after it put the policy in, before it cleared the flows forwarded without it: the next apply clears them, and says so${NEEDS_ROOT}`, async (t) => {
  const office = setup.office();
  const lab = setup.lab();
  // The hosts' ARP caches from before a restart.
  await clientsKnowGatewayMac(setup.topology, [office, lab]);
  const echo = udpResponder(runner, { namespace: office.client.namespace, address: office.client.address, port: ECHO_PORT });
  try {
    await new Promise<void>((resolve) => echo.onLine((line) => line === 'ready' && resolve()));
    const send = async (text: string) => askUdp(runner, { namespace: lab.client.namespace, address: lab.client.address, port: CLIENT_PORT }, { address: office.client.address, port: ECHO_PORT }, text);
    t.is(await send('before'), `${lab.client.address} before`, 'forwarded with no policy, answered');

    // The policy written, the apply killed with everything it started while it lists the flows to clear.
    await writeFile(hold(), '');
    const killed = apply();
    await waitFor('the conntrack -L under way', async () => ((await readFile(held(), 'utf8').catch(() => '')) !== '' ? true : undefined), 30_000);
    process.kill(-killed.pid!, 'SIGKILL');
    t.is((await killed).signal, 'SIGKILL');
    await rm(hold());
    t.regex(await inNs(router(), 'iptables-nft', '-S', 'FORWARD'), /-j VGW-FORWARD$/m, 'the policy is in');

    const again = await apply();
    t.is(again.exitCode, 0, again.stderr);
    t.regex(again.stdout, /^No changes: the namespace is in sync\.$/m, 'the tables were as planned');
    t.is(again.stderr, 'vlan-gateway: cleared 1 flow forwarded before the policy was in place: their next packets meet the policy and the NAT '
      + '(left by an earlier apply or start that did not get to clear them)');
    t.is(await send('after'), 'none', 'lab → office meets the policy: dropped');
    t.deepEqual(await readdir(join(setup.scratch, 'state')), [], 'nothing left to clear');

    // Nothing left: the next apply clears nothing, and says nothing of it.
    const third = await apply();
    t.is(third.exitCode, 0, third.stderr);
    t.notRegex(third.stdout, /cleared/);
    t.is(third.stderr, '');
  } finally {
    await echo.stop();
  }
});

// The same with the supervisor: its start pass (a container's start, ip_forward on) killed after it put the policy in,
// before it cleared the flows forwarded without it (a `docker restart` of a gateway still starting, the OOM killer).
// The next start found the policy in and cleared nothing; it clears them now, once ready, and says so.
kernel(`a supervisor whose start pass was killed before it cleared the flows forwarded without the policy: the next start clears them, and says so${NEEDS_ROOT}`, async (t) => {
  const office = setup.office();
  const lab = setup.lab();
  // The gateway down (if the earlier test left it up), forwarding left on as the container started: no policy.
  const down = await apply('down');
  t.is(down.exitCode, 0, down.stderr);
  t.is((await inNs(router(), 'sysctl', '-n', 'net.ipv4.ip_forward')).trim(), '1');
  await clientsKnowGatewayMac(setup.topology, [office, lab]);
  const echo = udpResponder(runner, { namespace: office.client.namespace, address: office.client.address, port: ECHO_PORT });
  try {
    await new Promise<void>((resolve) => echo.onLine((line) => line === 'ready' && resolve()));
    const send = async (text: string) => askUdp(runner, { namespace: lab.client.namespace, address: lab.client.address, port: CLIENT_PORT + 1 }, { address: office.client.address, port: ECHO_PORT }, text);
    t.is(await send('before'), `${lab.client.address} before`, 'forwarded with no policy, answered');

    await rm(held(), { force: true }); // the earlier test's
    await writeFile(hold(), '');
    const killed = await GatewayProcess.start({ bundle: setup.bundle.path, netns: router(), config: setup.configPath, env: env() });
    try {
      await waitFor('the conntrack -L under way', async () => ((await readFile(held(), 'utf8').catch(() => '')) !== '' ? true : undefined), 30_000);
    } finally {
      killed.killGroup();
    }
    await rm(hold());
    t.regex(await inNs(router(), 'iptables-nft', '-S', 'FORWARD'), /-j VGW-FORWARD$/m, 'the policy is in');

    const gateway = await GatewayProcess.start({ bundle: setup.bundle.path, netns: router(), config: setup.configPath, env: env() });
    try {
      await gateway.waitReady(30_000);
      const said = await gateway.waitForLog('the clear of what the killed start left', (l) => /forwarded before the policy was in place/.test(l.msg), 20_000);
      t.is(said.msg, 'cleared 1 flow forwarded before the policy was in place: their next packets meet the policy and the NAT '
        + '(left by an earlier apply or start that did not get to clear them)');
      t.is(await send('after'), 'none', 'lab → office meets the policy: dropped');
      t.deepEqual(await readdir(join(setup.scratch, 'state')), [], 'nothing left to clear');
    } finally {
      await gateway.stop();
    }
  } finally {
    await echo.stop();
  }
});
