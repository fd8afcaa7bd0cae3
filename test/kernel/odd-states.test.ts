/**
 * Kernel tier: odd but realistic states a Docker host leaves in the gateway's namespace, and what apply, plan, down
 * and the supervisor make of them. Rules of someone else's that refer to the gateway's chains or sets (a chain of
 * theirs jumping to one of ours, a `-m set --match-set VGW-…`, in the same rule set or in the other backend); a VLAN's
 * gateway address added by hand on another VLAN's NIC.
 *
 * One lab (the write-up's example), built by the product's lab builder; the CLI runs as a subprocess.
 */
import test from 'ava';
import { join } from 'node:path';
import type { Config } from '../../src/config/schema.js';
import { labDown, type LabTopology } from '../../src/lab/index.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { ping } from '../helpers/supervisor.js';
import { tearDownAlways } from '../helpers/teardown.js';
import {
  buildLab, cli, exampleDocument, FIXTURES, inNs, readState, removeScratch, runner, settledState, waitForSettledAddresses, writeConfig,
} from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const name = uniqueLabName('o');

type File = { path: string; config: Config };
let example: File;
let withoutOffice: File; // the example without VLAN 10 (office) and its port forward
let rejectedAfterFilter: File; // default drop (filter changes) + a nat template the kernel refuses at commit
let lab: LabTopology;

test.before(async () => {
  if (!isRoot()) return;
  const doc = await exampleDocument();
  example = await writeConfig('example', doc);
  withoutOffice = await writeConfig('without-office', {
    ...doc, vlans: (doc.vlans as Array<{ name: string }>).filter((v) => v.name !== 'office'), portForwards: [],
  });
  rejectedAfterFilter = await writeConfig('kernel-rejects-drop', {
    ...doc, forwarding: { default: 'drop' }, rules: { dir: join(FIXTURES, 'rules-kernel-rejects') },
  });
  lab = await buildLab(example.config, name);
});

tearDownAlways('remove the lab and the scratch configs', async () => {
  if (!isRoot()) return;
  await labDown(runner, name);
  await removeScratch();
});

const run = (command: 'apply' | 'plan' | 'down', file: File) => cli(command, '--netns', lab.router, '--config', file.path);

/** Runs `iptables-<backend> ARGS…` in the router's namespace. */
const iptables = (backend: 'nft' | 'legacy', ...args: string[]) => inNs(lab.router, `iptables-${backend}`, ...args);

// The kernel refuses to delete a chain a rule jumps to, and to destroy a set a rule matches. Before, the apply wrote
// and rolled back the whole round, saying "CHAIN_DEL failed (Device or resource busy): chain VGW-FROM-10" or "Set
// cannot be destroyed: it is in use by a kernel component", which named neither the rule nor where it was; plan
// showed nothing wrong, and down failed the same way.
kernel(`a chain of someone's that jumps to one of ours, and a rule matching one of our sets: apply, plan and down name each rule and change nothing${NEEDS_ROOT}`, async (t) => {
  t.is((await run('apply', example)).code, 0);
  await iptables('nft', '-N', 'MINE');
  await iptables('nft', '-A', 'MINE', '-i', 'eth2', '-m', 'comment', '--comment', 'office hosts', '-j', 'VGW-FROM-10');
  await iptables('nft', '-A', 'FORWARD', '-j', 'MINE');
  await iptables('nft', '-t', 'nat', '-A', 'POSTROUTING', '-m', 'set', '--match-set', 'VGW-SUBNET-NICS', 'src,src', '-j', 'RETURN');
  const chainInUse = 'chain VGW-FROM-10 is to be removed, but a rule that is not the gateway\'s refers to it (filter table, chain MINE), and the kernel '
    + `keeps what a rule refers to: delete that rule (ip netns exec ${lab.router} iptables-nft -t filter -D MINE -i eth2 -m comment --comment "office hosts" -j VGW-FROM-10) `
    + 'or point it elsewhere, and run again';
  const setInUse = 'ipset VGW-SUBNET-NICS is to be removed, but a rule that is not the gateway\'s refers to it (nat table, chain POSTROUTING), and the '
    + `kernel keeps what a rule refers to: delete that rule (ip netns exec ${lab.router} iptables-nft -t nat -D POSTROUTING -m set --match-set VGW-SUBNET-NICS src,src -j RETURN) `
    + 'or point it elsewhere, and run again';
  try {
    const before = await settledState(lab.router);
    for (const command of ['apply', 'plan'] as const) {
      const result = await run(command, withoutOffice);
      t.is(result.code, 1, `${command}: ${result.stdout}`);
      t.is(result.stderr, `vlan-gateway: nothing was applied: ${chainInUse}`, command);
    }
    const down = await run('down', example);
    t.is(down.code, 1, down.stdout);
    t.is(down.stderr, `vlan-gateway: nothing was applied: ${chainInUse}\n${setInUse}`);
    t.deepEqual(await readState(lab.router, true), before, 'nothing written: rules with their counters, addresses, sets, ip_forward');

    // With the rules gone as the messages say, the same commands go through.
    await iptables('nft', '-D', 'MINE', '-i', 'eth2', '-m', 'comment', '--comment', 'office hosts', '-j', 'VGW-FROM-10');
    t.is((await run('apply', withoutOffice)).code, 0);
    await iptables('nft', '-t', 'nat', '-D', 'POSTROUTING', '-m', 'set', '--match-set', 'VGW-SUBNET-NICS', 'src,src', '-j', 'RETURN');
    const after = await run('down', example);
    t.is(after.code, 0, after.stderr);
    t.notRegex((await readState(lab.router)).nft, /VGW-/);
    t.is(await inNs(lab.router, 'ipset', 'list', '-n'), '');
  } finally {
    const undo = (...args: string[]) => iptables('nft', ...args).catch(() => undefined); // already gone where the test got that far
    await undo('-t', 'nat', '-D', 'POSTROUTING', '-m', 'set', '--match-set', 'VGW-SUBNET-NICS', 'src,src', '-j', 'RETURN');
    await undo('-F', 'MINE');
    await undo('-D', 'FORWARD', '-j', 'MINE');
    await undo('-X', 'MINE');
    await run('down', example);
  }
});

