/**
 * A helper that hangs under a running `vlan-gateway run` (the xtables lock held elsewhere for long, a stopped
 * process): here an `iptables-nft-restore` that never returns, put first on the gateway's PATH by a wrapper that
 * hangs while a file exists. The pass that runs it is killed at --command-timeout and retried with backoff, one
 * restore at a time; meanwhile /status and /healthz name the command it waits for; once the helper works again
 * the drift is repaired, and a stop is prompt.
 */
import test from 'ava';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { STOP_COMMANDS_WAIT_MS } from '../../src/cli/shutdown.js';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { exampleLab, GatewayProcess, runner, waitFor } from '../helpers/supervisor.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const setup = exampleLab(test, 'h', 'vgw-stuck-');
const { router } = setup;
const RESTORE = 'iptables-nft-restore --noflush --wait=10';
/** The restore as the gateway shows it (/status, /healthz, its log): as it runs it, in the lab's router namespace. */
const restoreShown = () => `ip netns exec ${router()} ${RESTORE}`;

let gateway: GatewayProcess | undefined;
const hang = () => join(setup.scratch, 'hang');
const slow = () => join(setup.scratch, 'slow');

test.before(async () => {
  if (!isRoot()) return;
  const bin = join(setup.scratch, 'bin');
  await mkdir(bin);
  const real = (await execa('sh', ['-c', 'command -v iptables-nft-restore'])).stdout.trim();
  // Hangs while the file `hang` exists; takes 2.5 s more while `slow` exists.
  await writeFile(join(bin, 'iptables-nft-restore'),
    `#!/bin/sh\nif [ -e '${hang()}' ]; then exec sleep 600; fi\nif [ -e '${slow()}' ]; then sleep 2.5; fi\nexec '${real}' "$@"\n`);
  await chmod(join(bin, 'iptables-nft-restore'), 0o755);
  gateway = await startGateway(['--command-timeout', '1500']);
});

/** The gateway with the hanging restore first on its PATH. */
async function startGateway(extraArgs: readonly string[]): Promise<GatewayProcess> {
  const started = await GatewayProcess.start({
    bundle: setup.bundle.path, netns: router(), config: setup.configPath, statsIntervalMs: 200,
    env: { PATH: `${join(setup.scratch, 'bin')}:${process.env.PATH ?? ''}` },
    extraArgs: [...extraArgs, '--health-timeout', '1000'],
  });
  await started.waitReady();
  return started;
}

const forwardRules = async () => (await runner.run(['ip', 'netns', 'exec', router(), 'iptables-nft', '-S', 'VGW-FORWARD'])).stdout
  .split('\n').filter((l) => l.startsWith('-A ')).length;
const restores = async () => (await gateway!.descendants()).filter((p) => p.cmd.startsWith('sleep 600')).length;

