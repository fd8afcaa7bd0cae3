/**
 * The command helper (src/exec/shell-helper.ts): the runner's commands are started by one long-lived shell, not by a
 * fork of node, and what they say and how they end is what a spawn of node's says (test/unit/runner.test.ts runs
 * every one of those cases through it). Here: that the helper is what runs them, and what is its own (its files, its
 * end, its retirement, and a process that ends while it lives).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ExecaRunner } from '../../src/exec/execa-runner.js';
import { CommandError } from '../../src/exec/runner.js';
import { HELPER_SLOTS, stopHelpers } from '../../src/exec/shell-helper.js';

const runner = new ExecaRunner();
const runnerFile = fileURLToPath(new URL('../../src/exec/execa-runner.ts', import.meta.url));

/** The parent of the command that prints it: the helper that ran it. */
async function helperOfCommand(): Promise<number> {
  return Number((await runner.run(['sh', '-c', 'echo $PPID'])).stdout);
}

const parentOf = (pid: number): number => Number(/\) \S (\d+) /.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1]);

/** The files left in this process's directory of the helper (none once every command has been read). */
function filesLeft(): string[] {
  const dirs = readdirSync('/dev/shm').filter((d) => d.startsWith(`vlan-gateway-exec-${process.pid}-`));
  return dirs.flatMap((d) => readdirSync(`/dev/shm/${d}`));
}

/** Runs `code` (ES module text, with the runner imported as ExecaRunner) in a node process of its own. */
function inOwnProcess(code: string, env: NodeJS.ProcessEnv = {}): Promise<{ out: string; code: number | null; ms: number }> {
  const started = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `import { ExecaRunner } from ${JSON.stringify(runnerFile)};\n${code}`],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  return new Promise((resolve) => child.once('close', (exit) => resolve({ out, code: exit, ms: performance.now() - started })));
}

test.serial('a command is started by the helper shell, a child of this process, not by a fork of node', async (t) => {
  const helper = await helperOfCommand();
  // The command's parent is the helper (it runs the command itself and waits for it), whose parent is us.
  t.not(helper, process.pid);
  t.is(parentOf(helper), process.pid);
  t.is(readFileSync(`/proc/${helper}/cmdline`, 'utf8'), '/bin/sh\u0000-s\u0000');
  // Commands one after another: one helper for all of them.
  t.is(await helperOfCommand(), helper);
});

test.serial(`commands at once: ${HELPER_SLOTS} helpers run one each, the spare the rest, all side by side`, async (t) => {
  const count = HELPER_SLOTS * 3;
  const results = await Promise.all(Array.from({ length: count }, () =>
    runner.run(['sh', '-c', 'echo $PPID; date +%s%N; sleep 2; date +%s%N'])));
  const runs = results.map((r) => r.stdout.trim().split('\n').map(Number) as [number, number, number]);
  // Each command's parent: a helper that runs it itself (a child of ours), or the spare's subshell for it.
  const own = new Set(runs.map(([parent]) => parent).filter((parent) => parentOf(parent) === process.pid));
  t.true(own.size <= HELPER_SLOTS + 1, `${own.size} helpers ran commands themselves`);
  t.true(runs.some(([parent]) => parentOf(parent) !== process.pid), 'some ran in the spare\'s subshells');
  // None waited behind another: when the last one started, every one was running (each runs 2 s).
  const overlapping = Math.max(...runs.map(([, start]) => runs.filter(([, s, e]) => s <= start && start < e).length));
  t.is(overlapping, count, `${overlapping} of ${count} ran at once`);
});

test.serial('its output files are gone once each command has been read, failed or not', async (t) => {
  await Promise.all(Array.from({ length: 20 }, (_, i) => runner.run(['sh', '-c', `echo ${i}; echo e >&2; exit ${i % 3}`], { input: 'x', allowFailure: true })));
  await t.throwsAsync(runner.run(['sh', '-c', 'exit 5']), { instanceOf: CommandError });
  t.deepEqual(filesLeft(), []);
});

test.serial('forty commands at once each get their own output, input and exit code', async (t) => {
  const results = await Promise.all(Array.from({ length: 40 }, (_, i) =>
    runner.run(['sh', '-c', 'cat; printf "%s" "$1" >&2; exit "$1"', 'sh', String(i)], { input: `in ${i}\n`.repeat(1000), allowFailure: true })));
  t.deepEqual(results.map((r) => [r.stdout === `in ${r.exitCode}\n`.repeat(1000), r.stderr, r.exitCode]),
    Array.from({ length: 40 }, (_, i) => [true, String(i), i]));
});