// A rule of the other backend is not in the tables the plan is made from: the set's destroy failed after the tables
// were written, saying only "in use by a kernel component". The sets before it in the script were destroyed and made
// again by the rollback: in reverse order (`ipset list` showed them swapped), and with every member's counters at
// zero (the per-pair accounting reset by a down that failed). Now a set still in use stops the destroy before any set
// goes, and the message says where to look. Traffic first, so that the counters are not zero.
kernel(`a rule in iptables-legacy matching one of our sets (ours in nft): down says where to look, and its rollback leaves everything as it was${NEEDS_ROOT}`, async (t) => {
  t.is((await run('apply', example)).code, 0);
  await iptables('legacy', '-A', 'FORWARD', '-m', 'set', '--match-set', 'VGW-SUBNETS', 'src', '-j', 'ACCEPT');
  try {
    const [office, labVlan] = [lab.vlans.find((v) => v.name === 'office')!, lab.vlans.find((v) => v.name === 'lab')!];
    t.is((await ping(office.client.namespace, labVlan.client.address)).received, 1);
    const before = await settledState(lab.router);
    t.regex(before.ipsets, /^add VGW-PAIRS-0 \S+ packets [1-9]/m, 'the accounting has counted something');
    const down = await run('down', example);
    t.is(down.code, 1, down.stdout);
    t.true(down.stderr.startsWith('vlan-gateway: down failed: removing ipset VGW-SUBNETS failed: ipset VGW-SUBNETS is still in use (1 reference) once '
      + 'the gateway\'s rules no longer use it, and the kernel keeps a set in use; '), down.stderr);
    t.true(down.stderr.includes(`a rule outside the gateway's chains still refers to it: in iptables-legacy (ip netns exec ${lab.router} iptables-legacy-save | grep -w VGW-SUBNETS), `
      + `or in a table the gateway does not write (ip netns exec ${lab.router} iptables-nft-save -t mangle, -t raw); delete that rule and run again\n(the steps already done were rolled back)`),
    down.stderr);
    t.deepEqual(await readState(lab.router, true), before, 'rules with their counters, addresses, the sets with their members\' counters, ip_forward');
  } finally {
    await iptables('legacy', '-D', 'FORWARD', '-m', 'set', '--match-set', 'VGW-SUBNETS', 'src', '-j', 'ACCEPT');
    await run('down', example);
  }
});

