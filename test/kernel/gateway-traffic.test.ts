/**
 * Kernel tier, traffic: `vlan-gateway apply` (the CLI, as a subprocess) configures a lab's router namespace, and
 * real packets (ping, TCP through the lab's agents) show what it does: VLANs reach each other both ways and the
 * Internet host, which sees the MASQUERADE or SNAT address; a port forward lands on the VLAN host; a drop policy
 * with one accept rule blocks everything but that rule, and replies to the accepted connection still flow, ICMP
 * errors (port unreachable, path MTU) included, across a reload that drops it too; a TCP connection whose entry is
 * deleted then is picked up again by its next packet, as the policy says of that packet's direction (README); a UDP flow that reached the gateway
 * itself before its port was forwarded is forwarded right after the apply that adds the forward, and one forwarded
 * goes to the new host when the forward is moved (the apply clears their conntrack entries, and no one else's).
 * ARP: which of the gateway's NICs answers for which address, with Linux's defaults and with the sysctls the README
 * recommends.
 *
 * One lab serves the three configs in turn (each apply is also a transition from the previous one). It is built
 * from the snat variant so that the Internet side routes the snat address 198.51.100.77 back to the router.
 */
import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../src/config/schema.js';
import { formatMatrix, labCheck, labDown, runProbe, startAgent, type LabTopology } from '../../src/lab/index.js';
import { arpingSenders } from '../../src/observe/parse-arping.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { buildLab, cli, exampleDocument, inNs, outcomes, removeScratch, runner, save, scratchDir, writeConfig } from './gateway-harness.js';
import { waitFor } from '../helpers/supervisor.js';
import { tearDownAlways } from '../helpers/teardown.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const name = uniqueLabName('g');
const SNAT_TO = '198.51.100.77'; // not on any interface: the Internet side routes it to the router (lab topology)

let topology: LabTopology;
let router: string;
let files: Record<'masquerade' | 'snat' | 'drop' | 'reject' | 'inbound' | 'range' | 'rangeMoved' | 'rangeWidened' | 'udp' | 'udpDropped' | 'reverse' | 'reverseStrict', { path: string; config: Config }>;

test.before(async () => {
  if (!isRoot()) return;
  const example = await exampleDocument();
  const uplink = example.uplink as Record<string, unknown>;
  files = {
    masquerade: await writeConfig('masquerade', example),
    snat: await writeConfig('snat', { ...example, uplink: { ...uplink, nat: 'snat', snatTo: SNAT_TO } }),
    drop: await writeConfig('drop', {
      ...example,
      forwarding: { default: 'drop', rules: [{ from: 'lab', to: 'office', proto: 'tcp', ports: '22', action: 'accept' }] },
    }),
    // Openings from the uplink, and lab not NATed.
    inbound: await writeConfig('inbound', {
      ...example,
      vlans: (example.vlans as Array<Record<string, unknown>>).map((v) => (v.name === 'lab' ? { ...v, masquerade: false } : v)),
      forwarding: {
        default: 'accept',
        rules: [
          { from: 'uplink', to: '192.168.10.100', proto: 'tcp', ports: '8080-8090', action: 'accept' },
          { from: 'uplink', to: 'lab', proto: 'udp', ports: '5353', action: 'accept' },
        ],
      },
    }),
    // Ranges of ports forwarded to the same ports: TCP to office's host, UDP to lab's.
    range: await writeConfig('range', {
      ...example,
      portForwards: [
        ...(example.portForwards as unknown[]),
        { proto: 'tcp', port: '6000-6010', to: '192.168.10.100' },
        { proto: 'udp', port: '6000-6010', to: '192.168.20.100' },
      ],
    }),
    // The UDP range pointed at office's host instead.
    rangeMoved: await writeConfig('range-moved', {
      ...example,
      portForwards: [...(example.portForwards as unknown[]), { proto: 'udp', port: '6000-6010', to: '192.168.10.100' }],
    }),
    // The UDP range widened to 6020, still to lab's host.
    rangeWidened: await writeConfig('range-widened', {
      ...example,
      portForwards: [...(example.portForwards as unknown[]), { proto: 'udp', port: '6000-6020', to: '192.168.20.100' }],
    }),
    // A drop policy that lets lab reach office's UDP 5000-5010, and the same once a reload turns that rule to drop.
    udp: await writeConfig('udp', {
      ...example,
      forwarding: { default: 'drop', rules: [{ from: 'lab', to: 'office', proto: 'udp', ports: '5000-5010', action: 'accept' }] },
    }),
    udpDropped: await writeConfig('udp-dropped', {
      ...example,
      forwarding: { default: 'drop', rules: [{ from: 'lab', to: 'office', proto: 'udp', ports: '5000-5010', action: 'drop' }] },
    }),
    // lab → office no longer allowed, office → lab is (TCP): what `drop` let lab open is dropped by the rules now.
    reverse: await writeConfig('reverse', {
      ...example,
      forwarding: { default: 'drop', rules: [{ from: 'office', to: 'lab', proto: 'tcp', action: 'accept' }] },
    }),
    // The same with the README's line that keeps conntrack from picking a TCP connection up without its SYN.
    reverseStrict: await writeConfig('reverse-strict', {
      ...example,
      forwarding: { default: 'drop', rules: [{ from: 'office', to: 'lab', proto: 'tcp', action: 'accept' }] },
      rules: { dir: await strictRulesDir() },
    }),
    reject: await writeConfig('reject', {
      ...example,
      forwarding: { default: 'drop', rules: [{ from: 'lab', to: 'office', proto: 'tcp', ports: '22', action: 'accept' }, { from: 'lab', to: 'office', action: 'reject' }] },
    }),
  };
  topology = await buildLab(files.snat.config, name);
  router = topology.router;
});

/** A rules.dir whose filter/forward.hbs is the README's line: a TCP packet that is NEW to conntrack but no SYN is dropped. */
async function strictRulesDir(): Promise<string> {
  const dir = join(await scratchDir(), 'strict-rules');
  await mkdir(join(dir, 'filter'), { recursive: true });
  await writeFile(join(dir, 'filter', 'forward.hbs'), '-p tcp ! --syn -m conntrack --ctstate NEW -j DROP\n');
  return dir;
}

tearDownAlways('remove the lab and the scratch configs', async () => {
  if (!isRoot()) return;
  // The extra hosts some tests add (removed by those tests, but not when the file is interrupted).
  for (const extra of ['hp', 'bc', 'far']) await runner.run(['ip', 'netns', 'del', `vgwtest-${extra}-${process.pid}`], { allowFailure: true });
  await labDown(runner, name);
  await removeScratch();
});

async function apply(path: string) {
  return cli('apply', '--netns', router, '--config', path);
}

