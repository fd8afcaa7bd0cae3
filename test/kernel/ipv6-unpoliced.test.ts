/**
 * Kernel tier, IPv6 around the policy. The gateway programs IPv4 only. With the router namespace's
 * net.ipv6.conf.all.forwarding at 0 (a new namespace's and a container's default) nothing IPv6 is forwarded, and the
 * gateway's apply changes no IPv6 sysctl or address. With it at 1 (a user's --sysctl) and IPv6 addresses on the VLANs
 * and the uplink, IPv6 passes between the VLANs and to and from the uplink under `forwarding.default: drop`, which
 * the gateway cannot stop without writing ip6tables of its own (it does not: not its rule set). It says so instead, in
 * plan, apply, the supervisor's log and /status, until the sysctl is off or an ip6tables FORWARD DROP of the
 * operator's is in place.
 *
 * Here: one lab (`v…`), its VLANs and uplink given IPv6 addresses (ULA on the VLANs, documentation addresses on
 * the uplink side), as Docker's `--ipv6` networks give a container's NICs.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { loadConfig } from '../../src/config/load.js';
import type { LabTopology } from '../../src/lab/index.js';
import { labDown } from '../../src/lab/index.js';
import { ipv6ForwardingWarning, ipv6NicForwardingWarning } from '../../src/plan/warnings.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { GatewayProcess, killAllGateways, prepareBundle, waitFor, type Bundle, type StatusDocument } from '../helpers/supervisor.js';
import { tearDownAlways } from '../helpers/teardown.js';
import { buildLab, cli, exampleDocument, inNs, removeScratch, runner, waitForSettledAddresses, writeConfig } from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const name = uniqueLabName('v');
const FORWARDING = 'net.ipv6.conf.all.forwarding';

let topology: LabTopology | undefined;
let config = { path: '' };
let bundle: Bundle | undefined;

// The lab's IPv6 plan: office fd00:10::/64, lab fd00:20::/64, the uplink 2001:db8:113::/64 (router ::2, inet ::1).
const v6 = { office: { router: 'fd00:10::1', client: 'fd00:10::100' }, lab: { router: 'fd00:20::1', client: 'fd00:20::100' }, uplink: { router: '2001:db8:113::2', inet: '2001:db8:113::1' } };

test.before(async () => {
  if (!isRoot()) return;
  const doc = await exampleDocument();
  // Nothing between the VLANs, and (as always) nothing new from the uplink into them.
  config = await writeConfig('drop', { ...doc, forwarding: { default: 'drop' } });
  topology = await buildLab((await loadConfig(config.path)).config, name);
});

tearDownAlways('kill the gateway, remove the lab and the scratch configs', async () => {
  if (!isRoot()) return;
  await killAllGateways();
  await labDown(runner, name);
  await removeScratch();
  await bundle?.remove();
});

const sysctl = (value: string) => inNs(topology!.router, 'sysctl', '-q', '-w', `${FORWARDING}=${value}`);
const vlan = (n: string) => topology!.vlans.find((v) => v.name === n)!;

/** The router's IPv6 settings and addresses (the kernel's own, link-local included), as text to compare. */
async function ipv6State(): Promise<string> {
  await waitForSettledAddresses(topology!.router);
  const sysctls = (await inNs(topology!.router, 'sysctl', '-a')).split('\n').filter((l) => /^net\.ipv6\.conf\./.test(l) && !l.includes('stable_secret'));
  const addresses = (await runner.run(['ip', '-n', topology!.router, '-6', '-o', 'addr'])).stdout.split('\n').map((l) => l.replace(/\\.*/, '').trim());
  return [...sysctls, ...addresses].join('\n');
}

