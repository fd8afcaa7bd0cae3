/**
 * Differential fuzzing of validation, pure half (the kernel half is test/kernel/config-fuzz.test.ts): seeded configs
 * near the edges (test/helpers/config-fuzz.ts) each either
 * - validate, and then render for a fresh namespace (with the ipset tool and without) into payload lines that are
 *   all our own shape: no value from the file broke out of its place in a rule; or
 * - are refused as a ConfigError, every line `path: sentence` (or a YAML fault at its line and column), each path
 *   reaching into the document as written (the mapping or list it names a key or item of is there), no sentence in
 *   the schema library's words ("Expected string, received number").
 * Anything else thrown (a TypeError, a stack trace) is a defect. A failure names the seed and what the generator
 * did; `fuzzConfig(seed).text` is the file.
 */
import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import test from 'ava';
import { dump } from 'js-yaml';
import { generateConfig, SIZES } from '../../bench/configs.js';
import { parseConfigText } from '../../src/config/load.js';
import { ConfigError, formatPath, printable } from '../../src/config/problems.js';
import { configSchema, type Config } from '../../src/config/schema.js';
import { schemaParse } from '../../src/config/validate.js';
import { parseYaml } from '../../src/config/yaml.js';
import { loadTemplates } from '../../src/template/load.js';
import { freshPayload, fuzzConfig, payloadLineProblem } from '../helpers/config-fuzz.js';

/** Fixed: a failure here is replayed from its seed. */
const SEEDS = Array.from({ length: 400 }, (_, i) => i + 1);

const templates = await loadTemplates(undefined);

/** Words a person should never see from the validator: the schema library's own, or a value that is no value. */
const LIBRARY_WORDS = /Expected [a-z]|Invalid input|received [a-z]|^Required$|\[object Object\]|\bundefined\b|\bNaN\b|Infinity/;

/** Does every segment but the last of `path` lead through a mapping or list of the document? */
function parentExists(document: unknown, path: readonly (string | number)[]): boolean {
  let node = document;
  for (const segment of path.slice(0, -1)) {
    if (node === null || typeof node !== 'object') return false;
    node = (node as Record<string | number, unknown>)[segment];
  }
  return path.length === 0 || (node !== null && typeof node === 'object');
}

/** What is wrong with how a refused config was said (empty: nothing). */
function refusalDefects(text: string, error: ConfigError): string[] {
  const defects: string[] = [];
  if (error.problems.length === 0) defects.push('refused with no problem');
  let document: unknown;
  try {
    document = parseYaml(text).value;
  } catch {
    document = undefined; // a file YAML cannot read: its faults have no path
  }
  error.problems.forEach((problem, i) => {
    const line = error.lines[i] ?? '';
    if (problem.message.trim() === '') defects.push(`an empty sentence: ${line}`);
    if (LIBRARY_WORDS.test(problem.message)) defects.push(`not a plain sentence: ${line}`);
    if (problem.path.length === 0) {
      if (!/^(line \d+, column \d+|\(top level\)|fz\.yaml is empty)/.test(line) && !line.startsWith(`${printable(formatPath([]))}: `)) defects.push(`no path and no line: ${line}`);
      return;
    }
    if (!line.startsWith(`${printable(formatPath(problem.path))}: `)) defects.push(`a line that does not start with its path: ${line}`);
    if (document !== undefined && !parentExists(document, problem.path)) defects.push(`a path into nothing the file holds: ${line}`);
  });
  return defects;
}

test(`${SEEDS.length} seeded configs near the edges: each validates and renders only lines of our own shape, or is refused with a path and a sentence`, (t) => {
  const defects: string[] = [];
  let valid = 0;
  for (const seed of SEEDS) {
    const { text, edits } = fuzzConfig(seed);
    const at = `seed ${seed} (${edits.join('; ') || 'no change'})`;
    let config: Config;
    try {
      config = parseConfigText(text, 'fz.yaml');
    } catch (error) {
      if (error instanceof ConfigError) defects.push(...refusalDefects(text, error).map((d) => `${at}: ${d}`));
      else defects.push(`${at}: validation threw ${(error as Error).stack ?? String(error)}`);
      continue;
    }
    valid++;
    for (const ipset of [false, true]) {
      try {
        for (const line of freshPayload(config, templates, ipset).split('\n').filter((l) => l !== '')) {
          const problem = payloadLineProblem(line);
          if (problem) defects.push(`${at}: rendered ${JSON.stringify(line)}: ${problem}`);
        }
      } catch (error) {
        defects.push(`${at}: a valid config failed to render${ipset ? ' (with ipset)' : ''}: ${(error as Error).stack ?? String(error)}`);
      }
    }
  }
  t.deepEqual(defects, []);
  // Both sides of the contract are walked: a generator that drifted to all-valid or all-invalid tests half of it.
  t.true(valid > SEEDS.length / 5 && valid < SEEDS.length * 0.8, `${valid} of ${SEEDS.length} valid`);
});