kernel(`the write-up's example: VLANs reach each other both ways and the Internet, which sees the router's uplink address${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.masquerade.path);
  t.is(applied.code, 0, applied.stderr);
  t.regex(applied.stdout, /changes applied in \d+ ms\./);

  const result = await labCheck(runner, topology, files.masquerade.config);
  t.deepEqual(outcomes(result), {
    'office → lab ping': 'pass',
    'office → lab tcp/22': 'pass as 192.168.10.100', // between VLANs the source is not rewritten
    'office → lab tcp/80': 'pass as 192.168.10.100',
    'office → internet ping': 'pass',
    'office → internet tcp/80': 'pass as 203.0.113.2', // MASQUERADE: the router's uplink address
    'lab → office ping': 'pass',
    'lab → office tcp/22': 'pass as 192.168.20.100',
    'lab → office tcp/80': 'pass as 192.168.20.100',
    'lab → internet ping': 'pass',
    'lab → internet tcp/80': 'pass as 203.0.113.2',
    // The Internet side routes the VLANs' subnets to the router, as an upstream router would: nothing gets in
    'internet → office ping': 'blocked',
    'internet → office tcp/22': 'blocked',
    'internet → office tcp/80': 'blocked',
    'internet → lab ping': 'blocked',
    'internet → lab tcp/22': 'blocked',
    'internet → lab tcp/80': 'blocked',
    'internet → office fwd tcp/2222': 'pass as 198.51.100.10', // but the port forward
  });
  t.is(topology.uplink.routerAddress, '203.0.113.2');
  t.true(result.ok, 'lab check agrees with what the config allows');
});

// A VLAN's NIC forwards from its subnet and from the networks routed through it. A host that routes another network
// (here 192.168.77.5, behind office's client) is forwarded once the router has a route to it through office's NIC
// (a static route; the apply after it reads it), and only then. The route is a summary, 192.168.0.0/16, which
// covers both VLANs' subnets too: lab's addresses stay forged on office's NIC. It is masqueraded as office is (the
// Internet side has no route back to 192.168.77.5: its ping gets an answer only NATed). Under `default: accept`
// with ipset, it gets out to the uplink through the NIC-set lookup (the accounting members match the VLANs'
// subnets only).
kernel(`a source outside its VLAN's subnet is forwarded only once it is routed through that VLAN's NIC; a summary route takes no VLAN's subnet${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.masquerade.path);
  t.is(applied.code, 0, applied.stderr);
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const routed = '192.168.77.5';
  const forged = '192.168.20.77'; // in lab's subnet, inside the summary route too
  t.regex(await save(router, 'nft', '-t', 'filter'), /--match-set VGW-NICS-0 dst,dst/, 'the compact branch is what is under test');
  for (const address of [routed, forged]) await inNs(office.client.namespace, 'ip', 'address', 'add', `${address}/32`, 'dev', office.client.interface);
  const pingFrom = (from: string, target: string) => runner.run(['ip', 'netns', 'exec', office.client.namespace, 'ping', '-c', '2', '-i', '0.2', '-W', '1', '-I', from, target], { allowFailure: true });
  try {
    const echoes = await echoesReceived(topology.inet);
    t.not((await pingFrom(routed, topology.uplink.internetHost)).exitCode, 0, 'without a route back through office\'s NIC, 192.168.77.5 there is forged');
    t.is(await echoesReceived(topology.inet), echoes, 'and nothing of it left through the uplink');

    await inNs(router, 'ip', 'route', 'add', '192.168.0.0/16', 'via', office.client.address, 'dev', office.routerInterface);
    const again = await apply(files.masquerade.path);
    t.is(again.code, 0, again.stderr);
    t.regex(again.stdout, /ipset VGW-ROUTED/, 'the routed network joins office\'s sources');
    for (const target of [lab.client.address, topology.uplink.internetHost]) {
      const ping = await pingFrom(routed, target);
      t.is(ping.exitCode, 0, `${routed} → ${target}: ${ping.stdout}${ping.stderr}`);
    }
    // A host route too: its member reads back from `ipset save` without the /32, and must count as planned (it
    // used to be deleted and added again by every pass, for ever).
    await inNs(router, 'ip', 'route', 'add', '10.66.0.5', 'via', office.client.address, 'dev', office.routerInterface);
    t.is((await apply(files.masquerade.path)).code, 0);
    const inSync = await cli('plan', '--detailed-exitcode', '--netns', router, '--config', files.masquerade.path);
    t.is(inSync.code, 0, `a routed host: in sync after one apply\n${inSync.stdout}`);
    const passed = await echoesReceived(topology.inet);
    await pingFrom(forged, topology.uplink.internetHost);
    t.is(await echoesReceived(topology.inet), passed, 'lab\'s address from office\'s NIC is still forged: the summary route does not take it');
    // Hairpin (in and out of the same VLAN NIC) stays dropped, as without the sets.
    t.regex(await save(router, 'nft', '-t', 'filter'), new RegExp(`-A VGW-FROM-10 -o ${office.routerInterface} .*-j DROP`));
  } finally {
    await inNs(router, 'ip', 'route', 'del', '192.168.0.0/16').catch(() => '');
    await inNs(router, 'ip', 'route', 'del', '10.66.0.5').catch(() => '');
    for (const address of [routed, forged]) await inNs(office.client.namespace, 'ip', 'address', 'del', `${address}/32`, 'dev', office.client.interface);
  }
  t.is((await apply(files.masquerade.path)).code, 0, 'the route gone, its network leaves office\'s sources');
});

// A network routed behind one host of a VLAN (10.77.0.1, on office's client), reached by another host of the same
// VLAN through the router: in by office's NIC and back out of it (a hairpin, as any router does). The rule against
// leaving by the NIC a packet came in on let none of it through. The replies go host to host, around the router, so
// the client's next TCP segments are INVALID to conntrack here: a ping alone would not show that they pass too.
kernel(`a host reaches a network routed behind another host of its own VLAN, back out of the VLAN's NIC, TCP included${NEEDS_ROOT}`, async (t) => {
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const second = `vgwtest-hp-${process.pid}`;
  const ping = () => runner.run(['ip', 'netns', 'exec', second, 'ping', '-c', '2', '-i', '0.2', '-W', '1', '10.77.0.1'], { allowFailure: true });
  try {
    // The second host: a veth into office's bridge in the switch namespace.
    await runner.run(['ip', 'netns', 'add', second]);
    await runner.run(['ip', '-n', topology.switch, 'link', 'add', 'hp0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', second]);
    await runner.run(['ip', '-n', topology.switch, 'link', 'set', 'hp0', 'master', office.bridge, 'up']);
    for (const line of ['link set lo up', 'link set eth0 up', 'address add 192.168.10.101/24 dev eth0', `route add default via ${office.gateway}`]) {
      await runner.run(['ip', '-n', second, ...line.split(' ')]);
    }
    await inNs(office.client.namespace, 'ip', 'address', 'add', '10.77.0.1/32', 'dev', 'lo');
    await inNs(router, 'ip', 'route', 'add', '10.77.0.0/24', 'via', office.client.address, 'dev', office.routerInterface);
    const applied = await apply(files.masquerade.path);
    t.is(applied.code, 0, applied.stderr);
    const answered = await ping();
    t.is(answered.exitCode, 0, `192.168.10.101 → 10.77.0.1 (behind 192.168.10.100): ${answered.stdout}${answered.stderr}`);
    const agent = await startAgent(runner, office.client.namespace, [{ proto: 'tcp', address: '10.77.0.1', port: 7777 }], 30);
    try {
      const tcp = await runProbe(runner, { namespace: second, kind: 'tcp', target: '10.77.0.1', port: 7777 });
      t.is(tcp.actual, 'pass', tcp.detail);
      t.deepEqual(tcp.reply, { peer: '192.168.10.101', local: '10.77.0.1:7777' });
    } finally {
      await agent.stop();
    }
  } finally {
    await inNs(router, 'ip', 'route', 'del', '10.77.0.0/24').catch(() => '');
    await inNs(office.client.namespace, 'ip', 'address', 'del', '10.77.0.1/32', 'dev', 'lo').catch(() => '');
    await runner.run(['ip', '-n', topology.switch, 'link', 'del', 'hp0'], { allowFailure: true });
    await runner.run(['ip', 'netns', 'del', second], { allowFailure: true });
  }
  t.is((await apply(files.masquerade.path)).code, 0, 'the route gone, the hairpin rule goes');
});

/** A counter of a namespace's /proc/net/snmp (what arrived there, whatever became of the reply). */
async function snmp(ns: string, group: 'Icmp' | 'Tcp', field: string): Promise<number> {
  const [names, values] = (await inNs(ns, 'cat', '/proc/net/snmp')).split('\n').filter((l) => l.startsWith(`${group}:`)).map((l) => l.split(/\s+/));
  return Number(values![names!.indexOf(field)]);
}
const echoesReceived = (ns: string) => snmp(ns, 'Icmp', 'InEchos');

/** The packet counter of the anti-spoofing drop in VGW-FORWARD (the one matching VGW-SUBNETS). */
async function spoofDrops(): Promise<number> {
  const line = (await save(router, 'nft', '-c', '-t', 'filter')).split('\n').find((l) => l.includes('--match-set VGW-SUBNETS src'));
  return Number(/^\[(\d+):/.exec(line ?? '')?.[1] ?? NaN);
}

// BCP 38: a lab host that takes an office host's address is not let through as office. Without the check, its
// packets left masqueraded as office's, and the replies went to the office host, whatever the policy says of lab.
kernel(`a source forged from another VLAN's subnet is dropped, from a VLAN and from the uplink; the host's own passes${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.masquerade.path);
  t.is(applied.code, 0, applied.stderr);
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const forged = '192.168.10.77'; // in office's subnet, held by lab's client
  await inNs(lab.client.namespace, 'ip', 'address', 'add', `${forged}/32`, 'dev', lab.client.interface);
  await inNs(topology.inet, 'ip', 'address', 'add', '192.168.20.50/32', 'dev', topology.uplink.inetInterface);
  const ping = (ns: string, from: string, target: string) => runner.run(['ip', 'netns', 'exec', ns, 'ping', '-c', '2', '-i', '0.2', '-W', '1', '-I', from, target], { allowFailure: true });
  try {
    const echoes = await echoesReceived(topology.inet);
    const drops = await spoofDrops();
    const own = await ping(lab.client.namespace, lab.client.address, topology.uplink.internetHost);
    t.is(own.exitCode, 0, `lab's own address → internet: ${own.stdout}${own.stderr}`);
    t.is(await echoesReceived(topology.inet), echoes + 2);

    await ping(lab.client.namespace, forged, topology.uplink.internetHost);
    t.is(await echoesReceived(topology.inet), echoes + 2, 'no echo from the forged office address reached the Internet host');
    const officeEchoes = await echoesReceived(office.client.namespace);
    await ping(lab.client.namespace, forged, office.client.address);
    t.is(await echoesReceived(office.client.namespace), officeEchoes, 'nor the office host');
    // From the uplink, a lab address to the port forward (and so into office): dropped before the DNAT's accept.
    const segments = await snmp(office.client.namespace, 'Tcp', 'InSegs');
    const probe = await runProbe(runner, {
      namespace: topology.inet, kind: 'tcp', target: topology.uplink.routerAddress, port: 2222, localAddress: '192.168.20.50', timeoutMs: 800,
    });
    t.is(probe.actual, 'blocked');
    t.is(await snmp(office.client.namespace, 'Tcp', 'InSegs'), segments, 'no segment of it reached the office host');
    t.true(await spoofDrops() >= drops + 5, 'each forged packet was counted by the anti-spoofing drop');
  } finally {
    await inNs(topology.inet, 'ip', 'address', 'del', '192.168.20.50/32', 'dev', topology.uplink.inetInterface);
    await inNs(lab.client.namespace, 'ip', 'address', 'del', `${forged}/32`, 'dev', lab.client.interface);
  }
});

