/**
 * The README, read as a user reads it: every config it shows is valid and its template renders, its example error is
 * what validation prints word for word, its Configuration table names every key the schema has (with the schema's
 * defaults) and no other, every flag of every command's --help is documented with its default, and its Metrics
 * table is the series the gateway registers, with their types, labels and the label values it lists. A change of
 * either side that leaves the other behind fails here.
 */
import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import * as z from 'zod/mini';
import { describeError } from '../../src/cli/errors.js';
import { loadConfig, parseConfigText } from '../../src/config/load.js';
import { configSchema } from '../../src/config/schema.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { USER_HOOKS } from '../../src/plan/chains.js';
import { planDesired } from '../../src/plan/desired.js';
import { detachedFacts, syntheticFacts } from '../../src/plan/synthetic.js';
import { loadTemplates } from '../../src/template/load.js';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const blocks = [...README.matchAll(/^```(\w*)\n([\s\S]*?)^```/gm)].map((m) => ({ lang: m[1]!, body: m[2]! }));
/** A section's text: from its heading to the next heading of its level or above. */
function section(heading: string): string {
  const start = README.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`README has no "${heading}"`);
  const level = /^#+/.exec(heading)![0];
  const rest = README.slice(start + heading.length + 2);
  // A heading outside code blocks (a YAML comment is no heading).
  const outside = rest.replace(/^```[\s\S]*?^```/gm, (block) => block.replace(/[^\n]/g, ' '));
  const end = outside.search(new RegExp(`^#{1,${level.length}} `, 'm'));
  return end < 0 ? rest : rest.slice(0, end);
}
/** The rows of the Markdown table whose header row starts with `first`, as cells. */
function table(text: string, first: string): string[][] {
  const start = text.indexOf(`| ${first} |`);
  if (start < 0) throw new Error(`no table starting with "${first}"`);
  const rows: string[][] = [];
  for (const line of text.slice(start).split('\n').slice(2)) {
    if (!line.startsWith('|')) break;
    rows.push(line.slice(1, -1).split(/(?<!\\)\|/).map((cell) => cell.trim()));
  }
  return rows;
}
/** The names in backticks of a cell, `a_{b,c}_d` expanded to a_b_d and a_c_d. */
function names(cell: string): string[] {
  const expand = (text: string): string[] => {
    const brace = /\{([^{}]*)\}/.exec(text);
    if (!brace) return [text];
    return brace[1]!.split(',').flatMap((alt) => expand(text.slice(0, brace.index) + alt + text.slice(brace.index + brace[0].length)));
  };
  return [...cell.matchAll(/`([^`]+)`/g)].flatMap((m) => expand(m[1]!));
}

/** The README's example rule template, and the configs it shows (its YAML blocks, and the quick start's file). */
const template = blocks.find((b) => b.lang === 'handlebars')!.body;
const configs = [
  ...blocks.filter((b) => b.lang === 'yaml' && /^vlans:/m.test(b.body)).map((b) => b.body),
  ...blocks.filter((b) => b.lang === 'sh').flatMap((b) => [...b.body.matchAll(/<<'YAML'\n([\s\S]*?)^YAML$/gm)].map((m) => m[1]!)),
];

test('the README shows configs, an error, a template: the checks below have something to read', (t) => {
  t.true(configs.length >= 2, 'the Configuration example and the quick start\'s file');
  t.truthy(template);
  t.truthy(blocks.find((b) => b.lang === 'text' && b.body.startsWith('vlan-gateway: invalid config:')));
});

test('every config in the README is valid, and renders with its rules.dir holding the README\'s example template', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-readme-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // rules.dir must exist: the README's /etc/vlan-gateway/rules.d, here, holding filter/forward.hbs.
  const rulesDir = join(dir, 'rules.d');
  await mkdir(join(rulesDir, 'filter'), { recursive: true });
  await writeFile(join(rulesDir, 'filter', 'forward.hbs'), template);
  for (const [index, text] of configs.entries()) {
    const path = join(dir, `config-${index}.yaml`);
    await writeFile(path, text.replaceAll('/etc/vlan-gateway/rules.d', rulesDir));
    const { config } = await loadConfig(path);
    const templates = await loadTemplates(config.rules.dir, path);
    // As validate renders them: every NIC present, then none (a container's start).
    const desired = planDesired(config, syntheticFacts(config), templates);
    planDesired(config, detachedFacts(), templates);
    if (config.rules.dir) {
      const user = desired.chains.find((c) => c.name === USER_HOOKS.forward.chain)!;
      const smtp = user.rules.filter((r) => / -p tcp --dport 25 -j REJECT$/.test(r.line));
      t.is(smtp.length, config.vlans.length, 'one rule per VLAN from the example template');
      // And one more for the VLAN named iot, picked out of the loop with (eq …).
      const iot = config.vlans.find((v) => v.name === 'iot');
      const dns = user.rules.filter((r) => / -p udp --dport 53 /.test(r.line));
      t.deepEqual(dns.map((r) => r.line.endsWith(` ! -d ${iot?.gateway} -j DROP`)), iot ? [true] : []);
      // A log prefix in brackets, its quoted value as written (the trailing space kept).
      const logged = user.rules.filter((r) => / -j LOG /.test(r.line));
      t.deepEqual(logged.map((r) => r.line.replace(/^.* -j LOG /, '-j LOG ')), config.vlans.map((v) => `-j LOG --log-prefix "[FW DROP] ${v.name} "`));
      t.is(user.rules.length, smtp.length + dns.length + logged.length);
    }
    t.pass(`config ${index} is valid`);
  }
});

test('the README\'s example error is what validation prints, word for word', (t) => {
  // A config with the two mistakes the README shows, on the lines it names.
  const text = [
    'uplink:',
    '  gateway: 172.31.0.1',
    'vlans:',
    '  - name: office',
    '    id: 10',
    '    subnet: 192.168.10.0/24',
    '    # the iot VLAN\'s gateway, pasted here by mistake',
    '    # (office\'s is 192.168.10.1)',
    '    gateway: 192.168.30.1',
    '  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}',
    'forwarding:',
    '  default: drop',
    '  rules:',
    '    - {from: office, to: iot, action: accept}',
    '',
  ].join('\n');
  const shown = blocks.find((b) => b.lang === 'text' && b.body.startsWith('vlan-gateway: invalid config:'))!.body;
  const error = t.throws(() => parseConfigText(text, 'gateway.yaml'));
  t.is(`vlan-gateway: ${describeError(error)}\n`, shown);
});

/** The schema's keys as paths (`vlans[].name`), each with its default where it has one. */
function schemaKeys(): Map<string, unknown> {
  const keys = new Map<string, unknown>();
  const walk = (schema: unknown, path: string, fallback?: unknown): void => {
    if (schema instanceof z.ZodMiniDefault || schema instanceof z.ZodMiniPrefault) return walk(schema.def.innerType, path, schema.def.defaultValue);
    if (schema instanceof z.ZodMiniOptional) return walk(schema.def.innerType, path, fallback);
    if (schema instanceof z.ZodMiniPipe) return walk(schema.def.out, path, fallback); // orEmpty's null as absent
    if (schema instanceof z.ZodMiniObject && path.split('.').length < 2 || schema instanceof z.ZodMiniObject && path.endsWith('[]')) {
      for (const [key, inner] of Object.entries(schema.def.shape)) walk(inner, path === '' ? key : `${path}.${key}`);
      return;
    }
    if (schema instanceof z.ZodMiniArray && schema.def.element instanceof z.ZodMiniObject) {
      // A list of mappings has a row of its own (`portForwards[]`) where it has a default, or its items' keys have rows.
      if (fallback !== undefined) keys.set(`${path}[]`, fallback);
      return walk(schema.def.element, `${path}[]`);
    }
    keys.set(path, fallback);
  };
  walk(configSchema, '');
  return keys;
}

test('the Configuration table documents every key the schema has, with its default, and no other', (t) => {
  const rows = table(section('## Configuration'), 'key').map(([key, fallback, meaning]) => ({
    // `vlans[].name/id/subnet/gateway` is four keys.
    keys: names(key!).flatMap((k) => {
      const [head, ...more] = k.split('/');
      const base = head!.slice(0, head!.lastIndexOf('.') + 1);
      return [head!, ...more.map((m) => base + m)];
    }),
    fallback: fallback!,
    meaning: meaning!,
  }));
  const documented = new Map(rows.flatMap((row) => row.keys.map((key) => [key, row] as const)));
  for (const [key, fallback] of schemaKeys()) {
    const row = documented.get(key);
    // A list's items are described in the list's row: `portForwards[]` says what `proto`, `port`... are.
    const list = row ? undefined : [...documented.entries()].find(([k]) => k.endsWith('[]') && key.startsWith(`${k}.`));
    if (!row && !list) {
      t.fail(`${key} is not in the Configuration table`);
      continue;
    }
    const name = key.slice(key.lastIndexOf('.') + 1);
    if (list) t.regex(list[1].meaning, new RegExp(`\`${name}\``), `${list[0]} says what ${name} is`);
    if (fallback === undefined) continue;
    const text = Array.isArray(fallback) ? '[]' : String(fallback);
    if (row) t.true(row.fallback.includes(`\`${text}\``), `${key}'s default is \`${text}\`, the table says ${row.fallback}`);
    else t.regex(list![1].meaning, new RegExp(`\`${name}\` \\([^)]*default \`?${text}\`?`), `${list![0]} gives ${name}'s default, ${text}`);
  }
  const known = schemaKeys();
  for (const key of documented.keys()) t.true(known.has(key), `the table documents ${key}, which the schema does not have`);
});