kernel(`a restore that hangs is killed at --command-timeout and retried, one at a time; /status and /healthz name it; then drift is repaired${NEEDS_ROOT}`, async (t) => {
  const rules = await forwardRules();
  t.true(rules > 0);
  await writeFile(hang(), '');
  t.teardown(() => rm(hang(), { force: true })); // a failed assertion must not leave the next test's start hanging
  const from = gateway!.logs.length;
  await runner.run(['ip', 'netns', 'exec', router(), 'iptables-nft', '-F', 'VGW-FORWARD']); // drift: the repair's restore hangs

  const { value: waiting } = await waitFor('/status naming the restore', async () => {
    const waited = (await gateway!.status()).reconciling?.waitingFor;
    return waited?.command === restoreShown() ? waited : undefined;
  }, 5000);
  t.regex(waiting.since, /^\d{4}-\d\d-\d\dT/);
  const { value: health } = await waitFor('/healthz 503', async () => {
    const h = await gateway!.get('/healthz');
    return h.status === 503 ? h.body : undefined;
  }, 5000);
  t.regex(health, new RegExp(`^unhealthy: .* \\(a pass is waiting for \`${restoreShown()}\`, for \\d+ s\\)\\n$`));

  const failed = await gateway!.waitForLog('the pass failing at the timeout', (l) => l.msg === 'reconcile failed; previous rules left in place', 5000, from);
  t.regex(JSON.stringify(failed.err), /iptables-nft-restore failed: killed by SIGKILL \(timeout 1500 ms\)/);
  // Retried with backoff while it hangs: never more than one restore at a time.
  const counts: number[] = [];
  for (let i = 0; i < 10; i++) {
    counts.push(await restores());
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  t.true(counts.every((n) => n <= 1), `restores alive at once: ${counts.join(' ')}`);

  await rm(hang());
  await waitFor('VGW-FORWARD repaired', async () => (await forwardRules()) === rules, 15_000, 100);
  await waitFor('/healthz 200', async () => (await gateway!.get('/healthz')).status === 200, 5000);
  t.is(await restores(), 0);
  t.like((await gateway!.status()).lastReconcile, { result: 'success' });
});

kernel(`stopped while a restore hangs, the gateway says what it waits for, kills it ${STOP_COMMANDS_WAIT_MS / 1000} s into the stop (not at the 60 s command timeout), exits 0, and leaves no helper behind${NEEDS_ROOT}`, async (t) => {
  // The default --command-timeout (60 s) is longer than `docker stop` waits before its SIGKILL (10 s).
  t.is((await gateway!.stop('SIGTERM', 10_000)).code, 0);
  gateway = await startGateway([]);
  await writeFile(hang(), '');
  t.teardown(() => rm(hang(), { force: true })); // a failed assertion must not leave the next test's start hanging
  const from = gateway.logs.length;
  await runner.run(['ip', 'netns', 'exec', router(), 'iptables-nft', '-F', 'VGW-FORWARD']);
  await waitFor('a restore hanging', async () => (await restores()) === 1, 5000);
  const children = await gateway.descendants();
  const exit = await gateway.stop('SIGTERM', 10_000);
  t.is(exit.code, 0);
  t.true(exit.ms >= STOP_COMMANDS_WAIT_MS && exit.ms < STOP_COMMANDS_WAIT_MS + 4000, `${Math.round(exit.ms)} ms (before: until the 60 s timeout)`);
  const logs = gateway.logs.slice(from);
  t.truthy(logs.find((l) => l.msg === `waiting for the pass in flight, which waits for \`${restoreShown()}\``), gateway.describeLogs());
  t.truthy(logs.find((l) => l.msg === `killed the commands still running ${STOP_COMMANDS_WAIT_MS / 1000} s into the stop`), gateway.describeLogs());
  const { stdout } = await execa('ps', ['-e', '-o', 'pid=']);
  const left = children.filter((c) => stdout.split('\n').map(Number).includes(c.pid));
  t.deepEqual(left, [], 'nothing the gateway started outlives it');
  await rm(hang(), { force: true });
});

kernel(`with --cleanup-on-exit, the down after the pass in flight is not cut short ${STOP_COMMANDS_WAIT_MS / 1000} s into the stop: its restores are slow (2.5 s each), and it completes${NEEDS_ROOT}`, async (t) => {
  gateway = await startGateway(['--cleanup-on-exit']);
  await writeFile(slow(), '');
  try {
    await runner.run(['ip', 'netns', 'exec', router(), 'iptables-nft', '-F', 'VGW-FORWARD']);
    await waitFor('a slow restore running', async () => (await gateway!.descendants()).some((p) => p.cmd.startsWith('sleep 2.5')), 5000, 50);
    const exit = await gateway.stop('SIGTERM', 20_000);
    t.is(exit.code, 0, gateway.describeLogs());
    t.true(exit.ms > STOP_COMMANDS_WAIT_MS, `${Math.round(exit.ms)} ms: the repair, then the down, each 2.5 s or more`);
    t.falsy(gateway.logs.find((l) => l.msg === 'cleanup on exit failed'), gateway.describeLogs());
    const left = (await runner.run(['ip', 'netns', 'exec', router(), 'iptables-nft-save'])).stdout;
    t.notRegex(left, /VGW-/, 'down removed our chains');
  } finally {
    await rm(slow(), { force: true });
  }
});