/**
 * A UDP socket in a namespace, bound to ADDRESS:PORT: `send` sends one datagram to HOST:PORT; `listen` prints each
 * datagram it receives and answers the first with "pong"; `quiet` prints them and never answers. A plain node
 * script (node built-ins only).
 */
const UDP_SCRIPT = String.raw`const [mode, address, port, host, hostPort, text] = process.argv.slice(1);
const s = require('node:dgram').createSocket('udp4');
s.bind(Number(port), address, () => {
  if (mode === 'send') s.send(text, Number(hostPort), host, () => setTimeout(() => process.exit(0), 300));
  else { let n = 0; s.on('message', (m, r) => { console.log(String(m)); if (n++ === 0 && mode === 'listen') s.send('pong', r.port, r.address); }); console.log('ready'); }
});
s.on('message', (m) => { if (mode === 'send') console.log(String(m)); });`;

/** `script` run by node in `ns` with `args`, once it has printed `ready`: the lines it prints after, and its stop. */
async function nodeScript(ns: string, script: string, args: readonly string[], timeout: number) {
  const { execa } = await import('execa');
  const child = execa('ip', ['netns', 'exec', ns, process.execPath, '-e', script, ...args], { reject: false, timeout });
  const lines: string[] = [];
  let ready!: () => void;
  const started = new Promise<void>((resolve) => (ready = resolve));
  child.stdout!.on('data', (chunk: Buffer) => {
    for (const line of String(chunk).split('\n').filter(Boolean)) {
      if (line === 'ready') ready();
      else lines.push(line);
    }
  });
  await started;
  return { lines, stop: async () => { child.kill('SIGTERM'); await child; } };
}

const udpListener = (ns: string, address: string, port: number, mode: 'listen' | 'quiet' = 'listen') =>
  nodeScript(ns, UDP_SCRIPT, [mode, address, String(port)], 20_000);

const udpSend = (ns: string, from: string, port: number, to: string, toPort: number, text: string) =>
  runner.run(['ip', 'netns', 'exec', ns, process.execPath, '-e', UDP_SCRIPT, 'send', from, String(port), to, String(toPort), text]);

// The check comes before replies are accepted: lab's host taking office's address and port sends a datagram that
// fits office's flow to the Internet host exactly. Accepted as part of that flow, it left masqueraded as office's.
kernel(`a forged packet that fits another VLAN's connection is dropped: sources are checked before replies are accepted${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.masquerade.path);
  t.is(applied.code, 0, applied.stderr);
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const listener = await udpListener(topology.inet, topology.uplink.internetHost, 5302);
  await inNs(lab.client.namespace, 'ip', 'address', 'add', `${office.client.address}/32`, 'dev', lab.client.interface);
  try {
    const legit = await udpSend(office.client.namespace, office.client.address, 40020, topology.uplink.internetHost, 5302, 'legit');
    t.is(legit.stdout.trim(), 'pong', 'office\'s flow is established (the reply came back)');
    await udpSend(lab.client.namespace, office.client.address, 40020, topology.uplink.internetHost, 5302, 'forged');
    await new Promise((resolve) => setTimeout(resolve, 300));
    t.deepEqual(listener.lines, ['legit'], 'the forged datagram never reached the Internet host');
  } finally {
    await listener.stop();
    await inNs(lab.client.namespace, 'ip', 'address', 'del', `${office.client.address}/32`, 'dev', lab.client.interface);
  }
});

// A broadcast the gateway takes itself (office's host wakes a lab machine: Wake-on-LAN to lab's 192.168.20.255)
// leaves a conntrack entry whose reply comes from 192.168.20.255, an address no host holds. A lab device that sends
// from it fits that entry: inside lab's subnet and on lab's NIC, it passed the source check, and was accepted as a
// reply into office, which the policy closes to lab's UDP. Linux drops such a source only with rp_filter on, which a
// container's namespace does not have.
kernel(`a source that is a VLAN's broadcast address is dropped: a forged "reply" to a broadcast the gateway took does not pass a drop policy${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.drop.path);
  t.is(applied.code, 0, applied.stderr);
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const broadcast = '192.168.20.255';
  // The forging device: on lab's bridge, holding lab's broadcast address alone (a host that also holds an address
  // of the /24 sends from that one instead), lab's gateway reached without ARP.
  const forger = `vgwtest-bc-${process.pid}`;
  const routerMac = JSON.parse(await inNs(router, 'ip', '-j', 'link', 'show', 'dev', lab.routerInterface))[0].address as string;
  try {
    await runner.run(['ip', 'netns', 'add', forger]);
    await runner.run(['ip', '-n', topology.switch, 'link', 'add', 'bc0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', forger]);
    await runner.run(['ip', '-n', topology.switch, 'link', 'set', 'bc0', 'master', lab.bridge, 'up']);
    for (const line of ['link set lo up', 'link set eth0 up', `address add ${broadcast}/32 dev eth0`, `route add ${lab.gateway} dev eth0`,
      `route add default via ${lab.gateway}`, `neigh add ${lab.gateway} lladdr ${routerMac} dev eth0`]) {
      await runner.run(['ip', '-n', forger, ...line.split(' ')]);
    }
    const wake = await udpSend(office.client.namespace, office.client.address, 40031, broadcast, 9, 'wake');
    t.is(wake.exitCode, 0, wake.stderr);
    const listener = await udpListener(office.client.namespace, office.client.address, 40031, 'quiet');
    const drops = await broadcastDrops();
    try {
      await udpSend(lab.client.namespace, lab.client.address, 9, office.client.address, 40031, 'from lab');
      await udpSend(forger, broadcast, 9, office.client.address, 40031, 'forged');
      await new Promise((resolve) => setTimeout(resolve, 300));
      t.deepEqual(listener.lines, [], 'neither lab\'s host (the policy) nor the broadcast address (forged) reached office');
    } finally {
      await listener.stop();
    }
    t.is(await broadcastDrops(), drops + 1, 'the forged datagram was dropped as a forged source');
  } finally {
    await runner.run(['ip', '-n', topology.switch, 'link', 'del', 'bc0'], { allowFailure: true });
    await runner.run(['ip', 'netns', 'del', forger], { allowFailure: true });
  }
});

