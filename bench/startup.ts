/** Process start-up, reported apart from the in-process figures: bare node, and the CLI printing --help. */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommandRunner } from '../src/exec/runner.js';
import { repeat, type Stats } from './measure.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

export const BUNDLE = join(ROOT, 'dist', 'vlan-gateway.mjs');

let built: Promise<unknown> | undefined;

/** The bundled CLI is what users run (and what starts fast); built afresh (once a run) so it is this checkout's code. */
export async function ensureBundle(runner: CommandRunner): Promise<void> {
  built ??= runner.run([process.execPath, join(ROOT, 'build.mjs')], { timeoutMs: 120_000 });
  await built;
}

export interface StartupRow {
  readonly what: string;
  readonly stats: Stats;
}

export async function startupBench(runner: CommandRunner, runs = 5): Promise<StartupRow[]> {
  const commands: Array<[string, string[]]> = [['node -e 0', [process.execPath, '-e', '0']]];
  await ensureBundle(runner);
  commands.push(['node dist/vlan-gateway.mjs --help', [process.execPath, BUNDLE, '--help']]);
  commands.push(['the same, VLAN_GATEWAY_CODE_CACHE=off', ['env', 'VLAN_GATEWAY_CODE_CACHE=off', process.execPath, BUNDLE, '--help']]);
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
