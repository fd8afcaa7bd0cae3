/**
 * The image's HEALTHCHECK, run as Docker runs it (the exec form of image/Dockerfile's CMD, the files it names taken
 * from the image's COPY lines), against a local /healthz. Docker runs it inside the container every 10 s, on the
 * container's CPU limit: under `--cpus 0.1` beside a supervisor of 100 VLANs, a `node -e` request took 1.6-2.8 s and
 * sometimes more than the check's timeout (a failure, though the gateway was routing). So besides its verdicts, what
 * it costs in CPU is part of its contract.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EndpointsFile, endpointsFileName, healthzUrl } from '../../src/cli/endpoints-file.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const dockerfile = readFileSync(join(REPO, 'image/Dockerfile'), 'utf8');

/** The HEALTHCHECK's flags and its CMD (exec form), with paths of files the image COPYs from the context mapped back. */
function healthcheck(): { timeoutS: number; argv: string[] } {
  const m = /^HEALTHCHECK ([^\n]*?)\s*\\\n\s*CMD (\[.*\])$/m.exec(dockerfile);
  if (!m) throw new Error('no HEALTHCHECK … CMD [...] in image/Dockerfile');
  const timeout = /--timeout=(\d+)s/.exec(m[1]!);
  const copied = new Map([...dockerfile.matchAll(/^COPY (image\/\S+) (\S+)$/gm)].map((c) => [c[2]!, join(REPO, c[1]!)]));
  return { timeoutS: Number(timeout?.[1] ?? 30), argv: (JSON.parse(m[2]!) as string[]).map((a) => copied.get(a) ?? a) };
}

/** Runs the check with `url`; its exit code and the CPU (user + system, ms) it and its children took, read by the
 *  shell's `times`. */
function runCheck(argv: readonly string[], url: string | undefined, path = process.env.PATH ?? '', env: Record<string, string> = {}): Promise<{ code: number | null; cpuMs: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', '"$@"; rc=$?; times; exit $rc', 'sh', ...argv], {
      env: { PATH: path, ...(url === undefined ? {} : { VLAN_GATEWAY_HEALTHZ_URL: url }), http_proxy: 'http://127.0.0.1:9/', ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.once('error', reject);
    child.once('exit', (code) => {
      // times: the shell's user and system time, then its children's ("0m0.150000s 0m0.008000s").
      const children = out.trim().split('\n').at(-1)!.match(/(\d+)m([\d.]+)s/g) ?? [];
      const cpuMs = children.map((x) => /(\d+)m([\d.]+)s/.exec(x)!).reduce((ms, p) => ms + (Number(p[1]) * 60 + Number(p[2])) * 1000, 0);
      resolve({ code, cpuMs });
    });
  });
}

