/**
 * Hot-plug, as `docker network connect` / `disconnect` do it, against a running `vlan-gateway run` in the lab:
 * a third VLAN (guest, 192.168.30.0/24) is configured but has no NIC at start (waiting, vlan_up 0); a macvlan NIC
 * made in the lab's switch namespace and moved into the router namespace, with an address in 192.168.30.0/24, gets
 * the gateway address and its rules within 1 s (netlink, not the 30 s schedule) and vlan_up goes to 1; deleting
 * the NIC withdraws its rules and vlan_up goes to 0; office ↔ lab traffic never notices.
 */
import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { dump as stringify, load as parse } from 'js-yaml';
import { isRoot, NEEDS_ROOT } from '../../helpers/lab.js';
import {
  addressesOf, exampleLab, GatewayProcess, iptablesSave, ping, pingUntilReply, runner, series, sleep, vgwLines, waitFor,
} from '../../helpers/supervisor.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const setup = exampleLab(test, 'w', 'vgw-hotplug-');
const { router, office, lab } = setup;

const GUEST = { name: 'guest', id: 30, subnet: '192.168.30.0/24', gateway: '192.168.30.1' };
const GUEST_NIC = 'eth3';
const GUEST_DOCKER_ADDRESS = '192.168.30.2/24';
const GUEST_CLIENT = '192.168.30.100';

let gateway: GatewayProcess | undefined;
const guestNs = () => `${setup.topology.prefix}c30`; // inside the lab's prefix: `lab down` removes it too

// The lab is the write-up's two VLANs; the gateway's config adds a third whose NIC Docker has not attached yet.
test.before(async () => {
  if (!isRoot()) return;
  const example = parse(await readFile(setup.configPath, 'utf8')) as { vlans: unknown[] };
  await writeFile(setup.configPath, stringify({ ...example, vlans: [...example.vlans, GUEST] }));
  gateway = await GatewayProcess.start({ bundle: setup.bundle.path, netns: router(), config: setup.configPath, statsIntervalMs: 300 });
  await gateway.waitReady();
});

const sw = () => setup.topology.switch;
const ip = (ns: string, ...args: string[]) => runner.run(['ip', '-n', ns, ...args]);

const guestUp = async () => series(await gateway!.metrics(), 'vlan_gateway_vlan_up', { vlan: 'guest' });
const guestRules = async () => vgwLines(await iptablesSave(router())).filter((l) => new RegExp(`\\b${GUEST_NIC}\\b|VGW-FROM-30`).test(l));

/** Continuous office → lab pings while `body` runs (20 per second); returns how many were lost. */
async function underTraffic<T>(body: () => Promise<T>): Promise<{ result: T; sent: number; received: number }> {
  const pinging = ping(office().client.namespace, lab().client.address, 120, 0.05, 1); // 6 s
  const result = await body();
  const { sent, received } = await pinging;
  return { result, sent, received };
}

kernel(`a configured VLAN without a NIC is waiting: /status says so and vlan_up is 0${NEEDS_ROOT}`, async (t) => {
  const status = await gateway!.status();
  t.deepEqual(status.waiting, ['guest']);
  t.like(status.vlans.find((v) => v.name === 'guest'), { state: 'waiting', interface: null });
  t.like(status.vlans.find((v) => v.name === 'office'), { state: 'up', interface: office().routerInterface });
  const up = await guestUp();
  t.is(up.length, 1, JSON.stringify(up));
  t.is(up[0]?.value, 0);
  t.deepEqual(await guestRules(), [], 'no rule mentions the guest VLAN yet');
  await pingUntilReply(office().client.namespace, lab().client.address);

  // `vlan-gateway status` prints the same for a person.
  const printed = await execa(process.execPath, [setup.bundle.path, 'status', '--listen', `127.0.0.1:${gateway!.port}`]);
  t.log(printed.stdout);
  t.regex(printed.stdout, /ready, healthy/);
  t.regex(printed.stdout, /^guest\s+30\s+192\.168\.30\.0\/24\s+-\s+waiting/m);
  t.regex(printed.stdout, new RegExp(`^office\\s+10\\s+192\\.168\\.10\\.0/24\\s+${office().routerInterface}\\s+up`, 'm'));
});

