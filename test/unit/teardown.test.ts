/**
 * tearDownAlways (test/helpers/teardown.ts): a test file interrupted part-way still tears down what it made. An ava
 * run of test/fixtures/teardown/interrupted.ts (a file that starts a process in its own process group, as the
 * kernel files start gateways, and writes a file) is interrupted the two ways a run ends early: a Ctrl-C (SIGINT to
 * the whole process group) and ava's own timeout (SIGTERM to the worker). Plain after.always hooks do not run then,
 * and both the process and the file stayed. (ava's timeout is not waited for here: the test sends the worker the
 * SIGTERM that ava sends it then.)
 */
import test from 'ava';
import { execa } from 'execa';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const AVA = join(REPO, 'node_modules', 'ava', 'entrypoints', 'cli.mjs');

/** Alive, and not a zombie waiting for this machine's init to reap it. */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function until(what: string, probe: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!probe()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function interruptedRun(how: 'ctrl-c' | 'ava-timeout', dir: string) {
  const run = execa(process.execPath, [AVA, '--config', 'test/fixtures/teardown/ava.config.mjs'], {
    cwd: REPO,
    reject: false,
    detached: true, // its own process group, as a terminal's: a Ctrl-C reaches ava and its worker alike
    timeout: 120_000,
    env: { VGW_TEARDOWN_DIR: dir },
  });
  let ended = false;
  void run.finally(() => (ended = true));
  try {
    await until('the fixture\'s test to run', () => existsSync(join(dir, 'running')) || ended, 60_000);
    const made = Number(await readFile(join(dir, 'made'), 'utf8'));
    const worker = Number(await readFile(join(dir, 'running'), 'utf8'));
    // What ava does when its timeout fires: worker.kill(), a SIGTERM to the worker alone.
    process.kill(how === 'ctrl-c' ? -run.pid! : worker, how === 'ctrl-c' ? 'SIGINT' : 'SIGTERM');
    const result = await run;
    return { made, result };
  } finally {
    try {
      process.kill(-run.pid!, 'SIGKILL');
    } catch {
      // the run is over
    }
  }
}

for (const how of ['ctrl-c', 'ava-timeout'] as const) {
  test.serial(`interrupted by ${how === 'ctrl-c' ? 'a Ctrl-C (SIGINT to the process group)' : 'ava\'s timeout (SIGTERM to the worker)'}: the file's teardown runs, nothing it made is left`, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'vgw-teardown-'));
    try {
      const { made, result } = await interruptedRun(how, dir);
      const output = `${String(result.stdout)}\n${String(result.stderr)}`;
      t.log(`ava exited ${String(result.exitCode ?? result.signal)}`);
      t.not(result.exitCode, 0, output);
      await until('the detached process to end', () => !running(made), 5000).catch(() => undefined);
      t.false(running(made), `the process the file started (${made}) is still running:\n${output}`);
      t.false(existsSync(join(dir, 'made')), `the file it made is still there:\n${output}`);
      t.true(existsSync(join(dir, 'torn-down')), output);
    } finally {
      const made = Number(await readFile(join(dir, 'made'), 'utf8').catch(() => ''));
      if (made > 0 && running(made)) process.kill(-made, 'SIGKILL'); // what the fixture left, when the test fails
      await rm(dir, { recursive: true, force: true });
    }
  });
}
