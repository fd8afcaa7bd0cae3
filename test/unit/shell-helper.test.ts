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
import { stopHelpers } from '../../src/exec/shell-helper.js';

const runner = new ExecaRunner();
const runnerFile = fileURLToPath(new URL('../../src/exec/execa-runner.ts', import.meta.url));

/** The parent of the command that prints it, and that parent's own parent. */
async function parentsOfCommand(): Promise<[number, number]> {
  const ppid = Number((await runner.run(['sh', '-c', 'echo $PPID'])).stdout);
  const grandparent = Number(/\) \S (\d+) /.exec(readFileSync(`/proc/${ppid}/stat`, 'utf8'))?.[1]);
  return [ppid, grandparent];
}

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
  const [parent, grandparent] = await parentsOfCommand();
  // The command's parent is the helper's subshell for that command, whose parent is the helper, whose parent is us.
  t.not(parent, process.pid);
  const helper = Number(/\) \S (\d+) /.exec(readFileSync(`/proc/${grandparent}/stat`, 'utf8'))?.[1]);
  t.is(helper, process.pid);
  t.is(readFileSync(`/proc/${grandparent}/cmdline`, 'utf8'), '/bin/sh\u0000-s\u0000');
  // One helper for every command.
  t.is((await parentsOfCommand())[1], grandparent);
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

test.serial('the commands\' shells that have exited are reaped: no zombies pile up under the helper', async (t) => {
  const [, helper] = await parentsOfCommand();
  for (let i = 0; i < 100; i++) await runner.run(['true']);
  // Those of the commands before are reaped as each next command is sent; the last few (a shell that has reported
  // its command's end may not have exited yet when the next command is sent) at the next. Not one per command.
  t.true(childrenOf(helper).length < 10, `${childrenOf(helper).length} children left of 100 commands`);
});

// The command's own shell (the helper's subshell for it) reports its end: the helper going away loses nothing that
// runs. Only a command whose reporting shell is gone too has no end to report.
test.serial('the helper killed under running commands: they still report; one whose reporting shell is gone too fails saying so', async (t) => {
  const [, helper] = await parentsOfCommand();
  const finishing = runner.run(['sh', '-c', 'sleep 0.5; echo finished']);
  const orphaned = runner.run(['sh', '-c', 'sleep 0.6; echo never'], { allowFailure: true });
  await new Promise((resolve) => setTimeout(resolve, 200));
  // The reporting shell of the second: the helper's child whose child sleeps 0.6.
  const reporter = childrenOf(helper).find((pid) => childrenOf(pid).some((c) => readFileSync(`/proc/${c}/cmdline`, 'utf8').includes('sleep 0.6')));
  t.truthy(reporter);
  process.kill(helper, 'SIGKILL');
  process.kill(reporter!, 'SIGKILL');
  t.is((await runner.run(['echo', 'after'])).stdout, 'after\n', 'the next command runs, in a new helper');
  t.not((await parentsOfCommand())[1], helper);
  t.is((await finishing).stdout, 'finished\n');
  const error = await t.throwsAsync(orphaned, { instanceOf: CommandError });
  t.is(error.message, 'sh -c sleep 0.6; echo never exited by signal: the command helper (/bin/sh) ended before the command reported its end');
});

test.serial('a helper is retired after 1,000 commands: the next is a new shell, and the old one exits', async (t) => {
  const [, first] = await parentsOfCommand();
  for (let i = 0; i < 1000; i += 50) await Promise.all(Array.from({ length: 50 }, () => runner.run(['true'])));
  const [, next] = await parentsOfCommand();
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
  t.is(readFileSync(`/proc/${(await parentsOfCommand())[1]}/cmdline`, 'utf8'), '/bin/sh\u0000-s\u0000');
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
  const [, helper] = await parentsOfCommand();
  await stopHelpers();
  t.throws(() => readFileSync(`/proc/${helper}/stat`), undefined, 'exited, and reaped');
  t.not((await parentsOfCommand())[1], helper);
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