kernel(`a NIC attached while running gets the gateway address and its rules within 1 s, and vlan_up 1${NEEDS_ROOT}`, async (t) => {
  // The VLAN's "switch" (a bridge), its macvlan parent (a veth into it), and a client on it, like lab.ts builds.
  await ip(sw(), 'link', 'add', 'br30', 'type', 'bridge');
  await ip(sw(), 'link', 'set', 'br30', 'up');
  await ip(sw(), 'link', 'add', 'p30', 'type', 'veth', 'peer', 'name', 'b30');
  await ip(sw(), 'link', 'set', 'b30', 'master', 'br30');
  await ip(sw(), 'link', 'set', 'b30', 'up');
  await ip(sw(), 'link', 'set', 'p30', 'up');
  await runner.run(['ip', 'netns', 'add', guestNs()]);
  await ip(guestNs(), 'link', 'set', 'lo', 'up');
  await ip(guestNs(), 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'c30', 'netns', sw());
  await ip(sw(), 'link', 'set', 'c30', 'master', 'br30');
  await ip(sw(), 'link', 'set', 'c30', 'up');
  await ip(guestNs(), 'addr', 'add', `${GUEST_CLIENT}/24`, 'dev', 'eth0');
  await ip(guestNs(), 'link', 'set', 'eth0', 'up');
  await ip(guestNs(), 'route', 'add', 'default', 'via', GUEST.gateway);

  const attempt = async (n: number) => {
    await ip(sw(), 'link', 'add', 'link', 'p30', 'name', 'm30', 'type', 'macvlan', 'mode', 'bridge');
    const from = gateway!.logs.length;
    const { result, sent, received } = await underTraffic(async () => {
      // docker network connect: move the macvlan in and rename it, give it the network's address, bring it up.
      const moved = performance.now();
      const waitedBefore = gateway!.runQueueWaitMs();
      await ip(sw(), 'link', 'set', 'm30', 'netns', router(), 'name', GUEST_NIC);
      await ip(router(), 'addr', 'add', GUEST_DOCKER_ADDRESS, 'dev', GUEST_NIC);
      const addressed = performance.now();
      await ip(router(), 'link', 'set', GUEST_NIC, 'up');
      await waitFor('the guest gateway address on the new NIC', async () => (await addressesOf(router(), GUEST_NIC)).includes(`${GUEST.gateway}/24`), 5000, 10);
      const addressAt = performance.now();
      await waitFor('rules for the new NIC', async () => (await guestRules()).length > 0, 5000, 10);
      const rulesAt = performance.now();
      // Time the gateway's main thread spent waiting for a CPU meanwhile (a busy machine): not the gateway's own.
      const waitedAfter = gateway!.runQueueWaitMs();
      const starved = waitedBefore !== undefined && waitedAfter !== undefined ? waitedAfter - waitedBefore : 0;
      const up = await waitFor('vlan_up{vlan="guest"} 1', async () => (await guestUp()).find((s) => s.value === 1), 5000, 20);
      return {
        address: addressAt - moved, afterDockerAddress: addressAt - addressed, rules: rulesAt - moved, starved,
        up: up.value, upMs: performance.now() - moved,
      };
    });
    t.log(`attempt ${n}: gateway address on ${GUEST_NIC} ${Math.round(result.address)} ms after the move `
      + `(${Math.round(result.afterDockerAddress)} ms after Docker's address), rules ${Math.round(result.rules)} ms, `
      + `vlan_up 1 ${Math.round(result.upMs)} ms (of which the gateway waited for a CPU ${Math.round(result.starved)} ms); `
      + `office → lab meanwhile: ${received}/${sent} answered`);
    const line = gateway!.logs.slice(from).find((l) => l.msg === 'reconciled: changes applied' && JSON.stringify(l.changes).includes(GUEST.gateway));
    t.log(`the pass that bound it: ${JSON.stringify(line)}`);
    t.is(line?.trigger, 'netlink', 'bound by a netlink-triggered pass');
    t.like(result.up.labels, { vlan: 'guest', interface: GUEST_NIC });
    t.is(received, sent, `office → lab pings during the attach: ${received}/${sent} answered`);
    return result.rules - result.starved;
  };

  let ms = await attempt(1);
  if (ms > 1000) {
    t.log('over the 1 s bound: detaching, pausing 2 s (a burst of load from elsewhere may pass) and attaching once more');
    await ip(router(), 'link', 'del', GUEST_NIC);
    await waitFor('the guest rules withdrawn', async () => (await guestRules()).length === 0, 5000);
    await sleep(2000);
    ms = Math.min(ms, await attempt(2));
  }
  t.true(ms <= 1000, `gateway address and rules ${Math.round(ms)} ms after the NIC was moved in (less the time the gateway waited for a CPU); the bound is 1000 ms`);

  const rules = await guestRules();
  t.true(rules.some((l) => l.includes(`-i ${GUEST_NIC}`)), rules.join('\n'));
  t.true(rules.some((l) => l.includes(`-o ${GUEST_NIC}`)), rules.join('\n'));
  const status = await gateway!.status();
  t.deepEqual(status.waiting, []);
  t.like(status.vlans.find((v) => v.name === 'guest'), { state: 'up', interface: GUEST_NIC });

  // Its rules work: the guest client reaches its gateway and, through it, the other VLANs.
  await pingUntilReply(guestNs(), GUEST.gateway);
  await pingUntilReply(guestNs(), office().client.address);
  await pingUntilReply(office().client.namespace, GUEST_CLIENT);
});

