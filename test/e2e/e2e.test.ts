/**
 * The container tier (issue 4): the image built from image/Dockerfile, run on a real Docker engine the way users
 * run it, with real packets between containers.
 *
 * The engine is private (test/e2e/docker-env.sh: its own dockerd, socket, data root; no docker0, no iptables or
 * ip_forward changes in the machine's namespace). The VLANs are macvlan networks whose parents are veth pairs
 * created here (`vgwt*`, no addresses, IPv6 off); the uplink is an `--internal` macvlan network holding an
 * "Internet" container on documentation addresses (203.0.113.0/24) that has no route back to the VLANs, so a
 * VLAN client reaches it only through the gateway's MASQUERADE. Nothing leaves the machine.
 *
 * One file, serial tests, one engine: ava runs test files in parallel processes.
 *
 * Two Docker facts shape the flow (both seen on docker.io 20.10.24):
 *   - With an `--internal` uplink, Docker routes the gateway container's own default through the VLAN network
 *     whose name sorts first among the non-internal ones. So the gateway's config names its uplink NIC by MAC
 *     (pinned with --mac-address) rather than "the NIC of the default route", and does not set uplink.gateway.
 *   - When a `docker network connect` would move that default to another network after the gateway took the
 *     old network's gateway address, Docker fails the connect with "failed to set gateway while updating
 *     gateway: file exists" (by the look of libnetwork, the old default cannot be removed once its gateway is a
 *     local address, so adding the new one collides), leaving the container half-connected. The
 *     VLANs are therefore connected in name order (vlan10, then vlan20, later vlan30), which keeps Docker's
 *     choice on vlan10 throughout.
 *
 * Latency probes run inside a client container: one `ping -c1 -W0.1` after another, each after flushing the
 * client's neighbour table, so that what is measured is when the gateway answers and forwards, not the client
 * kernel's one-second ARP retry; the timestamp of the first reply comes from the same clock Docker's StartedAt
 * uses. A figure over its bound is measured once more before the test fails; every figure is printed.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { dump as stringifyYaml, load as parseYaml } from 'js-yaml';
import {
  addVethPair, BASE_IMAGE, deleteLink, docker, DOCKER, dockerEnvSh, envTimings, epochSeconds, hasCommand, inspect,
  must, mustDocker, now, ourContainers, ourLinks, ourNetns, ourNetworks, readIpForward, REPO, run, seconds, sleep,
  waitFor, whyNotRunnable,
} from './engine.js';
import { tearDownAlways } from '../helpers/teardown.js';

const IMAGE = 'vlan-gateway:test';
const GW = 'vgwt-gw';
const INET = 'vgwt-inet';
const INET_ADDRESS = '203.0.113.10';
const GW_UPLINK_ADDRESS = '203.0.113.2';
const GW_UPLINK_MAC = '02:42:cb:00:71:02';
const NET = { vlan10: 'vgwt-vlan10', vlan20: 'vgwt-vlan20', vlan30: 'vgwt-vlan30', uplink: 'vgwt-uplink' } as const;
const CLIENT = {
  c10: { name: 'vgwt-client10', network: NET.vlan10, address: '192.168.10.10' },
  c20: { name: 'vgwt-client20', network: NET.vlan20, address: '192.168.20.10' },
  c30: { name: 'vgwt-client30', network: NET.vlan30, address: '192.168.30.10' },
} as const;
/** veth pairs: [parent of the Docker network, its peer]. Compose's VLAN parents follow ${VLAN_PARENT}.10 / .20. */
const VETHS: ReadonlyArray<readonly [string, string]> = [
  ['vgwt10a', 'vgwt10b'], ['vgwt20a', 'vgwt20b'], ['vgwt30a', 'vgwt30b'], ['vgwtupa', 'vgwtupb'],
  ['vgwtc.10', 'vgwtc10p'], ['vgwtc.20', 'vgwtc20p'], ['vgwtcupa', 'vgwtcupb'],
  ['vgwtf10a', 'vgwtf10b'], ['vgwtf20a', 'vgwtf20b'], ['vgwtfupa', 'vgwtfupb'],
];
/** The flat lab's segment: a namespace whose bridge joins the peers of vgwtf10a and vgwtf20a, and is a host on it. */
const FLAT_NS = 'vgwt-flat';
/** The sysctls the README's `docker run` and compose.yaml start the gateway with. */
const ARP_SYSCTLS = ['--sysctl', 'net.ipv4.conf.all.arp_ignore=1', '--sysctl', 'net.ipv4.conf.all.arp_announce=2'] as const;
const COMPOSE_PROJECT = 'vgwtc';
const COMPOSE_FILES = ['-f', join(REPO, 'compose.yaml'), '-f', join(REPO, 'test/e2e/compose.e2e.yaml')];

const RESTART_BOUND_S = 2;
const HOTPLUG_BOUND_S = 1;
const STOP_BOUND_MS = 5000; // issue 3: SIGTERM → exit 0 within 5 s; Docker's grace period is 10 s

const tierStart = now();
const timings: Record<string, string> = {};
const record = (t: ExecutionContext, name: string, value: string) => {
  timings[name] = value;
  t.log(`${name}: ${value}`);
};

let scratch = '';
let composeConfigDir = '';

// ---------------------------------------------------------------------------------------------- engine start

const notRunnable = whyNotRunnable();
let startProblem: string | undefined;
let cannotInstall: string | undefined;
if (notRunnable === undefined) {
  // `start` installs docker.io (and debootstrap) with apt-get when absent, then starts the private engine.
  const started = await dockerEnvSh(['start']);
  if (started.ok) {
    timings['engine start'] = `${seconds(started.ms)} (${JSON.stringify(envTimings(started.stderr))})`;
  } else if (!hasCommand('dockerd')) {
    cannotInstall = `docker.io could not be installed: ${started.stderr.trim().split('\n').slice(-3).join(' | ')}`;
  } else {
    startProblem = `test/e2e/docker-env.sh start failed:\n${started.stderr.trim().split('\n').slice(-20).join('\n')}`;
  }
}
const skipReason = notRunnable ?? cannotInstall;
const runnable = skipReason === undefined && startProblem === undefined;
const serial = runnable ? test.serial : test.serial.skip;

if (skipReason !== undefined) {
  // On a developer's machine the tier may be skipped, with the reason; in CI it must run, so skipping fails there.
  if (process.env.CI) test('the container tier runs in CI', (t) => t.fail(`container tier cannot run: ${skipReason}`));
  else test.skip(`container tier skipped: ${skipReason}`, () => {});
}
if (startProblem !== undefined) {
  test.serial('the private Docker engine starts', (t) => t.fail(startProblem));
}

// ---------------------------------------------------------------------------------------------- helpers

const exec = (container: string, args: readonly string[], timeout = 60_000) => docker(['exec', container, ...args], { timeout });

/** Pings from a container; returns the replies and the TTLs seen (63: one router on the way). */
async function ping(container: string, target: string, count = 3): Promise<{ received: number; ttls: number[]; output: string }> {
  const r = await exec(container, ['ping', '-c', String(count), '-i', '0.2', '-W', '1', target]);
  const received = Number(/(\d+) received/.exec(r.stdout)?.[1] ?? 0);
  const ttls = [...r.stdout.matchAll(/ttl=(\d+)/g)].map((m) => Number(m[1]));
  return { received, ttls, output: (r.stdout + r.stderr).trim() };
}

