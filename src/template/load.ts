/** Loading rule templates from disk: the built-in ones shipped in `rules/`, and the user's from `rules.dir`. */
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { ConfigError } from '../config/problems.js';
import { packageFile } from '../package-files.js';
import { USER_HOOKS, type UserHook } from '../plan/chains.js';
import type { Templates, TemplateSource } from '../plan/desired.js';

export const builtinRulesDir = () => packageFile('rules');

async function source(path: string, shown: string): Promise<TemplateSource> {
  return { file: shown, source: await readFile(path, 'utf8') };
}

const USER_FILES: Record<string, UserHook> = {
  'filter/forward.hbs': 'forward',
  'nat/prerouting.hbs': 'prerouting',
  'nat/postrouting.hbs': 'postrouting',
};

async function userTemplates(dir: string): Promise<Templates['user']> {
  let entries: string[];
  try {
    entries = (await readdir(dir, { recursive: true })).map((e) => e.split('\\').join('/'));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ConfigError('config', [{ path: ['rules', 'dir'], message: `cannot read ${dir} (${code === 'ENOENT' ? 'no such directory' : code})` }]);
  }
  const templates = entries.filter((e) => e.endsWith('.hbs'));
  const unknown = templates.filter((e) => !(e in USER_FILES));
  if (unknown.length > 0) {
    throw new ConfigError('config', unknown.map((e) => ({
      path: ['rules', 'dir'],
      message: `${join(dir, e)} is not a known template; use ${Object.keys(USER_FILES).join(', ')} (they fill ${Object.values(USER_HOOKS).map((h) => h.chain).join(', ')})`,
    })));
  }
  return Promise.all(templates.sort().map(async (e) => ({ hook: USER_FILES[e]!, template: await source(join(dir, e), join(dir, e)) })));
}

export async function loadTemplates(userDir?: string): Promise<Templates> {
  const dir = builtinRulesDir();
  const builtin = (name: string) => source(join(dir, name), relative(process.cwd(), join(dir, name)) || name);
  const [forward, from, pair, prerouting, postrouting, user] = await Promise.all([
    builtin('filter/forward.hbs'),
    builtin('filter/from.hbs'),
    builtin('filter/pair.hbs'),
    builtin('nat/prerouting.hbs'),
    builtin('nat/postrouting.hbs'),
    userDir ? userTemplates(userDir) : Promise.resolve([]),
  ]);
  return { forward, from, pair, prerouting, postrouting, user };
}
