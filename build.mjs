// Builds the command users run:
//   dist/cli.cjs          the whole CLI in one file: Node loads one file instead of hundreds, which roughly halves
//                         start-up (the supervisor must be ready within a second of a container start);
//   dist/vlan-gateway.mjs the launcher (the package's bin), which loads cli.cjs through V8's code cache;
//   dist/code-cache/      that cache for this node and these flags, made by a `validate` of the lab example.
// Type checking is `npm run typecheck`.
import { execFileSync } from 'node:child_process';
import { chmodSync, rmSync } from 'node:fs';
import process from 'node:process';
import { build } from 'esbuild';
import { cronLocalIntlPlugin, cronLocalIntlProblem } from './scripts/cron-local-intl.mjs';
import { precompiledTemplatesModule } from './scripts/precompile-templates.mjs';

rmSync('dist', { recursive: true, force: true });

const common = { bundle: true, platform: 'node', target: 'node20', logLevel: 'warning' };

await build({
  ...common,
  entryPoints: ['src/cli/main.ts'],
  outfile: 'dist/cli.cjs',
  // CommonJS, because only a script (not an ES module) can be compiled with a code cache on Node 20. The launcher
  // wraps it like Node's own loader does and passes __filename; import.meta is rebuilt from it.
  format: 'cjs',
  define: { 'import.meta.url': '__vgwImportMetaUrl', 'import.meta.resolve': '__vgwImportMetaResolve' },
  banner: {
    js: "var __vgwImportMetaUrl=require('node:url').pathToFileURL(__filename).href," +
      "__vgwImportMetaResolve=(s)=>require('node:url').pathToFileURL(require.resolve(s)).href;",
  },
  plugins: [{
    // The built-in rule templates, compiled now rather than at every start.
    name: 'precompiled-templates',
    setup(b) {
      b.onLoad({ filter: /[\\/]src[\\/]template[\\/]precompiled\.ts$/ }, () => ({ contents: precompiledTemplatesModule('rules'), loader: 'js' }));
    },
  },
  // node-cron reads the local clock through Intl, which costs the supervisor about 7 MB of RSS for good: its module
  // gets an `Intl` of its own that answers from Date (src/cli/cron-local-intl.ts says why and how).
  cronLocalIntlPlugin()],
  sourcemap: true,
  // Smaller source, same names in stack traces: V8 keeps the whole source in the heap for lazy compilation, and
  // pure ASCII keeps it one byte per character (a single non-ASCII character makes all 1.6 MB two-byte).
  minifyWhitespace: true,
  minifySyntax: true,
  charset: 'ascii',
});

// Bound is not enough: node-cron asking for its formatters otherwise gets the real Intl from the local one, silently.
const cronProblem = await cronLocalIntlProblem();
if (cronProblem !== undefined) {
  process.stderr.write(`build: ${cronProblem}\n`);
  process.exit(1);
}

await build({
  ...common,
  entryPoints: ['src/launcher.ts'],
  outfile: 'dist/vlan-gateway.mjs',
  format: 'esm',
  banner: { js: '#!/usr/bin/env node' },
});
chmodSync('dist/vlan-gateway.mjs', 0o755);

// The first code cache, for whoever runs this node with these flags (the tests, the bench, a developer); a `run`
// upgrades it after its first pass. The image makes its own in its runtime stage, with its node and its flags.
execFileSync(process.execPath, ['dist/vlan-gateway.mjs', 'validate', '--config', 'examples/lab.yaml'], { stdio: ['ignore', 'ignore', 'inherit'] });