// The write-up's recipe is `ifconfig eth1 192.168.10.1`; after Docker named the NICs in another order, that puts the
// office gateway address on lab's NIC. The gateway preferred any NIC holding a VLAN's gateway address: it took lab's
// NIC for office, lab waited with its gateway address removed, and office's hosts (still on their own NIC) were
// dropped as forged. Both VLANs were cut off.
kernel(`a VLAN's gateway address added by hand on another VLAN's NIC does not move the VLAN there: both keep their NICs and route${NEEDS_ROOT}`, async (t) => {
  const [office, labVlan] = [lab.vlans.find((v) => v.name === 'office')!, lab.vlans.find((v) => v.name === 'lab')!];
  const stray = `${office.gateway}/${office.prefix}`;
  await inNs(lab.router, 'ip', 'addr', 'add', stray, 'dev', labVlan.routerInterface);
  try {
    const applied = await run('apply', example);
    t.is(applied.code, 0, applied.stderr);
    const nics = `vlan office (id 10, 192.168.10.0/24): on ${office.routerInterface} (2 NICs have addresses in 192.168.10.0/24 `
      + `(${[office.routerInterface, labVlan.routerInterface].sort().join(', ')}); using ${office.routerInterface})\n`
      + `vlan lab (id 20, 192.168.20.0/24): on ${labVlan.routerInterface}\n`;
    t.true(applied.stdout.startsWith(nics), applied.stdout);
    t.regex(await inNs(lab.router, 'ip', '-4', '-o', 'addr', 'show', 'dev', labVlan.routerInterface), new RegExp(` ${labVlan.gateway.replaceAll('.', '\\.')}/24 .*metric 7010`),
      'lab keeps its gateway address');
    const plan = await cli('plan', '--detailed-exitcode', '--netns', lab.router, '--config', example.path);
    t.is(plan.code, 0, plan.stdout);
    for (const [from, to] of [[office, labVlan], [labVlan, office]] as const) {
      const result = await ping(from.client.namespace, to.client.address);
      t.is(result.received, 1, `${from.name} → ${to.name}: ${result.output}`);
    }
  } finally {
    await inNs(lab.router, 'ip', 'addr', 'del', stray, 'dev', labVlan.routerInterface);
    await run('down', example);
  }
});

// `ip` takes a NIC's altname wherever it takes its name, so a config may pin a NIC by one. The gateway compared names
// alone: the VLAN and the uplink waited for NICs that were there (plan said "waiting for office0"), and the apply
// took the office gateway address away and cut every VLAN off the Internet. The rules must still name the NICs by
// their names: iptables' -i and -o match no altname.
kernel(`a VLAN and the uplink pinned by altnames of their NICs are bound to them: the rules name the NICs, and packets pass${NEEDS_ROOT}`, async (t) => {
  const [office, labVlan] = [lab.vlans.find((v) => v.name === 'office')!, lab.vlans.find((v) => v.name === 'lab')!];
  const altnames = [[office.routerInterface, 'office0'], [lab.uplink.routerInterface, 'wan0']] as const;
  const doc = await exampleDocument();
  const pinned = await writeConfig('altnames', {
    ...doc,
    uplink: { ...(doc.uplink as object), interface: 'wan0' },
    vlans: (doc.vlans as Array<{ name: string }>).map((v) => (v.name === 'office' ? { ...v, interface: 'office0' } : v)),
  });
  for (const [nic, altname] of altnames) await inNs(lab.router, 'ip', 'link', 'property', 'add', 'dev', nic, 'altname', altname);
  try {
    const applied = await run('apply', pinned);
    t.is(applied.code, 0, applied.stderr);
    t.true(applied.stdout.startsWith(`vlan office (id 10, 192.168.10.0/24): on ${office.routerInterface}\n`
      + `vlan lab (id 20, 192.168.20.0/24): on ${labVlan.routerInterface}\nuplink: on ${lab.uplink.routerInterface}\n`), applied.stdout);
    const plan = await cli('plan', '--detailed-exitcode', '--netns', lab.router, '--config', pinned.path);
    t.is(plan.code, 0, plan.stdout);
    const rules = (await readState(lab.router)).nft;
    t.regex(rules, new RegExp(`-o ${lab.uplink.routerInterface} .*-j MASQUERADE`));
    t.notRegex(rules, /office0|wan0/);
    for (const [from, to] of [[office, labVlan.client.address], [labVlan, office.client.address], [office, lab.uplink.internetHost]] as const) {
      const result = await ping(from.client.namespace, to);
      t.is(result.received, 1, `${from.name} → ${to}: ${result.output}`);
    }
  } finally {
    for (const [nic, altname] of altnames) await inNs(lab.router, 'ip', 'link', 'property', 'del', 'dev', nic, 'altname', altname);
    await run('down', example);
  }
});