/**
 * Inside `container`, pings `target` until the first reply (fresh ARP every try, see the header) and returns the
 * wall-clock time of that reply in seconds, or undefined after `deadlineS`.
 */
async function firstReply(container: string, target: string, deadlineS = 10): Promise<number | undefined> {
  const script = [
    'deadline=$(( $(date +%s) + $2 ))',
    'while [ "$(date +%s)" -lt "$deadline" ]; do',
    '  ip neigh flush dev eth0 2>/dev/null',
    '  if ping -c1 -W0.1 -q "$1" >/dev/null 2>&1; then date +%s.%N; exit 0; fi',
    'done',
    'exit 1',
  ].join('\n');
  const r = await exec(container, ['bash', '-c', script, 'probe', target, String(deadlineS)], (deadlineS + 20) * 1000);
  return r.ok ? Number(r.stdout.trim()) : undefined;
}

/** What address the Internet container sees a TCP connection from `container` come from. */
async function sourceSeenByInternet(container: string): Promise<string> {
  const client = "const s=require('net').connect({host:process.argv[1],port:8080,timeout:3000});let d='';"
    + "s.on('data',c=>d+=c);s.on('end',()=>{process.stdout.write(d.trim());process.exit(0)});"
    + "s.on('timeout',()=>{console.error('timeout');process.exit(2)});s.on('error',e=>{console.error(e.message);process.exit(1)})";
  const r = await exec(container, ['node', '-e', client, INET_ADDRESS]);
  if (!r.ok) throw new Error(`TCP from ${container} to ${INET_ADDRESS}:8080 failed: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** GET of `url` from inside `container` (node does the request: no curl in the images). */
async function httpGet(container: string, url: string): Promise<{ status: number; body: string }> {
  const script = "fetch(process.argv[1]).then(async r=>{process.stdout.write(r.status+'\\n'+await r.text())})"
    + ".catch(e=>{console.error(e.message);process.exit(1)})";
  const r = await exec(container, ['node', '-e', script, url]);
  if (!r.ok) throw new Error(`GET ${url} in ${container}: ${r.stderr.trim()}`);
  const [status, ...body] = r.stdout.split('\n');
  return { status: Number(status), body: body.join('\n') };
}

/** GET on the gateway's HTTP port, from inside its container. */
const gatewayHttp = (container: string, path: string) => httpGet(container, `http://127.0.0.1:10123${path}`);

const waitReady = (container: string, timeoutMs = 15_000) =>
  waitFor(`${container} /readyz 200`, timeoutMs, async () => ((await gatewayHttp(container, '/readyz')).status === 200 ? true : undefined), 200);

function metricValue(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const m = /^[^{]+\{([^}]*)\}\s+(\S+)/.exec(line);
    if (!m) continue;
    const have = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[2]);
  }
  return undefined;
}

/** Docker's embedded DNS works from inside the gateway, and the nat chains that carry it are intact. */
async function assertDockerDnsIntact(t: ExecutionContext, container: string, names: readonly string[], when: string) {
  for (const name of names) {
    const r = await exec(container, ['getent', 'hosts', name]);
    t.true(r.ok && r.stdout.includes(name), `${when}: getent hosts ${name} in ${container}: ${r.stdout}${r.stderr}`);
  }
  const nat = (await exec(container, ['iptables-save', '-t', 'nat'])).stdout;
  for (const line of [
    ':DOCKER_OUTPUT - [', ':DOCKER_POSTROUTING - [',
    '-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT', '-A POSTROUTING -d 127.0.0.11/32 -j DOCKER_POSTROUTING',
  ]) {
    t.true(nat.includes(line), `${when}: iptables-save -t nat in ${container} lacks "${line}":\n${nat}`);
  }
  const dnat = nat.split('\n').filter((l) => l.startsWith('-A DOCKER_OUTPUT ') && l.includes('--dport 53') && l.includes('DNAT'));
  t.is(dnat.length, 2, `${when}: DOCKER_OUTPUT should DNAT udp and tcp port 53:\n${nat}`);
}

async function gatewayLogs(container: string): Promise<string> {
  const r = await docker(['logs', container]);
  return `${r.stdout}\n${r.stderr}`;
}

async function runDetached(args: readonly string[]) {
  return mustDocker(['run', '-d', ...args]);
}

async function startClient(c: { name: string; network: string; address: string }) {
  // NET_ADMIN only for the probe's `ip neigh flush`; --init so that removal does not wait for a grace period.
  await runDetached(['--name', c.name, '--init', '--cap-add', 'NET_ADMIN', '--network', c.network, '--ip', c.address, BASE_IMAGE, 'sleep', 'infinity']);
}

/** Containers and networks of the `docker run` scenarios; the compose project has its own. */
async function removeRunTopology() {
  const names = [GW, INET, 'vgwt-nocap', 'vgwt-nosysctl', 'vgwt-neither', 'vgwt-noraw', 'vgwt-listen', ...Object.values(CLIENT).map((c) => c.name)];
  await docker(['rm', '-f', ...names]);
  for (const n of Object.values(NET)) await docker(['network', 'rm', n]);
}

function composeEnv(): Record<string, string> {
  return {
    VLAN_PARENT: 'vgwtc',
    E2E_UPLINK_PARENT: 'vgwtcupa',
    E2E_UPLINK_MAC: GW_UPLINK_MAC,
    E2E_GATEWAY_DIR: composeConfigDir || '/nonexistent',
    VLAN_GATEWAY_IMAGE: IMAGE,
    DEMO_CLIENT_IMAGE: BASE_IMAGE,
  };
}

const compose = (args: readonly string[], extraEnv: Record<string, string> = {}) =>
  run('docker-compose', ['-p', COMPOSE_PROJECT, ...COMPOSE_FILES, ...args], { cwd: REPO, env: { ...composeEnv(), ...extraEnv } });

let cleanedUp = false;
/** Idempotent: the compose project, our containers and networks, then our veths, then the scratch directory. */
async function cleanupAll() {
  if (cleanedUp) return;
  if (hasCommand('docker-compose')) await compose(['--profile', 'demo', 'down', '--volumes', '--remove-orphans', '--timeout', '2']);
  await removeRunTopology();
  // Anything else named vgwt* that an interrupted test left in the engine.
  for (const c of await ourContainers()) if (c.startsWith('vgwt')) await docker(['rm', '-f', c]);
  for (const n of await ourNetworks()) if (n.startsWith('vgwt')) await docker(['network', 'rm', n]);
  for (const [a, b] of VETHS) {
    await deleteLink(a);
    await deleteLink(b);
  }
  await run('ip', ['netns', 'del', FLAT_NS]);
  if (scratch) await rm(scratch, { recursive: true, force: true });
  cleanedUp = true;
}

// ---------------------------------------------------------------------------------------------- setup, teardown

test.before('base image, image build, veths', async (t) => {
  if (!runnable) return;
  t.timeout(25 * 60_000, 'base image and image build');

  const base = await dockerEnvSh(['base-image']);
  if (!base.ok) throw new Error(`docker-env.sh base-image failed:\n${base.stderr.trim().split('\n').slice(-30).join('\n')}`);
  const bt = envTimings(base.stderr);
  record(t, 'base image', `${seconds(base.ms)} (${'base-build-total' in bt ? 'cold: debootstrap + Node + import' : 'cached'}; ${JSON.stringify(bt)})`);

  const build = await dockerEnvSh(['build', IMAGE]);
  if (!build.ok) throw new Error(`docker-env.sh build failed:\n${build.stderr.trim().split('\n').slice(-40).join('\n')}`);
  const size = Number(await inspect(IMAGE, '{{.Size}}'));
  record(t, 'image build', seconds(build.ms));
  record(t, 'image size', `${(size / 1e6).toFixed(0)} MB (${size} bytes; docker image inspect, on the Debian test base)`);

  scratch = await mkdtemp(join(tmpdir(), 'vgwt-e2e-'));
  for (const [a, b] of VETHS) await addVethPair(a, b);
});

