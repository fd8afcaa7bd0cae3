/**
 * Signals sent while the supervisor starts, before its own handlers are installed. `run` holds a SIGHUP or SIGTERM
 * that arrives during its start (src/cli/signals.ts), but the handlers used to be installed by the bundle, once
 * loaded: a SIGHUP in the first few hundred milliseconds of the process (the launcher loading the 1 MB bundle; more
 * on a busy machine) killed the gateway (exit 129, the router not started), and a SIGTERM ended it with 143 instead
 * of 0. The launcher now holds them from its first line, and hands them to `run`.
 *
 * The bundle's load is made slow on purpose (test/fixtures/slow-bundle-load.mjs, preloaded), so that the signal
 * arrives while it loads whatever the machine's speed.
 */
import test from 'ava';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { bareNamespace, GatewayProcess, iptablesSave, REPO, scratchDir, vgwLines, waitFor } from '../helpers/supervisor.js';
import { tearDownAlways } from '../helpers/teardown.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const { namespace, bundle } = bareNamespace(test, 'e');
const SLOW_LOAD = { NODE_OPTIONS: `--import ${join(REPO, 'test', 'fixtures', 'slow-bundle-load.mjs')}` };


/** A gateway on the bare namespace (the example's NICs are not there: its VLANs wait), signalled while its bundle loads. */
async function signalledWhileLoading(signal: NodeJS.Signals): Promise<GatewayProcess> {
  const gateway = await GatewayProcess.start({ bundle: bundle().path, netns: namespace, config: join(REPO, 'examples', 'lab.yaml'), env: SLOW_LOAD });
  await waitFor('the launcher loading the bundle', async () => gateway.exit !== undefined || gateway.stderr.includes('loading the bundle\n'), 10_000, 5);
  gateway.signal(signal);
  return gateway;
}

kernel(`a SIGHUP while the launcher loads the bundle is a reload once the supervisor is up, not its end${NEEDS_ROOT}`, async (t) => {
  const gateway = await signalledWhileLoading('SIGHUP');
  await gateway.waitReady();
  await gateway.waitForLog('the held SIGHUP, as a reload', (l) => l.msg === 'config reloaded: unchanged' && l.why === 'SIGHUP', 10_000);
  t.is(gateway.exit, undefined, 'still running');
  const exit = await gateway.stop('SIGTERM');
  t.is(exit.code, 0);
});

kernel(`a SIGTERM while the launcher loads the bundle stops the supervisor once it is up, exit 0${NEEDS_ROOT}`, async (t) => {
  const gateway = await signalledWhileLoading('SIGTERM');
  const exit = await Promise.race([gateway.exited, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 15_000))]);
  if (!exit) gateway.killGroup();
  t.deepEqual(exit && { code: exit.code, signal: exit.signal }, { code: 0, signal: null }, `stderr: ${gateway.stderr}\n${gateway.describeLogs()}`);
  t.true(gateway.logs.some((l) => l.msg === 'stopping' && l.why === 'SIGTERM'), gateway.describeLogs());
});

let scratch: string | undefined;
tearDownAlways('remove the scratch directory', async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

// A stop during the start pass is a stop like any other (docker stop as a container starts): the pass is waited for
// (its commands at most 3 s), the process exits 0, and --cleanup-on-exit then removes what it wrote. Not 143: that is
// only for a signal before Node has run the launcher's first line (the README), or tsx's relay killing the process.
kernel(`a SIGTERM during the start pass waits for it, exits 0, and --cleanup-on-exit removes what it wrote${NEEDS_ROOT}`, async (t) => {
  const config = join(REPO, 'examples', 'lab.yaml');
  await execa(process.execPath, [bundle().path, 'down', '--netns', namespace, '--config', config]); // the start pass has all to write
  scratch ??= await scratchDir('vgw-start-stop-');
  const bin = join(scratch, 'bin');
  await mkdir(bin, { recursive: true });
  const real = (await execa('sh', ['-c', 'command -v iptables-nft-restore'])).stdout.trim();
  await writeFile(join(bin, 'iptables-nft-restore'), `#!/bin/sh\nsleep 1\nexec '${real}' "$@"\n`); // a slow start pass
  await chmod(join(bin, 'iptables-nft-restore'), 0o755);
  const gateway = await GatewayProcess.start({
    bundle: bundle().path, netns: namespace, config, extraArgs: ['--cleanup-on-exit'],
    env: { PATH: `${bin}:${process.env.PATH ?? ''}` },
  });
  try {
    await waitFor('the start pass\'s restore', async () => (await gateway.descendants()).some((p) => /^sleep 1$/.test(p.cmd)), 10_000);
    t.false(gateway.logs.some((l) => /^reconciled/.test(l.msg)), 'the start pass is still running');
    const exit = await gateway.stop('SIGTERM');
    t.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, `stderr: ${gateway.stderr}\n${gateway.describeLogs()}`);
    const said = gateway.logs.map((l) => l.msg).filter((m) => ['stopping', 'reconciled: changes applied', 'removed what the gateway added (--cleanup-on-exit)', 'stopped'].includes(m));
    t.deepEqual(said, ['stopping', 'reconciled: changes applied', 'removed what the gateway added (--cleanup-on-exit)', 'stopped']);
    t.deepEqual(vgwLines(await iptablesSave(namespace)), [], 'nothing of the gateway left in the namespace');
  } finally {
    gateway.killGroup();
    await gateway.exited;
  }
});
