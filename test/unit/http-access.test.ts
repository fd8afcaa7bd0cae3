/**
 * Who may use the HTTP endpoints: the uplink side and the gateway itself, not hosts on the VLANs unless
 * http.allowFrom lets them in. The check as a table of clients, then the server answering 403 over a real socket.
 */
import { get as httpGet } from 'node:http';
import { connect, type Socket } from 'node:net';
import test from 'ava';
import { endpoints } from '../../src/cli/http-endpoints.js';
import { parseConfigText } from '../../src/config/load.js';
import { accessCheck, routedBehind } from '../../src/http/access.js';
import { HttpServer, MAX_CONNECTIONS } from '../../src/http/server.js';
import { makeLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics/metrics.js';
import type { ReloadState } from '../../src/reconcile/status.js';
import type { Supervisor } from '../../src/reconcile/supervisor.js';

const config = (allowFrom: string) => parseConfigText(`vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: guest, id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.1}
  - {name: mgmt, id: 99, subnet: 10.99.0.0/24, gateway: 10.99.0.1}
http: {allowFrom: ${allowFrom}}
`, 'x.yaml');

test('by default no host on a VLAN may, nor an IPv6 client; the uplink side and the gateway itself may', (t) => {
  const check = accessCheck(config('[]'));
  for (const allowed of ['127.0.0.1', '203.0.113.7', '172.31.0.1', '::1', '::ffff:203.0.113.7']) {
    t.is(check(allowed), undefined, allowed);
  }
  // A VLAN host reaching the gateway's link-local IPv6 address used to pass: IPv6 tells nothing of its side.
  for (const ipv6 of ['fe80::c05:bff:fe7d:7f4f', '2001:db8::5']) {
    t.deepEqual(check(ipv6), {
      vlan: '',
      reason: `${ipv6} is an IPv6 client, and the gateway's HTTP endpoints answer IPv4 clients only (and ::1): the side an IPv6 address comes from cannot be told`,
    });
  }
  t.deepEqual(check('192.168.30.23'), {
    vlan: 'guest',
    reason: '192.168.30.23 is on VLAN guest, and the gateway\'s HTTP endpoints answer the uplink side and the gateway itself only; allow it with http.allowFrom: [guest] (or its address) in the config',
  });
  t.regex(check('::ffff:192.168.10.1')?.reason ?? '', /^192\.168\.10\.1 is on VLAN office/, 'a dual-stack socket\'s form of an IPv4 client');
  t.is(check('10.99.0.200')?.vlan, 'mgmt');
});

test('the gateway itself, from one of its own addresses on a VLAN (a health check to a VLAN address), may', (t) => {
  const own = new Set(['192.168.10.2', '192.168.10.1', '203.0.113.2']);
  const check = accessCheck(config('[]'), (address) => own.has(address));
  t.is(check('192.168.10.2'), undefined, "Docker's address on office: the kernel's source for a connection to 192.168.10.1");
  t.is(check('::ffff:192.168.10.1'), undefined);
  t.is(check('192.168.10.3')?.vlan, 'office', 'a host beside it is still refused');
});

test('allowFrom lets in whole VLANs, single addresses and prefixes, and nobody else on their VLANs', (t) => {
  const check = accessCheck(config('[mgmt, 192.168.10.5, 192.168.30.16/28]'));
  t.is(check('10.99.0.200'), undefined, 'mgmt, the whole VLAN');
  t.is(check('192.168.10.5'), undefined, 'the one address');
  t.is(check('192.168.10.6')?.vlan, 'office', 'its neighbour');
  t.is(check('192.168.30.20'), undefined, 'inside the prefix');
  t.is(check('192.168.30.32')?.vlan, 'guest', 'just past the prefix');
  t.is(check('203.0.113.7'), undefined);
});

test('a network routed behind a VLAN host is that VLAN\'s side: refused unless the VLAN is allowed', (t) => {
  // 10.77.0.0/16 is routed via a host on office (eth1): a client there used to be taken for the uplink side, since
  // it is in no VLAN's subnet, and read /status and /metrics though the reply to it leaves by office's NIC.
  const routes = [
    { prefix: '10.77.0.0/16', dev: 'eth1' },
    { prefix: '10.77.5.0/24', dev: 'eth0' }, // more specific, via the uplink: that side
    { prefix: '10.88.0.0/16', dev: 'eth0', metric: 10 },
    { prefix: '10.88.0.0/16', dev: 'eth2', metric: 5 }, // guest's route is the one in use
    { prefix: '10.66.0.0/16', dev: 'eth0' },
  ];
  const behind = routedBehind(routes, new Map([['eth1', 'office'], ['eth2', 'guest']]));
  const check = accessCheck(config('[]'), () => false, behind);
  t.deepEqual(check('10.77.3.4'), {
    vlan: 'office',
    reason: '10.77.3.4 is in a network routed behind VLAN office, and the gateway\'s HTTP endpoints answer the uplink side and the gateway itself only; allow it with http.allowFrom: [office] in the config',
  });
  t.is(check('::ffff:10.77.3.4')?.vlan, 'office', 'a dual-stack socket\'s form');
  t.is(check('10.77.5.9'), undefined, 'the more specific route goes through the uplink');
  t.is(check('10.88.1.1')?.vlan, 'guest', 'the route of the lower metric');
  t.is(check('10.66.0.1'), undefined, 'routed through the uplink');
  t.is(check('203.0.113.7'), undefined, 'no route but the default: the uplink side');
  t.is(accessCheck(config('[office]'), () => false, behind)('10.77.3.4'), undefined, 'allowFrom: [office] lets in what is behind it');
});

test('the server answers a refused client 403 with the reason on every path, and others as before', async (t) => {
  let refuseLoopback = true;
  const server = new HttpServer({
    metrics: async () => 'vlan_gateway_up 1\n',
    health: () => ({ healthy: true }),
    ready: () => true,
    status: () => ({ ok: true }),
    refuse: (remote) => (refuseLoopback && remote === '127.0.0.1' ? 'you are on VLAN office' : undefined),
  });
  const { port } = await server.start('127.0.0.1:0');
  t.teardown(() => server.stop());
  for (const path of ['/metrics', '/status', '/healthz', '/nowhere']) {
    const response = await fetch(`http://127.0.0.1:${port}${path}`);
    t.is(response.status, 403, path);
    t.is(await response.text(), 'forbidden: you are on VLAN office\n');
  }
  refuseLoopback = false;
  const metrics = await fetch(`http://127.0.0.1:${port}/metrics`);
  t.is(metrics.status, 200);
  t.is(await metrics.text(), 'vlan_gateway_up 1\n');
});

test('a method other than GET or HEAD gets 405 with the methods allowed', async (t) => {
  const server = new HttpServer({ metrics: async () => '', health: () => ({ healthy: true }), ready: () => true, status: () => ({}) });
  const { port } = await server.start('127.0.0.1:0');
  t.teardown(() => server.stop());
  const response = await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST', body: 'x' });
  t.is(response.status, 405);
  t.is(response.headers.get('allow'), 'GET, HEAD');
});

/** A request from a given local address (127.0.0.0/8 is all loopback) for `path`: its status, or the error's code. */
function getFrom(localAddress: string, port: number, path: string, timeoutMs: number): Promise<number | string> {
  return new Promise((resolve) => {
    const req = httpGet({ host: '127.0.0.1', port, path, localAddress, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

test('refused clients cannot take every connection: Prometheus and the health check still get in', async (t) => {
  // A host on a VLAN opening connections and sending nothing used to hold all 512 for as long as the header
  // timeout let it (up to 40 s), and again: the endpoints answered nobody. Those a host on a VLAN holds are capped.
  const refused = (remote: string) => remote === '127.0.0.1';
  const server = new HttpServer({
    metrics: async () => 'vlan_gateway_up 1\n',
    health: () => ({ healthy: true }),
    ready: () => true,
    status: () => ({}),
    refuse: (remote) => (refused(remote) ? 'you are on VLAN guest' : undefined),
    refuses: refused,
  });
  const { port } = await server.start('127.0.0.1:0');
  const sockets: Socket[] = [];
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy();
    await server.stop();
  });
  await Promise.all(Array.from({ length: MAX_CONNECTIONS + 8 }, () => new Promise<void>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: '127.0.0.1' }, () => resolve());
    socket.on('error', () => resolve());
    socket.on('close', () => resolve());
    sockets.push(socket);
  })));
  t.is(await getFrom('127.0.0.2', port, '/healthz', 3000), 200, 'a client the endpoints serve');
  t.is(await getFrom('127.0.0.2', port, '/metrics', 3000), 200);
  // A refused client is still told why, on a connection it does not keep.
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.is(await getFrom('127.0.0.1', port, '/status', 3000), 403);
});