/** The packet counter of the drop of broadcast sources in VGW-SOURCES. */
async function broadcastDrops(): Promise<number> {
  const line = (await save(router, 'nft', '-c', '-t', 'filter')).split('\n').find((l) => l.includes('--src-type BROADCAST'));
  return Number(/^\[(\d+):/.exec(line ?? '')?.[1] ?? 0);
}

// BCP 38 for any source: one that is no VLAN's and not routed through the NIC it came in on is forged. It left
// through the uplink without NAT (MASQUERADE is per VLAN subnet): spoofed floods and reflection from inside.
kernel(`a source outside every VLAN's subnet, not routed through its NIC, is dropped before it reaches the uplink${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.masquerade.path);
  t.is(applied.code, 0, applied.stderr);
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const forged = '198.51.100.99'; // the Internet side's own network: its reply would go there, not to lab
  await inNs(lab.client.namespace, 'ip', 'address', 'add', `${forged}/32`, 'dev', lab.client.interface);
  try {
    const echoes = await echoesReceived(topology.inet);
    const officeEchoes = await echoesReceived(office.client.namespace);
    const drops = await spoofDrops();
    for (const target of [topology.uplink.internetHost, office.client.address]) {
      await runner.run(['ip', 'netns', 'exec', lab.client.namespace, 'ping', '-c', '2', '-i', '0.2', '-W', '1', '-I', forged, target], { allowFailure: true });
    }
    t.is(await echoesReceived(topology.inet), echoes, 'no echo from the forged address reached the Internet host');
    t.is(await echoesReceived(office.client.namespace), officeEchoes, 'nor the office host');
    const onNic = (await save(router, 'nft', '-c', '-t', 'filter')).split('\n')
      .find((l) => l.includes('-A VGW-SOURCES') && l.includes(`-i ${lab.routerInterface} `) && l.endsWith('-j DROP'));
    t.true(Number(/^\[(\d+):/.exec(onNic ?? '')?.[1]) >= 4, `lab's NIC's drop counted them: ${onNic}`);
    t.is(await spoofDrops(), drops, 'not the VLAN-subnet drop: it is no VLAN\'s address');
  } finally {
    await inNs(lab.client.namespace, 'ip', 'address', 'del', `${forged}/32`, 'dev', lab.client.interface);
  }
});

// A network routed behind a VLAN's host (10.77.0.0/24 via office's client) is that VLAN's, not the Internet's: its
// source arriving on the uplink is forged, as a VLAN subnet's is. The uplink forwarded from anywhere but a VLAN's
// subnet, so an Internet host that guessed a flow's ports slipped datagrams into it as 10.77.0.1 (a lab server
// took them for its client's), where the same forgery of an office address was dropped.
kernel(`a source in a network routed behind a VLAN's host is forged on the uplink: it does not slip into that network's flows${NEEDS_ROOT}`, async (t) => {
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const routed = '10.77.0.1';
  // And a summary route through office that covers the uplink's own network (203.0.113.0/24): that network's
  // hosts stay the uplink's, as the kernel's longest match says.
  const summary = '203.0.0.0/16';
  await inNs(office.client.namespace, 'ip', 'address', 'add', `${routed}/32`, 'dev', 'lo');
  await inNs(topology.inet, 'ip', 'address', 'add', `${routed}/32`, 'dev', topology.uplink.inetInterface);
  for (const prefix of ['10.77.0.0/24', summary]) await inNs(router, 'ip', 'route', 'add', prefix, 'via', office.client.address, 'dev', office.routerInterface);
  const agent = await startAgent(runner, office.client.namespace, [{ proto: 'tcp', address: '0.0.0.0', port: 22 }], 30);
  try {
    const applied = await apply(files.masquerade.path);
    t.is(applied.code, 0, applied.stderr);
    const listener = await udpListener(lab.client.namespace, lab.client.address, 5310);
    try {
      const legit = await udpSend(office.client.namespace, routed, 40040, lab.client.address, 5310, 'legit');
      t.is(legit.stdout.trim(), 'pong', 'the routed host\'s flow to lab is established (the reply came back)');
      await udpSend(topology.inet, routed, 40040, lab.client.address, 5310, 'forged on the uplink');
      await new Promise((resolve) => setTimeout(resolve, 300));
      t.deepEqual(listener.lines, ['legit'], 'the datagram forged on the uplink never reached the lab host');
    } finally {
      await listener.stop();
    }
    // The Internet host, and the uplink network's own router inside the summary, still reach the port forward.
    for (const localAddress of [topology.uplink.internetHost, topology.uplink.inetAddress]) {
      const probe = await runProbe(runner, { namespace: topology.inet, kind: 'tcp', target: topology.uplink.routerAddress, port: 2222, localAddress, timeoutMs: 2000 });
      t.is(probe.actual, 'pass', `${localAddress} → the port forward: ${probe.detail}`);
    }
  } finally {
    await agent.stop();
    for (const prefix of ['10.77.0.0/24', summary]) await inNs(router, 'ip', 'route', 'del', prefix).catch(() => '');
    await inNs(topology.inet, 'ip', 'address', 'del', `${routed}/32`, 'dev', topology.uplink.inetInterface);
    await inNs(office.client.namespace, 'ip', 'address', 'del', `${routed}/32`, 'dev', 'lo');
  }
  t.is((await apply(files.masquerade.path)).code, 0, 'the routes gone, their drops on the uplink go');
});

// A VLAN in the config whose NIC is not attached: its subnet has no connected route, so the default route would take
// traffic to it out of the uplink, masqueraded, whatever `forwarding` says. Here the uplink side does answer for an
// address in it (a LAN's router would): before the drop, office reached it.
kernel(`traffic to a waiting VLAN's subnet never leaves through the uplink, and is counted as dropped for that reason${NEEDS_ROOT}`, async (t) => {
  const example = await exampleDocument();
  const waiting = await writeConfig('waiting-vlan', {
    ...example,
    vlans: [...(example.vlans as object[]), { name: 'iot', id: 30, subnet: '192.168.30.0/24', gateway: '192.168.30.1' }],
  });
  const applied = await apply(waiting.path);
  t.is(applied.code, 0, applied.stderr);
  t.regex(applied.stdout, /vlan iot .*waiting/);
  const office = topology.vlans.find((v) => v.name === 'office')!;
  await inNs(topology.inet, 'ip', 'address', 'add', '192.168.30.100/32', 'dev', topology.uplink.inetInterface);
  try {
    const echoes = await echoesReceived(topology.inet);
    const ping = await runner.run(['ip', 'netns', 'exec', office.client.namespace, 'ping', '-c', '2', '-i', '0.2', '-W', '1', '192.168.30.100'], { allowFailure: true });
    t.not(ping.exitCode, 0, 'office did not reach 192.168.30.100 through the uplink');
    t.is(await echoesReceived(topology.inet), echoes);
    const rule = (await save(router, 'nft', '-c', '-t', 'filter')).split('\n').find((l) => l.includes('-A VGW-FORWARD') && l.includes('--match-set VGW-WAITING dst'));
    t.regex(await inNs(router, 'ipset', 'list', 'VGW-WAITING'), /^192\.168\.30\.0\/24/m, 'the waiting VLAN\'s subnet, in one set lookup however many wait');
    t.true(Number(/^\[(\d+):/.exec(rule ?? '')?.[1]) >= 2, `the waiting VLAN's drop counted them: ${rule}`);
  } finally {
    await inNs(topology.inet, 'ip', 'address', 'del', '192.168.30.100/32', 'dev', topology.uplink.inetInterface);
  }
  t.is((await apply(files.masquerade.path)).code, 0);
});

// A jump of a user's to VGW-FORWARD with a match of its own (-i NIC) used to count as ours, and ours was removed as
// its duplicate: the uplink's new connections into the VLANs then passed under FORWARD's ACCEPT policy.
kernel(`a user's jump to VGW-FORWARD for one NIC does not stand in for ours: apply puts ours back, and the uplink still cannot open connections into a VLAN${NEEDS_ROOT}`, async (t) => {
  t.is((await apply(files.masquerade.path)).code, 0);
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  await inNs(router, 'iptables-nft', '-I', 'FORWARD', '1', '-i', lab.routerInterface, '-j', 'VGW-FORWARD');
  const applied = await apply(files.masquerade.path);
  t.is(applied.code, 0, applied.stderr);
  const forward = (await save(router, 'nft', '-t', 'filter')).split('\n').filter((l) => l.startsWith('-A FORWARD '));
  t.deepEqual(forward, ['-A FORWARD -m comment --comment "vgw:hook-fwd-was-0" -j VGW-FORWARD'], 'ours alone, for every packet');
  // The Internet side routes office's subnet to the router (the lab's upstream routes every VLAN).
  const ping = await runner.run(['ip', 'netns', 'exec', topology.inet, 'ping', '-c', '2', '-i', '0.2', '-W', '1', office.client.address], { allowFailure: true });
  t.not(ping.exitCode, 0, 'the uplink opened no connection into office');
  t.is((await cli('plan', '--detailed-exitcode', '--netns', router, '--config', files.masquerade.path)).code, 0);
});

// The kernel refuses a default route through a NIC that is down; that refusal used to undo the whole apply, so nothing
// else was repaired (here a flushed VGW-FORWARD) while the uplink was down, though the VLANs need no uplink.
kernel(`with the uplink NIC down, apply repairs the rest and the default route waits; once it is up, the route comes back${NEEDS_ROOT}`, async (t) => {
  t.is((await apply(files.masquerade.path)).code, 0);
  const uplinkNic = topology.uplink.routerInterface;
  await inNs(router, 'ip', 'link', 'set', uplinkNic, 'down');
  try {
    await inNs(router, 'iptables-nft', '-F', 'VGW-FORWARD');
    const down = await apply(files.masquerade.path);
    t.is(down.code, 0, down.stderr);
    t.regex(down.stdout, new RegExp(`uplink: on ${uplinkNic} \\(${uplinkNic} is down: no default route is set until it is up\\)`));
    t.regex(await save(router, 'nft', '-t', 'filter'), /-A VGW-FORWARD .*-j VGW-SOURCES/, 'VGW-FORWARD refilled');
    const result = await labCheck(runner, topology, files.masquerade.config);
    t.is(outcomes(result)['office → lab tcp/22'], 'pass as 192.168.10.100', 'the VLANs are routed');
  } finally {
    await inNs(router, 'ip', 'link', 'set', uplinkNic, 'up');
  }
  const up = await apply(files.masquerade.path);
  t.is(up.code, 0, up.stderr);
  t.regex(await inNs(router, 'ip', 'route', 'show', 'default'), new RegExp(`^default via ${topology.uplink.inetAddress} dev ${uplinkNic} `));
  // Right after its NIC is up again the router may not answer the Internet host yet: on an idle machine the next test's
  // probe, a moment later, was refused with an ICMP host unreachable, 4 runs in 4 (it passed under CI's load, later).
  // The tests after this one start from a path that answers.
  await waitFor('the router to answer the Internet host', async () =>
    (await runner.run(['ip', 'netns', 'exec', topology.inet, 'ping', '-c', '1', '-W', '1', topology.uplink.routerAddress], { allowFailure: true })).exitCode === 0, 10_000);
});

kernel(`a port forward on the uplink (2222) reaches the VLAN host's port 22${NEEDS_ROOT}`, async (t) => {
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const agent = await startAgent(runner, office.client.namespace, [{ proto: 'tcp', address: '0.0.0.0', port: 22 }], 30);
  try {
    const outcome = await runProbe(runner, {
      namespace: topology.inet, kind: 'tcp', target: topology.uplink.routerAddress, port: 2222, localAddress: topology.uplink.internetHost,
    });
    t.is(outcome.actual, 'pass', outcome.detail);
    t.deepEqual(outcome.reply, { peer: '198.51.100.10', local: '192.168.10.100:22' });
    // Nothing else on the router's uplink address is forwarded.
    const other = await runProbe(runner, { namespace: topology.inet, kind: 'tcp', target: topology.uplink.routerAddress, port: 22, timeoutMs: 800 });
    t.is(other.actual, 'blocked');
    // No NAT reflection (README): from a VLAN, the uplink address's 2222 is the gateway's own, and it refuses it.
    const lab = topology.vlans.find((v) => v.name === 'lab')!;
    const reflected = await runProbe(runner, { namespace: lab.client.namespace, kind: 'tcp', target: topology.uplink.routerAddress, port: 2222, timeoutMs: 800 });
    t.like(reflected, { actual: 'blocked', detail: 'refused (TCP reset or ICMP port unreachable)' });
  } finally {
    await agent.stop();
  }
  t.regex(await save(router, 'nft'), /^-A VGW-PREROUTING -i eth0 -p tcp .*--dport 2222 -j DNAT --to-destination 192\.168\.10\.100:22$/m);
});

kernel(`a range of ports forwarded (6000-6010) reaches the VLAN host on the same port; the ports just outside it do not${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.range.path);
  t.is(applied.code, 0, applied.stderr);
  const office = topology.vlans.find((v) => v.name === 'office')!;
  // The host listens just outside the range too: only the router's rules keep those ports from it.
  const ports = [5999, 6000, 6005, 6010, 6011];
  const agent = await startAgent(runner, office.client.namespace, ports.map((port) => ({ proto: 'tcp', address: '0.0.0.0', port })), 30);
  try {
    for (const port of [6000, 6005, 6010]) {
      const inside = await runProbe(runner, {
        namespace: topology.inet, kind: 'tcp', target: topology.uplink.routerAddress, port, localAddress: topology.uplink.internetHost,
      });
      t.is(inside.actual, 'pass', `tcp/${port}: ${inside.detail}`);
      t.deepEqual(inside.reply, { peer: '198.51.100.10', local: `192.168.10.100:${port}` });
    }
    for (const port of [5999, 6011]) {
      const outside = await runProbe(runner, {
        namespace: topology.inet, kind: 'tcp', target: topology.uplink.routerAddress, port, localAddress: topology.uplink.internetHost, timeoutMs: 800,
      });
      t.is(outside.actual, 'blocked', `tcp/${port} is not forwarded`);
    }
  } finally {
    await agent.stop();
  }
  const nat = await save(router, 'nft', '-t', 'nat');
  t.regex(nat, /^-A VGW-PREROUTING -i eth0 -p tcp .*--dport 6000:6010 -j DNAT --to-destination 192\.168\.10\.100$/m);
  t.regex(await save(router, 'nft', '-t', 'filter'), /^-A VGW-FROM-UP -d 192\.168\.10\.100\/32 -o \S+ -p tcp .*--dport 6000:6010 .*--ctstate DNAT -j ACCEPT$/m);

  // The lab's check probes each range by its ends and the port just past it (UDP to lab's host as well).
  const result = await labCheck(runner, topology, files.range.config);
  const seen = outcomes(result);
  t.like(seen, {
    'internet → office fwd tcp/2222': 'pass as 198.51.100.10',
    'internet → office fwd tcp/6000': 'pass as 198.51.100.10',
    'internet → office fwd tcp/6010': 'pass as 198.51.100.10',
    'internet → office fwd tcp/6011': 'blocked',
    'internet → lab fwd udp/6000': 'pass as 198.51.100.10',
    'internet → lab fwd udp/6010': 'pass as 198.51.100.10',
    'internet → lab fwd udp/6011': 'blocked',
  });
  t.true(result.ok, formatMatrix(result));
});

kernel(`nat: snat, the Internet host sees uplink.snatTo${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.snat.path);
  t.is(applied.code, 0, applied.stderr);
  t.regex(applied.stdout, /~ chain VGW-POSTROUTING/);

  const nat = await save(router, 'nft', '-t', 'nat');
  t.regex(nat, /^-A VGW-POSTROUTING -s 192\.168\.10\.0\/24 -o eth0 .*-j SNAT --to-source 198\.51\.100\.77$/m);
  t.notRegex(nat, /MASQUERADE/);

  const result = await labCheck(runner, topology, files.snat.config);
  const seen = outcomes(result);
  t.is(seen['office → internet tcp/80'], `pass as ${SNAT_TO}`);
  t.is(seen['lab → internet tcp/80'], `pass as ${SNAT_TO}`);
  t.is(seen['office → internet ping'], 'pass', 'replies to the snat address come back');
  t.is(seen['lab → office tcp/22'], 'pass as 192.168.20.100', 'inter-VLAN traffic is not source-NATed');
  t.true(result.ok, 'lab check agrees with what the config allows');
});

