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
import { join } from 'node:path';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { bareNamespace, GatewayProcess, REPO, waitFor } from '../helpers/supervisor.js';

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
  const exit = await Promise.race([gateway.exited, new Promise<undefined>((resolve) => setTimeout(resolve, 15_000))]);
  if (!exit) gateway.killGroup();
  t.deepEqual(exit && { code: exit.code, signal: exit.signal }, { code: 0, signal: null }, `stderr: ${gateway.stderr}\n${gateway.describeLogs()}`);
  t.true(gateway.logs.some((l) => l.msg === 'stopping' && l.why === 'SIGTERM'), gateway.describeLogs());
});
