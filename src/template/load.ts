/** Loading rule templates from disk: the built-in ones shipped in `rules/`, and the user's from `rules.dir`. */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { ConfigError, unreadableDirWhy, type Problem } from '../config/problems.js';
import { packageFile } from '../package-files.js';
import { USER_HOOKS, type UserHook } from '../plan/chains.js';
import type { Templates, TemplateSource } from '../plan/desired.js';
import { MAX_USER_RENDER_CHARS, templateSyntaxProblem } from './render.js';

const builtinRulesDir = () => packageFile('rules');

async function source(path: string, shown: string): Promise<TemplateSource> {
  return { file: shown, source: await readFile(path, 'utf8') };
}

/** A rule template's largest file: as much as it may render (MAX_USER_RENDER_CHARS), rules written out one by one. */
const MAX_USER_TEMPLATE_BYTES = MAX_USER_RENDER_CHARS;

/**
 * A user template that cannot be read is the config's problem (rules.dir), named by file. So is one that is no
 * file (a link to /dev/zero, a pipe: read for ever), or larger than a template's output may be.
 */
async function userSource(path: string, configPath: string): Promise<TemplateSource> {
  const refuse = (why: string) => new ConfigError(configPath, [{ path: ['rules', 'dir'], message: `cannot read ${path} (${why})`, file: path }]);
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    throw refuse(unreadableDirWhy(error));
  }
  if (info.isDirectory()) throw refuse('is a directory');
  if (!info.isFile()) throw refuse(`it is ${info.isCharacterDevice() || info.isBlockDevice() ? 'a device' : info.isFIFO() ? 'a pipe' : info.isSocket() ? 'a socket' : 'not a file'}, not a template file`);
  if (info.size > MAX_USER_TEMPLATE_BYTES) throw refuse(`it is ${(info.size / 2 ** 20).toFixed(0)} MiB; a template is at most ${MAX_USER_TEMPLATE_BYTES / 2 ** 20} MiB`);
  try {
    return await source(path, path);
  } catch (error) {
    throw refuse(unreadableDirWhy(error));
  }
}

/** How many directories below rules.dir the walk for templates goes (templateFiles). */
const WALK_DEPTH = 3;

const USER_FILES: Record<string, UserHook> = {
  'filter/forward.hbs': 'forward',
  'nat/prerouting.hbs': 'prerouting',
  'nat/postrouting.hbs': 'postrouting',
};

/**
 * The .hbs files under a rules.dir, as paths relative to it with forward slashes. Hidden entries are skipped: a
 * Kubernetes ConfigMap mount keeps its files in `..2026_…/` behind a `..data` link, and shows them through links.
 * Links are followed, but not into a directory that holds them (`ln -s . current`, `ln -s .. up`): readdir's
 * own recursive walk followed such a loop for ever, and `validate`, a start or a reload hung there. Nor deeper than
 * WALK_DEPTH directories: the templates are two levels down, one a level or two too deep is still found (and named
 * as misplaced), and a link to / is not a walk through the machine's whole tree.
 */
async function templateFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (path: string, relative: string, above: ReadonlySet<string>): Promise<void> => {
    if (above.size > WALK_DEPTH) return;
    const info = await stat(path);
    const id = `${info.dev}:${info.ino}`;
    if (above.has(id)) return;
    const inside = new Set(above).add(id);
    for (const entry of (await readdir(path)).sort()) {
      if (entry.startsWith('.')) continue;
      const full = join(path, entry);
      const shown = relative === '' ? entry : `${relative}/${entry}`;
      if (entry.endsWith('.hbs')) found.push(shown); // whatever it is: reading it says what is wrong with it
      else if ((await stat(full).catch(() => undefined))?.isDirectory()) await walk(full, shown, inside);
    }
  };
  await walk(dir, '', new Set());
  return found;
}

/**
 * The templates of rules.dir that are known and can be read, and the problems of the other files (no known template,
 * cannot be read), every one of them: the first alone was said, and a user fixed one a run.
 */
async function userTemplates(dir: string, configPath: string): Promise<{ user: Templates['user']; problems: Problem[] }> {
  let templates: string[];
  try {
    templates = await templateFiles(dir);
  } catch (error) {
    throw new ConfigError(configPath, [{ path: ['rules', 'dir'], message: `cannot read ${dir} (${unreadableDirWhy(error)})` }]);
  }
  const problems = unknownTemplates(dir, templates);
  const read = await Promise.all(templates.filter((e) => e in USER_FILES).sort().map(async (e) => {
    try {
      return { hook: USER_FILES[e]!, template: await userSource(join(dir, e), configPath) };
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return error.problems;
    }
  }));
  const user = read.flatMap((r) => ('hook' in r ? [r] : []));
  problems.push(...read.flatMap((r) => ('hook' in r ? [] : r)));
  return { user, problems };
}