test('a connection that sends no request is closed after the 10 s header timeout, not up to 40 s later', async (t) => {
  t.timeout(30_000);
  const server = new HttpServer({ metrics: async () => '', health: () => ({ healthy: true }), ready: () => true, status: () => ({}) });
  const { port } = await server.start('127.0.0.1:0');
  t.teardown(() => server.stop());
  const started = Date.now();
  const closedAfter = await new Promise<number>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.resume();
    socket.on('error', () => {});
    socket.on('close', () => resolve(Date.now() - started));
    setTimeout(() => socket.destroy(), 25_000).unref();
  });
  t.true(closedAfter >= 9_000 && closedAfter <= 13_000, `closed after ${closedAfter} ms`);
});

test('the supervisor\'s endpoints refuse a client routed behind a VLAN by the routes its last pass read, and count it', async (t) => {
  // Loopback stands for a network routed via a host on office (127.0.0.0/8 via eth1 in the routes the pass read).
  const config = parseConfigText('vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\n', 'x.yaml');
  const office = config.vlans[0]!;
  const eth1 = { index: 2, name: 'eth1', mac: '02:00:00:00:00:01', up: true, loopback: false, addresses: [{ address: '192.168.10.2', prefix: 24 }] };
  const supervisor = {
    config: { path: 'x.yaml', text: '', config },
    view: { vlans: [{ vlan: office, nic: eth1 }], uplink: {}, links: [eth1], routes: [{ prefix: '127.0.0.0/8', dev: 'eth1' }] },
    ready: true,
    health: () => ({ healthy: true }),
  } as unknown as Supervisor;
  const metrics = new Metrics('0.0.0-test');
  const http = endpoints(supervisor, {} as ReloadState, metrics, '0.0.0-test', makeLogger('silent'));
  const { port } = await http.start('127.0.0.1:0');
  t.teardown(() => http.stop());
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  t.is(response.status, 403);
  t.is(await response.text(), 'forbidden: 127.0.0.1 is in a network routed behind VLAN office, and the gateway\'s HTTP endpoints answer the uplink '
    + 'side and the gateway itself only; allow it with http.allowFrom: [office] in the config\n');
  t.regex(await metrics.text(), /^vlan_gateway_http_refused_total\{vlan="office"\} 1$/m);
});

