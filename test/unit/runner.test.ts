import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ExecaRunner } from '../../src/exec/execa-runner.js';
import { CommandError, inNamespace, withDeadline, type CommandRunner } from '../../src/exec/runner.js';

const runner = new ExecaRunner();

test('run feeds input and returns stdout, stderr and the exit code', async (t) => {
  const r = await runner.run(['sh', '-c', 'tr a-z A-Z; echo oops >&2; exit 3'], { input: 'restore payload\n', allowFailure: true });
  t.deepEqual(r, { stdout: 'RESTORE PAYLOAD\n', stderr: 'oops\n', exitCode: 3 });
});

test('a non-zero exit throws CommandError with argv, code and stderr unless allowFailure', async (t) => {
  const error = await t.throwsAsync(runner.run(['sh', '-c', 'echo "line 7 failed" >&2; exit 1']), { instanceOf: CommandError });
  t.is(error.exitCode, 1);
  t.is(error.stderr, 'line 7 failed\n');
  t.is(error.message, 'sh -c echo "line 7 failed" >&2; exit 1 exited 1: line 7 failed');
});

test('a program that is not installed is exit code null, even with allowFailure, and says it was not found', async (t) => {
  const error = await t.throwsAsync(runner.run(['vgw-no-such-program'], { allowFailure: true }), { instanceOf: CommandError });
  t.is(error.exitCode, null);
  t.true(error.notFound);
  t.is(error.message, 'vgw-no-such-program could not be started: spawn vgw-no-such-program ENOENT: vgw-no-such-program is not installed, or not on the PATH');
});

// A pass's `ip` not on the PATH was said as "ip -o link show exited by signal: spawn ip ENOENT": a signal that never
// came, and no word of what was wrong. The gateway's own PATH is read once, at its start: a process of its own (run
// alone, before the tests that time their commands: starting it takes a core for a second or two).
test.serial('a pass command whose program is not on the PATH says it could not be started, and why', async (t) => {
  const runnerFile = fileURLToPath(new URL('../../src/exec/execa-runner.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e',
    `import { ExecaRunner } from ${JSON.stringify(runnerFile)};`
    + ' await new ExecaRunner().run([\'ip\', \'-o\', \'link\', \'show\']).catch((e) => console.log(JSON.stringify([e.message, e.exitCode, e.notFound])));'],
  { env: { ...process.env, PATH: '/nonexistent-vgw-test' }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  await new Promise((resolve) => child.once('close', resolve));
  t.deepEqual(JSON.parse(out), ['ip -o link show could not be started: spawn ip ENOENT: ip is not installed, or not on the PATH', null, true]);
});

// Under --netns, ip reports the program missing inside (`exec of "X" failed`, exit 1), turned into the plain runner's
// "not installed": it was said to have exited by signal too.
test('under --netns, a program not installed in the namespace could not be started, as without it', async (t) => {
  const ip: CommandRunner = {
    run: async (argv) => ({ stdout: '', stderr: `exec of "${argv[4]}" failed: No such file or directory\n`, exitCode: 1 }),
    start: () => {
      throw new Error('not here');
    },
  };
  const error = await t.throwsAsync(inNamespace(ip, 'vgw-ns').run(['conntrack', '-L']), { instanceOf: CommandError });
  t.is(error.message, 'ip netns exec vgw-ns conntrack -L could not be started: exec of "conntrack" failed: No such file or directory');
  t.deepEqual([error.exitCode, error.notFound], [null, true]);
});

test('a program that is there but may not be run (no execute bit) could not be started, and is not "not installed"', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vgw-runner-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'not-executable');
  writeFileSync(file, '#!/bin/sh\n', { mode: 0o644 });
  const error = await t.throwsAsync(runner.run([file, '-L']), { instanceOf: CommandError });
  t.is(error.message, `${file} -L could not be started: spawn ${file} EACCES: permission denied`);
  t.false(error.notFound);
  t.is(error.exitCode, null);
});

test('withDeadline: a command that hangs is killed at the deadline, and says so; a caller\'s own time wins', async (t) => {
  const bounded = withDeadline(runner, 150);
  const started = performance.now();
  const error = await t.throwsAsync(bounded.run(['sleep', '60']), { instanceOf: CommandError });
  t.is(error.message, 'sleep 60 exited by signal: killed by SIGKILL (timeout 150 ms)');
  // Killed, not waited for: a bound far from the command's minute, which a loaded machine stays under (2 s did not).
  t.true(performance.now() - started < 30_000);
  t.is((await bounded.run(['sh', '-c', 'sleep 0.3; echo done'], { timeoutMs: 5000 })).stdout, 'done\n');
});

