/**
 * The built-in templates the build compiles ahead (scripts/precompile-templates.mjs, put in place of
 * src/template/precompiled.ts in the bundle) render exactly what compiling them at run time renders: every fixture's
 * restore text, byte for byte, with and without the ipset tool. A set made with other options is not used.
 */
import test from 'ava';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { precompiledTemplatesModule, TEMPLATE_OPTIONS } from '../../scripts/precompile-templates.mjs';
import { loadConfig } from '../../src/config/load.js';
import { forgetRenderedChains, planDesired } from '../../src/plan/desired.js';
import { diff } from '../../src/plan/diff.js';
import { syntheticFacts } from '../../src/plan/synthetic.js';
import { loadTemplates } from '../../src/template/load.js';
import type { precompiled as Precompiled } from '../../src/template/precompiled.js';
import { renderRules, TEMPLATE_OPTIONS as RENDER_OPTIONS, usePrecompiledTemplates } from '../../src/template/render.js';

const root = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));

/** The module the build would bundle, imported as the bundle would see it. */
async function buildSet(rulesDir = root('rules')): Promise<typeof Precompiled> {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-precompiled-'));
  try {
    const file = join(dir, 'precompiled.mjs');
    await writeFile(file, precompiledTemplatesModule(rulesDir));
    return ((await import(pathToFileURL(file).href)) as { precompiled: typeof Precompiled }).precompiled;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const configs = ['examples/lab.yaml', ...(await readdir(root('test/fixtures'))).filter((f) => f.endsWith('.yaml')).map((f) => `test/fixtures/${f}`)];

/** Every fixture's restore text for a fresh namespace (the golden tests' input), with and without ipset. */
async function renderAll(): Promise<string> {
  forgetRenderedChains(); // a chain rendered before would be reused, whatever compiled its template
  const texts: string[] = [];
  for (const path of configs) {
    const { config } = await loadConfig(root(path));
    const templates = await loadTemplates(config.rules.dir);
    for (const ipset of [false, true]) {
      const facts = { ...syntheticFacts(config), ...(ipset ? { sets: new Map() } : {}) };
      const plan = diff(planDesired(config, facts, templates), facts);
      texts.push(`# ${path}${ipset ? ' (ipset)' : ''}\n`, ...plan.steps.flatMap((s) => (s.kind === 'table' ? [s.payload] : [])));
    }
  }
  return texts.join('');
}

test.serial('the build compiles every built-in template with the options the renderer uses', async (t) => {
  t.deepEqual(TEMPLATE_OPTIONS, RENDER_OPTIONS);
  const set = await buildSet();
  const files = (await readdir(root('rules'), { recursive: true })).filter((f) => f.endsWith('.hbs')).sort();
  const sources = await Promise.all(files.map((f) => readFile(join(root('rules'), f), 'utf8')));
  t.is(set.templates.size, files.length);
  for (const [i, source] of sources.entries()) t.true(set.templates.has(source), `${files[i]} is precompiled`);
});

test.serial('precompiled templates render every fixture byte for byte as templates compiled at run time', async (t) => {
  const compiled = await renderAll();
  t.true(usePrecompiledTemplates(await buildSet()));
  try {
    const precompiled = await renderAll();
    t.true(precompiled.includes('-A VGW-FORWARD'), 'rules were rendered');
    t.is(precompiled, compiled);
  } finally {
    usePrecompiledTemplates({ options: {}, templates: new Map() });
  }
});

/**
 * A set whose entry for the text `-j ACCEPT` is the compiled form of `-j DROP`: what renders tells which was used,
 * the precompiled form or the text compiled at run time (the byte-for-byte test above passes either way).
 */
async function tellingSet(): Promise<typeof Precompiled> {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-precompiled-rules-'));
  try {
    await writeFile(join(dir, 'drop.hbs'), '-j DROP');
    const { options, templates } = await buildSet(dir);
    return { options, templates: new Map([['-j ACCEPT', templates.get('-j DROP')!]]) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test.serial('a template whose text is in the set renders from its compiled form; any other text is compiled at run time', async (t) => {
  t.true(usePrecompiledTemplates(await tellingSet()));
  try {
    t.deepEqual(renderRules('-j ACCEPT', 'accept.hbs', {}), ['-j DROP']);
    t.deepEqual(renderRules('-j ACCEPT\n', 'accept.hbs', {}), ['-j ACCEPT'], 'another text (a file edited on disk)');
  } finally {
    usePrecompiledTemplates({ options: {}, templates: new Map() });
  }
});

test.serial('a set compiled with other options is not used', async (t) => {
  const set = await tellingSet();
  try {
    t.false(usePrecompiledTemplates({ ...set, options: { ...TEMPLATE_OPTIONS, strict: false } }));
    t.deepEqual(renderRules('-j ACCEPT', 'accept.hbs', {}), ['-j ACCEPT'], 'compiled at run time');
  } finally {
    usePrecompiledTemplates({ options: {}, templates: new Map() });
  }
});