/** Each command and the flags its --help lists, with the default it shows. */
async function helpFlags(): Promise<Array<{ command: string; flag: string; fallback?: string }>> {
  const flags: Array<{ command: string; flag: string; fallback?: string }> = [];
  const commands = ['validate', 'plan', 'apply', 'down', 'run', 'status', 'lab'];
  // yargs ends the process after --help: each runs as a child.
  const helps = await Promise.all(commands.map(async (command) =>
    (await execa(process.execPath, ['--import=tsx', MAIN, command, '--help'], { env: { VLAN_GATEWAY_PLAN_CACHE: 'off' } })).stdout));
  for (const [index, command] of commands.entries()) {
    const stdout = helps[index]!;
    // An option's entry: its name at the start of a line, its description and [type] [default] below it.
    for (const entry of stdout.split(/\n(?= {2}--)/).filter((e) => e.startsWith('  --'))) {
      const flag = /^ {2}(--[\w-]+)/.exec(entry)![1]!;
      if (flag === '--help' || flag === '--version') continue;
      const fallback = /\[default: "?([^\]"]*)"?\]/.exec(entry)?.[1];
      flags.push({ command, flag, ...(fallback !== undefined ? { fallback } : {}) });
    }
  }
  return flags;
}

test('every flag of every command\'s --help is in the README, with the default --help shows', async (t) => {
  const commands = section('## Commands');
  const flags = await helpFlags();
  t.true(flags.length >= 15);
  for (const { command, flag, fallback } of flags) {
    const mentions = [...commands.matchAll(new RegExp(`(?<![\\w-])${flag}(?![\\w-])`, 'g'))];
    if (mentions.length === 0) {
      t.fail(`${command} ${flag} is not in the README's Commands section`);
      continue;
    }
    if (fallback === undefined) continue;
    // Where the README says what the flag takes: its default within the words after one of its mentions.
    const said = mentions.some((m) => new RegExp(`^[^)]*?default:? \`?${fallback}\\b`).test(commands.slice(m.index, m.index + 200)));
    t.true(said, `${command} ${flag}: the README gives its default, ${fallback}`);
  }
});