/**
 * Documents whose shape the seeded configs do not reach: sections left empty (null) or out, defaults, the forms a
 * value may take (a NIC by {mac}, listen as a number, a port range), keys the schema does not know (one named
 * __proto__ too), and values of the wrong type.
 */
const SHAPES = [
  'vlans: [{name: a, id: 1, subnet: 10.0.0.0/24, gateway: 10.0.0.1}]',
  'uplink:\nforwarding:\nportForwards:\nrules:\nreconcile:\nhttp:\nvlans: [{name: a, id: 1, subnet: 10.0.0.0/24, gateway: 10.0.0.1}]',
  'vlans: [{name: a, id: 1, subnet: 10.0.0.0/24, gateway: 10.0.0.1, interface: {mac: "02:42:c0:a8:0a:02"}, masquerade: false}]\n'
    + 'uplink: {interface: eth0, nat: snat, snatTo: 192.0.2.1, gateway: 192.0.2.254}\nhttp: {listen: 9100, allowFrom: [a]}\n'
    + 'portForwards: [{port: "6000-6010", to: 10.0.0.5}, {proto: udp, port: 53, to: 10.0.0.6, toPort: 5353}]\n'
    + 'forwarding: {default: drop, rules: [{from: a, to: uplink, proto: tcp, ports: "22,80", action: accept}, {from: uplink, to: 10.0.0.7, ports: 443, action: reject}]}\n'
    + 'reconcile: {schedule: "*/5 * * * *", minIntervalMs: 0}\nrules: {dir: ./rules.d}',
  'vlans: [{name: a, id: 1, subnet: 10.0.0.0/24, gateway: 10.0.0.1, __proto__: {x: 1}}]',
  'vlans: [{name: a, id: 1, subnet: 10.0.0.0/24, gateway: 10.0.0.1}]\nforwarding: {rules: [{from: a, to: uplink, action: accept, extra: 1}]}',
  'vlans: [{name: a, id: 1.5, subnet: 10.0.0.0/24, gateway: 10.0.0.1}]\nforwarding: {rules: [{from: a, to: uplink, ports: .inf, action: drop}]}',
  'vlans: [{name: A, id: .inf, subnet: 10.0.0.0/33, gateway: ~}]\nuplink: [1]\nhttp: {listen: "a b"}',
  'vlans: []\nportForwards: [{port: "22", to: 10.0.0.5}, {port: -1e999, to: x}]',
];

test('the schema as zod compiles it takes and gives what the schema itself does: for each seeded config, the examples, the bench\'s 1k config and documents of every shape', (t) => {
  const documents: Array<[string, unknown]> = [];
  for (const seed of SEEDS) {
    try {
      documents.push([`seed ${seed}`, parseYaml(fuzzConfig(seed).text).value]);
    } catch {
      // a file YAML cannot read reaches no schema
    }
  }
  documents.push(['examples/lab.yaml', parseYaml(readFileSync(new URL('../../examples/lab.yaml', import.meta.url), 'utf8')).value]);
  documents.push(['the bench\'s 1k config', parseYaml(dump(generateConfig(SIZES['1k']))).value]);
  SHAPES.forEach((text, i) => documents.push([`shape ${i}`, parseYaml(text).value]));
  const differences: string[] = [];
  let valid = 0;
  for (const [at, value] of documents) {
    const compiled = schemaParse(value, true);
    const interpreted = configSchema.safeParse(value);
    if (compiled.success) valid++;
    if (compiled.success !== interpreted.success) differences.push(`${at}: compiled ${compiled.success ? 'takes' : 'refuses'} it, the schema ${interpreted.success ? 'takes' : 'refuses'} it`);
    else if (compiled.success && !isDeepStrictEqual(compiled.data, interpreted.data)) differences.push(`${at}: a different config`);
    else if (!compiled.success && !isDeepStrictEqual(compiled.error.issues.map((i) => [i.code, i.path]), interpreted.error!.issues.map((i) => [i.code, i.path]))) {
      differences.push(`${at}: different problems`);
    }
  }
  t.deepEqual(differences, []);
  t.true(valid > 50 && valid < documents.length - 50, `${valid} of ${documents.length} pass the schema`);
});
