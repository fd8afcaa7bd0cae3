/**
 * A container's (re)start: Docker sets `ip_forward=1` (--sysctl) and attaches the NICs before the supervisor runs,
 * and the VLAN hosts still send to the gateway's MAC they knew (a restarted container keeps its MACs). Their packets
 * are forwarded from that moment, with no policy and no NAT, and conntrack keeps both for as long as a flow goes on:
 * seen with `docker restart` of the gateway while a host of lab pinged office (dropped by the policy) and the
 * Internet: the ping to office went on being answered, the one to the Internet never came back (never NATed).
 * The start pass that puts the policy in clears the flows forwarded before it, and says so.
 *
 * Here: the lab's router namespace with ip_forward on and the clients' neighbour entries for their gateway address
 * set by hand (as the ARP cache a restart leaves them), UDP flows from fixed ports answered before the gateway starts.
 */
import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { join } from 'node:path';
import { dump as stringify, load as parse } from 'js-yaml';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { clientsKnowGatewayMac, exampleLab, GatewayProcess, inNs, REPO, runner, waitFor } from '../helpers/supervisor.js';
import { askUdp, udpResponder } from '../helpers/udp.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const setup = exampleLab(test, 'u', 'vgw-unpoliced-');
const { router } = setup;
const ECHO_PORT = 7107;
const INET_PORT = 7108;
const CLIENT_PORT = 40107;
const STREAM_PORT = 7109;

// The gateway's config: the example with lab → office dropped (the lab, built from the example, is the same).
test.before(async () => {
  if (!isRoot()) return;
  const example = parse(await readFile(setup.configPath, 'utf8')) as Record<string, unknown>;
  await writeFile(setup.configPath, stringify({ ...example, forwarding: { default: 'accept', rules: [{ from: 'lab', to: 'office', action: 'drop' }] } }));
});