tearDownAlways('remove everything the tests created, stop the engine', async (say) => {
  if (skipReason !== undefined) return;
  const t0 = now();
  try {
    await cleanupAll();
  } finally {
    const stopped = await dockerEnvSh(['stop']);
    if (!stopped.ok) say(`docker-env.sh stop failed: ${stopped.stderr.trim()}`);
    timings['teardown (cleanup + engine stop)'] = seconds(now() - t0);
    timings['whole tier'] = seconds(now() - tierStart);
    say(`timings:\n${Object.entries(timings).map(([k, v]) => `  ${k}: ${v}`).join('\n')}`);
  }
});

// ---------------------------------------------------------------------------------------------- scenarios

serial("the write-up's flow: two VLANs routed to each other, the Internet sees the gateway's uplink address", async (t) => {
  const t0 = now();
  await mustDocker(['network', 'create', '-d', 'macvlan', '--subnet', '192.168.10.0/24', '--gateway', '192.168.10.1', '-o', 'parent=vgwt10a', NET.vlan10]);
  await mustDocker(['network', 'create', '-d', 'macvlan', '--subnet', '192.168.20.0/24', '--gateway', '192.168.20.1', '-o', 'parent=vgwt20a', NET.vlan20]);
  await mustDocker(['network', 'create', '-d', 'macvlan', '--subnet', '192.168.30.0/24', '--gateway', '192.168.30.1', '-o', 'parent=vgwt30a', NET.vlan30]);
  await mustDocker(['network', 'create', '-d', 'macvlan', '--internal', '--subnet', '203.0.113.0/24', '--gateway', '203.0.113.1', '-o', 'parent=vgwtupa', NET.uplink]);

  // The "Internet": a TCP server on the uplink network that answers with the peer address it sees.
  await runDetached(['--name', INET, '--init', '--network', NET.uplink, '--ip', INET_ADDRESS, BASE_IMAGE, 'node', '-e',
    "require('net').createServer((s)=>s.end(s.remoteAddress.replace(/^::ffff:/,'')+'\\n')).listen(8080)"]);
  const inetRoutes = (await exec(INET, ['ip', 'route'])).stdout;
  t.false(/default|192\.168\./.test(inetRoutes), `the Internet container must have no route back to the VLANs:\n${inetRoutes}`);

  // In a directory of its own, mounted as the README mounts /etc/vlan-gateway.
  await mkdir(join(scratch, 'run'));
  const runConfig = join(scratch, 'run', 'gateway.yaml');
  await writeFile(runConfig, stringifyYaml({
    uplink: { interface: { mac: GW_UPLINK_MAC }, nat: 'masquerade' },
    vlans: [
      { name: 'office', id: 10, subnet: '192.168.10.0/24', gateway: '192.168.10.1' },
      { name: 'lab', id: 20, subnet: '192.168.20.0/24', gateway: '192.168.20.1' },
      { name: 'guest', id: 30, subnet: '192.168.30.0/24', gateway: '192.168.30.1' }, // attached later (hot-plug)
    ],
    forwarding: { default: 'accept' },
  }));

  const tRun = now();
  await runDetached(['--name', GW, '--cap-add', 'NET_ADMIN', '--sysctl', 'net.ipv4.ip_forward=1', ...ARP_SYSCTLS,
    '--network', NET.uplink, '--ip', GW_UPLINK_ADDRESS, '--mac-address', GW_UPLINK_MAC,
    '-v', `${dirname(runConfig)}:/etc/vlan-gateway:ro`, IMAGE]);
  await waitReady(GW);
  record(t, 'docker run → /readyz (uplink only, VLANs waiting)', seconds(now() - tRun));
  t.notRegex(await gatewayLogs(GW), /mounted on its own/, 'the README\'s directory mount draws no warning');

  for (const c of [CLIENT.c10, CLIENT.c20, CLIENT.c30]) await startClient(c);

  // Hot-plug the VLAN NICs, in name order (see the header).
  const tConnect = Date.now() / 1000;
  for (const net of [NET.vlan10, NET.vlan20]) {
    const r = await docker(['network', 'connect', net, GW]);
    t.true(r.ok, `docker network connect ${net} ${GW}: ${r.stderr}`);
  }
  const routed = await firstReply(CLIENT.c10.name, CLIENT.c20.address);
  t.truthy(routed, 'vlan10 client never reached the vlan20 client');
  if (routed) record(t, 'connect vlan10 + vlan20 → first routed ping', seconds((routed - tConnect) * 1000));

  // Real packets, both ways, one router hop (TTL 64 - 1).
  for (const [from, to] of [[CLIENT.c10, CLIENT.c20], [CLIENT.c20, CLIENT.c10]] as const) {
    const p = await ping(from.name, to.address);
    t.is(p.received, 3, `${from.name} → ${to.address}:\n${p.output}`);
    t.true(p.ttls.length > 0 && p.ttls.every((ttl) => ttl === 63), `expected TTL 63 (routed once):\n${p.output}`);
  }
  // The Internet container sees the gateway's uplink address: MASQUERADE, since it has no route to 192.168.x.
  t.is(await sourceSeenByInternet(CLIENT.c10.name), GW_UPLINK_ADDRESS);
  t.is(await sourceSeenByInternet(CLIENT.c20.name), GW_UPLINK_ADDRESS);
  const back = await exec(INET, ['ping', '-c', '1', '-W', '1', CLIENT.c10.address]);
  t.false(back.ok, 'the Internet container must not reach a VLAN client directly');

  const addrs = (await exec(GW, ['ip', '-o', '-4', 'addr', 'show'])).stdout;
  t.regex(addrs, /192\.168\.10\.1\/24/);
  t.regex(addrs, /192\.168\.20\.1\/24/);
  record(t, "scenario: write-up's flow", seconds(now() - t0));
});

serial("Docker's embedded DNS resolves container names from inside the gateway; its nat chains are intact", async (t) => {
  const t0 = now();
  await assertDockerDnsIntact(t, GW, [CLIENT.c10.name, CLIENT.c20.name], 'after the hot-plug applies');
  record(t, 'scenario: embedded DNS', seconds(now() - t0));
});