let ipv6Added = false;
/** IPv6 addresses on both ends of each VLAN and of the uplink, routes as Docker's --ipv6 networks and an upstream router give (once). */
async function addIpv6(): Promise<void> {
  if (ipv6Added) return;
  ipv6Added = true;
  const t = topology!;
  const add = (ns: string, address: string, dev: string) => runner.run(['ip', '-n', ns, 'addr', 'add', `${address}/64`, 'dev', dev, 'nodad']);
  await add(t.router, v6.uplink.router, t.uplink.routerInterface);
  await add(t.inet, v6.uplink.inet, t.uplink.inetInterface);
  for (const n of ['office', 'lab'] as const) {
    const v = vlan(n);
    await add(t.router, v6[n].router, v.routerInterface);
    await add(v.client.namespace, v6[n].client, v.client.interface);
    await runner.run(['ip', '-n', v.client.namespace, '-6', 'route', 'add', 'default', 'via', v6[n].router]);
    await runner.run(['ip', '-n', t.inet, '-6', 'route', 'add', n === 'office' ? 'fd00:10::/64' : 'fd00:20::/64', 'via', v6.uplink.router]);
  }
  await runner.run(['ip', '-n', t.router, '-6', 'route', 'add', 'default', 'via', v6.uplink.inet]);
}

/** One IPv6 ping from `ns` to `target`: whether it was answered. */
async function ping6(ns: string, target: string): Promise<boolean> {
  const result = await runner.run(['ip', 'netns', 'exec', ns, 'ping', '-6', '-n', '-q', '-c', '1', '-W', '1', target], { allowFailure: true });
  return result.exitCode === 0;
}

/**
 * Every IPv6 path through the router: between the VLANs both ways, a VLAN to the uplink side, and the uplink side into
 * a VLAN. The four pings go at once: each is its own echo to its own address, and a path that is closed costs its
 * ping's whole 1 s wait (one after the other, the 10 closed sets of this file waited 30 s).
 */
async function ipv6Paths(): Promise<Record<string, boolean>> {
  const office = vlan('office').client.namespace;
  const lab = vlan('lab').client.namespace;
  const [officeLab, labOffice, labUplink, uplinkOffice] = await Promise.all([
    ping6(office, v6.lab.client),
    ping6(lab, v6.office.client),
    ping6(lab, v6.uplink.inet),
    ping6(topology!.inet, v6.office.client),
  ]);
  return { 'office → lab': officeLab, 'lab → office': labOffice, 'lab → uplink': labUplink, 'uplink → office': uplinkOffice };
}
const all = (value: boolean) => ({ 'office → lab': value, 'lab → office': value, 'lab → uplink': value, 'uplink → office': value });

const plan = () => cli('plan', '--detailed-exitcode', '--netns', topology!.router, '--config', config.path);
const apply = () => cli('apply', '--netns', topology!.router, '--config', config.path);
const WARNING = `warning: ${ipv6ForwardingWarning(['ip', 'netns', 'exec', `vgwlab-${name}-router`])}`;

kernel(`IPv6 forwarding off: no IPv6 crosses the router, and the gateway's apply changes no IPv6 sysctl or address${NEEDS_ROOT}`, async (t) => {
  await sysctl('0');
  const before = await ipv6State();
  const applied = await apply();
  t.is(applied.code, 0, applied.stderr);
  t.notRegex(applied.stdout, /^warning:/m);
  t.is(await ipv6State(), before, 'the router\'s IPv6 sysctls and addresses are as they were');
  await addIpv6();
  t.deepEqual(await ipv6Paths(), all(false));
  t.is((await plan()).stdout.includes('warning:'), false);
});

kernel(`IPv6 forwarding on: IPv6 passes between the VLANs and the uplink under default drop, and plan and apply say so, naming the sysctl and both fixes${NEEDS_ROOT}`, async (t) => {
  await sysctl('1');
  try {
    t.deepEqual(await ipv6Paths(), all(true), 'the hole: none of the policy applies to IPv6');
    const lab = vlan('lab');
    const office = vlan('office');
    const ipv4 = await runner.run(['ip', 'netns', 'exec', lab.client.namespace, 'ping', '-n', '-q', '-c', '1', '-W', '1', office.client.address], { allowFailure: true });
    t.not(ipv4.exitCode, 0, 'while IPv4 lab → office is dropped');
    const planned = await plan();
    t.is(planned.code, 0, 'a warning is not a pending change');
    t.true(planned.stdout.split('\n').includes(WARNING), planned.stdout);
    const applied = await apply();
    t.is(applied.code, 0, applied.stderr);
    t.true(applied.stdout.split('\n').includes(WARNING), applied.stdout);
    t.is((await inNs(topology!.router, 'sysctl', '-n', FORWARDING)).trim(), '1', 'the gateway does not switch it off: not its sysctl');
    t.is((await runner.run(['ip', 'netns', 'exec', topology!.router, 'ip6tables-nft-save'])).stdout.includes('-A '), false, 'nor writes ip6tables');
  } finally {
    await sysctl('0');
  }
});

