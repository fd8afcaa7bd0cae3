/**
 * http.listen on a VLAN's gateway address (a management VLAN's, say), with the supervisor inside the router's
 * namespace as the image runs it: a container's namespace starts without that address, which the gateway adds
 * itself in its start pass, after the endpoints start. The supervisor used to exit 1 there ("cannot serve the HTTP
 * endpoints on 192.168.10.1:PORT (http.listen): no interface has that address") before any pass: under
 * `--restart unless-stopped`, a router that never routed, over a metrics setting. It now routes, says it waits,
 * and its endpoints listen there once the address is on the VLAN's NIC.
 */
import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { dump as stringify, load as parse } from 'js-yaml';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { addressesOf, exampleLab, freePort, GatewayProcess, pingUntilReply, runner, waitFor } from '../helpers/supervisor.js';

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