kernel(`deleting the NIC withdraws its rules and vlan_up goes to 0; office ↔ lab is undisturbed${NEEDS_ROOT}`, async (t) => {
  const { result, sent, received } = await underTraffic(async () => {
    const deleted = performance.now();
    await ip(router(), 'link', 'del', GUEST_NIC);
    const withdrawn = await waitFor('no rule mentioning the guest NIC', async () => (await guestRules()).length === 0, 5000, 10);
    const down = await waitFor('vlan_up{vlan="guest"} 0', async () => {
      const up = await guestUp();
      return up.length > 0 && up.every((s) => s.value === 0);
    }, 5000, 20);
    return { withdrawnMs: withdrawn.ms, downMs: performance.now() - deleted, downSeen: down.value };
  });
  t.log(`rules withdrawn ${Math.round(result.withdrawnMs)} ms after the NIC was deleted; vlan_up 0 after ${Math.round(result.downMs)} ms; `
    + `office → lab meanwhile: ${received}/${sent} answered`);
  t.true(result.withdrawnMs <= 1000, `rules withdrawn after ${Math.round(result.withdrawnMs)} ms`);
  t.is(received, sent, 'office → lab pings all answered while the guest NIC went away');
  const status = await gateway!.status();
  t.deepEqual(status.waiting, ['guest']);
  t.like(status.vlans.find((v) => v.name === 'guest'), { state: 'waiting', interface: null });
  t.is(status.lastReconcile?.result, 'success');
  await pingUntilReply(lab().client.namespace, office().client.address);
});

// A static route through a VLAN's NIC makes its network a source that NIC may forward from; the netlink monitor
// sees the route come and go, so the supervisor follows it without a schedule's wait.
kernel(`a route added through a VLAN's NIC joins its sources within 1 s, and leaves with the route${NEEDS_ROOT}`, async (t) => {
  const members = async () => (await runner.run(['ip', 'netns', 'exec', router(), 'ipset', 'list', 'VGW-ROUTED'], { allowFailure: true })).stdout;
  const added = performance.now();
  await ip(router(), 'route', 'add', '10.99.0.0/24', 'via', office().client.address, 'dev', office().routerInterface);
  try {
    await waitFor('the routed network in VGW-ROUTED', async () => (await members()).includes(`10.99.0.0/24,${office().routerInterface}`), 3000, 20);
    const ms = performance.now() - added;
    t.log(`route → set member: ${Math.round(ms)} ms`);
    t.true(ms < 1000, `${Math.round(ms)} ms`);
  } finally {
    await ip(router(), 'route', 'del', '10.99.0.0/24');
  }
  await waitFor('the set gone with the route', async () => !(await members()).includes('10.99.0.0/24'), 3000, 20);
  t.pass();
});