kernel(`IPv6 forwarding on behind an ip6tables FORWARD DROP of the operator's: IPv6 is stopped, and the gateway no longer warns${NEEDS_ROOT}`, async (t) => {
  await sysctl('1');
  const ip6tables = (...args: string[]) => inNs(topology!.router, 'ip6tables-nft', ...args);
  try {
    await ip6tables('-P', 'FORWARD', 'DROP');
    t.deepEqual(await ipv6Paths(), all(false));
    const planned = await plan();
    t.is(planned.code, 0);
    t.notRegex(planned.stdout, /^warning:/m);
    // A policy of the operator's that lets one path through is theirs: still no warning, and it is what passes.
    await ip6tables('-A', 'FORWARD', '-i', vlan('office').routerInterface, '-o', vlan('lab').routerInterface, '-j', 'ACCEPT');
    await ip6tables('-A', 'FORWARD', '-i', vlan('lab').routerInterface, '-o', vlan('office').routerInterface, '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT');
    t.deepEqual(await ipv6Paths(), { ...all(false), 'office → lab': true });
    t.notRegex((await plan()).stdout, /^warning:/m);
    // An ACCEPT of every packet ahead of them (a rule inserted to debug): the DROP policy sees no packet, and the warning is back.
    await ip6tables('-I', 'FORWARD', '1', '-j', 'ACCEPT');
    t.deepEqual(await ipv6Paths(), all(true));
    const opened = await plan();
    t.true(opened.stdout.split('\n').includes(WARNING), opened.stdout);
  } finally {
    await ip6tables('-F', 'FORWARD');
    await ip6tables('-P', 'FORWARD', 'ACCEPT');
    await sysctl('0');
  }
});

kernel(`the supervisor: IPv6 forwarding on is logged and in /status at the start, and goes from /status at the drift check after an ip6tables FORWARD DROP${NEEDS_ROOT}`, async (t) => {
  bundle = await prepareBundle();
  await sysctl('1');
  const ip6tables = (...args: string[]) => inNs(topology!.router, 'ip6tables-nft', ...args);
  const gateway = await GatewayProcess.start({ bundle: bundle.path, netns: topology!.router, config: config.path, schedule: '* * * * * *' });
  const warnings = async () => (JSON.parse((await gateway.get('/status')).body) as StatusDocument & { warnings?: string[] }).warnings ?? [];
  const warning = WARNING.slice('warning: '.length);
  try {
    await gateway.waitReady();
    await waitFor('the warning in the log', async () => gateway.logs.some((l) => l.level === 40 && l.msg === warning), 5000);
    t.deepEqual(await warnings(), [warning]);
    t.deepEqual(await ipv6Paths(), all(true));
    await ip6tables('-P', 'FORWARD', 'DROP');
    await waitFor('the warning gone from /status', async () => (await warnings()).length === 0, 5000);
    t.deepEqual(await ipv6Paths(), all(false));
    // Switched on again by someone (the DROP removed): back at the next check, and logged again.
    await ip6tables('-P', 'FORWARD', 'ACCEPT');
    await waitFor('the warning back in /status', async () => (await warnings()).includes(warning), 5000);
    t.is(gateway.logs.filter((l) => l.level === 40 && l.msg === warning).length, 2, 'said when it appeared, and again when it came back');
  } finally {
    await gateway.stop();
    await ip6tables('-P', 'FORWARD', 'ACCEPT');
    await sysctl('0');
  }
});