// A helper killed from outside (the OOM killer, an operator's kill -9) was said to have hit the command timeout
// ("killed by SIGKILL (timeout 60000 ms)") however soon it died: the log sent one looking for a hang.
test('withDeadline: a command killed by someone else is not said to have timed out', async (t) => {
  const bounded = withDeadline(runner, 60_000);
  const started = performance.now();
  const error = await t.throwsAsync(bounded.run(['sh', '-c', 'kill -9 $$']), { instanceOf: CommandError });
  t.is(error.message, 'sh -c kill -9 $$ exited by signal: killed by SIGKILL, not by the gateway (the OOM killer, or another process)');
  t.is(error.exitCode, null);
  t.false(error.notFound);
  t.true(performance.now() - started < 15_000); // of a 30 s sleep or a 60 s deadline: killed, not waited for
});

// iptables-restore dying of a segfault or an assertion's abort (a bug of the binary, a rule set it cannot take) is
// the program's own fault: "not by the gateway (the OOM killer, or another process)" sent one looking for a killer.
test('withDeadline: a command that crashes (SIGSEGV, SIGABRT) is said to have crashed, not to have been killed', async (t) => {
  const bounded = withDeadline(runner, 60_000);
  for (const signal of ['SEGV', 'ABRT']) {
    const error = await t.throwsAsync(bounded.run(['sh', '-c', `kill -${signal} $$`]), { instanceOf: CommandError });
    t.is(error.message, `sh -c kill -${signal} $$ exited by signal: crashed (SIG${signal}): a fault of the program itself, not a kill`);
    t.is(error.exitCode, null);
  }
});

test('withDeadline: abortInFlight kills the commands running now, saying why; those started after run as usual', async (t) => {
  const bounded = withDeadline(runner, 60_000);
  const started = performance.now();
  const running = bounded.run(['sleep', '30']);
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.is(bounded.abortInFlight('the gateway is stopping'), 1);
  const error = await t.throwsAsync(running, { instanceOf: CommandError });
  t.is(error.message, 'sleep 30 exited by signal: killed by SIGKILL (the gateway is stopping)');
  t.false(error.notFound);
  t.true(performance.now() - started < 15_000); // of a 30 s sleep or a 60 s deadline: killed, not waited for
  t.is((await bounded.run(['echo', 'after'])).stdout, 'after\n');
  t.is(bounded.abortInFlight('nothing runs'), 0);
  // A rollback's command is left to finish: it puts back what a failed pass changed.
  const rollback = bounded.run(['sh', '-c', 'sleep 0.3; echo undone'], { rollback: true });
  t.is(bounded.abortInFlight('the gateway is stopping'), 0);
  t.is((await rollback).stdout, 'undone\n');
});

// The address conflict probes run through the supervisor's runner with a signal of their own, aborted at a stop:
// withDeadline used to replace it with its own, and the probe ran on to its end.
test('withDeadline: a caller\'s own signal still kills its command, saying why', async (t) => {
  const bounded = withDeadline(runner, 60_000);
  const controller = new AbortController();
  const started = performance.now();
  const running = bounded.run(['sleep', '30'], { signal: controller.signal });
  await new Promise((resolve) => setTimeout(resolve, 100));
  controller.abort('the gateway is stopping');
  const error = await t.throwsAsync(running, { instanceOf: CommandError });
  t.is(error.message, 'sleep 30 exited by signal: killed by SIGKILL (the gateway is stopping)');
  t.true(performance.now() - started < 15_000); // of a 30 s sleep or a 60 s deadline: killed, not waited for
});

// The probes' signal lives as long as the process, and at 100 VLANs some 300,000 probes a day run with it: each run
// must leave nothing behind on it. Linked by AbortSignal.any, each kept about 57 bytes on node 20 (17 MB a day).
test('withDeadline: runs with a caller\'s long-lived signal leave no memory behind', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  // As node's spawn does with a signal: listens while the command runs, and stops listening when it ends.
  const inner: CommandRunner = {
    run: async (_argv, options) => {
      const onAbort = () => {};
      options?.signal?.addEventListener('abort', onAbort, { once: true });
      await new Promise((resolve) => setImmediate(resolve));
      options?.signal?.removeEventListener('abort', onAbort);
      return { exitCode: 0, stdout: '', stderr: '' };
    },
    start: () => {
      throw new Error('not used');
    },
  };
  const bounded = withDeadline(inner, 60_000);
  const stopping = new AbortController();
  const settle = async () => {
    for (let i = 0; i < 5; i++) {
      gc();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  const runs = 100_000;
  await settle();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < runs; i += 8) await Promise.all(Array.from({ length: 8 }, () => bounded.run(['arping'], { signal: stopping.signal })));
  await settle();
  const perRun = (process.memoryUsage().heapUsed - before) / runs;
  t.true(perRun < 15, `${perRun.toFixed(1)} bytes kept per run`);
});

