// Bundles the CLI into one ES module: Node then loads one file instead of hundreds, which roughly halves
// start-up (the supervisor must be ready within a second of a container start). Type checking is `npm run typecheck`.
import { build } from 'esbuild';

await build({
  entryPoints: ['src/main.ts'],
  outfile: 'dist/vlan-gateway.mjs',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: true,
  // Smaller source, same names in stack traces: V8 keeps the whole source in the heap for lazy compilation, and
  // pure ASCII keeps it one byte per character (a single non-ASCII character makes all 1.6 MB two-byte).
  minifyWhitespace: true,
  minifySyntax: true,
  charset: 'ascii',
  // Some dependencies are CommonJS and call require(); give the ESM bundle one.
  banner: { js: "import { createRequire as __vgwRequire } from 'node:module'; const require = __vgwRequire(import.meta.url);" },
  logLevel: 'warning',
});