serial('/metrics from inside the container counts the forwarded packets', async (t) => {
  const t0 = now();
  const p = await ping(CLIENT.c10.name, CLIENT.c20.address, 10);
  t.is(p.received, 10, p.output);
  // Kernel counters are read every 5 s (--stats-interval); wait for a read after the pings.
  const text = await waitFor('forwarded_packets_total{from="office",to="lab"} >= 10', 20_000, async () => {
    const m = await gatewayHttp(GW, '/metrics');
    const v = metricValue(m.body, 'vlan_gateway_forwarded_packets_total', { from: 'office', to: 'lab', action: 'accept' });
    return m.status === 200 && v !== undefined && v >= 10 ? m.body : undefined;
  }, 500);
  t.true(text.includes('vlan_gateway_forwarded_packets_total'));
  t.is(metricValue(text, 'vlan_gateway_vlan_up', { vlan: 'office' }), 1);
  t.is(metricValue(text, 'vlan_gateway_vlan_up', { vlan: 'lab' }), 1);
  t.is(metricValue(text, 'vlan_gateway_vlan_up', { vlan: 'guest' }), 0, 'guest is not attached yet');
  t.true((metricValue(text, 'vlan_gateway_nat_packets_total', { vlan: 'office', kind: 'masquerade' }) ?? 0) >= 1,
    'the TCP connection to the Internet container was masqueraded');

  // The image's HEALTHCHECK (/healthz, every 10 s) and the README's `docker exec … vlan-gateway status`.
  const health = await waitFor('Docker health status "healthy"', 25_000, async () => {
    const h = await inspect(GW, '{{.State.Health.Status}}');
    return h === 'healthy' ? h : undefined;
  }, 500);
  t.is(health, 'healthy');
  const status = await exec(GW, ['vlan-gateway', 'status']);
  t.true(status.ok, `vlan-gateway status: ${status.stderr}`);
  t.regex(status.stdout, /office/);
  t.regex(status.stdout, /guest/);
  // `docker exec … vlan-gateway down` beside the container's supervisor would leave the VLANs routed without policy
  // (ip_forward stays on: Docker's --sysctl set it) until the supervisor's next check: it is refused, changing nothing.
  const down = await exec(GW, ['vlan-gateway', 'down']);
  t.false(down.ok, 'down beside the supervisor is refused');
  t.regex(down.stderr, /vlan-gateway run \(pid \d+\) manages this network namespace and would undo this down at its next check/);
  t.regex((await exec(GW, ['iptables-save', '-t', 'filter'])).stdout, /-A FORWARD .*-j VGW-FORWARD/, 'the policy is still hooked');

  // The endpoints answer the uplink side (the Internet container stands for a Prometheus on the LAN) and refuse a
  // host on a VLAN, whichever of the gateway's addresses it asks (http.allowFrom is not set here).
  t.is((await httpGet(INET, `http://${GW_UPLINK_ADDRESS}:10123/metrics`)).status, 200, 'from the uplink side');
  for (const target of ['192.168.10.1', GW_UPLINK_ADDRESS]) {
    const refused = await httpGet(CLIENT.c10.name, `http://${target}:10123/status`);
    t.is(refused.status, 403, `from VLAN office to ${target}: ${refused.body}`);
    t.regex(refused.body, /192\.168\.10\.10 is on VLAN office.*http\.allowFrom: \[office\]/);
  }
  t.regex(await gatewayLogs(GW), /HTTP request refused: 192\.168\.10\.10 is on VLAN office/);
  const counted = metricValue((await gatewayHttp(GW, '/metrics')).body, 'vlan_gateway_http_refused_total', { vlan: 'office' });
  t.is(counted, 2, 'vlan_gateway_http_refused_total{vlan="office"}');
  record(t, 'scenario: /metrics, health, status', seconds(now() - t0));
});

serial(`docker restart: routing is back within ${RESTART_BOUND_S} s of the container starting, no manual step`, async (t) => {
  const t0 = now();
  const measure = async () => {
    const restart = await docker(['restart', GW]);
    t.true(restart.ok, restart.stderr);
    const startedAt = await inspect(GW, '{{.State.StartedAt}}');
    const reply = await firstReply(CLIENT.c10.name, CLIENT.c20.address);
    if (reply === undefined) throw new Error('no reply within 10 s of the restart');
    return { restartMs: restart.ms, startedAt, delayS: reply - epochSeconds(startedAt) };
  };
  let m = await measure();
  t.log(`docker restart took ${seconds(m.restartMs)}; first routed ping ${m.delayS.toFixed(2)} s after StartedAt`);
  if (m.delayS > RESTART_BOUND_S) {
    t.log(`over the ${RESTART_BOUND_S} s bound; measuring once more`);
    m = await measure();
    t.log(`second measurement: ${m.delayS.toFixed(2)} s`);
  }
  record(t, 'restart: StartedAt → first routed ping', `${m.delayS.toFixed(2)} s (docker restart itself ${seconds(m.restartMs)})`);
  t.true(m.delayS <= RESTART_BOUND_S, `routing came back ${m.delayS.toFixed(2)} s after the container started`);

  // The supervisor's own account: process up, then the start pass logged (at its end, after the routes work).
  const started = epochSeconds(m.startedAt);
  type Line = { time: string; msg: string; trigger?: string; codeCache?: string; config?: string; rules?: string };
  const startLines = await waitFor('the start pass in the logs', 5000, async () => {
    const lines = (await gatewayLogs(GW)).split('\n').filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Line).filter((l) => Date.parse(l.time) / 1000 >= started - 0.001);
    const starting = lines.find((l) => l.msg === 'vlan-gateway starting');
    const applied = lines.find((l) => l.trigger === 'start' && l.msg.startsWith('reconciled'));
    const planCache = lines.find((l) => l.msg === 'plan cache after the start pass');
    return starting && applied && planCache ? { starting, applied, planCache } : undefined;
  }, 250).catch((error: unknown) => {
    t.log(String(error));
    return undefined;
  });
  if (startLines) {
    record(t, 'restart: StartedAt → process up → start pass logged',
      `${(Date.parse(startLines.starting.time) / 1000 - started).toFixed(2)} s → ${(Date.parse(startLines.applied.time) / 1000 - started).toFixed(2)} s`);
    // The image's build made the code cache for its node and its NODE_OPTIONS (src/launcher.ts): V8 takes it.
    t.is(startLines.starting.codeCache, 'used', 'the bundle was loaded with the code cache the image build made');
    // The container's /run survived the restart: the config its last run parsed is there. Its rules were kept at
    // its stop too, but under its NICs' names then, and Docker names them anew at this first restart (it attaches
    // --internal networks last: the uplink is eth2 now), so they are rendered again.
    t.like(startLines.planCache, { config: 'cached' });
  }
  // The next restart finds both: the NICs keep the names the first restart gave them.
  const again = await docker(['restart', GW]);
  t.true(again.ok, again.stderr);
  const secondStart = epochSeconds(await inspect(GW, '{{.State.StartedAt}}'));
  t.truthy(await firstReply(CLIENT.c10.name, CLIENT.c20.address), 'routed after the second restart');
  const cacheLine = await waitFor('the second restart\'s plan cache line', 5000, async () => (await gatewayLogs(GW)).split('\n')
    .filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Line)
    .find((l) => l.msg === 'plan cache after the start pass' && Date.parse(l.time) / 1000 >= secondStart - 0.001), 250);
  t.like(cacheLine, { config: 'cached', rules: 'cached' });
  t.is(await sourceSeenByInternet(CLIENT.c10.name), GW_UPLINK_ADDRESS, 'MASQUERADE is back too');
  await assertDockerDnsIntact(t, GW, [CLIENT.c10.name, CLIENT.c20.name], 'after the restart apply');
  record(t, 'scenario: restart', seconds(now() - t0));
});

