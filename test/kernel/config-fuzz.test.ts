/**
 * Differential fuzzing of validation against the kernel (the pure half is test/unit/config-fuzz.test.ts): the same
 * seeded configs near the edges (test/helpers/config-fuzz.ts).
 * - Every config that validates has its fresh payload (every NIC attached, as `validate` assumes) parsed by
 *   `iptables-nft-restore --test` in a namespace of this file: a valid config never renders a table iptables refuses.
 * - A sample of them is applied for real, each in a namespace of its own whose NICs are veth links named (or with the
 *   MAC) as the config says, with Docker-like addresses: the apply succeeds, every VLAN's gateway address is on its
 *   NIC, and a second pass has nothing to do.
 * - Configs that do not validate, given to `vlan-gateway apply` in a namespace that holds an applied config: exit 2,
 *   each problem on a line of its own naming its path, and the namespace (rules, addresses, routes, sets,
 *   ip_forward) byte-identical afterwards.
 * A failure names the seed; `fuzzConfig(seed).text` is the file.
 */
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseConfigText } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/problems.js';
import type { Config } from '../../src/config/schema.js';
import { inNamespace } from '../../src/exec/runner.js';
import { syntheticFacts } from '../../src/plan/synthetic.js';
import { reconcileOnce } from '../../src/reconcile/once.js';
import type { Templates } from '../../src/plan/desired.js';
import { loadTemplates } from '../../src/template/load.js';
import { freshPayload, fuzzConfig } from '../helpers/config-fuzz.js';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { tearDownAlways } from '../helpers/teardown.js';
import { cli, fileNamespace, readState, runner, scratchDir, waitForSettledAddresses } from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const ns = fileNamespace('fz');

/** Fixed seeds: the first VALID_TESTED valid configs are tested by iptables, every APPLY_EVERY-th of them applied. */
const SEEDS = Array.from({ length: 600 }, (_, i) => i + 1);
const VALID_TESTED = 100;
const APPLY_EVERY = 20;
const INVALID_APPLIED = 2;

let templates: Templates;
test.before(async () => {
  templates = await loadTemplates(undefined);
});

type Case = { seed: number; text: string; edits: readonly string[] };
const valid: Array<Case & { config: Config }> = [];
const invalid: Array<Case & { lines: readonly string[] }> = [];
for (const seed of SEEDS) {
  const c = fuzzConfig(seed);
  try {
    const config = parseConfigText(c.text, 'fz.yaml');
    if (valid.length < VALID_TESTED) valid.push({ ...c, config });
  } catch (error) {
    // Refused by validation proper (a YAML syntax error never reaches the checks this file is about).
    if (error instanceof ConfigError && error.problems.every((p) => p.path.length > 0) && invalid.length < INVALID_APPLIED) invalid.push({ ...c, lines: error.lines });
  }
}
const at = (c: Case) => `seed ${c.seed} (${c.edits.join('; ') || 'no change'})`;

/** Namespaces made for the real applies, removed after the file's tests, interrupted or not. */
const made: string[] = [];
tearDownAlways('remove the apply namespaces', async () => {
  for (const name of made) await runner.run(['ip', 'netns', 'del', name], { allowFailure: true });
});

/** A namespace whose NICs are those `validate` assumes for `config`: veth links by the config's names or MACs, up, addressed. */
async function namespaceFor(config: Config, name: string): Promise<void> {
  await runner.run(['ip', 'netns', 'add', name]);
  made.push(name);
  const links = syntheticFacts(config).links.filter((l) => !l.loopback);
  const batch = links.flatMap((l, k) => [
    `link add name ${l.name} address ${l.mac} type veth peer name fzpeer${k}`,
    `link set dev fzpeer${k} up`,
    `link set dev ${l.name} up`,
    ...l.addresses.map((a) => `address add ${a.address}/${a.prefix} dev ${l.name}`),
  ]);
  await runner.run(['ip', '-n', name, '-batch', '-'], { input: `${batch.join('\n')}\n` });
}

kernel(`every config that validates renders tables iptables-restore --test accepts${NEEDS_ROOT}`, async (t) => {
  t.true(valid.length >= VALID_TESTED / 2, `only ${valid.length} valid configs among the seeds`);
  const refused: string[] = [];
  for (const c of valid) {
    const payload = freshPayload(c.config, templates, false);
    const result = await runner.run(['ip', 'netns', 'exec', ns, 'iptables-nft-restore', '--test', '--noflush'], { input: payload, allowFailure: true });
    if (result.exitCode !== 0) refused.push(`${at(c)}: ${result.stderr.trim()}`);
  }
  t.deepEqual(refused, []);
});

/** The last namespace applied, and its config: the invalid configs are applied over it. */
let applied: { name: string; config: Config } | undefined;

kernel(`a sample of them applies in a namespace with their NICs: every VLAN bound, and a second pass has nothing to do${NEEDS_ROOT}`, async (t) => {
  const sample = valid.filter((_, i) => i % APPLY_EVERY === 0);
  const defects: string[] = [];
  for (const [k, c] of sample.entries()) {
    const name = `${ns}-${k}`;
    try {
      await namespaceFor(c.config, name);
      const there = inNamespace(runner, name);
      await reconcileOnce(there, c.config, templates);
      const addresses = (await runner.run(['ip', '-n', name, '-o', 'addr'])).stdout;
      const unbound = c.config.vlans.filter((v) => !addresses.includes(` ${v.gateway}/`)).map((v) => v.name);
      if (unbound.length > 0) defects.push(`${at(c)}: no gateway address on ${unbound.join(', ')}`);
      const again = await reconcileOnce(there, c.config, templates, { dryRun: true });
      if (again.plan.steps.length > 0) defects.push(`${at(c)}: a second pass would still ${again.plan.steps.map((s) => s.kind).join(', ')}`);
      applied = { name, config: c.config };
    } catch (error) {
      defects.push(`${at(c)}: ${(error as Error).message}`);
    }
  }
  t.deepEqual(defects, []);
  t.true(sample.length >= 3, `only ${sample.length} configs applied`);
});

kernel(`configs that do not validate are refused by apply with exit 2, a path on each line, and change nothing${NEEDS_ROOT}`, async (t) => {
  t.is(invalid.length, INVALID_APPLIED);
  t.truthy(applied, 'no namespace was applied to apply over');
  const { name } = applied!;
  await waitForSettledAddresses(name); // IPv6 DAD marks the links tentative for a moment: not a change of ours
  for (const c of invalid) {
    const path = join(await scratchDir(), `fz-${c.seed}.yaml`);
    await writeFile(path, c.text);
    const before = await readState(name, true);
    const result = await cli('apply', '--netns', name, '--config', path);
    t.is(result.code, 2, `${at(c)}: ${result.stderr}`);
    // The lines the validator gives, each under the file's name (the CLI prints them as loadConfig throws them).
    t.true(result.stderr.startsWith(`vlan-gateway: invalid config: ${path}: ${c.lines.length} problem${c.lines.length === 1 ? '' : 's'}:\n`), `${at(c)}: ${result.stderr}`);
    for (const line of c.lines) t.true(result.stderr.includes(`\n  ${line}`), `${at(c)}: ${line} not in ${result.stderr}`);
    t.deepEqual(await readState(name, true), before, at(c));
  }
});