// A pass that fails before it writes (here: a set of one of our names that the gateway did not make, which stops
// every apply) still shows the NICs as it found them. It used to leave /status and vlan_up as the pass before it
// left them: a VLAN whose NIC Docker had just detached stayed "up", vlan_up 1, on a NIC that was not there.
kernel(`a pass that fails before writing still shows the NICs it found: a NIC gone meanwhile is not "up"${NEEDS_ROOT}`, async (t) => {
  const ipset = (...args: string[]) => runner.run(['ip', 'netns', 'exec', router(), 'ipset', ...args], { allowFailure: true });
  await ip(sw(), 'link', 'add', 'link', 'p30', 'name', 'm30', 'type', 'macvlan', 'mode', 'bridge');
  await ip(sw(), 'link', 'set', 'm30', 'netns', router(), 'name', GUEST_NIC);
  await ip(router(), 'addr', 'add', GUEST_DOCKER_ADDRESS, 'dev', GUEST_NIC);
  await ip(router(), 'link', 'set', GUEST_NIC, 'up');
  await waitFor('guest up', async () => (await guestUp()).find((s) => s.value === 1), 5000, 20);
  await waitFor('no VLAN waiting: VGW-WAITING gone', async () => (await ipset('list', '-n')).stdout.split('\n').every((l) => l !== 'VGW-WAITING'), 5000, 20);
  // The NIC's arrival made more than one event: a pass still queued would remove the set made below (not desired
  // while no VLAN waits) before the NIC goes. Wait until no pass has run or been running for a while.
  await waitFor('the gateway idle', async () => {
    const logged = gateway!.logs.length; // a pass logs at least one line (debug: "reconciled: in sync")
    const before = await gateway!.status();
    await sleep(400); // past the coalescing of requests (--min-interval, 100 ms)
    const after = await gateway!.status();
    return before.reconciling === null && after.reconciling === null && gateway!.logs.length === logged ? true : undefined;
  }, 10_000, 20);
  await ipset('create', 'VGW-WAITING', 'hash:ip'); // not as the gateway makes it: the next pass that needs it fails
  try {
    const from = gateway!.logs.length;
    await ip(router(), 'link', 'del', GUEST_NIC);
    await gateway!.waitForLog('the failed pass', (l) => l.level >= 50 && /VGW-WAITING exists as hash:ip/.test(JSON.stringify(l)), 5000, from);
    const status = await gateway!.status();
    t.is(status.lastReconcile?.result, 'failure');
    t.like(status.vlans.find((v) => v.name === 'guest'), { state: 'waiting', interface: null });
    const up = await guestUp();
    t.true(up.length > 0 && up.every((s) => s.value === 0), JSON.stringify(up));
  } finally {
    await ipset('destroy', 'VGW-WAITING');
  }
  await waitFor('a pass that succeeds once the set is gone', async () => (await gateway!.status()).lastReconcile?.result === 'success', 10_000, 50);
  t.deepEqual((await gateway!.status()).waiting, ['guest']);
});

// The uplink waits as a VLAN does (its NIC not attached yet, taken away, or down), and /metrics said nothing of it: no
// alert could tell that no VLAN reached the Internet. vlan_gateway_uplink_up follows it as vlan_up follows a VLAN.
kernel(`the uplink's NIC set down, taken away and given back: vlan_gateway_uplink_up follows it, as /status's uplink does${NEEDS_ROOT}`, async (t) => {
  const uplinkUp = async () => series(await gateway!.metrics(), 'vlan_gateway_uplink_up').map((s) => `${s.labels.interface}=${s.value}`).join(' ');
  const until = async (expected: string) => (await waitFor(`vlan_gateway_uplink_up ${expected}`, async () => {
    const now = await uplinkUp();
    return now === expected ? now : undefined;
  }, 5000, 20)).value;
  const { routerInterface, routerAddress, prefix, internetHost } = setup.topology.uplink;
  t.is(await uplinkUp(), `${routerInterface}=1`);
  await ip(router(), 'link', 'set', routerInterface, 'down');
  t.is(await until(`${routerInterface}=0`), `${routerInterface}=0`, 'down: no default route through it');
  t.regex((await gateway!.status()).uplink.note ?? '', /is down: no default route is set until it is up/);
  await ip(router(), 'link', 'set', routerInterface, 'up');
  t.is(await until(`${routerInterface}=1`), `${routerInterface}=1`);

  const park = `${setup.topology.prefix}park`; // inside the lab's prefix: `lab down` removes it too
  await runner.run(['ip', 'netns', 'add', park]);
  try {
    await ip(router(), 'link', 'set', routerInterface, 'netns', park);
    t.is(await until('=0'), '=0', 'waiting for a NIC: interface=""');
    t.like((await gateway!.status()).uplink, { interface: null });
    // Given back as Docker attaches a network: with its address; the gateway puts the default route back.
    await ip(park, 'link', 'set', routerInterface, 'netns', router());
    await ip(router(), 'addr', 'add', `${routerAddress}/${prefix}`, 'dev', routerInterface);
    await ip(router(), 'link', 'set', routerInterface, 'up');
    t.is(await until(`${routerInterface}=1`), `${routerInterface}=1`);
    await pingUntilReply(office().client.namespace, internetHost);
  } finally {
    await runner.run(['ip', '-n', park, 'link', 'set', routerInterface, 'netns', router()], { allowFailure: true });
    await runner.run(['ip', 'netns', 'del', park], { allowFailure: true });
  }
});