serial(`docker network connect of a third VLAN while running: routed within ${HOTPLUG_BOUND_S} s`, async (t) => {
  const t0 = now();
  const measure = async () => {
    const probe = firstReply(CLIENT.c30.name, CLIENT.c10.address);
    await sleep(500); // the probe is looping (and failing: vlan30 has no router yet)
    const tConnect = Date.now() / 1000;
    const connect = await docker(['network', 'connect', NET.vlan30, GW]);
    t.true(connect.ok, `docker network connect ${NET.vlan30}: ${connect.stderr}`);
    const reply = await probe;
    if (reply === undefined) throw new Error('vlan30 client never reached the vlan10 client');
    return { connectMs: connect.ms, delayS: reply - tConnect };
  };
  let m = await measure();
  t.log(`docker network connect took ${seconds(m.connectMs)}; first routed ping ${m.delayS.toFixed(2)} s after it was issued`);
  if (m.delayS > HOTPLUG_BOUND_S) {
    t.log(`over the ${HOTPLUG_BOUND_S} s bound; disconnecting and measuring once more`);
    await mustDocker(['network', 'disconnect', NET.vlan30, GW]);
    await sleep(1500);
    m = await measure();
    t.log(`second measurement: ${m.delayS.toFixed(2)} s`);
  }
  record(t, 'hot-plug: network connect issued → first routed ping', `${m.delayS.toFixed(2)} s (the connect command itself ${seconds(m.connectMs)})`);
  t.true(m.delayS <= HOTPLUG_BOUND_S, `vlan30 was routed ${m.delayS.toFixed(2)} s after the connect`);

  const p = await ping(CLIENT.c30.name, CLIENT.c10.address);
  t.is(p.received, 3, p.output);
  t.is(await sourceSeenByInternet(CLIENT.c30.name), GW_UPLINK_ADDRESS);
  await assertDockerDnsIntact(t, GW, [CLIENT.c10.name, CLIENT.c20.name, CLIENT.c30.name], 'after the vlan30 hot-plug apply');
  record(t, 'scenario: hot-plug', seconds(now() - t0));
});

serial(`docker stop: exits 0 well within the grace period (${STOP_BOUND_MS / 1000} s bound, Docker's default grace 10 s)`, async (t) => {
  const stop = await docker(['stop', GW]);
  t.true(stop.ok, stop.stderr);
  const [exitCode, oom] = (await inspect(GW, '{{.State.ExitCode}} {{.State.OOMKilled}}')).split(' ');
  record(t, 'stop: docker stop', `${seconds(stop.ms)}, exit code ${exitCode}`);
  t.is(exitCode, '0');
  t.is(oom, 'false');
  t.true(stop.ms < STOP_BOUND_MS, `docker stop took ${seconds(stop.ms)}`);
  t.regex(await gatewayLogs(GW), /"msg":"stopped"/);
});

/*
 * The issue's literal flow: `docker run --network vlan10 …`, then `docker network connect` of the uplink and of
 * vlan20, with a config that finds the uplink by `uplink.gateway` (no uplink.interface). Docker gives a container
 * started on vlan10 a default route through vlan10's reserved gateway (192.168.10.1, the address the gateway
 * takes itself); the gateway must still pick the NIC on uplink.gateway's network as its uplink, never a VLAN's.
 */
const issueFlow = runnable ? test.serial : test.serial.skip;
issueFlow("the issue's flow (docker run --network vlan10, then connect uplink and vlan20) with uplink.gateway", async (t) => {
  const t0 = now();
  const gw2 = 'vgwt-gw2';
  const config = join(scratch, 'gateway-by-uplink-gateway.yaml');
  await writeFile(config, stringifyYaml({
    uplink: { gateway: INET_ADDRESS, nat: 'masquerade' },
    vlans: [
      { name: 'office', id: 10, subnet: '192.168.10.0/24', gateway: '192.168.10.1' },
      { name: 'lab', id: 20, subnet: '192.168.20.0/24', gateway: '192.168.20.1' },
    ],
  }));
  try {
    await runDetached(['--name', gw2, '--cap-add', 'NET_ADMIN', '--sysctl', 'net.ipv4.ip_forward=1', '--network', NET.vlan10,
      '-v', `${config}:/etc/vlan-gateway/gateway.yaml:ro`, IMAGE]);
    await mustDocker(['network', 'connect', '--ip', '203.0.113.3', NET.uplink, gw2]);
    await mustDocker(['network', 'connect', NET.vlan20, gw2]);
    const reply = await firstReply(CLIENT.c10.name, CLIENT.c20.address, 5);
    t.truthy(reply, `vlan10 client never reached the vlan20 client; gateway status:\n${(await gatewayHttp(gw2, '/status').catch((e: unknown) => ({ body: String(e) }))).body}`);
    t.is(await sourceSeenByInternet(CLIENT.c10.name), '203.0.113.3');
  } finally {
    await docker(['rm', '-f', gw2]);
    record(t, "known bug: issue's flow", seconds(now() - t0));
  }
});

/** Runs the image without a required flag and returns its exit code, logs and how long it lived. */
async function runMissing(name: string, flags: readonly string[]) {
  // A config directory of its own, so that these tests also run alone (--match).
  const dir = join(scratch, 'missing');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'gateway.yaml'), stringifyYaml({
    uplink: { interface: { mac: GW_UPLINK_MAC } },
    vlans: [{ name: 'office', id: 10, subnet: '192.168.10.0/24', gateway: '192.168.10.1' }],
  }));
  // --network none: nothing to route, and no second holder of a VLAN gateway address; the checks fail first.
  await runDetached(['--name', name, ...flags, '--network', 'none', '-v', `${dir}:/etc/vlan-gateway:ro`, IMAGE]);
  const waited = await docker(['wait', name], { timeout: 60_000 });
  const exitCode = Number(waited.stdout.trim());
  const [startedAt, finishedAt] = (await inspect(name, '{{.State.StartedAt}} {{.State.FinishedAt}}')).split(' ');
  return { exitCode, logs: await gatewayLogs(name), livedS: epochSeconds(finishedAt!) - epochSeconds(startedAt!) };
}

serial('missing --cap-add NET_ADMIN: exits non-zero and says which flag to add', async (t) => {
  const r = await runMissing('vgwt-nocap', ['--sysctl', 'net.ipv4.ip_forward=1']);
  record(t, 'missing NET_ADMIN: exit', `code ${r.exitCode} after ${r.livedS.toFixed(2)} s`);
  t.not(r.exitCode, 0);
  t.true(r.logs.includes('--cap-add NET_ADMIN'), `logs:\n${r.logs}`);
  t.log(r.logs.split('\n').filter((l) => l.startsWith('vlan-gateway:')).join('\n'));
});

serial('missing --sysctl net.ipv4.ip_forward=1: exits non-zero and says which flag to add', async (t) => {
  // A new namespace starts with the machine's ip_forward; where that is 1, say 0 explicitly to get the same case.
  const flags = readIpForward() === '1' ? ['--sysctl', 'net.ipv4.ip_forward=0'] : [];
  const r = await runMissing('vgwt-nosysctl', ['--cap-add', 'NET_ADMIN', ...flags]);
  record(t, 'missing ip_forward sysctl: exit', `code ${r.exitCode} after ${r.livedS.toFixed(2)} s`);
  t.not(r.exitCode, 0);
  t.true(r.logs.includes('--sysctl net.ipv4.ip_forward=1'), `logs:\n${r.logs}`);
  t.log(r.logs.split('\n').filter((l) => l.startsWith('vlan-gateway:')).join('\n'));
});