kernel(`flows forwarded before the start pass put the policy in (ip_forward on, NICs attached first, as in a container) are cleared: they meet the policy and the NAT${NEEDS_ROOT}`, async (t) => {
  const office = setup.office();
  const lab = setup.lab();
  const u = setup.topology.uplink;
  // Docker's --sysctl net.ipv4.ip_forward=1 and its default route, and the hosts' ARP caches from before the restart.
  await inNs(router(), 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
  await inNs(router(), 'ip', 'route', 'replace', 'default', 'via', u.inetAddress);
  // Docker's embedded DNS rule, as in every container on a user-defined network: its DNAT has conntrack track (and
  // NAT nothing of) what the namespace forwards from the start.
  await inNs(router(), 'iptables', '-t', 'nat', '-N', 'DOCKER_OUTPUT');
  await inNs(router(), 'iptables', '-t', 'nat', '-A', 'OUTPUT', '-d', '127.0.0.11/32', '-j', 'DOCKER_OUTPUT');
  await inNs(router(), 'iptables', '-t', 'nat', '-A', 'DOCKER_OUTPUT', '-d', '127.0.0.11/32', '-p', 'udp', '--dport', '53', '-j', 'DNAT',
    '--to-destination', '127.0.0.11:53');
  await clientsKnowGatewayMac(setup.topology, [office, lab]);
  const servers = [
    udpResponder(runner, { namespace: office.client.namespace, address: office.client.address, port: ECHO_PORT }),
    udpResponder(runner, { namespace: setup.topology.inet, address: u.internetHost, port: INET_PORT }),
  ];
  try {
    await Promise.all(servers.map((child) => new Promise<void>((resolve) => child.onLine((line) => line === 'ready' && resolve()))));
    const send = async (host: string, port: number, text: string) => askUdp(runner, { namespace: lab.client.namespace, address: lab.client.address, port: CLIENT_PORT + (port === ECHO_PORT ? 0 : 1) }, { address: host, port }, text);

    // Before the gateway: forwarded as is, answered (lab → office too), and not NATed.
    t.is(await send(office.client.address, ECHO_PORT, 'before'), `${lab.client.address} before`);
    t.is(await send(u.internetHost, INET_PORT, 'before'), `${lab.client.address} before`);

    const gateway = await GatewayProcess.start({ bundle: setup.bundle.path, netns: router(), config: setup.configPath });
    try {
      await gateway.waitReady();
      // The start pass's end (its clears done), then the same flows, from the same ports: lab → office is dropped
      // now, and the Internet sees the uplink address.
      await gateway.waitForLog('the start pass', (l) => l.trigger === 'start' && /^reconciled/.test(l.msg));
      t.is(await send(office.client.address, ECHO_PORT, 'after'), 'none', 'lab → office is dropped by the policy');
      t.is(await send(u.internetHost, INET_PORT, 'after'), `${u.routerAddress} after`, 'masqueraded');
      const said = gateway.logs.find((l) => /forwarded before the policy was in place/.test(l.msg));
      t.is(said?.msg, 'cleared 2 flows forwarded before the policy was in place (the NICs were attached with ip_forward on before the gateway started): '
        + 'their next packets meet the policy and the NAT');
      t.is(said?.level, 30);
      // A restart of the supervisor in the same namespace finds its policy in place: nothing to clear, nothing said.
      await gateway.stop();
      const again = await GatewayProcess.start({ bundle: setup.bundle.path, netns: router(), config: setup.configPath });
      await again.waitReady();
      await new Promise((resolve) => setTimeout(resolve, 1000));
      t.false(again.logs.some((l) => /forwarded before the policy/.test(l.msg)), again.describeLogs());
      await again.stop();
    } finally {
      gateway.killGroup();
    }
  } finally {
    await Promise.all(servers.map((child) => child.stop()));
  }
});

// The policy's jump deleted behind the supervisor's back (an operator's `iptables -D FORWARD 1`): until the drift
// repair puts it back the namespace forwards with no policy, and a flow answered meanwhile kept its verdict for good
// (conntrack accepts its packets as replies). The repair clears it, and says why.
kernel(`the FORWARD jump deleted by hand: a flow forwarded around the policy until the drift repair is cleared by it${NEEDS_ROOT}`, async (t) => {
  const office = setup.office();
  const lab = setup.lab();
  await inNs(router(), 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
  const echo = udpResponder(runner, { namespace: office.client.namespace, address: office.client.address, port: ECHO_PORT });
  const gateway = await GatewayProcess.start({ bundle: setup.bundle.path, netns: router(), config: setup.configPath, statsIntervalMs: 2000 });
  try {
    await new Promise<void>((resolve) => echo.onLine((line) => line === 'ready' && resolve()));
    await gateway.waitReady();
    await gateway.waitForLog('the start pass', (l) => l.trigger === 'start' && /^reconciled/.test(l.msg));
    const send = async (text: string) => askUdp(runner, { namespace: lab.client.namespace, address: lab.client.address, port: CLIENT_PORT + 3 }, { address: office.client.address, port: ECHO_PORT }, text);
    t.is(await send('policed'), 'none', 'lab → office is dropped by the policy');
    const forwardRules = async () => (await inNs(router(), 'iptables', '-S', 'FORWARD')).split('\n');
    const jump = (await forwardRules()).find((l) => / -j VGW-FORWARD$/.test(l));
    t.truthy(jump);
    // Forwarded at once (FORWARD's policy is ACCEPT), answered: from now on a reply as far as conntrack knows. Should
    // the collector's reading come between the delete and the datagram, the repair is there first (and clears
    // nothing): again, once the jump is back.
    let around = '';
    for (let attempt = 0; attempt < 3 && around !== `${lab.client.address} around`; attempt++) {
      await waitFor('the jump in place', async () => (await forwardRules()).includes(jump!), 10_000, 50);
      await inNs(router(), 'iptables', '-D', 'FORWARD', '1');
      around = await send('around');
    }
    t.is(around, `${lab.client.address} around`);
    const repaired = await gateway.waitForLog('the drift repair', (l) => /forwarded while a jump of the gateway's was missing or bypassed/.test(l.msg));
    t.is(repaired.msg, 'cleared 1 flow forwarded while a jump of the gateway\'s was missing or bypassed (put back now): their next packets meet the policy and the NAT');
    t.true((await inNs(router(), 'iptables', '-S', 'FORWARD')).split('\n').includes(jump!), 'the jump is back');
    t.is(await send('after'), 'none', 'the same flow meets the policy again');
  } finally {
    gateway.killGroup();
    await echo.stop();
  }
});

/** A TCP server that sends "tick N" every 200 ms on each connection, and says how each one ends; or its client, which sends nothing. */
const TCP_SCRIPT = String.raw`const [mode, address, port, host] = process.argv.slice(1);
const net = require('node:net');
if (mode === 'server') {
  net.createServer((s) => {
    let n = 0;
    const timer = setInterval(() => s.write('tick ' + n++ + '\n'), 200);
    s.on('error', (e) => console.log('error ' + e.code));
    s.on('close', () => { clearInterval(timer); console.log('closed'); });
  }).listen(Number(port), address, () => console.log('ready'));
} else {
  const c = net.connect({ port: Number(port), host });
  c.setEncoding('utf8');
  c.on('data', (d) => process.stdout.write(d));
  c.on('error', (e) => console.log('error ' + e.code));
  c.on('close', () => { console.log('closed'); process.exit(0); });
}`;

/** A one-shot `vlan-gateway apply` or `down` of the lab's router namespace (state and plan cache in the scratch directory). */
const oneShot = (verb: 'apply' | 'down') => execa(process.execPath, [setup.bundle.path, verb, ...(verb === 'apply' ? ['--config', setup.configPath] : []),
  '--netns', router()], { cwd: REPO, reject: false, timeout: 60_000, env: { LC_ALL: 'C', VLAN_GATEWAY_PLAN_CACHE: 'off', VLAN_GATEWAY_STATE_DIR: join(setup.scratch, 'state') } });

// `down` where forwarding stays on (a container's --sysctl), then `apply`: the policy is put in where there was none,
// and what was forwarded meanwhile is cleared. A download from the Internet that the gateway masqueraded before the
// `down` went on through it (its entry keeps its NAT): the clear took its entry too, and the server's next segment
// reached the gateway itself, which reset it.
kernel(`down then apply (forwarding left on): a masqueraded connection from before the down goes on; a flow of the same hosts forwarded meanwhile is cleared${NEEDS_ROOT}`, async (t) => {
  const lab = setup.lab();
  const u = setup.topology.uplink;
  await inNs(router(), 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
  const first = await oneShot('apply');
  t.is(first.exitCode, 0, first.stderr);
  const server = runner.start(['ip', 'netns', 'exec', setup.topology.inet, process.execPath, '-e', TCP_SCRIPT, 'server', u.internetHost, String(STREAM_PORT)]);
  const echo = udpResponder(runner, { namespace: setup.topology.inet, address: u.internetHost, port: INET_PORT });
  const serverSaid: string[] = [];
  server.onLine((line) => serverSaid.push(line));
  let client: ReturnType<typeof runner.start> | undefined;
  try {
    await Promise.all([server, echo].map((child) => new Promise<void>((resolve) => child.onLine((line) => line === 'ready' && resolve()))));
    const ticks: string[] = [];
    client = runner.start(['ip', 'netns', 'exec', lab.client.namespace, process.execPath, '-e', TCP_SCRIPT, 'client', '', String(STREAM_PORT), u.internetHost]);
    client.onLine((line) => ticks.push(line));
    const tickAfter = async (count: number, what: string) => {
      for (const until = Date.now() + 3000; Date.now() < until && ticks.filter((l) => l.startsWith('tick')).length <= count;) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      t.true(ticks.filter((l) => l.startsWith('tick')).length > count, `${what}: ${ticks.join(', ')}; the server: ${serverSaid.join(', ')}`);
    };
    await tickAfter(0, 'the download runs, masqueraded');
    const down = await oneShot('down');
    t.is(down.exitCode, 0, down.stderr);
    t.is((await inNs(router(), 'sysctl', '-n', 'net.ipv4.ip_forward')).trim(), '1');
    // Meanwhile: a flow between the same two hosts, forwarded with no policy and no NAT.
    const send = async (text: string) => askUdp(runner, { namespace: lab.client.namespace, address: lab.client.address, port: CLIENT_PORT + 2 },
      { address: u.internetHost, port: INET_PORT }, text);
    t.is(await send('during'), `${lab.client.address} during`, 'not NATed while the gateway is down');
    const again = await oneShot('apply');
    t.is(again.exitCode, 0, again.stderr);
    t.regex(again.stdout, /^cleared 1 flow forwarded before the policy was in place: their next packets meet the policy and the NAT$/m);
    t.is(await send('after'), `${u.routerAddress} after`, 'the flow forwarded meanwhile is masqueraded now');
    const seen = ticks.filter((l) => l.startsWith('tick')).length;
    await tickAfter(seen + 2, 'the download goes on after the apply');
    t.deepEqual(serverSaid, ['ready'], 'the connection was not reset');
  } finally {
    await client?.stop();
    await Promise.all([server.stop(), echo.stop()]);
  }
});