// Linux allows "#" in a NIC's name, and iproute2 cuts an `ip -batch` line at it (a comment, even inside quotes: 6.1
// has no escape). A NIC renamed after an apply (`ip link set eth2 name of#1`) keeps the gateway address of ours, which
// the next pass removes: the batch line "address del 192.168.10.1/24 dev of#1" read as "dev of", and every apply
// and down failed with 'Cannot find device "of"' (rolled back), the stale address staying there.
//
// A name ending in a backslash is the same: iproute2 joins a batch line ending in "\\" with the next one. The line
// "address del 192.168.10.1/24 dev of\\" last in the batch made ip say "Missing continuation line" and exit 0 with
// nothing done: apply reported the address removed, and it stayed, at every pass.
for (const odd of ['of#1', 'of\\']) {
  kernel(`a gateway address of ours on a NIC renamed to ${JSON.stringify(odd)} is removed by apply and down${NEEDS_ROOT}`, async (t) => {
    const office = lab.vlans.find((v) => v.name === 'office')!;
    const rename = async (from: string, to: string) => {
      for (const argv of [['set', from, 'down'], ['set', from, 'name', to], ['set', to, 'up']]) await inNs(lab.router, 'ip', 'link', ...argv);
    };
    const addresses = async () => inNs(lab.router, 'ip', '-4', '-o', 'addr', 'show', 'dev', odd);
    t.is((await run('apply', example)).code, 0);
    await rename(office.routerInterface, odd);
    try {
      t.regex(await addresses(), new RegExp(` ${office.gateway.replaceAll('.', '\\.')}/24 .*metric 7010`), 'ours, there before the apply');
      const applied = await run('apply', example);
      t.is(applied.code, 0, applied.stderr);
      t.true(applied.stdout.split('\n').includes(`- address ${office.gateway}/24 on ${odd} (vlan office)`), applied.stdout);
      t.notRegex(await addresses(), new RegExp(` ${office.gateway.replaceAll('.', '\\.')}/`), 'removed');
      t.regex(await addresses(), / 192\.168\.10\.2\/24 /, 'Docker\'s address stays');
      // The same through down: the NIC renamed back, applied, renamed again.
      await rename(odd, office.routerInterface);
      t.is((await run('apply', example)).code, 0);
      await rename(office.routerInterface, odd);
      const down = await run('down', example);
      t.is(down.code, 0, down.stderr);
      t.notRegex(await addresses(), new RegExp(` ${office.gateway.replaceAll('.', '\\.')}/`), 'removed by down');
    } finally {
      await rename(odd, office.routerInterface);
      await run('down', example);
    }
  });
}

// The rollback of our `route replace default` puts back the route it replaced; one through a NIC whose name holds
// "#" went into the undo batch as "dev up" (rollback failed: 'Cannot find device "up"', the route left through the
// uplink; with a NIC named "up" there, the route would have gone through that one).
kernel(`a failed apply puts back a default route through a NIC whose name holds "#"${NEEDS_ROOT}`, async (t) => {
  const odd = 'up#1';
  const routes = async () => (await runner.run(['ip', '-n', lab.router, 'route', 'show', 'default'])).stdout;
  await inNs(lab.router, 'ip', 'link', 'add', odd, 'type', 'veth', 'peer', 'name', 'vgwodd');
  try {
    await inNs(lab.router, 'ip', 'addr', 'add', '10.77.0.2/24', 'dev', odd);
    for (const nic of [odd, 'vgwodd']) await inNs(lab.router, 'ip', 'link', 'set', nic, 'up');
    await inNs(lab.router, 'ip', 'route', 'replace', 'default', 'via', '10.77.0.1', 'dev', odd, 'proto', 'static');
    // Forwarding off, as in a fresh namespace: the route is written beside the tables (not after them), so the
    // failing nat table takes it back.
    await inNs(lab.router, 'sysctl', '-qw', 'net.ipv4.ip_forward=0');
    await waitForSettledAddresses(lab.router);
    const before = await readState(lab.router, true);
    const applied = await run('apply', rejectedAfterFilter);
    t.is(applied.code, 1, applied.stdout);
    t.regex(applied.stderr, /^vlan-gateway: apply failed: applying the nat table failed: /m);
    t.regex(applied.stderr, /\(the steps already done were rolled back\)$/, applied.stderr);
    t.is(await routes(), 'default via 10.77.0.1 dev up#1 proto static \n');
    t.deepEqual(await readState(lab.router, true), before, 'everything as before');
  } finally {
    await inNs(lab.router, 'ip', 'link', 'del', odd);
    await inNs(lab.router, 'ip', 'route', 'replace', 'default', 'via', lab.uplink.inetAddress, 'dev', lab.uplink.routerInterface, 'proto', '122');
    await run('down', example);
  }
});
