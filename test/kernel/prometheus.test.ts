/**
 * The metrics as users consume them, in the lab with real packets: after 10 pings office → lab the forwarded-packets
 * counter says at least 10, the interface counters moved, labels are VLAN names (never rule text), and the output
 * passes `promtool check metrics`. Then a real Prometheus server (Debian's `prometheus`), started by the test with a
 * temporary config and storage, scrapes the gateway every second, and a PromQL query through its HTTP API returns
 * the forwarded-packets series.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { dump as stringify } from 'js-yaml';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { exampleLab, freePort, GatewayProcess, inNs, metricValue, parseMetrics, ping, series, waitFor } from '../helpers/supervisor.js';

const kernel = isRoot() ? test.serial : test.serial.skip;

let gateway: GatewayProcess | undefined;
let prometheus: ChildProcess | undefined;
let prometheusLog = '';

/** Prometheus stopped before the scratch directory that holds its storage is removed. */
async function stopPrometheus(): Promise<void> {
  if (prometheus && prometheus.exitCode === null && prometheus.signalCode === null) {
    const exited = new Promise((resolve) => prometheus!.once('exit', resolve));
    prometheus.kill('SIGTERM');
    const timer = setTimeout(() => prometheus!.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

const setup = exampleLab(test, 'm', 'vgw-prometheus-', { stopFirst: stopPrometheus });
const { office, lab } = setup;

test.before(async () => {
  if (!isRoot()) return;
  gateway = await GatewayProcess.start({ bundle: setup.bundle.path, netns: setup.router(), config: setup.configPath, statsIntervalMs: 300 });
  await gateway.waitReady();
});

const OFFICE_TO_LAB = { from: 'office', to: 'lab', action: 'accept' };

kernel(`after 10 pings office → lab, forwarded_packets_total{from="office",to="lab"} is at least 10; promtool check metrics passes${NEEDS_ROOT}`, async (t) => {
  const before = metricValue(await gateway!.metrics(), 'vlan_gateway_forwarded_packets_total', OFFICE_TO_LAB);
  const rxBefore = metricValue(await gateway!.metrics(), 'vlan_gateway_interface_receive_packets_total', { vlan: 'office' });
  const pinged = await ping(office().client.namespace, lab().client.address, 10, 0.05);
  t.is(pinged.received, 10, pinged.output);
  const { value, ms } = await waitFor('the forwarded-packets counter to reach 10', async () => {
    const v = metricValue(await gateway!.metrics(), 'vlan_gateway_forwarded_packets_total', OFFICE_TO_LAB);
    return v - before >= 10 ? v : undefined;
  }, 5000, 100);
  t.log(`forwarded_packets_total{from="office",to="lab",action="accept"} ${before} → ${value} (${Math.round(ms)} ms after the pings; stats every 300 ms)`);

  const text = await gateway!.metricsText();
  const samples = parseMetrics(text);
  t.true(value - before >= 10);
  t.true(metricValue(samples, 'vlan_gateway_forwarded_packets_total', { from: 'lab', to: 'office', action: 'accept' }) >= 10, 'the replies, lab → office');
  t.true(metricValue(samples, 'vlan_gateway_forwarded_bytes_total', OFFICE_TO_LAB) >= 10 * 84, 'at least 10 × 84 bytes');
  t.true(metricValue(samples, 'vlan_gateway_interface_receive_packets_total', { vlan: 'office' }) - rxBefore >= 10, 'office NIC received them');
  t.true(metricValue(samples, 'vlan_gateway_interface_transmit_packets_total', { vlan: 'lab' }) >= 10, 'lab NIC sent them');
  t.is(metricValue(samples, 'vlan_gateway_vlan_up', { vlan: 'office', interface: office().routerInterface }), 1);
  t.true(metricValue(samples, 'vlan_gateway_conntrack_limit') > 0);
  t.is(series(samples, 'vlan_gateway_build_info').length, 1);

  // Labels are names, never rule text: every zone label is a VLAN name or "uplink".
  const zones = new Set(['office', 'lab', 'uplink']);
  for (const s of samples.filter((x) => /^vlan_gateway_forwarded_/.test(x.name))) {
    t.true(zones.has(s.labels.from!) && zones.has(s.labels.to!) && ['accept', 'drop', 'reject'].includes(s.labels.action!), JSON.stringify(s));
  }

  const promtool = await execa('promtool', ['check', 'metrics'], { input: text, reject: false });
  t.log(`promtool check metrics: exit ${promtool.exitCode}${promtool.stdout || promtool.stderr ? `: ${promtool.stdout}${promtool.stderr}` : ''}`);
  t.is(promtool.exitCode, 0, `${promtool.stdout}\n${promtool.stderr}`);
});

// What leaves a VLAN's chain without a pair's verdict: back out of the NIC it came in on (a host that routes a
// neighbour's address through the gateway), or out of a NIC that is no zone's (a network attached besides the VLANs).
// Both were dropped by rules that carried no reason, so vlan_gateway_dropped_packets_total never showed them.
kernel(`a hairpin and traffic towards a NIC the gateway does not manage are counted as dropped, reason "hairpin" and "unmanaged"${NEEDS_ROOT}`, async (t) => {
  const router = setup.router();
  const dropped = async (reason: string) => metricValue(await gateway!.metrics(), 'vlan_gateway_dropped_packets_total', { reason });
  const before = { hairpin: await dropped('hairpin'), unmanaged: await dropped('unmanaged') };
  await inNs(office().client.namespace, 'ip', 'route', 'add', '192.168.10.77/32', 'via', office().gateway);
  await inNs(router, 'ip', 'link', 'add', 'vgwx0', 'type', 'veth', 'peer', 'name', 'vgwx1');
  try {
    await inNs(router, 'ip', 'address', 'add', '10.123.0.1/24', 'dev', 'vgwx0');
    await inNs(router, 'ip', 'link', 'set', 'vgwx0', 'up');
    await inNs(router, 'ip', 'link', 'set', 'vgwx1', 'up');
    for (const target of ['192.168.10.77', '10.123.0.2']) {
      const pinged = await ping(office().client.namespace, target, 3, 0.05);
      t.is(pinged.received, 0, `office → ${target} is not forwarded: ${pinged.output}`);
    }
    const { value } = await waitFor('both drops counted', async () => {
      const now = { hairpin: await dropped('hairpin'), unmanaged: await dropped('unmanaged') };
      return now.hairpin - before.hairpin >= 3 && now.unmanaged - before.unmanaged >= 3 ? now : undefined;
    }, 5000, 100);
    t.log(`dropped_packets_total hairpin ${before.hairpin} → ${value.hairpin}, unmanaged ${before.unmanaged} → ${value.unmanaged}`);
  } finally {
    await inNs(router, 'ip', 'link', 'del', 'vgwx0').catch(() => '');
    await inNs(office().client.namespace, 'ip', 'route', 'del', '192.168.10.77/32').catch(() => '');
  }
});

kernel(`a real Prometheus scrapes the gateway, and PromQL returns the forwarded-packets series${NEEDS_ROOT}`, async (t) => {
  const port = await freePort();
  const config = join(setup.scratch, 'prometheus.yml');
  await writeFile(config, stringify({
    global: { scrape_interval: '1s', evaluation_interval: '1s' },
    scrape_configs: [{ job_name: 'vlan-gateway', static_configs: [{ targets: [`127.0.0.1:${gateway!.port}`] }] }],
  }));
  const started = performance.now();
  prometheus = spawn('prometheus', [
    `--config.file=${config}`,
    `--storage.tsdb.path=${join(setup.scratch, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  prometheus.stdout!.on('data', (d: Buffer) => (prometheusLog += d.toString()));
  prometheus.stderr!.on('data', (d: Buffer) => (prometheusLog += d.toString()));
  const api = `http://127.0.0.1:${port}`;
  await waitFor('Prometheus to be ready', async () => {
    if (prometheus!.exitCode !== null) throw new Error(`prometheus exited ${prometheus!.exitCode}: ${prometheusLog}`);
    return (await fetch(`${api}/-/ready`)).status === 200;
  }, 30_000, 200).catch((error: Error) => {
    throw new Error(`${error.message}\n${prometheusLog}`);
  });
  t.log(`Prometheus ready after ${Math.round(performance.now() - started)} ms`);

  const base = metricValue(await gateway!.metrics(), 'vlan_gateway_forwarded_packets_total', OFFICE_TO_LAB);
  const pinged = await ping(office().client.namespace, lab().client.address, 10, 0.05);
  t.is(pinged.received, 10, pinged.output);
  const query = async (promql: string) => {
    const response = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = await response.json() as { status: string; data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
    if (body.status !== 'success') throw new Error(JSON.stringify(body));
    return body.data.result;
  };
  const promql = 'vlan_gateway_forwarded_packets_total{from="office",to="lab"}';
  // At least these 10 pings more than the gateway had counted before them: Prometheus saw this test's traffic.
  const { value: result, ms } = await waitFor(`${promql} ≥ ${base + 10} in Prometheus`, async () => {
    const r = await query(promql);
    return r.length > 0 && r.every((s) => Number(s.value[1]) >= base + 10) ? r : undefined;
  }, 30_000, 500).catch(async (error: Error) => {
    const targets = await fetch(`${api}/api/v1/targets`).then((r) => r.text()).catch(() => '');
    throw new Error(`${error.message}\ntargets: ${targets}\n${prometheusLog}`);
  });
  t.log(`PromQL ${promql} → ${JSON.stringify(result)} (${Math.round(ms)} ms after the pings)`);
  t.is(result.length, 1, 'one series: labels are names, so one per (from, to, action)');
  t.like(result[0]!.metric, { __name__: 'vlan_gateway_forwarded_packets_total', from: 'office', to: 'lab', action: 'accept', job: 'vlan-gateway' });
  t.true(Number(result[0]!.value[1]) >= Math.max(10, base + 10));

  const up = await query('up{job="vlan-gateway"}');
  t.is(up[0]?.value[1], '1', 'the scrape target is up');
  const health = await query('vlan_gateway_vlan_up');
  t.deepEqual(health.map((s) => `${s.metric.vlan}=${s.value[1]}`).sort(), ['lab=1', 'office=1']);
});