/** The .hbs files of rules.dir that are no template the gateway knows, each as a problem of rules.dir. */
function unknownTemplates(dir: string, templates: readonly string[]): Problem[] {
  return templates.filter((e) => !(e in USER_FILES)).map((e) => ({
    path: ['rules', 'dir'],
    file: join(dir, e),
    message: `${join(dir, e)} is not a known template; use ${Object.keys(USER_FILES).join(', ')} (they fill ${Object.values(USER_HOOKS).map((h) => h.chain).join(', ')})`,
  }));
}

/**
 * What can be said of rules.dir's templates while the config has problems of its own (loadConfig), so that one run
 * says them with the config's, not the run after the config is fixed: a file that is no known template, one that
 * cannot be read, and each template's syntax, as problems of rules.dir. Rendering them (and the checks of the rules
 * they render) needs a valid config: `unrendered` counts the templates that were read and parsed but not rendered.
 */
export async function userTemplateProblemsAlone(dir: string, configPath: string): Promise<{ problems: Problem[]; unrendered: number }> {
  let templates: string[];
  try {
    templates = await templateFiles(dir);
  } catch (error) {
    return { problems: [{ path: ['rules', 'dir'], message: `cannot read ${dir} (${unreadableDirWhy(error)})` }], unrendered: 0 };
  }
  const problems = unknownTemplates(dir, templates);
  let unrendered = 0;
  for (const e of templates.filter((t) => t in USER_FILES).sort()) {
    let template: TemplateSource;
    try {
      template = await userSource(join(dir, e), configPath);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(...error.problems);
      continue;
    }
    // One with a syntax error is said as such, not as one left to render once the config is valid.
    const syntax = templateSyntaxProblem(template.source, template.file);
    if (syntax) problems.push({ path: ['rules', 'dir'], message: `${syntax.file}: ${syntax.detail}`, file: syntax.file });
    else unrendered++;
  }
  return { problems, unrendered };
}

/** The built-in templates, and the user's from `userDir` (the config's rules.dir; `configPath` names it in errors). */
export async function loadTemplates(userDir?: string, configPath = 'config'): Promise<Templates> {
  const { templates, problems } = await loadTemplatesAndProblems(userDir, configPath);
  if (problems.length > 0) throw new ConfigError(configPath, problems);
  return templates;
}

/**
 * loadTemplates, with the problems of rules.dir's files (no known template, cannot be read) returned beside the
 * templates that could be read, not thrown: a caller with a valid config renders those, and says what their render
 * finds in the same run (cli/context.ts). A rules.dir that cannot be read is thrown (there is nothing to render).
 */
export async function loadTemplatesAndProblems(userDir?: string, configPath = 'config'): Promise<{ templates: Templates; problems: Problem[] }> {
  const dir = builtinRulesDir();
  const builtin = (name: string) => source(join(dir, name), relative(process.cwd(), join(dir, name)) || name);
  const [forward, sources, from, pair, prerouting, postrouting, user] = await Promise.all([
    builtin('filter/forward.hbs'),
    builtin('filter/sources.hbs'),
    builtin('filter/from.hbs'),
    builtin('filter/pair.hbs'),
    builtin('nat/prerouting.hbs'),
    builtin('nat/postrouting.hbs'),
    userDir ? userTemplates(userDir, configPath) : Promise.resolve({ user: [], problems: [] }),
  ]);
  return { templates: { forward, sources, from, pair, prerouting, postrouting, user: user.user }, problems: user.problems };
}

/**
 * The user's templates as one text (their paths and contents), for telling whether they changed; '' when there is
 * no rules.dir or it cannot be read (loadTemplates reports that).
 */
export async function userTemplatesText(dir: string | undefined): Promise<string> {
  if (!dir) return '';
  try {
    const files = (await templateFiles(dir)).sort();
    // One that loadTemplates refuses unread (no file, too large) is told by what it is, not read for ever.
    const text = async (path: string) => {
      const info = await stat(path);
      return info.isFile() && info.size <= MAX_USER_TEMPLATE_BYTES ? readFile(path, 'utf8') : `(${info.mode} ${info.size} ${info.mtimeMs})`;
    };
    const texts = await Promise.all(files.map((e) => text(join(dir, e)).catch(() => '')));
    return JSON.stringify(files.map((e, i) => [e, texts[i]]));
  } catch {
    return '';
  }
}