serial('--cap-drop ALL --cap-add NET_ADMIN (no NET_RAW): exits 1 at once and says to add --cap-add NET_RAW', async (t) => {
  // Docker grants NET_RAW by default; a hardened run that drops every capability and adds NET_ADMIN back lacks it,
  // and iptables' set match cannot look up the gateway's ipsets (before: every pass failed, "healthy" for 60 s).
  const r = await runMissing('vgwt-noraw', ['--cap-drop', 'ALL', '--cap-add', 'NET_ADMIN', '--sysctl', 'net.ipv4.ip_forward=1']);
  record(t, 'missing NET_RAW: exit', `code ${r.exitCode} after ${r.livedS.toFixed(2)} s`);
  t.is(r.exitCode, 1);
  const said = r.logs.split('\n').filter((l) => l.startsWith('vlan-gateway:')).join('\n');
  t.regex(said, /Can't open socket to ipset\.; the gateway needs the NET_RAW capability .*add --cap-add NET_RAW/, `logs:\n${r.logs}`);
  t.log(said);
});

serial('neither --cap-add NET_ADMIN nor --sysctl net.ipv4.ip_forward=1: one message names both flags', async (t) => {
  // The first read fails for want of NET_ADMIN before the sysctl is tried; a user who adds only that flag would
  // meet the second failure on the next start.
  const flags = readIpForward() === '1' ? ['--sysctl', 'net.ipv4.ip_forward=0'] : [];
  const r = await runMissing('vgwt-neither', flags);
  record(t, 'missing both: exit', `code ${r.exitCode} after ${r.livedS.toFixed(2)} s`);
  t.not(r.exitCode, 0);
  const said = r.logs.split('\n').filter((l) => l.startsWith('vlan-gateway:')).join('\n');
  t.regex(said, /--cap-add NET_ADMIN.*--sysctl net\.ipv4\.ip_forward=1/, `logs:\n${r.logs}`);
  t.log(said);
});

// A container started with `run --listen` elsewhere than the default: `docker exec … vlan-gateway status` asked
// 127.0.0.1:10123 and failed, and the image's health check did the same (unhealthy) unless VLAN_GATEWAY_HEALTHZ_URL
// said the address again. Both now ask the supervisor of the container's namespace where it listens.
serial('run --listen 127.0.0.1:9999: `vlan-gateway status` and the image\'s health check find it with no address given', async (t) => {
  const t0 = now();
  const name = 'vgwt-listen';
  const dir = join(scratch, 'listen');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'gateway.yaml'), stringifyYaml({
    uplink: { gateway: INET_ADDRESS, nat: 'masquerade' },
    vlans: [{ name: 'office', id: 10, subnet: '192.168.10.0/24', gateway: '192.168.10.1' }], // waits: no NIC of its own
  }));
  try {
    await runDetached(['--name', name, '--cap-add', 'NET_ADMIN', '--sysctl', 'net.ipv4.ip_forward=1', '--network', NET.uplink, '--ip', '203.0.113.5',
      '-v', `${dir}:/etc/vlan-gateway:ro`, IMAGE, 'run', '--listen', '127.0.0.1:9999']);
    const status = await waitFor('`vlan-gateway status` in the container', 30_000, async () => {
      const r = await exec(name, ['vlan-gateway', 'status']);
      return r.ok ? r : undefined;
    }, 500).catch(async (error: Error) => {
      throw new Error(`${error.message}; status: ${(await exec(name, ['vlan-gateway', 'status'])).stderr}\nlogs:\n${await gatewayLogs(name)}`);
    });
    t.regex(status.stdout, /office/);
    const check = await exec(name, ['sh', '/usr/local/bin/vlan-gateway-healthcheck']); // as the HEALTHCHECK runs it
    t.true(check.ok, `the health check in the container: ${check.stderr}\nlogs:\n${await gatewayLogs(name)}`);
  } finally {
    await docker(['rm', '-f', name]);
    record(t, 'scenario: run --listen found by status and the health check', seconds(now() - t0));
  }
});

/*
 * A flat lab: two of the gateway's VLAN networks on one segment (their parents, vgwtf10a and vgwtf20a, are two ports of
 * a bridge, as two NICs cabled to one switch VLAN would be; Docker refuses a second macvlan network on one parent).
 * With Linux's default ARP settings both of the gateway's NICs answer for office's gateway address, a host that keeps
 * lab's NIC's answer sends into lab's NIC and its packets are dropped as forged, and the gateway says so in /status
 * (its address-conflict probe hears its own other NIC). With the sysctls the README's `docker run` carries, only
 * office's NIC answers, the host is routed, and there is nothing to say.
 */
