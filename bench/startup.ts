/** Process start-up, reported apart from the in-process figures: bare node, and the CLI printing --help. */
import { rmSync } from 'node:fs';
import { cp, mkdtemp, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommandRunner } from '../src/exec/runner.js';
import { repeat, type Stats } from './measure.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

let built: Promise<string> | undefined;

/**
 * The bundled CLI is what users run (and what starts fast): built afresh (once a run) so it is this checkout's code,
 * and run from a copy of the package, as the tests do. The runs write code caches for their own V8 flags (the
 * image's NODE_OPTIONS); in dist/ they would sit beside the one the build made, which the launcher's test counts.
 * Resolves with the copy's launcher; the copy goes when the process exits.
 */
export function ensureBundle(runner: CommandRunner): Promise<string> {
  built ??= (async () => {
    await runner.run([process.execPath, join(ROOT, 'build.mjs')], { timeoutMs: 120_000 });
    const dir = await mkdtemp(join(tmpdir(), 'vgwbench-package-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    await cp(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
    for (const entry of ['rules', 'examples', 'package.json']) await symlink(join(ROOT, entry), join(dir, entry));
    return join(dir, 'dist', 'vlan-gateway.mjs');
  })();
  return built;
}

export interface StartupRow {
  readonly what: string;
  readonly stats: Stats;
}

export async function startupBench(runner: CommandRunner, runs = 5): Promise<StartupRow[]> {
  const commands: Array<[string, string[]]> = [['node -e 0', [process.execPath, '-e', '0']]];
  const bundle = await ensureBundle(runner);
  commands.push(['node dist/vlan-gateway.mjs --help', [process.execPath, bundle, '--help']]);
  commands.push(['the same, VLAN_GATEWAY_CODE_CACHE=off', ['env', 'VLAN_GATEWAY_CODE_CACHE=off', process.execPath, bundle, '--help']]);
  const rows: StartupRow[] = [];
  for (const [what, argv] of commands) {
    await runner.run(argv, { timeoutMs: 30_000 }); // warm the page cache
    const r = await repeat({ runs }, async () => {
      const start = performance.now();
      await runner.run(argv, { timeoutMs: 30_000 });
      return { ms: performance.now() - start, value: null };
    });
    rows.push({ what, stats: r.stats });
  }
  return rows;
}
