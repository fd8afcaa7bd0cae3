/**
 * The launcher (dist/vlan-gateway.mjs, src/launcher.ts) and its code cache, seen from outside as users meet it: a
 * private copy of the built package, `validate` run with node, and the files in dist/code-cache/. That the cache
 * is then used (V8 accepts it) is asserted where it matters, in the kernel tier's ready test and the image's restart
 * test, which read the `codeCache` field of `run`'s first log line.
 */
import test from 'ava';
import { chmod, cp, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { besideDist, prepareBundle, REPO } from '../helpers/supervisor.js';
import { tearDownAlways } from '../helpers/teardown.js';

const built = await prepareBundle();
tearDownAlways('remove the copy of the bundle', () => built.remove());

/** A copy of the installed package: dist/ (launcher, bundle, and the build's cache unless `withCache` is false). */
async function install(withCache: boolean): Promise<{ dir: string; cacheDir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-launcher-'));
  await cp(join(built.path, '..'), join(dir, 'dist'), { recursive: true });
  if (!withCache) await rm(join(dir, 'dist', 'code-cache'), { recursive: true, force: true });
  await besideDist(dir);
  return { dir, cacheDir: join(dir, 'dist', 'code-cache'), remove: () => rm(dir, { recursive: true, force: true }) };
}

function validate(dir: string, env: NodeJS.ProcessEnv = {}) {
  return execa(process.execPath, [join(dir, 'dist', 'vlan-gateway.mjs'), 'validate', '--config', join(REPO, 'examples', 'lab.yaml')], {
    env: { ...process.env, NODE_OPTIONS: '', ...env },
    reject: false,
  });
}

async function caches(cacheDir: string): Promise<Map<string, Buffer>> {
  const names = await readdir(cacheDir).catch(() => [] as string[]);
  return new Map(await Promise.all(names.map(async (n) => [n, await readFile(join(cacheDir, n))] as const)));
}

test('the build ships a cache for this node; without one, the first command writes it, and later ones keep it', async (t) => {
  t.is((await caches(join(built.path, '..', 'code-cache'))).size, 1, 'the build made one cache');
  const pkg = await install(false);
  try {
    const first = await validate(pkg.dir);
    t.is(first.exitCode, 0, first.stderr);
    t.regex(first.stdout, /valid \(2 VLANs/);
    const written = await caches(pkg.cacheDir);
    t.is(written.size, 1);
    const [name, data] = [...written][0]!;
    t.regex(name, /^[0-9a-f]{24}\.bin$/);
    t.is(data.subarray(0, 4).toString(), 'cli\n', 'made by a command other than run');
    t.true(data.length > 100_000, `${data.length} bytes of V8 data`);

    t.is((await validate(pkg.dir)).exitCode, 0);
    t.deepEqual(await caches(pkg.cacheDir), written, 'a cache V8 took is not rewritten by another light command');
  } finally {
    await pkg.remove();
  }
});

test('a cache V8 rejects is replaced; other V8 flags get a cache of their own', async (t) => {
  const pkg = await install(true);
  try {
    const [name, data] = [...(await caches(pkg.cacheDir))][0]!;
    // V8 checks a header (its version, flags, the source length); a damaged one is rejected, never executed.
    const damaged = Buffer.from(data);
    damaged.fill(0xff, 4, 64);
    await writeFile(join(pkg.cacheDir, name), damaged);
    const r = await validate(pkg.dir);
    t.is(r.exitCode, 0, r.stderr);
    const replaced = (await caches(pkg.cacheDir)).get(name)!;
    t.false(replaced.equals(damaged), 'the rejected cache was written again');
    t.is(replaced.subarray(0, 4).toString(), 'cli\n');

    t.is((await validate(pkg.dir, { NODE_OPTIONS: '--max-semi-space-size=1' })).exitCode, 0);
    t.is((await caches(pkg.cacheDir)).size, 2, 'one cache per set of flags');
  } finally {
    await pkg.remove();
  }
});

test('a place the cache cannot be written, or VLAN_GATEWAY_CODE_CACHE=off: the command works and writes nothing', async (t) => {
  const pkg = await install(false);
  try {
    const off = await validate(pkg.dir, { VLAN_GATEWAY_CODE_CACHE: 'off' });
    t.is(off.exitCode, 0, off.stderr);
    t.is((await caches(pkg.cacheDir)).size, 0);

    await writeFile(pkg.cacheDir, 'not a directory'); // mkdir fails, as on a read-only install (root ignores modes)
    const blocked = await validate(pkg.dir);
    t.is(blocked.exitCode, 0, blocked.stderr);
    t.is(blocked.stderr, '');
    t.is(await readFile(pkg.cacheDir, 'utf8'), 'not a directory');
    t.deepEqual((await readdir(join(pkg.dir, 'dist'))).sort(), ['cli.cjs', 'cli.cjs.map', 'code-cache', 'vlan-gateway.mjs']);
  } finally {
    await pkg.remove();
  }
});

// V8's cached data is compiled code, checked against the source's length only: a cache another user can write is
// their code run as root. So the launcher writes it with modes of its own (not the umask's), and reads none that is
// writable by others, or in a directory that is.
test('the cache is written 0755/0644 whatever the umask; one writable by others is not read but written again, its directory closed', async (t) => {
  const pkg = await install(false);
  try {
    const launcher = join(pkg.dir, 'dist', 'vlan-gateway.mjs');
    const made = await execa('sh', ['-c', 'umask 000; exec "$0" "$@"', process.execPath, launcher, 'validate', '--config', join(REPO, 'examples', 'lab.yaml')],
      { env: { ...process.env, NODE_OPTIONS: '' }, reject: false });
    t.is(made.exitCode, 0, made.stderr);
    const [name] = [...(await caches(pkg.cacheDir)).keys()];
    const file = join(pkg.cacheDir, name!);
    t.is((await stat(pkg.cacheDir)).mode & 0o777, 0o755);
    t.is((await stat(file)).mode & 0o777, 0o644);

    // Written by anyone: not read (V8 would take it), so written again, whole and 0644.
    await chmod(file, 0o666);
    const before = (await stat(file)).ino;
    t.is((await validate(pkg.dir)).exitCode, 0);
    t.not((await stat(file)).ino, before, 'written again, not taken');
    t.is((await stat(file)).mode & 0o777, 0o644);

    // In a directory anyone can write to: not read either (a cache V8 took is not rewritten by a light command).
    await chmod(pkg.cacheDir, 0o777);
    const kept = (await stat(file)).ino;
    t.is((await validate(pkg.dir)).exitCode, 0);
    t.not((await stat(file)).ino, kept, 'not taken from a directory others can write to');
    // ... which the launcher, whose directory it is, closes to others: the cache is taken from then on.
    t.is((await stat(pkg.cacheDir)).mode & 0o777, 0o755);
    const closed = (await stat(file)).ino;
    t.is((await validate(pkg.dir)).exitCode, 0);
    t.is((await stat(file)).ino, closed, 'taken, not written again');
  } finally {
    await pkg.remove();
  }
});

test('errors keep their exit codes and messages through the launcher', async (t) => {
  const r = await execa(process.execPath, [built.path, 'validate', '--config', '/nonexistent/gateway.yaml'], { reject: false });
  t.is(r.exitCode, 2);
  t.regex(r.stderr, /\/nonexistent\/gateway\.yaml/);
  const usage = await execa(process.execPath, [built.path, 'bogus'], { reject: false });
  t.is(usage.exitCode, 2);
  t.is(usage.stderr, 'vlan-gateway: Unknown command: bogus (the commands: validate, plan, apply, down, run, status, lab)\nRun vlan-gateway --help for usage.');
});

// The launcher holds SIGTERM, SIGINT and SIGHUP while it loads the bundle, for `run` to take over (its kernel test:
// supervisor-early-signals). Every other command acts on a signal held so as it always did: it ends.
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  test(`a ${signal} while the launcher loads the bundle still ends a command other than run (validate), by that signal`, async (t) => {
    const child = execa(process.execPath, [built.path, 'validate', '--config', join(REPO, 'examples', 'lab.yaml')], {
      env: { ...process.env, NODE_OPTIONS: `--import ${join(REPO, 'test', 'fixtures', 'slow-bundle-load.mjs')}` },
      reject: false,
      // execa's SIGKILL 5 s after the signal would be the outcome on a loaded machine, not the launcher's; one that
      // hangs is killed with SIGKILL, which fails the test.
      forceKillAfterDelay: false,
      timeout: 60_000,
      killSignal: 'SIGKILL',
    });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (stderr.includes('loading the bundle\n')) child.kill(signal);
    });
    const r = await child;
    t.is(r.signal, signal, `exit ${r.exitCode}; stdout: ${r.stdout}`);
    t.notRegex(r.stdout, /valid/, 'it did not go on to validate');
  });
}

test('node-cron in the bundle reads the clock through its own Intl (src/cli/cron-local-intl.ts), not ICU', async (t) => {
  // The first ICU formatter of a process maps about 5 MB for good: the supervisor's drift schedule must not make one.
  const bundle = await readFile(join(built.path, '..', 'cli.cjs'), 'utf8');
  t.is(bundle.match(/new cronIntl\.DateTimeFormat\("en-US"/g)?.length, 2, 'both of node-cron\'s formatters');
  t.deepEqual(bundle.match(/new Intl\.DateTimeFormat\(/g) ?? [], [], 'no formatter of the real Intl anywhere in the bundle');
  // Nor a number formatted for a locale (schema.ts did, as it was loaded): the same ICU data, for a comma.
  t.false(bundle.includes('.toLocaleString('), 'no number or date formatted for a locale');
});