serial('a flat lab (two VLAN networks on one segment): without the ARP sysctls both NICs answer and /status warns; with them, one answers and the host is routed', async (t) => {
  const t0 = now();
  const gw = 'vgwt-flatgw';
  const client = 'vgwt-flatclient';
  const nets = { f10: 'vgwt-flat10', f20: 'vgwt-flat20', up: 'vgwt-flatup' };
  const uplinkMac = '02:42:c6:33:64:02';
  const dir = join(scratch, 'flat');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'gateway.yaml'), stringifyYaml({
    uplink: { interface: { mac: uplinkMac } },
    vlans: [
      { name: 'office', id: 110, subnet: '192.168.110.0/24', gateway: '192.168.110.1' },
      { name: 'lab', id: 120, subnet: '192.168.120.0/24', gateway: '192.168.120.1' },
    ],
    forwarding: { default: 'accept' },
  }));
  // The segment's bridge, in a namespace of the test's; it is also a host on office's subnet.
  await run('ip', ['netns', 'del', FLAT_NS]);
  await must('ip', ['netns', 'add', FLAT_NS]);
  const inFlat = (args: readonly string[]) => run('ip', ['netns', 'exec', FLAT_NS, ...args]);
  await must('ip', ['netns', 'exec', FLAT_NS, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  await must('ip', ['-n', FLAT_NS, 'link', 'add', 'br0', 'type', 'bridge']);
  for (const peer of ['vgwtf10b', 'vgwtf20b']) {
    await must('ip', ['link', 'set', peer, 'netns', FLAT_NS]);
    await must('ip', ['-n', FLAT_NS, 'link', 'set', peer, 'master', 'br0', 'up']);
  }
  await must('ip', ['-n', FLAT_NS, 'link', 'set', 'br0', 'up']);
  await must('ip', ['-n', FLAT_NS, 'addr', 'add', '192.168.110.50/24', 'dev', 'br0']);
  await must('ip', ['-n', FLAT_NS, 'route', 'add', 'default', 'via', '192.168.110.1']);

  await mustDocker(['network', 'create', '-d', 'macvlan', '--subnet', '192.168.110.0/24', '--gateway', '192.168.110.1', '-o', 'parent=vgwtf10a', nets.f10]);
  await mustDocker(['network', 'create', '-d', 'macvlan', '--subnet', '192.168.120.0/24', '--gateway', '192.168.120.1', '-o', 'parent=vgwtf20a', nets.f20]);
  await mustDocker(['network', 'create', '-d', 'macvlan', '--internal', '--subnet', '198.51.100.0/24', '--gateway', '198.51.100.1', '-o', 'parent=vgwtfupa', nets.up]);
  await startClient({ name: client, network: nets.f20, address: '192.168.120.10' });

  const startGateway = async (sysctls: readonly string[]) => {
    await docker(['rm', '-f', gw]);
    await runDetached(['--name', gw, '--cap-add', 'NET_ADMIN', '--sysctl', 'net.ipv4.ip_forward=1', ...sysctls,
      '--network', nets.up, '--ip', '198.51.100.2', '--mac-address', uplinkMac, '-v', `${dir}:/etc/vlan-gateway:ro`, IMAGE]);
    await waitReady(gw);
    for (const net of [nets.f10, nets.f20]) await mustDocker(['network', 'connect', net, gw]);
    type Link = { ifname: string; address: string; addr_info: Array<{ local: string }> };
    // Both VLANs routed (their gateway addresses taken) before anything is asked; each one's NIC by that address.
    const links = await waitFor('both gateway addresses', 10_000, async () => {
      const l = JSON.parse((await exec(gw, ['ip', '-j', 'addr', 'show'])).stdout) as Link[];
      const on = (address: string) => l.find((x) => x.addr_info.some((a) => a.local === address));
      return on('192.168.110.1') && on('192.168.120.1') ? { officeMac: on('192.168.110.1')!.address, labMac: on('192.168.120.1')!.address } : undefined;
    });
    return links;
  };
  const warnings = async () => (JSON.parse((await gatewayHttp(gw, '/status')).body) as { warnings: string[] }).warnings;
  /** The MACs that answered the host's two ARP requests for office's gateway address. */
  const answers = async () => {
    const r = await inFlat(['arping', '-c', '2', '-w', '2', '-I', 'br0', '192.168.110.1']);
    return [...new Set([...r.stdout.matchAll(/reply from 192\.168\.110\.1 \[([0-9A-F:]+)\]/g)].map((m) => m[1]!.toLowerCase()))].sort();
  };
  const hostPing = async () => (await inFlat(['ping', '-c', '2', '-i', '0.2', '-W', '1', '192.168.120.10'])).stdout;
  const spoofed = async () => metricValue((await gatewayHttp(gw, '/metrics')).body, 'vlan_gateway_dropped_packets_total', { reason: 'spoofed' }) ?? 0;

  try {
    // Linux's defaults.
    let macs = await startGateway([]);
    const said = await waitFor('the shared-segment warning in /status', 15_000, async () => {
      const w = (await warnings()).find((l) => l.startsWith('vlan office: the gateway\'s NIC'));
      return w;
    }, 250);
    t.regex(said, new RegExp(`^vlan office: the gateway's NIC eth\\d \\(vlan lab, ${macs.labMac}\\) answers ARP on eth\\d for the gateway address 192\\.168\\.110\\.1: `
      + 'eth\\d and eth\\d are on one network segment, .*start the gateway with --sysctl net\\.ipv4\\.conf\\.all\\.arp_ignore=1 --sysctl net\\.ipv4\\.conf\\.all\\.arp_announce=2'));
    t.log(said);
    t.deepEqual(await answers(), [macs.officeMac, macs.labMac].sort(), 'both of the gateway\'s NICs answer for office\'s gateway address');
    await inFlat(['ip', 'neigh', 'flush', 'dev', 'br0']);
    const first = await hostPing();
    const kept = (await inFlat(['ip', 'neigh', 'show', '192.168.110.1', 'dev', 'br0'])).stdout.trim();
    t.log(`the host's own ARP kept: ${kept} (${kept.includes(macs.labMac) ? 'lab\'s NIC' : 'office\'s NIC'}); its ping: ${/\d+ received/.exec(first)?.[0]}`);
    // A host that keeps lab's NIC's answer (the first to reach it, or the last): every packet dropped as forged.
    await must('ip', ['-n', FLAT_NS, 'neigh', 'replace', '192.168.110.1', 'lladdr', macs.labMac, 'dev', 'br0', 'nud', 'reachable']);
    const before = await spoofed();
    t.regex(await hostPing(), / 0 received/);
    const counted = await waitFor('spoofed drops counted', 15_000, async () => {
      const n = await spoofed();
      return n >= before + 2 ? n : undefined;
    }, 500);
    t.true(counted >= before + 2);

    // With the sysctls of the README's `docker run` and compose.yaml.
    macs = await startGateway(ARP_SYSCTLS);
    await inFlat(['ip', 'neigh', 'flush', 'dev', 'br0']);
    t.deepEqual(await answers(), [macs.officeMac], 'office\'s NIC alone answers');
    await inFlat(['ip', 'neigh', 'flush', 'dev', 'br0']);
    t.regex(await hostPing(), / 2 received/);
    // Both VLANs probed (a probe that hears nobody gives its VLAN a series), and nothing to say.
    await waitFor('both VLANs probed', 15_000, async () => {
      const m = (await gatewayHttp(gw, '/metrics')).body;
      return ['office', 'lab'].every((vlan) => metricValue(m, 'vlan_gateway_address_conflict', { vlan }) === 0) ? true : undefined;
    }, 250);
    t.deepEqual(await warnings(), []);
  } finally {
    await docker(['rm', '-f', gw, client]);
    for (const n of Object.values(nets)) await docker(['network', 'rm', n]);
    await run('ip', ['netns', 'del', FLAT_NS]);
    record(t, 'scenario: flat lab', seconds(now() - t0));
  }
});

/** Every PromQL expression of the Grafana dashboard, as recording rules that `promtool check rules` parses. */
async function dashboardRules(): Promise<{ file: string; count: number }> {
  const dashboard = JSON.parse(await readFile(join(REPO, 'deploy/grafana/dashboards/vlan-gateway.json'), 'utf8')) as {
    panels: Array<{ targets?: Array<{ expr?: string }> }>;
  };
  const exprs = dashboard.panels.flatMap((p) => p.targets ?? []).map((tg) => tg.expr).filter((e): e is string => Boolean(e));
  const rules = exprs.map((expr, i) => ({
    record: `vlan_gateway:dashboard_query_${i}`,
    expr: expr.replaceAll('$__rate_interval', '1m').replaceAll('$__range', '1h').replaceAll('$instance', '.*'),
  }));
  const file = join(scratch, 'dashboard-rules.yml');
  await writeFile(file, stringifyYaml({ groups: [{ name: 'dashboard', rules }] }));
  return { file, count: exprs.length };
}

