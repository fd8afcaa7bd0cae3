/**
 * prepareBundle's private copy (test/helpers/bundle.ts) is removed when the call does not return it: a build or copy
 * that fails, and a test process interrupted while the build runs (a Ctrl-C, ava's timeout). Each left a
 * /tmp/vgw-bundle-* directory behind, which nothing removed. Run in a child process whose TMPDIR is a directory of
 * this test's, holding the child's build lock (its own, in that directory: no other build of the machine waits) so
 * that the child is interrupted while it waits in the build's flock, after it made its directory.
 */
import test from 'ava';
import { execa } from 'execa';
import { mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const FIXTURE = join(REPO, 'test', 'fixtures', 'prepare-bundle.ts');
const LOCK = 'vlan-gateway-test-build.lock';

async function withTmp(work: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = await mkdtemp(join(tmpdir(), 'vgw-bundle-test-'));
  try {
    await work(tmp);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** The bundle directories in `tmp` (tsx keeps its cache there too). */
const bundles = async (tmp: string) => (await readdir(tmp)).filter((name) => name.startsWith('vgw-bundle-'));

const prepare = (tmp: string) => execa(process.execPath, ['--import=tsx', FIXTURE], { cwd: REPO, env: { TMPDIR: tmp }, reject: false, timeout: 60_000 });

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`a ${signal} while the build runs removes the bundle's directory, and the process still ends by it`, async (t) => {
    await withTmp(async (tmp) => {
      const holder = execa('flock', ['--no-fork', join(tmp, LOCK), 'sh', '-c', 'echo held; exec sleep 60'], { reject: false });
      try {
        await new Promise<void>((resolve) => holder.stdout!.once('data', () => resolve()));
        const child = prepare(tmp);
        let made: string[] = [];
        for (const deadline = Date.now() + 30_000; made.length === 0 && Date.now() < deadline;) {
          made = await bundles(tmp);
          if (made.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
        }
        t.is(made.length, 1, 'the child made its directory and waits for the build lock');
        child.kill(signal);
        const result = await child;
        t.is(result.signal, signal, result.stderr);
        t.deepEqual(await bundles(tmp), [], 'no vgw-bundle-* left');
        // The build it was waiting to run was stopped with it (a SIGTERM reaches the test process alone).
        const { stdout: ps } = await execa('ps', ['-e', '-o', 'args=']);
        t.false(ps.split('\n').some((line) => line.includes(join(tmp, made[0]!))), 'no flock, sh or copy of it left running');
      } finally {
        holder.kill('SIGKILL');
        await holder;
      }
    });
  });
}

test('a build that fails removes the bundle\'s directory', async (t) => {
  await withTmp(async (tmp) => {
    // flock cannot open its lock file: the build fails before it starts.
    await symlink('/nonexistent/vgw-bundle-test/lock', join(tmp, LOCK));
    const result = await prepare(tmp);
    t.is(result.exitCode, 1);
    t.regex(result.stderr, /flock/);
    t.deepEqual(await bundles(tmp), [], 'no vgw-bundle-* left');
  });
});