// A series born at 1 with the first refusal has no earlier sample: increase(vlan_gateway_http_refused_total[5m]) > 0
// stayed 0 for a VLAN's first refused request (a real Prometheus fired only at the second). Known labels start at 0.
test('vlan_gateway_http_refused_total is 0 for each VLAN (and vlan="") before any refusal, and follows the running config', async (t) => {
  const parse = (vlans: string) => parseConfigText(`vlans:\n${vlans}`, 'x.yaml');
  const supervisor = {
    config: { path: 'x.yaml', text: '', config: parse('  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\n'
      + '  - {name: guest, id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.1}\n') },
    view: undefined,
    ready: true,
    health: () => ({ healthy: true }),
  };
  const metrics = new Metrics('0.0.0-test');
  const http = endpoints(supervisor as unknown as Supervisor, {} as ReloadState, metrics, '0.0.0-test', makeLogger('silent'));
  const { port } = await http.start('127.0.0.1:0');
  t.teardown(() => http.stop());
  const refusedLines = async () => (await (await fetch(`http://127.0.0.1:${port}/metrics`)).text())
    .split('\n').filter((l) => l.startsWith('vlan_gateway_http_refused_total'));
  t.deepEqual(await refusedLines(), [
    'vlan_gateway_http_refused_total{vlan=""} 0',
    'vlan_gateway_http_refused_total{vlan="office"} 0',
    'vlan_gateway_http_refused_total{vlan="guest"} 0',
  ]);
  // A reload: guest leaves (its series with it), iot comes in at 0.
  supervisor.config = { ...supervisor.config, config: parse('  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\n'
    + '  - {name: iot, id: 40, subnet: 192.168.40.0/24, gateway: 192.168.40.1}\n') };
  t.deepEqual(await refusedLines(), [
    'vlan_gateway_http_refused_total{vlan=""} 0',
    'vlan_gateway_http_refused_total{vlan="office"} 0',
    'vlan_gateway_http_refused_total{vlan="iot"} 0',
  ]);
});

// The supervisor says where its endpoints listen (its log's `listen`, the lock's answer to `status`, the health check's
// file) as --listen writes an address: `::1:18735` was logged for `--listen [::1]:18735`, which no --listen takes.
test('where the endpoints listen is said as --listen writes it: an IPv6 host in brackets; nothing before they listen or after they stop', async (t) => {
  const server = new HttpServer({ metrics: async () => '', health: () => ({ healthy: true }), ready: () => true, status: () => ({}) });
  t.is(server.listening(), undefined);
  const bound = await server.start('[::1]:0');
  t.is(server.listening(), `[::1]:${bound.port}`);
  await server.stop();
  t.is(server.listening(), undefined);
  const v4 = new HttpServer({ metrics: async () => '', health: () => ({ healthy: true }), ready: () => true, status: () => ({}) });
  const at = await v4.start('127.0.0.1:0');
  try {
    t.is(v4.listening(), `127.0.0.1:${at.port}`);
  } finally {
    await v4.stop();
  }
});