test.serial('a word with quotes, spaces, a newline or a dollar reaches the command as it is', async (t) => {
  const words = ["it's", 'a b', 'line\nbreak', '$HOME', '`id`', '"q"', '\\', '-n', ''];
  const r = await runner.run(['sh', '-c', 'for w in "$@"; do printf "[%s]" "$w"; done', 'sh', ...words]);
  t.is(r.stdout, words.map((w) => `[${w}]`).join(''));
});

test.serial('a large output and input (4 MB) pass whole', async (t) => {
  const input = 'abcdefgh\n'.repeat(466_034);
  const r = await runner.run(['cat'], { input });
  t.is(r.stdout.length, input.length);
  t.is(r.stdout, input);
});

/** The children of `pid` (zombies included). */
const childrenOf = (pid: number): number[] => readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ').filter((c) => c !== '').map(Number);

/** This process's helpers: its children that are `/bin/sh -s`. */
const helpersOfThisProcess = (): number[] => childrenOf(process.pid).filter((pid) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8') === '/bin/sh\u0000-s\u0000';
  } catch {
    return false;
  }
});

test.serial('the commands that have exited are reaped: no zombies pile up under the helpers, fire-and-forget ones included', async (t) => {
  for (let i = 0; i < 100; i++) await runner.run(['true']);
  // A fire-and-forget command does not keep this process alive: the timer does, while the test waits for them.
  const alive = setInterval(() => {}, 1000);
  for (let i = 0; i < 20; i++) await runner.start(['true'], { detached: true }).exited;
  await runner.run(['true']);
  await runner.start(['true'], { detached: true }).exited;
  clearInterval(alive);
  // A fire-and-forget command's subshell (the spare's) that has reported its end may not have exited yet when the
  // next line comes: reaped at the one after. Not one per command.
  const left = helpersOfThisProcess().flatMap(childrenOf);
  t.true(helpersOfThisProcess().length >= 2, 'a helper and the spare');
  t.true(left.length < 10, `${left.length} children left under the helpers of 121 commands`);
});

// The helper runs each command itself and reports its end: a helper killed under a command loses that end, which is
// said; the commands of the other helpers, and the next ones, are not disturbed.
test.serial('a helper killed under a running command: that command fails saying so; the others finish, and the next runs in a new helper', async (t) => {
  const finishing = runner.run(['sh', '-c', 'sleep 0.5; echo finished']);
  const orphaned = runner.run(['sh', '-c', 'sleep 0.6; echo never'], { allowFailure: true });
  await new Promise((resolve) => setTimeout(resolve, 200));
  // The helper of the second: the parent of the shell whose child sleeps 0.6.
  const shell = Number(readdirSync('/proc').find((p) => /^\d+$/.test(p) && (() => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').endsWith('sh\u0000-c\u0000sleep 0.6; echo never\u0000');
    } catch {
      return false;
    }
  })()));
  t.true(shell > 0);
  const helper = parentOf(shell);
  t.is(parentOf(helper), process.pid);
  process.kill(helper, 'SIGKILL');
  t.is((await runner.run(['echo', 'after'])).stdout, 'after\n', 'the next command runs');
  t.not(await helperOfCommand(), helper);
  t.is((await finishing).stdout, 'finished\n');
  const error = await t.throwsAsync(orphaned, { instanceOf: CommandError });
  t.is(error.message, 'sh -c sleep 0.6; echo never exited by signal: the command helper (/bin/sh) ended before the command reported its end');
});

