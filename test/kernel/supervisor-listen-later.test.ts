/**
 * http.listen on a VLAN's gateway address (a management VLAN's, say), with the supervisor inside the router's
 * namespace as the image runs it: a container's namespace starts without that address, which the gateway adds
 * itself in its start pass, after the endpoints start. The supervisor used to exit 1 there ("cannot serve the HTTP
 * endpoints on 192.168.10.1:PORT (http.listen): no interface has that address") before any pass: under
 * `--restart unless-stopped`, a router that never routed, over a metrics setting. It now routes, says it waits,
 * and its endpoints listen there once the address is on the VLAN's NIC.
 */
import test from 'ava';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { dump as stringify, load as parse } from 'js-yaml';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { addressesOf, exampleLab, freePort, GatewayProcess, killAllGateways, pingUntilReply, runner, waitFor } from '../helpers/supervisor.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const setup = exampleLab(test, 'h', 'vgw-listen-later-');

kernel(`http.listen on a VLAN's gateway address: the gateway routes, and listens there once it holds the address${NEEDS_ROOT}`, async (t) => {
  const office = setup.office();
  const lab = setup.lab();
  const router = setup.router();
  const port = await freePort();
  const listen = `${office.gateway}:${port}`;
  const example = parse(await readFile(setup.configPath, 'utf8')) as Record<string, unknown>;
  const config = setup.configPath;
  await writeFile(config, stringify({ ...example, http: { listen, allowFrom: ['office'] } }));
  t.false((await addressesOf(router, office.routerInterface)).includes(`${office.gateway}/${office.prefix}`),
    'the namespace starts without the gateway address, as a container does');

  const gateway = await GatewayProcess.start({ bundle: setup.bundle.path, netns: router, config, inside: true });
  await gateway.waitForLog('the warning that the endpoints wait for their address', (l) => l.level === 40
    && l.msg === `the HTTP endpoints cannot listen on ${listen} (http.listen) yet: no interface has that address; `
      + 'the gateway routes meanwhile, and they listen there once its VLAN\'s NIC has it');
  // It routed: the gateway address is on office's NIC, and office reaches lab through it.
  await waitFor('the office gateway address', async () => (await addressesOf(router, office.routerInterface)).includes(`${office.gateway}/${office.prefix}`), 5000, 50);
  await pingUntilReply(office.client.namespace, lab.client.address);
  // And the endpoints answer there, to office (http.allowFrom), within a second or two of the address.
  const { value: ready } = await waitFor(`/readyz at ${listen} from ${office.client.namespace}`, async () => {
    const r = await runner.run(['ip', 'netns', 'exec', office.client.namespace, 'curl', '-s', '-m', '2', `http://${listen}/readyz`], { allowFailure: true });
    return r.exitCode === 0 ? r.stdout : undefined;
  }, 5000, 100);
  t.is(ready, 'ready\n');
  await gateway.waitForLog('the endpoints listening', (l) => l.level === 30 && l.msg === `the HTTP endpoints listen on ${listen} now`);
  t.is(gateway.exit, undefined, `still running: ${gateway.stderr}`);
});

// `docker exec gw vlan-gateway status` in a container started with `run --listen 127.0.0.1:9999` asked 127.0.0.1:10123
// (no file it reads names a --listen of the command line) and said it could not reach the gateway. It asks the
// supervisor of its namespace now, over the instance lock, where it listens.
kernel(`status inside the namespace finds a supervisor started there with --listen, with no address given${NEEDS_ROOT}`, async (t) => {
  const router = setup.router();
  const port = await freePort();
  await killAllGateways(); // the test before leaves its gateway running, holding the namespace
  await writeFile(setup.configPath, await readFile('examples/lab.yaml', 'utf8'));
  const gateway = await GatewayProcess.start({ bundle: setup.bundle.path, netns: router, config: setup.configPath, inside: true,
    extraArgs: ['--listen', `127.0.0.1:${port}`] });
  try {
    await gateway.waitForLog('the first pass', (l) => /^reconciled: /.test(String(l.msg)), 20_000).catch((error: Error) => {
      throw new Error(`${error.message}; stderr: ${gateway.stderr}`);
    });
    const status = await runner.run(['ip', 'netns', 'exec', router, process.execPath, setup.bundle.path, 'status', '--config', setup.configPath], { allowFailure: true });
    t.is(status.exitCode, 0, status.stderr);
    t.regex(status.stdout, /^office\s+10\s+192\.168\.10\.0\/24/m, status.stdout);
    const json = await runner.run(['ip', 'netns', 'exec', router, process.execPath, setup.bundle.path, 'status', '--json'], { allowFailure: true });
    t.is(json.exitCode, 0, json.stderr);
    t.deepEqual((JSON.parse(json.stdout) as { vlans: Array<{ name: string }> }).vlans.map((v) => v.name), ['office', 'lab']);
    // The image's health check, with no VLAN_GATEWAY_HEALTHZ_URL, finds it too (the file it keeps in the state directory).
    const check = await runner.run(['ip', 'netns', 'exec', router, 'sh', 'image/healthcheck.sh'], { allowFailure: true });
    t.is(check.exitCode, 0, `health check: ${check.stderr}`);
  } finally {
    await gateway.stop();
  }
  const left = await readdir(process.env.VLAN_GATEWAY_STATE_DIR!).catch(() => []);
  t.false(left.some((f) => /^http-/.test(f)), `the file goes with the endpoints: ${left.join(', ')}`);
  // And with none running, it says where it looked: the default, as before.
  const none = await runner.run(['ip', 'netns', 'exec', router, process.execPath, setup.bundle.path, 'status', '--config', setup.configPath], { allowFailure: true });
  t.is(none.exitCode, 1);
  t.regex(none.stderr, /cannot reach the gateway at http:\/\/127\.0\.0\.1:10123 \(ECONNREFUSED\)/);
});

// From the host, a `run --netns NAME --listen …` was found only by giving its --listen again; `status --netns NAME` asks
// that supervisor (its lock is in the caller's namespace) where it listens.
kernel(`status --netns NAME finds the run --netns NAME of this namespace and where it listens; says so when none runs${NEEDS_ROOT}`, async (t) => {
  const router = setup.router();
  await killAllGateways();
  const status = (...args: string[]) => runner.run([process.execPath, setup.bundle.path, 'status', ...args], { allowFailure: true });
  const gateway = await GatewayProcess.start({ bundle: setup.bundle.path, netns: router, config: setup.configPath });
  try {
    await gateway.waitReady();
    const found = await status('--netns', router, '--json');
    t.is(found.exitCode, 0, found.stderr);
    t.deepEqual((JSON.parse(found.stdout) as { vlans: Array<{ name: string }> }).vlans.map((v) => v.name), ['office', 'lab']);
    const both = await status('--netns', router, '--listen', `127.0.0.1:${gateway.port}`);
    t.is(both.exitCode, 2);
    t.is(both.stderr, `vlan-gateway: --netns ${router} and --listen 127.0.0.1:${gateway.port} both say where the gateway is: give one `
      + '(--netns: the supervisor of that namespace says where it listens)\n');
  } finally {
    await gateway.stop();
  }
  const none = await status('--netns', router);
  t.is(none.exitCode, 1);
  t.is(none.stderr, `vlan-gateway: no \`vlan-gateway run --netns ${router}\` runs beside this command (one started inside the namespace answers `
    + `\`ip netns exec ${router} vlan-gateway status\`)\n`);
});
