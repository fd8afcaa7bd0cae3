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
  // Some dependencies are CommonJS and call require(); give the ESM bundle one.
  banner: { js: "import { createRequire as __vgwRequire } from 'node:module'; const require = __vgwRequire(import.meta.url);" },
  logLevel: 'warning',
});