test.serial('a helper is retired after 1,000 commands: the next is a new shell, and the old one exits', async (t) => {
  const first = await helperOfCommand();
  // One after another: each goes to the same helper, which has nothing to run when the next comes.
  for (let i = 0; i < 1000; i++) await runner.run(['true']);
  const next = await helperOfCommand();
  t.not(next, first);
  const deadline = performance.now() + 5000;
  while (performance.now() < deadline) {
    try {
      readFileSync(`/proc/${first}/stat`);
    } catch {
      break; // gone
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  t.throws(() => readFileSync(`/proc/${first}/stat`), undefined, 'the retired helper exited');
  // Retired while this process runs, it left the directory of files alone: commands still go through a helper.
  t.is(readFileSync(`/proc/${await helperOfCommand()}/cmdline`, 'utf8'), '/bin/sh\u0000-s\u0000');
  t.deepEqual(filesLeft(), []);
  t.is(readdirSync('/dev/shm').filter((d) => d.startsWith(`vlan-gateway-exec-${process.pid}-`)).length, 1);
});

test('a process with the helper running exits when its work is done, and a fire-and-forget command does not hold it', async (t) => {
  const { out, code, ms } = await inOwnProcess(`const r = new ExecaRunner();
    console.log((await r.run(['echo', 'ran'])).stdout.trim());
    r.start(['sleep', '30'], { detached: true });`);
  t.is(out, 'ran\n');
  t.is(code, 0);
  t.true(ms < 20_000, `exited after ${Math.round(ms)} ms, not after the 30 s sleep`);
});

test.serial('stopHelpers ends the helper and waits for it to exit; the next command starts a new one', async (t) => {
  const helper = await helperOfCommand();
  await stopHelpers();
  t.throws(() => readFileSync(`/proc/${helper}/stat`), undefined, 'exited, and reaped');
  t.not(await helperOfCommand(), helper);
});

test('a directory a killed process left is swept by the next one; a link under such a name is not followed', async (t) => {
  // A pid that ran and is gone: a process of this test, waited for.
  const gone = spawn('true');
  await new Promise((resolve) => gone.once('exit', resolve));
  const left = `/dev/shm/vlan-gateway-exec-${gone.pid}-left`;
  const link = `/dev/shm/vlan-gateway-exec-${gone.pid}-link`;
  const target = mkdtempSync(join(tmpdir(), 'vgw-helper-target-'));
  t.teardown(() => {
    rmSync(left, { recursive: true, force: true });
    rmSync(link, { force: true });
    rmSync(target, { recursive: true, force: true });
  });
  mkdirSync(left);
  writeFileSync(join(left, '7.o'), 'output of a command in flight when its process was killed');
  writeFileSync(join(target, 'keep'), '');
  symlinkSync(target, link);
  t.is((await inOwnProcess("console.log((await new ExecaRunner().run(['echo', 'ran'])).stdout.trim());")).out, 'ran\n');
  t.false(existsSync(left), 'swept');
  t.true(existsSync(join(target, 'keep')), 'what the link points to is untouched');
});

test('a process killed (SIGKILL) after its commands: its helper, at the end of its input, removes the directory', async (t) => {
  const code = `await new ExecaRunner().run(['true']);
    const { readdirSync } = await import('node:fs');
    console.log(readdirSync('/dev/shm').find((d) => d.startsWith('vlan-gateway-exec-' + process.pid + '-')));
    process.kill(process.pid, 'SIGKILL');`;
  const { out } = await inOwnProcess(code);
  const made = `/dev/shm/${out.trim()}`;
  t.regex(out, /^vlan-gateway-exec-\d+-/);
  const started = performance.now();
  while (existsSync(made) && performance.now() - started < 5000) await new Promise((resolve) => setTimeout(resolve, 20));
  t.false(existsSync(made), 'removed by the helper');
});

test('VLAN_GATEWAY_EXEC_HELPER=off: node spawns each command itself', async (t) => {
  const code = "console.log((await new ExecaRunner().run(['sh', '-c', 'echo $PPID'])).stdout.trim() === String(process.pid));";
  t.is((await inOwnProcess(code, { VLAN_GATEWAY_EXEC_HELPER: 'off' })).out, 'true\n');
  t.is((await inOwnProcess(code)).out, 'false\n');
});

test('a fire-and-forget command through the helper reports its exit code, and a stop ends it', async (t) => {
  t.is(await runner.start(['sh', '-c', 'exit 3'], { detached: true }).exited, 3);
  const child = runner.start(['sleep', '30'], { detached: true });
  const started = performance.now();
  while (child.pid === undefined && performance.now() - started < 5000) await new Promise((resolve) => setTimeout(resolve, 10));
  t.truthy(child.pid);
  await child.stop();
  t.is(await child.exited, null);
  t.true(performance.now() - started < 15_000);
});
