/**
 * A `vlan-gateway run` killed hard (kill -9 of its process group: the OOM killer, `docker kill`) while it cleared the
 * UDP flows a port forward it had just added leaves going to the gateway itself. The forward was written, the
 * clear was not: the next run finds the nat table as planned, so no pass of its own would clear them, and a client
 * that keeps sending from one port (a WireGuard or SIP peer) never reached the forward's host. The next run clears
 * them once after its start, and says so.
 */
import test from 'ava';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { dump as stringify, load as parse } from 'js-yaml';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { exampleLab, GatewayProcess, REPO, runner, sleep, waitFor } from '../helpers/supervisor.js';
import { heard, listeningUdp, sendUdp } from '../helpers/udp.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const setup = exampleLab(test, 'k', 'vgw-ct-left-');
const PORT = 6101;
const CLIENT_PORT = 40101;

const hold = () => join(setup.scratch, 'hold');
const held = () => join(setup.scratch, 'held');

test.before(async () => {
  if (!isRoot()) return;
  const bin = join(setup.scratch, 'bin');
  await mkdir(bin);
  const real = (await execa('sh', ['-c', 'command -v conntrack'])).stdout.trim();
  // A `conntrack -D` that hangs while the file `hold` exists (and says so in `held`): the gateway killed meanwhile.
  await writeFile(join(bin, 'conntrack'),
    `#!/bin/sh\ncase " $* " in *" -D "*) if [ -e '${hold()}' ]; then echo $$ > '${held()}'; exec sleep 600; fi;; esac\nexec '${real}' "$@"\n`);
  await chmod(join(bin, 'conntrack'), 0o755);
});

kernel(`a run killed while it cleared the flows a UDP forward left with the gateway: the next run clears them after its start, and says so${NEEDS_ROOT}`, async (t) => {
  const { topology } = setup;
  const lab = setup.lab();
  const u = topology.uplink;
  const example = parse(await readFile(join(REPO, 'examples', 'lab.yaml'), 'utf8')) as { portForwards: unknown[] };
  const { configPath } = setup;
  await writeFile(configPath, stringify(example));
  const withForward = stringify({ ...example, portForwards: [...example.portForwards, { proto: 'udp', port: PORT, to: lab.client.address }] });
  const send = (text: string) => sendUdp(runner, { namespace: topology.inet, address: u.internetHost, port: CLIENT_PORT }, { address: u.routerAddress, port: PORT }, text);
  const entry = async () => (await runner.run(['ip', 'netns', 'exec', topology.router, 'conntrack', '-L', '-p', 'udp', '--orig-port-src', String(CLIENT_PORT)])).stdout;
  const toGateway = new RegExp(`dport=${PORT} \\[UNREPLIED\\] src=${u.routerAddress.replaceAll('.', '\\.')} `);

  const start = async () => {
    const gateway = await GatewayProcess.start({
      bundle: setup.bundle.path, netns: topology.router, config: configPath, statsIntervalMs: 300,
      env: { PATH: `${join(setup.scratch, 'bin')}:${process.env.PATH ?? ''}` },
    });
    await gateway.waitReady();
    return gateway;
  };
  const first = await start();
  await send('before the forward'); // to the gateway itself, which has nothing on the port
  t.regex(await entry(), toGateway);

  // The forward added by a reload; the gateway killed, with everything it started, while its `conntrack -D` runs.
  await writeFile(hold(), '');
  await writeFile(configPath, withForward);
  await waitFor('the conntrack -D under way', async () => ((await readFile(held(), 'utf8').catch(() => '')) !== '' ? true : undefined), 10_000);
  first.killGroup();
  await first.stop();
  await rm(hold());
  await send('while nobody clears it');
  t.regex(await entry(), toGateway, 'the forward is in the nat table, the flow still with the gateway');

  await listeningUdp({ namespace: lab.client.namespace, address: lab.client.address, port: PORT }, async (received) => {
    const second = await start();
    const said = await second.waitForLog('the flows cleared', (l) => /^cleared \d+ UDP flows? to /.test(l.msg), 10_000);
    t.is(said.msg, `cleared 1 UDP flow to ${PORT} that reached the gateway itself although the port is forwarded: left by a run stopped before it cleared them`);
    t.is(said.level, 40);
    await send('after the restart');
    await heard(received);
    t.deepEqual(received, ['after the restart']);
    t.notRegex(await entry(), toGateway);
    // A start with nothing left to clear says nothing.
    await second.stop();
    const third = await start();
    await sleep(1500);
    t.false(third.logs.some((l) => /UDP flows?/.test(l.msg)), third.describeLogs());
    await third.stop();
  });
});