// Linux 6.17+: a NIC's own net.ipv6.conf.<nic>.force_forwarding forwards the IPv6 that comes in on it, with
// all.forwarding and all.force_forwarding at 0. The warning read those two alone: a VLAN's NIC set so routed its hosts'
// IPv6 to the other VLANs with no word.
const hasForceForwarding = existsSync('/proc/sys/net/ipv6/conf/all/force_forwarding');
const forceKernel = hasForceForwarding ? kernel : test.serial.skip;
forceKernel(`a VLAN NIC's own force_forwarding (all.* 0) forwards IPv6 that comes in on it to the other VLAN, and plan names the NIC; an ip6tables FORWARD DROP ends both${NEEDS_ROOT}`, async (t) => {
  const router = topology!.router;
  const office = vlan('office');
  const lab = vlan('lab');
  const force = (nic: string, value: string) => inNs(router, 'sysctl', '-q', '-w', `net.ipv6.conf.${nic}.force_forwarding=${value}`);
  // Echo requests reaching lab's client, counted there (a rule with no target counts and lets pass).
  const labIp6tables = (...args: string[]) => inNs(lab.client.namespace, 'ip6tables-nft', ...args);
  const ECHO = ['INPUT', '-p', 'ipv6-icmp', '--icmpv6-type', 'echo-request', '-s', v6.office.client];
  const echoesAtLab = async () => Number(/^\s*(\d+)/m.exec((await labIp6tables('-w', '-nvxL', 'INPUT')).split('\n').slice(2).join('\n'))?.[1] ?? 0);
  const ip6tables = (...args: string[]) => inNs(router, 'ip6tables-nft', ...args);
  const prefix = ['ip', 'netns', 'exec', `vgwlab-${name}-router`];
  await sysctl('0');
  await inNs(router, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.force_forwarding=0');
  await addIpv6(); // as the first test left them, when it ran
  const applied = await apply(); // and its rules, so that plan has nothing to change
  t.is(applied.code, 0, applied.stderr);
  await labIp6tables('-A', ...ECHO);
  try {
    t.deepEqual(await ipv6Paths(), all(false), 'all.* off: nothing');
    t.is(await echoesAtLab(), 0);
    t.notRegex((await plan()).stdout, /^warning:/m);

    await force(office.routerInterface, '1');
    // The requests office's hosts send cross to lab; lab's replies come in on a NIC that does not forward.
    t.false(await ping6(office.client.namespace, v6.lab.client));
    t.true(await echoesAtLab() > 0, 'office → lab: the echo request reached lab\'s host');
    t.deepEqual(await ipv6Paths(), all(false), 'no reply comes back');
    const planned = await plan();
    t.is(planned.code, 0, 'a warning is not a pending change');
    t.true(planned.stdout.split('\n').includes(`warning: ${ipv6NicForwardingWarning([office.routerInterface], false, prefix)}`), planned.stdout);

    // Both VLANs' NICs: IPv6 between them both ways; the uplink's NIC does not forward, so neither does anything through it.
    await force(lab.routerInterface, '1');
    t.deepEqual(await ipv6Paths(), { 'office → lab': true, 'lab → office': true, 'lab → uplink': false, 'uplink → office': false });
    const both = await plan();
    t.is(both.stdout.split('\n').filter((l) => l.startsWith('warning:')).length, 1, both.stdout);
    t.regex(both.stdout, new RegExp(`^warning: net\\.ipv6\\.conf\\.(${office.routerInterface}|${lab.routerInterface})\\.force_forwarding, net\\.ipv6\\.conf\\.(${office.routerInterface}|${lab.routerInterface})\\.force_forwarding are 1 `, 'm'));

    // The operator's policy: nothing passes, and no warning.
    await ip6tables('-P', 'FORWARD', 'DROP');
    t.deepEqual(await ipv6Paths(), all(false));
    t.notRegex((await plan()).stdout, /^warning:/m);
  } finally {
    await ip6tables('-P', 'FORWARD', 'ACCEPT');
    await force(office.routerInterface, '0');
    await force(lab.routerInterface, '0');
    await labIp6tables('-D', ...ECHO);
  }
});