kernel(`forwarding.default: drop with one accept rule: ping and the reverse direction are blocked, TCP/22 lab → office passes and its replies flow back${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.drop.path);
  t.is(applied.code, 0, applied.stderr);

  // The pair lab → office (VLAN 20 → 10) gets its own chain: the rule, then the pair's default.
  const filter = await save(router, 'nft', '-t', 'filter');
  t.regex(filter, /^-A VGW-P-20-10 -p tcp .*-m multiport --dports 22 -j ACCEPT\n-A VGW-P-20-10 .*-j DROP$/m);

  const result = await labCheck(runner, topology, files.drop.config, { timeoutMs: 1000 });
  t.deepEqual(outcomes(result), {
    'office → lab ping': 'blocked', // office → lab: no rule, the default drops
    'office → lab tcp/22': 'blocked',
    'office → lab tcp/80': 'blocked',
    'office → internet ping': 'pass', // to the uplink the default stays accept
    'office → internet tcp/80': 'pass as 203.0.113.2',
    'lab → office ping': 'blocked', // the rule is tcp/22 only
    'lab → office tcp/22': 'pass as 192.168.20.100', // the agent's answer is the reply: it came back through the router
    'lab → office tcp/23': 'blocked', // the port just outside the rule
    'lab → office tcp/80': 'blocked',
    'lab → office udp/22': 'blocked', // the rule's port, in the other transport
    'lab → internet ping': 'pass',
    'lab → internet tcp/80': 'pass as 203.0.113.2',
    'internet → office ping': 'blocked',
    'internet → office tcp/22': 'blocked',
    'internet → office tcp/80': 'blocked',
    'internet → lab ping': 'blocked',
    'internet → lab tcp/22': 'blocked',
    'internet → lab tcp/80': 'blocked',
    'internet → office fwd tcp/2222': 'pass as 198.51.100.10', // port forwards are accepted before the policy
  });
  t.true(result.ok, 'lab check agrees with what the config allows');
});

// lab check probed nothing from the uplink into a VLAN (the Internet side had no route to the VLANs), nor any UDP or
// any port a rule names: a `from: uplink` rule that the router did not apply passed the check.
kernel(`from the uplink into a VLAN: blocked but for what a from: uplink rule opens, a range by its ends, UDP too; a VLAN without NAT is seen at its own address${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.inbound.path);
  t.is(applied.code, 0, applied.stderr);
  const result = await labCheck(runner, topology, files.inbound.config, { timeoutMs: 1000 });
  const seen = outcomes(result);
  t.like(seen, {
    'internet → office tcp/8080': 'pass as 198.51.100.10', // no NAT inbound: the VLAN host sees the Internet host
    'internet → office tcp/8090': 'pass as 198.51.100.10',
    'internet → office tcp/8091': 'blocked',
    'internet → office udp/8080': 'blocked',
    'internet → office tcp/22': 'blocked',
    'internet → lab udp/5353': 'pass as 198.51.100.10',
    'internet → lab udp/5354': 'blocked',
    'internet → lab tcp/5353': 'blocked',
    'internet → office fwd tcp/2222': 'pass as 198.51.100.10',
    'lab → internet tcp/80': 'pass as 192.168.20.100', // masquerade: false, and the upstream routes the VLAN back
    'office → internet tcp/80': 'pass as 203.0.113.2',
  });
  t.true(result.ok, formatMatrix(result));
  t.regex(formatMatrix(result), /^internet → office +ping ✗ tcp\/22,80,8091 ✗ tcp\/8080,8090 ✓ udp\/8080 ✗ fwd tcp\/2222 ✓\ninternet → lab +ping ✗ tcp\/22,80,5353 ✗ udp\/5353 ✓ udp\/5354 ✗$/m);

  // A router that does not open them (nor leaves lab un-NATed): the check says so, probe by probe.
  t.is((await apply(files.masquerade.path)).code, 0);
  const closed = await labCheck(runner, topology, files.inbound.config, { timeoutMs: 1000 });
  t.false(closed.ok);
  t.deepEqual(closed.rows.filter((r) => !r.ok).map((r) => `${r.from} → ${r.to} ${r.probe}: ${r.actual}${r.peer ? ` as ${r.peer}` : ''}`), [
    'lab → internet tcp/80: pass as 203.0.113.2',
    'internet → office tcp/8080: blocked',
    'internet → office tcp/8090: blocked',
    'internet → lab udp/5353: blocked',
  ]);
  t.regex(formatMatrix(closed), /internet → office tcp\/8080: the config says pass, got blocked \(no answer \(dropped\)\)/);
});