let server: Server;
let base: string;
test.before(async () => {
  server = createServer((req, res) => {
    res.statusCode = req.url === '/healthz' ? 200 : 503;
    res.end(req.url === '/healthz' ? 'ok\n' : 'reconciles have failed for 61 s\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
});
test.after.always(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** The file `tool` names on this PATH, if any. */
function which(tool: string): string | undefined {
  return (process.env.PATH ?? '').split(':').map((dir) => join(dir, tool)).find((file) => {
    try {
      accessSync(file, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

test('the image\'s health check: 0 on a 200 from /healthz, 1 on a 503 and on nothing listening; a proxy of the environment is not asked', async (t) => {
  const { argv } = healthcheck();
  t.is((await runCheck(argv, `${base}/healthz`)).code, 0);
  t.is((await runCheck(argv, `${base}/unhealthy`)).code, 1);
  t.is((await runCheck(argv, 'http://127.0.0.1:9/healthz')).code, 1);
});

// A container started with `run --listen 127.0.0.1:9999`, or a config's http.listen, was unhealthy unless
// VLAN_GATEWAY_HEALTHZ_URL said the address again: the check asked 127.0.0.1:10123. The supervisor now keeps where its
// endpoints listen in a file of the state directory, one per network namespace, which the check reads.
test('without VLAN_GATEWAY_HEALTHZ_URL the check asks where the supervisor of its namespace says it listens (its file in the state directory)', async (t) => {
  const { argv } = healthcheck();
  const dir = mkdtempSync(join(tmpdir(), 'vgw-healthcheck-state-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = new EndpointsFile(join(dir, 'state'));
  const env = { VLAN_GATEWAY_STATE_DIR: join(dir, 'state') };
  file.write(base.replace('http://', ''));
  t.deepEqual(readdirSync(join(dir, 'state')), [endpointsFileName()!]);
  t.is((await runCheck(argv, undefined, process.env.PATH, env)).code, 0, 'the address the supervisor wrote');
  t.is((await runCheck(argv, 'http://127.0.0.1:9/healthz', process.env.PATH, env)).code, 1, 'VLAN_GATEWAY_HEALTHZ_URL still wins');
  file.remove();
  t.deepEqual(readdirSync(join(dir, 'state')), []);
  t.is((await runCheck(argv, undefined, process.env.PATH, { VLAN_GATEWAY_STATE_DIR: join(dir, 'state') })).code, 1, 'no file: the default, 127.0.0.1:10123, where nothing listens here');
});

test('the /healthz URL of where the endpoints listen: the wildcard addresses by loopback, IPv6 in brackets, no zoned address', (t) => {
  t.is(healthzUrl('0.0.0.0:10123'), 'http://127.0.0.1:10123/healthz');
  t.is(healthzUrl('192.168.10.1:9100'), 'http://192.168.10.1:9100/healthz');
  t.is(healthzUrl('[::]:9100'), 'http://[::1]:9100/healthz');
  t.is(healthzUrl('[2001:db8::1]:9100'), 'http://[2001:db8::1]:9100/healthz');
  t.is(healthzUrl('[fe80::1%eth1]:9100'), undefined);
});

test('without wget (a Debian base), node asks: the same verdicts', async (t) => {
  const { argv } = healthcheck();
  const bin = mkdtempSync(join(tmpdir(), 'vgw-healthcheck-'));
  t.teardown(() => rmSync(bin, { recursive: true, force: true }));
  for (const tool of ['sh', 'node']) symlinkSync(which(tool) ?? process.execPath, join(bin, tool));
  t.is((await runCheck(argv, `${base}/healthz`, bin)).code, 0);
  t.is((await runCheck(argv, `${base}/unhealthy`, bin)).code, 1);
  t.is((await runCheck(argv, 'http://127.0.0.1:9/healthz', bin)).code, 1);
});

// Docker counts a check that outlives --timeout as a failure. The check's own deadline is inside it, and a check costs
// next to no CPU (`times` counts in 10 ms ticks: 0-10 ms on an idle machine), not a Node start-up (30-40 ms of CPU
// there: at --cpus 0.1 at least four of the cgroup's 100 ms periods, shared with the supervisor's own work). Both
// grow on a loaded machine (20 ms a check, three times running, while CI ran two test files beside it), so the
// bound is a Node start's half, measured the same way at the same moment, and never below the 20 ms of an idle one.
(which('wget') ? test : test.skip)('the health check costs little CPU and gives up before Docker\'s timeout does', async (t) => {
  const { argv, timeoutS } = healthcheck();
  const runs = [];
  const nodeRuns = [];
  for (let i = 0; i < 3; i++) {
    runs.push(await runCheck(argv, `${base}/healthz`));
    nodeRuns.push(await runCheck([process.execPath, '-e', '0'], `${base}/healthz`));
  }
  t.deepEqual(runs.map((r) => r.code), [0, 0, 0]);
  const cpuMs = Math.min(...runs.map((r) => r.cpuMs));
  const nodeMs = Math.min(...nodeRuns.map((r) => r.cpuMs));
  const bound = Math.max(20, nodeMs / 2);
  t.log(`CPU per check: ${runs.map((r) => r.cpuMs.toFixed(0)).join(', ')} ms; per \`node -e 0\`: ${nodeRuns.map((r) => r.cpuMs.toFixed(0)).join(', ')} ms`);
  t.true(cpuMs < bound, `the check took ${cpuMs.toFixed(0)} ms of CPU, a Node start ${nodeMs.toFixed(0)} ms: the bound is ${bound.toFixed(0)} ms`);
  const script = readFileSync(join(REPO, 'image/healthcheck.sh'), 'utf8');
  const deadlines = [...script.matchAll(/-T (\d+)|setTimeout\((\d+),/g)].map((d) => (d[1] ? Number(d[1]) : Number(d[2]) / 1000));
  t.deepEqual(deadlines, [8, 8]);
  t.true(timeoutS >= 10, `HEALTHCHECK --timeout=${timeoutS}s`);
});