test('a child that exits without reading its input is reported by its exit status, not EPIPE', async (t) => {
  const r = await runner.run(['sh', '-c', 'exit 4'], { input: 'x'.repeat(4 << 20), allowFailure: true });
  t.is(r.exitCode, 4);
});

test('a timeout kills the child and is an error', async (t) => {
  const started = performance.now();
  const error = await t.throwsAsync(runner.run(['sleep', '30'], { timeoutMs: 100, allowFailure: true }), { instanceOf: CommandError });
  t.is(error.exitCode, null);
  t.false(error.notFound, 'a killed program was there: not "not installed"');
  t.regex(error.message, /timeout 100 ms/);
  t.true(performance.now() - started < 15_000); // of a 30 s sleep: killed, not waited for
});

// A helper that is a wrapper (a shell script in front of ipset, as on some distributions) hangs in a child of its
// own: the kill reaches the wrapper only, and the child goes on holding the pipes. Waiting for them to close held
// the pass (and a stop) until that child ended, far past the timeout.
test('a timeout ends the command even when a child of it still holds its output open', async (t) => {
  const started = performance.now();
  const error = await t.throwsAsync(runner.run(['sh', '-c', 'sleep 20; echo late'], { timeoutMs: 100 }), { instanceOf: CommandError });
  t.regex(error.message, /killed by SIGKILL \(timeout 100 ms\)/);
  t.true(performance.now() - started < 15_000); // of the 20 s sleep the killed shell left behind
});

