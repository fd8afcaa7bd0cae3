// Lint: typescript-eslint's recommended rules, plus fences that keep the architecture honest:
// only exec/ may spawn processes, and the pure core (config validation, plan, parsers) may not do I/O.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const spawnModules = ['execa', 'node:child_process', 'child_process'];
const ioModules = [...spawnModules, 'node:fs', 'fs', 'node:fs/promises', 'fs/promises', 'prom-client', 'ioredis', 'node:http'];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', '.scratch/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/exec/**'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: spawnModules.map((name) => ({ name, message: 'Spawn processes only through a CommandRunner (src/exec/).' })),
      }],
    },
  },
  {
    files: ['src/plan/**/*.ts', 'src/config/validate.ts', 'src/config/schema.ts', 'src/config/check-*.ts', 'src/config/cross-field.ts', 'src/config/zones.ts', 'src/observe/parse-*.ts', 'src/net/**/*.ts', 'src/template/render.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: ioModules.map((name) => ({ name, message: 'The pure core does no I/O: take data, return data.' })),
      }],
    },
  },
);