// A NIC that is up but has lost its carrier (the uplink's peer down, a cable pulled; a macvlan whose parent lost its
// link: `ip link` says NO-CARRIER, LOWERLAYERDOWN) routes nobody. vlan_gateway_uplink_up stayed 1 through it (it read
// the admin flag only), so VlanGatewayUplinkDown never fired. The carrier change is a netlink event: a pass follows,
// which reads it and writes nothing (the plan does not depend on carrier). The kernel's linkwatch tells a carrier
// loss up to 1 s late (about 0.5 s here): 2 s is what an alert may wait.
kernel(`the uplink's peer and a VLAN's switch port set down: uplink_up and vlan_up go to 0 and /status says why, within 2 s${NEEDS_ROOT}`, async (t) => {
  const { routerInterface, inetInterface } = setup.topology.uplink;
  const inet = setup.topology.inet;
  const within = async (what: string, metric: string, labels: Record<string, string>, value: number) => {
    const { ms } = await waitFor(what, async () => series(await gateway!.metrics(), metric, labels).some((s) => s.value === value), 2000, 20);
    t.log(`${what}: ${Math.round(ms)} ms`);
  };
  t.deepEqual(series(await gateway!.metrics(), 'vlan_gateway_uplink_up').map((s) => `${s.labels.interface}=${s.value}`), [`${routerInterface}=1`]);

  const logged = (level: number, msg: string, from: number) => gateway!.waitForLog(msg, (l) => l.level === level && l.msg === msg, 2000, from);
  let from = gateway!.logs.length;
  await ip(inet, 'link', 'set', inetInterface, 'down');
  try {
    await within('uplink_up 0', 'vlan_gateway_uplink_up', { interface: routerInterface }, 0);
    await logged(40, `the uplink ${routerInterface} has no carrier (cable out, peer or parent link down): the VLANs have no way out until it has`, from);
    const status = await gateway!.status();
    t.is(status.uplink.interface, routerInterface);
    t.is(status.uplink.note, `${routerInterface} has no carrier (cable out, peer or parent link down): the VLANs have no way out until it has`);
    t.deepEqual(status.lastReconcile?.changes, [], 'a carrier change writes nothing');
  } finally {
    from = gateway!.logs.length;
    await ip(inet, 'link', 'set', inetInterface, 'up');
  }
  await within('uplink_up 1 again', 'vlan_gateway_uplink_up', { interface: routerInterface }, 1);
  await logged(30, `the uplink ${routerInterface} has its carrier again`, from);
  t.is((await gateway!.status()).uplink.note, undefined);

  // The office NIC is a macvlan on the switch's veth; its peer (the bridge's port) down takes the carrier of both.
  const nic = office().routerInterface;
  from = gateway!.logs.length;
  await ip(sw(), 'link', 'set', office().parentPeer, 'down');
  try {
    await within('office vlan_up 0', 'vlan_gateway_vlan_up', { vlan: 'office' }, 0);
    await logged(40, `vlan office's NIC ${nic} has no carrier (cable out, peer or parent link down): its hosts cannot reach the gateway until it has`, from);
    t.like((await gateway!.status()).vlans.find((v) => v.name === 'office'), {
      state: 'down', interface: nic,
      note: `${nic} has no carrier (cable out, peer or parent link down): its hosts cannot reach the gateway until it has`,
    });
  } finally {
    await ip(sw(), 'link', 'set', office().parentPeer, 'up');
  }
  await within('office vlan_up 1 again', 'vlan_gateway_vlan_up', { vlan: 'office' }, 1);
  t.like((await gateway!.status()).vlans.find((v) => v.name === 'office'), { state: 'up' });
  await pingUntilReply(office().client.namespace, setup.topology.uplink.internetHost);
});