// A TCP connection is refused with a reset, anything else with an ICMP port unreachable: a Windows client retries a
// SYN answered by ICMP for about 20 s, where a reset ends it at once. The ICMPs the client receives tell them apart.
kernel(`action: reject refuses TCP with a reset and UDP with an ICMP port unreachable${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.reject.path);
  t.is(applied.code, 0, applied.stderr);
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const unreachables = () => snmp(lab.client.namespace, 'Icmp', 'InDestUnreachs');
  // Office answers on every port probed: what refuses them is the router's rule, not a closed port.
  const agent = await startAgent(runner, office.client.namespace, [
    { proto: 'tcp', address: '0.0.0.0', port: 22 }, { proto: 'tcp', address: '0.0.0.0', port: 80 }, { proto: 'udp', address: '0.0.0.0', port: 5353 },
  ], 30);
  t.teardown(() => agent.stop());

  let before = await unreachables();
  const tcp = await runProbe(runner, { namespace: lab.client.namespace, kind: 'tcp', target: office.client.address, port: 80, timeoutMs: 3000 });
  t.is(tcp.actual, 'blocked');
  t.regex(tcp.detail, /ECONNREFUSED|refused/i, 'refused at once, not timed out');
  t.is(await unreachables() - before, 0, 'no ICMP for TCP: a reset');

  before = await unreachables();
  const udp = await runProbe(runner, { namespace: lab.client.namespace, kind: 'udp', target: office.client.address, port: 5353, timeoutMs: 1000 });
  t.is(udp.actual, 'blocked');
  t.true(await unreachables() - before >= 1, 'UDP is refused with an ICMP port unreachable');
  t.is(udp.detail, 'refused: ICMP port unreachable', 'the probe sees the refusal (a connected socket), not a timeout');

  const allowed = await runProbe(runner, { namespace: lab.client.namespace, kind: 'tcp', target: office.client.address, port: 22, timeoutMs: 3000 });
  t.is(allowed.actual, 'pass', 'the accept rule before the reject still decides');
});

// ICMP errors about an allowed connection are its replies to conntrack (RELATED), accepted before the policy: without
// them a UDP client waits for its timeout instead of hearing "port unreachable", and path-MTU discovery breaks (a
// host whose DF packets are too big for a link beyond the gateway never learns it: large transfers hang). Here the
// smaller link is a hop beyond the uplink, so the "fragmentation needed" comes back to the masqueraded address.
kernel(`under default: drop, ICMP errors of allowed connections come back: port unreachable, and fragmentation needed through MASQUERADE (path MTU)${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.udp.path);
  t.is(applied.code, 0, applied.stderr);
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const closed = await runProbe(runner, { namespace: lab.client.namespace, kind: 'udp', target: office.client.address, port: 5005, timeoutMs: 1000 });
  t.is(closed.detail, 'refused: ICMP port unreachable', 'the allowed port is closed on office\'s host, and the client hears it');
  const outside = await runProbe(runner, { namespace: lab.client.namespace, kind: 'udp', target: office.client.address, port: 5011, timeoutMs: 800 });
  t.is(outside.detail, 'no answer (dropped)', 'the port the policy drops gives away nothing');

  // A host beyond the Internet side's router, on a link of MTU 1400 (198.51.100.128/25).
  const far = `vgwtest-far-${process.pid}`;
  const forwarding = (await inNs(topology.inet, 'sysctl', '-n', 'net.ipv4.ip_forward')).trim();
  try {
    await runner.run(['ip', 'netns', 'add', far]);
    await runner.run(['ip', '-n', topology.inet, 'link', 'add', 'far0', 'mtu', '1400', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', far]);
    for (const line of ['address add 198.51.100.129/25 dev far0', 'link set far0 up']) await runner.run(['ip', '-n', topology.inet, ...line.split(' ')]);
    for (const line of ['link set lo up', 'link set eth0 up', 'address add 198.51.100.130/25 dev eth0', 'route add default via 198.51.100.129']) {
      await runner.run(['ip', '-n', far, ...line.split(' ')]);
    }
    await inNs(topology.inet, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
    const ping = (size: number) => runner.run(['ip', 'netns', 'exec', office.client.namespace, 'ping', '-n', '-c', '1', '-W', '1', '-M', 'do', '-s', String(size), '198.51.100.130'], { allowFailure: true });
    const big = await ping(1450);
    t.not(big.exitCode, 0);
    t.regex(big.stdout, new RegExp(`^From ${topology.uplink.inetAddress.replaceAll('.', '\\.')} .*mtu = 1400`, 'm'), 'the Internet side\'s "fragmentation needed" reached office\'s host');
    t.regex(await inNs(office.client.namespace, 'ip', 'route', 'get', '198.51.100.130'), /\bmtu 1400\b/, 'which now sends at most 1400 bytes that way');
    const fits = await ping(1372);
    t.is(fits.exitCode, 0, `1400 bytes pass: ${fits.stdout}`);
  } finally {
    await runner.run(['ip', 'netns', 'del', far], { allowFailure: true });
    await inNs(topology.inet, 'sysctl', '-q', '-w', `net.ipv4.ip_forward=${forwarding}`);
  }
});

// The gateway does not cut tracked connections: a reload that turns a rule to drop leaves a flow that has had replies
// (ESTABLISHED to conntrack) going on, as the README says. Until its first reply, though, each datagram of a UDP flow
// is a new connection to the rules: a one-way stream (syslog, NetFlow) stops at the reload.
kernel(`a reload that turns a rule to drop: a UDP flow that had replies goes on, a one-way stream stops at once${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.udp.path);
  t.is(applied.code, 0, applied.stderr);
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const answering = await udpListener(office.client.namespace, office.client.address, 5006);
  const quiet = await udpListener(office.client.namespace, office.client.address, 5007, 'quiet');
  try {
    const send = (port: number, toPort: number, text: string) => udpSend(lab.client.namespace, lab.client.address, port, office.client.address, toPort, text);
    t.is((await send(40051, 5006, 'two-way 1')).stdout.trim(), 'pong');
    await send(40052, 5007, 'one-way 1');
    const dropped = await apply(files.udpDropped.path);
    t.is(dropped.code, 0, dropped.stderr);
    await send(40051, 5006, 'two-way 2');
    await send(40052, 5007, 'one-way 2');
    await send(40053, 5006, 'new flow');
    t.deepEqual(answering.lines, ['two-way 1', 'two-way 2'], 'the flow with a reply goes on; a new one is dropped');
    t.deepEqual(quiet.lines, ['one-way 1'], 'the one-way stream stopped at the reload');
  } finally {
    await answering.stop();
    await quiet.stop();
  }
});

// A server in office that talks by itself (a shell's output, a log tail): one numbered line every 100 ms to the client
// it has; and a client that prints each line it receives.
const PUSH_SCRIPT = String.raw`const [mode, address, port] = process.argv.slice(1);
const net = require('node:net');
if (mode === 'server') {
  net.createServer((c) => { let n = 0; const timer = setInterval(() => c.write('push ' + ++n + '\n'), 100); c.on('error', () => clearInterval(timer)); c.on('close', () => clearInterval(timer)); })
    .listen(Number(port), address, () => console.log('ready'));
} else {
  const c = net.connect(Number(port), address, () => console.log('ready'));
  let rest = ''; c.on('data', (d) => { rest += d; const lines = rest.split('\n'); rest = lines.pop(); for (const l of lines) console.log(l); });
  c.on('error', (e) => console.log('error ' + e.code));
}`;

const pushing = (ns: string, mode: 'server' | 'client', address: string, port: number) =>
  nodeScript(ns, PUSH_SCRIPT, [mode, address, String(port)], 30_000);

// The README's way to cut a connection the policy no longer allows: delete its conntrack entry. The next packet is then
// a new connection to the rules, in the direction it goes, and Linux picks TCP up from any packet, not only a SYN
// (nf_conntrack_tcp_loose): when office's server talks next and office may open connections to lab, lab's connection
// goes on, taken for one from office. The README's rules.dir line (NEW TCP without SYN dropped) makes the cut stick.
kernel(`a TCP connection whose entry is deleted after a policy change is picked up by its next packet, in that packet's direction; the README's rules.dir line cuts it${NEEDS_ROOT}`, async (t) => {
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const server = await pushing(office.client.namespace, 'server', office.client.address, 22);
  t.teardown(() => server.stop());
  const received = async (client: { lines: string[] }, ms: number) => {
    const before = client.lines.length;
    await new Promise((resolve) => setTimeout(resolve, ms));
    return client.lines.length - before;
  };
  // The entries of tcp/22 flows, whichever side conntrack takes for the one that opened them.
  const entries = async () => (await inNs(router, 'conntrack', '-L', '-p', 'tcp')).split('\n').filter((l) => / (s|d)port=22 /.test(l)).join('\n');

  for (const [cut, strict] of [[files.reverse, false], [files.reverseStrict, true]] as const) {
    const opened = await apply(files.drop.path); // lab → office tcp/22 accepted
    t.is(opened.code, 0, opened.stderr);
    await inNs(router, 'conntrack', '-F');
    const client = await pushing(lab.client.namespace, 'client', office.client.address, 22);
    try {
      t.true(await received(client, 500) >= 3, 'office\'s server talks to lab\'s client');
      const applied = await apply(cut.path);
      t.is(applied.code, 0, applied.stderr);
      t.true(await received(client, 500) >= 3, 'the gateway does not cut a connection for a policy change');
      await inNs(router, 'conntrack', '-D', '-s', lab.subnet, '-d', office.subnet);
      if (strict) {
        t.is(await received(client, 1000), 0, 'with the README\'s line, the connection is cut');
        t.is(await entries(), '', 'and nothing picked it up');
      } else {
        t.true(await received(client, 1000) >= 5, 'picked up from office\'s next packet, which office → lab accepts');
        t.regex(await entries(), new RegExp(`^tcp +6 \\d+ ESTABLISHED src=${office.client.address.replaceAll('.', '\\.')} dst=${lab.client.address.replaceAll('.', '\\.')} sport=22 `),
          'now taken for a connection office opened');
      }
    } finally {
      await client.stop();
    }
  }
});

// A port forward, like a rule, is decided when a flow starts: conntrack keeps a UDP flow's NAT for as long as it keeps
// sending. A client that kept sending to a port before it was forwarded (a WireGuard or SIP peer retrying from its
// fixed port) had an entry for the gateway itself, and its datagrams stayed there after the forward was added; the
// apply that adds the forward now clears that entry (and only such entries: a VLAN host's own flow to a remote port of
// the same number keeps its entry).
kernel(`a UDP port forward added while a client keeps sending from one port: that port is forwarded right after the apply; a VLAN host's own flow to that port number is untouched${NEEDS_ROOT}`, async (t) => {
  t.is((await apply(files.masquerade.path)).code, 0, 'no UDP forward yet');
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const listener = await udpListener(lab.client.namespace, lab.client.address, 6003, 'quiet');
  const remote = await udpListener(topology.inet, topology.uplink.internetHost, 6003);
  const send = (port: number, text: string) => udpSend(topology.inet, topology.uplink.internetHost, port, topology.uplink.routerAddress, 6003, text);
  // conntrack's id of an entry, by its original source port: the same id is the same entry, never deleted.
  const entries = (sport: number) => inNs(router, 'conntrack', '-L', '-o', 'id', '-p', 'udp', '--orig-port-src', String(sport));
  const idOf = (listing: string) => /\bid=(\d+)/.exec(listing)?.[1];
  try {
    // office's host to the Internet host's 6003, from its own 51820 (masqueraded; the reply makes it a flow).
    t.is((await udpSend(office.client.namespace, office.client.address, 51820, topology.uplink.internetHost, 6003, 'outbound')).stdout.trim(), 'pong');
    const outbound = idOf(await entries(51820));
    t.truthy(outbound);
    await send(40061, 'before the forward'); // to the gateway itself, which has nothing on 6003
    t.regex(await entries(40061), new RegExp(`dport=6003 \\[UNREPLIED\\] src=${topology.uplink.routerAddress.replaceAll('.', '\\.')} `),
      'the first datagram\'s entry: to the gateway, not translated');
    const applied = await apply(files.range.path); // udp/6000-6010 → lab's host
    t.is(applied.code, 0, applied.stderr);
    t.true(applied.stdout.includes('~ conntrack: clear UDP flows to 6000-6010 that reached the gateway itself (port forward added)'), applied.stdout);
    await send(40061, 'same port, after the forward');
    await new Promise((resolve) => setTimeout(resolve, 300));
    t.deepEqual(listener.lines, ['same port, after the forward']);
    t.regex(await entries(40061), new RegExp(`dport=6003 \\[UNREPLIED\\] src=${lab.client.address.replaceAll('.', '\\.')} `), 'its entry now: DNATed to lab\'s host');
    t.is(idOf(await entries(51820)), outbound, 'office\'s own flow to a remote 6003: the same entry');
    t.deepEqual(remote.lines, ['outbound']);
  } finally {
    await listener.stop();
    await remote.stop();
  }
  t.is((await apply(files.masquerade.path)).code, 0);
});

// The other way: a flow forwarded by a forward that a reload points at another host, then removes, kept going to the
// old host while it kept sending. Each apply clears the entries that forward had DNATed.
kernel(`a UDP flow forwarded to a host goes to the new host once the forward is moved, and to nobody once it is removed${NEEDS_ROOT}`, async (t) => {
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const atLab = await udpListener(lab.client.namespace, lab.client.address, 6004, 'quiet');
  const atOffice = await udpListener(office.client.namespace, office.client.address, 6004, 'quiet');
  const send = (text: string) => udpSend(topology.inet, topology.uplink.internetHost, 40063, topology.uplink.routerAddress, 6004, text);
  const wait = () => new Promise((resolve) => setTimeout(resolve, 300));
  try {
    t.is((await apply(files.range.path)).code, 0); // udp/6000-6010 → lab's host
    await send('to lab');
    const moved = await apply(files.rangeMoved.path); // udp/6000-6010 → office's host
    t.is(moved.code, 0, moved.stderr);
    t.true(moved.stdout.includes(`~ conntrack: clear UDP flows to 6000-6010 forwarded to ${lab.client.address}:6000-6010 (port forward changed)`), moved.stdout);
    await send('to office');
    const removed = await apply(files.masquerade.path);
    t.is(removed.code, 0, removed.stderr);
    await send('to nobody');
    await wait();
    t.deepEqual(atLab.lines, ['to lab']);
    t.deepEqual(atOffice.lines, ['to office']);
    t.regex(await inNs(router, 'conntrack', '-L', '-p', 'udp', '--orig-port-src', '40063'),
      new RegExp(`dport=6004 \\[UNREPLIED\\] src=${topology.uplink.routerAddress.replaceAll('.', '\\.')} `), 'the gateway\'s own now');
  } finally {
    await atLab.stop();
    await atOffice.stop();
  }
  t.is((await apply(files.masquerade.path)).code, 0);
});

// A range widened or narrowed still sends most of its ports to the same host: the flows on those ports are right as
// they are. Their entries were deleted all the same (every flow of the old range), so a server's next datagram
// before its client's left as a new flow, masqueraded. Only the ports that no longer go there lose their flows.
kernel(`a UDP range widened keeps its forwarded flows; narrowed, only the flows of the ports it gave up are cleared${NEEDS_ROOT}`, async (t) => {
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const atLab = await udpListener(lab.client.namespace, lab.client.address, 6005);
  const atLab15 = await udpListener(lab.client.namespace, lab.client.address, 6015);
  const send = (port: number, text: string) => udpSend(topology.inet, topology.uplink.internetHost, 40064, topology.uplink.routerAddress, port, text);
  const idOf = async (port: number) => /\bid=(\d+)/.exec(await inNs(router, 'conntrack', '-L', '-o', 'id', '-p', 'udp', '--orig-port-src', '40064', '--orig-port-dst', String(port)))?.[1];
  try {
    t.is((await apply(files.range.path)).code, 0); // udp/6000-6010 → lab's host
    t.is((await send(6005, 'to lab')).stdout.trim(), 'pong');
    const flow = await idOf(6005);
    t.truthy(flow);
    const widened = await apply(files.rangeWidened.path);
    t.is(widened.code, 0, widened.stderr);
    t.false(widened.stdout.includes('forwarded to'), widened.stdout);
    t.is(await idOf(6005), flow, 'the same entry: 6005 goes to lab\'s host as before');
    t.is((await send(6015, 'to lab, 6015')).stdout.trim(), 'pong');
    const narrowed = await apply(files.range.path);
    t.is(narrowed.code, 0, narrowed.stderr);
    t.true(narrowed.stdout.includes(`~ conntrack: clear UDP flows to 6011-6020 forwarded to ${lab.client.address}:6011-6020 (port forward removed)`), narrowed.stdout);
    t.is(await idOf(6005), flow);
    t.is(await idOf(6015), undefined, '6015 is no longer forwarded: its flow is cleared');
  } finally {
    await atLab.stop();
    await atLab15.stop();
  }
  t.is((await apply(files.masquerade.path)).code, 0);
});

// Our FORWARD jump found below a rule of someone else's (moved, or a copy of it appended after one) used to count
// as in place: what that rule accepted skipped the policy, and plan said "in sync".
kernel(`our FORWARD jump below a rule of someone else's is moved back to the top, and the policy decides again${NEEDS_ROOT}`, async (t) => {
  t.is((await apply(files.drop.path)).code, 0);
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const ping = async () => (await runner.run(['ip', 'netns', 'exec', office.client.namespace, 'ping', '-c', '1', '-W', '1', lab.client.address], { allowFailure: true })).exitCode;
  const forward = async () => (await save(router, 'nft', '-t', 'filter')).split('\n').filter((l) => l.startsWith('-A FORWARD '));
  const ours = '-A FORWARD -m comment --comment "vgw:hook-fwd-was-0" -j VGW-FORWARD';
  const foreign = '-A FORWARD -s 192.168.10.0/24 -m comment --comment foreign -j ACCEPT';
  t.not(await ping(), 0, 'office → lab is dropped by default');
  try {
    for (const drift of ['moved below', 'copied below'] as const) {
      if (drift === 'moved below') {
        await inNs(router, 'iptables-nft', '-I', 'FORWARD', '1', '-s', '192.168.10.0/24', '-m', 'comment', '--comment', 'foreign', '-j', 'ACCEPT');
        t.is(await ping(), 0, 'the foreign ACCEPT decides first');
      } else {
        // A copy of ours appended below theirs: removing the copy by its text used to remove ours, at the top.
        await inNs(router, 'iptables-nft', '-A', 'FORWARD', '-m', 'comment', '--comment', 'vgw:hook-fwd-was-0', '-j', 'VGW-FORWARD');
      }
      const applied = await apply(files.drop.path);
      t.is(applied.code, 0, applied.stderr);
      t.deepEqual(await forward(), [ours, foreign], drift);
      t.not(await ping(), 0, `${drift}: the policy decides again`);
      t.is((await cli('plan', '--detailed-exitcode', '--netns', router, '--config', files.drop.path)).code, 0);
    }
  } finally {
    await inNs(router, 'iptables-nft', '-D', 'FORWARD', '-s', '192.168.10.0/24', '-m', 'comment', '--comment', 'foreign', '-j', 'ACCEPT').catch(() => undefined);
  }
  t.is((await apply(files.masquerade.path)).code, 0);
});

// ARP, as the README's "Which NIC answers ARP" says. The gateway address sits beside Docker's on the VLAN's NIC, so a
// VLAN host that asks for it gets that NIC's MAC. Linux's defaults answer for any address of the gateway on any NIC
// (arp_ignore=0), and ask with the address the packet to send comes from (arp_announce=0): office's host learns an
// entry for the uplink address, an address outside its subnet. With the sysctls the README recommends, each NIC
// answers for its own addresses alone and asks with one of its own, and every probe of the lab passes as before.
kernel(`ARP: a VLAN host resolves its gateway address to the gateway's NIC on its VLAN; arp_ignore=1 and arp_announce=2 keep each NIC to its own addresses, traffic unchanged${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(files.masquerade.path);
  t.is(applied.code, 0, applied.stderr);
  const office = topology.vlans.find((v) => v.name === 'office')!;
  const lab = topology.vlans.find((v) => v.name === 'lab')!;
  const macOf = async (ns: string, nic: string) => (JSON.parse(await inNs(ns, 'ip', '-j', 'link', 'show', 'dev', nic)) as Array<{ address: string }>)[0]!.address;
  const officeMac = await macOf(router, office.routerInterface);
  const uplinkMac = await macOf(router, topology.uplink.routerInterface);
  /** The MACs that answer `address` on the network of `ns`'s NIC `nic`. */
  const answers = async (ns: string, nic: string, address: string) =>
    arpingSenders((await runner.run(['ip', 'netns', 'exec', ns, 'arping', '-c', '1', '-w', '1', '-I', nic, address], { allowFailure: true })).stdout, address);
  /** The addresses office's host holds neighbour entries for after it pings `address`, the gateway having to ask for it. */
  const learnedByOffice = async (address: string) => {
    const ns = office.client.namespace;
    await runner.run(['ip', '-n', ns, 'neigh', 'flush', 'all']);
    await inNs(ns, 'ping', '-c', '1', '-W', '1', office.gateway);
    await runner.run(['ip', '-n', router, 'neigh', 'flush', 'all']);
    await inNs(ns, 'ping', '-c', '1', '-W', '1', address);
    return (JSON.parse(await inNs(ns, 'ip', '-j', 'neigh', 'show', 'dev', office.client.interface)) as Array<{ dst: string }>).map((n) => n.dst).sort();
  };
  const keys = ['net.ipv4.conf.all.arp_ignore', 'net.ipv4.conf.all.arp_announce'];
  const before = (await inNs(router, 'sysctl', '-n', ...keys)).trim().split('\n');
  t.deepEqual(before, ['0', '0'], 'Linux\'s defaults in the router namespace');
  const sysctls = (values: readonly string[]) => inNs(router, 'sysctl', '-q', '-w', ...keys.map((key, i) => `${key}=${values[i]}`));

  t.deepEqual(await answers(office.client.namespace, office.client.interface, office.gateway), [officeMac], 'the gateway address: office\'s NIC');
  t.deepEqual(await answers(office.client.namespace, office.client.interface, lab.gateway), [officeMac], 'Linux\'s default: lab\'s gateway address answered on office');
  t.deepEqual(await answers(topology.inet, 'eth0', office.gateway), [uplinkMac], 'and office\'s on the uplink');
  t.true((await learnedByOffice(topology.uplink.routerAddress)).includes(topology.uplink.routerAddress), 'asked with the uplink address as sender');
  try {
    await sysctls(['1', '2']);
    t.deepEqual(await answers(office.client.namespace, office.client.interface, office.gateway), [officeMac]);
    t.deepEqual(await answers(office.client.namespace, office.client.interface, lab.gateway), [], 'each NIC answers for its own addresses');
    t.deepEqual(await answers(office.client.namespace, office.client.interface, topology.uplink.routerAddress), []);
    t.deepEqual(await answers(topology.inet, 'eth0', office.gateway), []);
    t.deepEqual(await learnedByOffice(topology.uplink.routerAddress), [office.gateway, office.routerAddress].sort(), 'asked with an address of office\'s own');
    const result = await labCheck(runner, topology, files.masquerade.config);
    t.true(result.ok, formatMatrix(result));
  } finally {
    await sysctls(before);
  }
});
