/**
 * A private copy of the built package for tests and benchmarks that run the artifact users run (see supervisor.ts for
 * why a copy). No ava here: test/component/bundle-interrupted.test.ts runs it in a child process and interrupts it.
 */
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { onInterrupt } from './interrupt.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

/** Taken while a build and a copy run, by every test process of the machine (so no build rewrites a file mid-copy). */
const buildLock = () => join(tmpdir(), 'vlan-gateway-test-build.lock');

export interface Bundle {
  /** The private copy of dist/vlan-gateway.mjs (the launcher) to run with `node`. */
  readonly path: string;
  /** Time to build (if needed) and copy. */
  readonly buildMs: number;
  /** Whether this call ran `npm run build` (false: the bundle was already newer than its sources). */
  readonly built: boolean;
  remove(): Promise<void>;
}

/**
 * `npm run build` unless dist/cli.cjs is newer than every source it is made from (so the test files of one run build
 * once between them, instead of each loading the machine while another measures start-up times), the installed
 * packages among them (npm rewrites node_modules/.package-lock.json at every install), then a private copy of the
 * bundle. Build and copy happen under one flock, so no build of ours rewrites the file mid-copy.
 *
 * The copy's directory is the caller's to remove once this returns. Until then it is this function's: removed when
 * the build, the copy or their check fails, and when the process is interrupted meanwhile (SIGINT, SIGTERM: the
 * build, in a process group of its own, is stopped first, so that no copy lands after the removal). Each of these
 * left a /tmp/vgw-bundle-* behind, which nothing removed.
 */
export async function prepareBundle(): Promise<Bundle> {
  const started = performance.now();
  // Registered before the directory is made: a signal that came after mkdtemp made it and before its callback found
  // no handler yet (the process died by it, the directory left; a CI run under load). The second pass, SETTLE_MS
  // later (interrupt.ts), then finds the directory named.
  let made: string | undefined;
  const remove = () => (made === undefined ? Promise.resolve() : rm(made, { recursive: true, force: true }));
  let building: ReturnType<typeof execa> | undefined;
  let interrupted = false;
  const stopAndRemove = async () => {
    interrupted = true;
    if (building?.pid !== undefined && building.exitCode === null) {
      try {
        process.kill(-building.pid, 'SIGTERM'); // flock, sh, npm, esbuild, cp
      } catch {
        // ended meanwhile
      }
      await building.catch(() => undefined);
    }
    await remove();
  };
  const forget = onInterrupt({ once: stopAndRemove, again: stopAndRemove });
  try {
    const dir = made = await mkdtemp(join(tmpdir(), 'vgw-bundle-'));
    if (interrupted) await new Promise(() => undefined); // removed by the second pass; the process ends by its signal
    const path = join(dir, 'dist', 'vlan-gateway.mjs');
    const script = [
      'set -e',
      'bundle=dist/cli.cjs',
      'if [ ! -f "$bundle" ] || [ ! -f dist/vlan-gateway.mjs ] || [ -n "$(find src rules scripts package.json package-lock.json node_modules/.package-lock.json build.mjs tsconfig.json -newer "$bundle" -print 2>/dev/null | head -n 1)" ]; then',
      '  npm run --silent build',
      '  echo built',
      'fi',
      // The launcher, the bundle and its code cache (made by the build for this node, as an image build makes one).
      'cp -R dist "$1"',
    ].join('\n');
    // Its own process group: stopped whole when this process is interrupted (a SIGTERM reaches this process alone).
    building = execa('flock', [buildLock(), 'sh', '-c', script, 'sh', join(dir, 'dist')], { cwd: REPO, timeout: 180_000, detached: true });
    const { stdout } = await building;
    const buildMs = performance.now() - started;
    await besideDist(dir);
    // a torn copy would fail here, not in a test
    for (const file of [path, join(dir, 'dist', 'cli.cjs')]) await execa(process.execPath, ['--check', file]);
    return { path, buildMs, built: /built/.test(String(stdout)), remove };
  } catch (error) {
    await remove();
    // The build stopped by the interruption: the process ends by its signal once its cleanups are done, not with
    // this as one more failure to read.
    if (interrupted) await new Promise(() => undefined);
    throw error;
  } finally {
    forget();
  }
}

/** What an installed package has beside dist/: rules/, examples/ and package.json (links to this checkout's). */
export async function besideDist(dir: string): Promise<void> {
  for (const entry of ['rules', 'examples', 'package.json']) await symlink(join(REPO, entry), join(dir, entry));
}