serial('compose.yaml: valid for docker-compose 1.29, Prometheus and dashboard files check, gateway + demo clients route', async (t) => {
  const t0 = now();
  if (!hasCommand('docker-compose') || !hasCommand('promtool')) {
    t.fail('docker-compose and promtool are needed (Debian packages docker-compose and prometheus): run scripts/install-deps.sh');
    return;
  }
  await removeRunTopology(); // the compose networks use the same subnets

  // The file as users get it, with no variables set; the demo profile adds exactly the two clients.
  const plain = await run('docker-compose', ['-f', join(REPO, 'compose.yaml'), 'config', '-q'], { cwd: REPO });
  t.true(plain.ok, `docker-compose config: ${plain.stderr}`);
  const services = await run('docker-compose', ['-f', join(REPO, 'compose.yaml'), '--profile', 'demo', 'config', '--services'], { cwd: REPO });
  t.deepEqual(services.stdout.trim().split('\n').sort(), ['client10', 'client20', 'grafana', 'prometheus', 'vlan-gateway']);
  const resolved = await run('docker-compose', ['-f', join(REPO, 'compose.yaml'), 'config'], { cwd: REPO, env: { VLAN_PARENT: 'ens18' } });
  t.regex(resolved.stdout, /parent: ens18\.10/);
  t.regex(resolved.stdout, /parent: ens18\.20/);

  const prom = await must('promtool', ['check', 'config', join(REPO, 'deploy/prometheus.yml')]);
  t.regex(prom.stdout + prom.stderr, /SUCCESS/);
  const rules = await dashboardRules();
  const checked = await run('promtool', ['check', 'rules', rules.file]);
  t.true(checked.ok, `dashboard PromQL: ${checked.stdout}${checked.stderr}`);
  t.log(`promtool parsed the dashboard's ${rules.count} PromQL queries`);

  // The test's gateway config: deploy/vlan-gateway/gateway.yaml, with the uplink named by MAC (the uplink here is
  // --internal), in a directory of its own mounted as compose.yaml mounts deploy/vlan-gateway.
  const deployConfig = parseYaml(await readFile(join(REPO, 'deploy/vlan-gateway/gateway.yaml'), 'utf8')) as Record<string, unknown> & { uplink?: Record<string, unknown> };
  composeConfigDir = join(scratch, 'compose-gateway');
  await mkdir(composeConfigDir);
  const composeConfig = join(composeConfigDir, 'gateway.yaml');
  const testConfig = { ...deployConfig, uplink: { ...deployConfig.uplink, interface: { mac: GW_UPLINK_MAC } } };
  await writeFile(composeConfig, stringifyYaml(testConfig));
  const merged = await compose(['--profile', 'demo', 'config', '-q']);
  t.true(merged.ok, `docker-compose config with the test override: ${merged.stderr}`);

  // Prometheus and Grafana images cannot be pulled here: start them only if they happen to exist locally.
  const optional: string[] = [];
  for (const [service, image] of [['prometheus', 'prom/prometheus:v2.55.1'], ['grafana', 'grafana/grafana:11.3.0']] as const) {
    if ((await docker(['image', 'inspect', image])).ok) optional.push(service);
  }
  t.log(`services started: vlan-gateway, client10, client20${optional.length ? `, ${optional.join(', ')}` : ' (no Prometheus/Grafana image here)'}`);
  const tUp = now();
  const up = await compose(['--profile', 'demo', 'up', '-d', '--no-build', 'vlan-gateway', 'client10', 'client20', ...optional]);
  const upReturned = Date.now() / 1000;
  t.true(up.ok, `docker-compose up: ${up.stderr}`);
  record(t, 'compose up (gateway + demo clients)', seconds(now() - tUp));
  if (!up.ok) return;

  // Container ids by Compose's labels (the same for 1.29 and v2, whose container names differ), with the fast CLI.
  const id = async (service: string) => (await mustDocker(['ps', '-q',
    '--filter', `label=com.docker.compose.project=${COMPOSE_PROJECT}`, '--filter', `label=com.docker.compose.service=${service}`])).stdout.trim();
  const [gw, c10, c20] = [await id('vlan-gateway'), await id('client10'), await id('client20')];
  t.truthy(gw && c10 && c20, 'the three containers are running');
  const reply = await firstReply(c10, '192.168.20.10', 15);
  t.truthy(reply, 'client10 never reached client20 through the gateway');
  if (reply) record(t, 'compose up returned → first routed ping client10 → client20', `${(reply - upReturned).toFixed(2)} s`);

  t.is(await inspect(gw, '{{.HostConfig.RestartPolicy.Name}}'), 'unless-stopped');
  t.deepEqual(JSON.parse(await inspect(gw, '{{json .HostConfig.CapAdd}}')), ['NET_ADMIN']);
  t.false(JSON.parse(await inspect(gw, '{{json .HostConfig.Privileged}}')) as boolean);
  t.is(await inspect(gw, '{{index .HostConfig.Sysctls "net.ipv4.ip_forward"}}'), '1');
  // Each NIC answers ARP for its own addresses alone (README, "Which NIC answers ARP"; the flat-lab scenario above).
  t.deepEqual((await exec(gw, ['sysctl', '-n', 'net.ipv4.conf.all.arp_ignore', 'net.ipv4.conf.all.arp_announce'])).stdout.trim().split('\n'), ['1', '2']);
  for (const [from, to] of [[c10, '192.168.20.10'], [c20, '192.168.10.10']] as const) {
    const p = await ping(from, to);
    t.is(p.received, 3, p.output);
    t.true(p.ttls.every((ttl) => ttl === 63), p.output);
  }
  await assertDockerDnsIntact(t, gw, ['client10', 'client20'], 'compose deployment');

  // The config edited on the host as editors and `sed -i` save it (a new file renamed over the old one) reaches the
  // gateway through the directory mount, and is applied: new connections lab → office are dropped, while office →
  // lab still passes (the replies are accepted first).
  const edited = join(composeConfigDir, '.gateway.yaml.swp');
  await writeFile(edited, stringifyYaml({ ...testConfig, forwarding: { default: 'accept', rules: [{ from: 'lab', to: 'office', action: 'drop' }] } }));
  const tEdit = now();
  await rename(edited, composeConfig);
  // The reload's pass in the log first: a ping unanswered alone (its 1 s wait outlasted, a `docker exec` failing on a
  // loaded machine) is no sign that the edit was applied, and was taken for one before the reload had happened.
  const reloadLine = /"why":"\/etc\/vlan-gateway\/gateway\.yaml changed".*"msg":"config reloaded"/;
  const passLine = /"trigger":"reload".*"msg":"reconciled: changes applied"/;
  const applied = await waitFor('the edit reloaded and applied', 10_000, async () => {
    const logs = await gatewayLogs(gw);
    return reloadLine.test(logs) && passLine.test(logs) ? true : undefined;
  }, 100).catch(() => false);
  const dropped = applied && await waitFor('client20 → client10 dropped after the edit', 10_000, async () => ((await ping(c20, '192.168.10.10', 1)).received === 0 ? true : undefined), 100).catch(() => false);
  t.true(dropped, `the edit never took effect; gateway logs:\n${await gatewayLogs(gw)}`);
  if (dropped) record(t, 'compose: config renamed over on the host → seen applied (1 s pings)', seconds(now() - tEdit));
  t.regex(await gatewayLogs(gw), reloadLine);
  const stillOut = await ping(c10, '192.168.20.10');
  t.is(stillOut.received, 3, `office → lab after the edit: ${stillOut.output}`);

  const down = await compose(['--profile', 'demo', 'down', '--volumes', '--remove-orphans', '--timeout', '5']);
  t.true(down.ok, `docker-compose down: ${down.stderr}`);
  t.deepEqual((await ourContainers()).filter((c) => c.startsWith(COMPOSE_PROJECT)), []);
  t.deepEqual((await ourNetworks()).filter((n) => n.startsWith(COMPOSE_PROJECT)), []);
  record(t, 'scenario: compose', seconds(now() - t0));
});

serial('cleanup: no container, network, veth or namespace of the tests is left', async (t) => {
  await cleanupAll();
  t.deepEqual(await ourContainers(), [], 'docker ps -a');
  t.deepEqual(await ourNetworks(), [], 'docker network ls (custom)');
  const mine = new Set(VETHS.flat());
  t.deepEqual((await ourLinks()).filter((l) => mine.has(l)), [], 'ip link: our veths');
  // The tier creates no named namespace (Docker's live under its own run directory); say what is there anyway.
  const netns = await ourNetns();
  if (netns.length > 0) t.log(`ip netns list shows vgwt* namespaces that are not this tier's: ${netns.join(', ')}`);
  const volumes = (await docker(['volume', 'ls', '-q'])).stdout.trim();
  t.is(volumes, '', 'docker volume ls');
  t.log(`docker client used: ${DOCKER}`);
});