test('the Metrics table lists every series the gateway registers, with its type and labels, and no other', async (t) => {
  const registry = new Metrics('0.0.0').registry;
  const registered = new Map(registry.getMetricsAsArray().map((m) => {
    const metric = m as unknown as { name: string; labelNames?: string[] };
    return [metric.name, metric] as const;
  }));
  const types = new Map((await registry.getMetricsAsJSON()).map((m) => [m.name, String(m.type)]));
  const rows = table(section('## Metrics and endpoints'), 'series');
  const documented = new Set<string>();
  for (const [series, type, labels] of rows) {
    for (const name of names(series!)) {
      documented.add(name);
      const metric = registered.get(name);
      if (!metric) {
        t.fail(`the README documents ${name}, which the gateway does not register`);
        continue;
      }
      t.is(type, types.get(name), `${name}'s type`);
      // "trigger (start, schedule, …), result": the label names, without the values in brackets.
      const said = labels!.replace(/\([^)]*\)/g, '').split(',').map((l) => l.trim()).filter(Boolean);
      t.deepEqual(said, metric.labelNames ?? [], `${name}'s labels`);
    }
  }
  for (const name of registered.keys()) t.true(documented.has(name), `${name} is registered but not in the README's Metrics table`);
});

test('the label values the Metrics table lists are those of the series the gateway exports from the start', async (t) => {
  // Series at 0 from the first scrape (drift kinds, warning kinds, drop reasons, triggers): their label values, by series.
  const exported = new Map<string, Map<string, Set<string>>>();
  for (const metric of await new Metrics('0.0.0').registry.getMetricsAsJSON()) {
    const byLabel = new Map<string, Set<string>>();
    for (const { labels } of metric.values) {
      for (const [label, value] of Object.entries(labels)) (byLabel.get(label) ?? byLabel.set(label, new Set()).get(label)!).add(String(value));
    }
    exported.set(metric.name, byLabel);
  }
  let compared = 0;
  for (const [series, , labels] of table(section('## Metrics and endpoints'), 'series')) {
    // "trigger (start, schedule, …), result": the values in brackets after a label's name.
    for (const [, label, list] of labels!.matchAll(/(\w+) \(([^)]*)\)/g)) {
      for (const name of names(series!)) {
        const values = exported.get(name)?.get(label!);
        if (!values) continue; // no series before its first event (NAT kinds): nothing to compare with
        t.deepEqual(list!.split(',').map((v) => v.trim()).sort(), [...values].sort(), `${name}'s ${label} values`);
        compared++;
      }
    }
  }
  t.true(compared >= 5, 'drift kinds, warning kinds, drop reasons (packets and bytes), triggers');
});
