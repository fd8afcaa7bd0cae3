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
    // The first use of a locale maps about 6 MB of the node binary's ICU data for good: the supervisor, which must
    // stay under 80 MB, uses none (the lab's own tools may).
    files: ['src/**/*.ts'],
    ignores: ['src/lab/**'],
    rules: {
      'no-restricted-properties': ['error',
        ...['toLocaleString', 'toLocaleDateString', 'toLocaleTimeString', 'localeCompare'].map((property) => ({
          property, message: 'ICU costs the supervisor about 6 MB of memory: use groupDigits (config/problems.ts) or a plain comparison.',
        }))],
      'no-restricted-globals': ['error', { name: 'Intl', message: 'ICU costs the supervisor about 6 MB of memory.' }],
    },
  },
  {
    files: ['src/plan/**/*.ts', 'src/config/validate.ts', 'src/config/schema.ts', 'src/config/check-*.ts', 'src/config/cross-field.ts', 'src/config/zones.ts', 'src/observe/parse-*.ts', 'src/apply/parse-*.ts', 'src/net/**/*.ts', 'src/template/render.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: ioModules.map((name) => ({ name, message: 'The pure core does no I/O: take data, return data.' })),
      }],
    },
  },
);