test('onStdout takes the output as it comes (pieces before the exit, characters whole) and stdout is then empty', async (t) => {
  const pieces: string[] = [];
  // 200 KB in two writes, a multi-byte character in each, then a line on stderr and exit 2. The second write waits
  // until the first piece has reached onStdout: output held until the exit would never let it go on (ava's timeout).
  const dir = mkdtempSync(join(tmpdir(), 'vgw-runner-'));
  const seen = join(dir, 'seen');
  const script = 'head -c 100000 /dev/zero | tr "\\0" a; printf "é\\n"; while [ ! -e "$1" ]; do sleep 0.01; done; '
    + 'head -c 100000 /dev/zero | tr "\\0" b; printf "ü\\n"; echo err >&2; exit 2';
  try {
    const r = await runner.run(['sh', '-c', script, 'sh', seen], {
      allowFailure: true,
      onStdout: (piece) => {
        if (pieces.length === 0) writeFileSync(seen, '');
        pieces.push(piece);
      },
    });
    t.deepEqual(r, { stdout: '', stderr: 'err\n', exitCode: 2 });
    t.false(pieces[0]!.includes('b'), 'the first piece came before the second write');
    t.is(pieces.join(''), `${'a'.repeat(100000)}é\n${'b'.repeat(100000)}ü\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('commands see the C locale', async (t) => {
  t.is((await runner.run(['sh', '-c', 'echo "$LC_ALL"'])).stdout, 'C\n');
});

test('a fire-and-forget child reports its exit; one that is not installed reports null without throwing', async (t) => {
  t.is(await runner.start(['sh', '-c', 'exit 3'], { detached: true }).exited, 3);
  t.is(await runner.start(['vgw-no-such-program'], { detached: true }).exited, null);
});

// Seen in the chaos review: with its `ip monitor` child stopped (SIGSTOP), every stop of the supervisor took 2 s, the
// SIGTERM pending on the stopped child until the SIGKILL came.
test('stopping a started child that is itself stopped (SIGSTOP) ends it at once, not at the SIGKILL 2 s later', async (t) => {
  const child = runner.start(['sleep', '60']);
  await new Promise((resolve) => setTimeout(resolve, 100));
  process.kill(child.pid!, 'SIGSTOP');
  const started = performance.now();
  await child.stop();
  const took = performance.now() - started;
  t.log(`stopped in ${Math.round(took)} ms`);
  t.true(took < 1500, `stopped in ${Math.round(took)} ms`);
  t.is(await child.exited, null);
});

/** Whether `pid` runs (a zombie, exited but not yet reaped, does not). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** The pids of the processes whose parent is `pid`. */
function childrenOf(pid: number): number[] {
  return readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
    try {
      return Number(/\) \S (\d+) /.exec(readFileSync(`/proc/${d}/stat`, 'utf8'))?.[1]) === pid;
    } catch {
      return false;
    }
  }).map(Number);
}

async function until(what: string, probe: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!probe()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// Seen with `run --netns` on a host: a `kill -9` of the gateway left its `ip monitor` child running, reparented to
// init, for ever (one more per restart); nothing ends it outside a container's PID namespace.
test('a started child ends when the process that started it is killed (SIGKILL), and not before', async (t) => {
  const runnerFile = fileURLToPath(new URL('../../src/exec/execa-runner.ts', import.meta.url));
  const holder = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e',
    `import { ExecaRunner } from ${JSON.stringify(runnerFile)}; console.log(new ExecaRunner().start(['sleep', '617']).pid);`
    + ' setInterval(() => {}, 1000);'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let pid: number | undefined;
  try {
    pid = await new Promise<number>((resolve, reject) => {
      holder.stdout.once('data', (chunk: Buffer) => resolve(Number(chunk.toString())));
      holder.once('exit', () => reject(new Error('the holder exited')));
    });
    await until('the child to be sleep', () => readFileSync(`/proc/${pid}/cmdline`, 'utf8') === 'sleep\u0000617\u0000', 5000);
    await new Promise((resolve) => setTimeout(resolve, 300));
    t.true(running(pid), 'runs while its parent does');
    holder.kill('SIGKILL');
    await until('the orphaned child to end', () => !running(pid!), 3000);
    t.pass();
  } finally {
    holder.kill('SIGKILL');
    // Only the sleep started here, by its pid and its command line: not a process by its name.
    try {
      if (pid !== undefined && running(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8') === 'sleep\u0000617\u0000') process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
});

/** The command line of `pid`, or undefined where it is gone. */
function cmdlineOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return undefined;
  }
}

/** When `pid` started (clock ticks since boot): with the pid, one process, through an exec, not a later one. */
function startOf(pid: number): string | undefined {
  try {
    return /\) (?:\S+ ){19}(\d+) /.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

// The watcher is the one child of a started child that is still the runner's shell (forked before the exec): found
// by its command line, not as any child, which for `sh -c '…'` may be the command's own (a sleep), so that a watcher
// left behind fails. The child that exits does so when told (a file appears), not after a time.
test('a started child that exits by itself, or is stopped, leaves nothing behind it (its watcher ends too)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vgw-runner-'));
  const go = join(dir, 'go');
  try {
    for (const [how, argv] of [['exits', ['sh', '-c', 'until [ -e "$1" ]; do sleep 0.01; done; exit 4', 'sh', go]], ['stopped', ['sleep', '60']]] as const) {
      const child = runner.start(argv);
      const isWatcher = (text: string | undefined) => text?.startsWith('/bin/sh\u0000-c\u0000exec 3<&0 </dev/null\n') === true;
      let watcher: { pid: number; start: string } | undefined;
      await until('its watcher', () => {
        const pid = childrenOf(child.pid!).find((p) => isWatcher(cmdlineOf(p)));
        const start = pid === undefined ? undefined : startOf(pid);
        watcher = pid === undefined || start === undefined ? undefined : { pid, start };
        return watcher !== undefined;
      }, 3000);
      // The child itself becomes the command (exec), the watcher staying another process: the shell forks the watcher
      // before it execs, so right after the fork the child is still the shell (a CI run read it there).
      await until('the child to be the command (exec), the watcher another process', () => !isWatcher(cmdlineOf(child.pid!)), 3000);
      if (how === 'exits') writeFileSync(go, '');
      if (how === 'exits') t.is(await child.exited, 4, 'its own exit status, through the shell\'s exec');
      else await child.stop();
      if (how === 'stopped') t.is(await child.exited, null, 'killed by the stop\'s signal, as before');
      // Gone (or a zombie), or its pid another process's since.
      await until(`the watcher of the child that ${how} to end`, () => !running(watcher!.pid) || startOf(watcher!.pid) !== watcher!.start, 3000);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// A started child's stderr was ignored: a lab agent that failed before it was ready said "no output".
test('a started child keeps the end of its stderr, bounded, read whole by the time it has exited', async (t) => {
  const child = runner.start(['sh', '-c', 'echo first words >&2; head -c 10000 /dev/zero | tr "\\0" a >&2; echo >&2; echo "the reason" >&2; echo out; exit 3']);
  const lines: string[] = [];
  child.onLine((line) => lines.push(line));
  t.is(await child.exited, 3);
  const tail = child.stderrTail!();
  t.true(tail.startsWith('…a'), 'cut at its start, marked so');
  t.true(tail.endsWith('a\nthe reason\n'));
  t.is(Buffer.byteLength(tail.slice(1)), 4096);
  t.deepEqual(lines, ['out'], 'stdout still comes as lines, stderr not among them');
  const quiet = runner.start(['sh', '-c', 'echo "said" >&2']);
  await quiet.exited;
  t.is(quiet.stderrTail!(), 'said\n');
});
