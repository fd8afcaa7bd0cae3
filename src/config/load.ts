/** Reading the config file: the only part of config/ that touches the file system. */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, realpath, stat, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { userTemplateProblemsAlone } from '../template/load.js';
import { isReplacedMount } from './mounts.js';
import { ConfigError, formatPath, shown, unreadableDirWhy, type Problem } from './problems.js';
import { httpPortProblems, validateConfig, type ValidateOptions } from './validate.js';
import type { Config } from './schema.js';
import { lineFinder, parseYaml, YamlSyntaxError } from './yaml.js';

export const DEFAULT_CONFIG_PATH = '/etc/vlan-gateway/gateway.yaml';

/** `--config FILE`, else `$VLAN_GATEWAY_CONFIG` (unless empty, as a shell's `VAR=` leaves it), else the default path. */
export function resolveConfigPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag ?? (env.VLAN_GATEWAY_CONFIG || undefined) ?? DEFAULT_CONFIG_PATH;
}

/**
 * A config file that cannot be read, said with where its path came from when no --config named it: `vlan-gateway
 * plan` run without --config said only "cannot read /etc/vlan-gateway/gateway.yaml: no such file", and a path from a
 * forgotten $VLAN_GATEWAY_CONFIG looked like one the gateway made up. Any other error is returned as it is.
 */
export function withConfigSource(error: unknown, flag: string | undefined, env: NodeJS.ProcessEnv = process.env): unknown {
  if (flag !== undefined || !(error instanceof ConfigError) || error.problems.length !== 1) return error;
  const why = /^cannot read the config file \((.*)\)$/s.exec(error.problems[0]!.message)?.[1];
  if (why === undefined) return error;
  const source = env.VLAN_GATEWAY_CONFIG ? 'named by $VLAN_GATEWAY_CONFIG; give another with --config FILE'
    : 'the default path; give the config with --config FILE or $VLAN_GATEWAY_CONFIG';
  return new ConfigError(error.source, error.problems, [`cannot read ${error.source}: ${why} (${source})`]);
}

export interface LoadedConfig {
  readonly path: string;
  readonly text: string;
  readonly config: Config;
}

/**
 * Validated configs kept between runs (the CLI's plan cache), by a digest of the file's text: a valid config is a
 * function of its text alone (a relative rules.dir is resolved after, against the path).
 */
export interface ConfigCache {
  load(key: string): Config | undefined;
  remember(key: string, config: Config): void;
}

/**
 * 10,000 forwarding rules make about 1 MB of YAML. A config of 16 MiB (200,000 rules) is validated in about 12 s
 * and 770 MB here; one of 64 MiB, the limit before, took 60 s and 2.3 GB, more than a container may have.
 */
const MAX_CONFIG_BYTES = 16 * 2 ** 20;

const tooBigWhy = (bytes: string) => `${bytes}; a config is far smaller (at most ${MAX_CONFIG_BYTES / 2 ** 20} MiB)`;

/**
 * The file's bytes, at most MAX_CONFIG_BYTES: a pipe (--config <(…)) or a file that grows as it is read has no
 * size to check first, and was read whole however much came.
 */
async function readBounded(file: FileHandle): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let total = 0;
  // One buffer, each read copied out at its length: a pipe hands over 4-64 KiB a read, and a slice would keep the
  // whole buffer alive (a 16 MiB config through a pipe held 256 MiB and more).
  const buffer = Buffer.allocUnsafe(2 ** 20);
  for (;;) {
    const { bytesRead } = await file.read(buffer, 0, Math.min(buffer.length, MAX_CONFIG_BYTES + 1 - total), null);
    if (bytesRead === 0) return Buffer.concat(chunks, total);
    chunks.push(Buffer.from(buffer.subarray(0, bytesRead)));
    total += bytesRead;
    if (total > MAX_CONFIG_BYTES) return undefined;
  }
}

export interface LoadOptions extends ValidateOptions {
  /**
   * The path held a file when the supervisor started, and a reload reads it again: a named pipe found there now (made
   * in its place) is refused, not opened the usual way, which waits for a writer for ever (holding up every later
   * reload, and the stop: the process cannot exit while a thread waits in open).
   */
  readonly fileOnly?: boolean;
}

/**
 * Opens the config at `path`. With `fileOnly`, without waiting for a writer should it be a named pipe: O_NONBLOCK
 * makes open return at once for a pipe, and changes nothing for a file (a regular file's reads never wait).
 */
const openConfig = (path: string, fileOnly: boolean | undefined) => open(path, fileOnly ? constants.O_RDONLY | constants.O_NONBLOCK : 'r');

/**
 * The text at `path` if it is a regular file, else null (missing, unreadable, a directory, a pipe: nothing waited on).
 * What a supervisor's reload compares, before and after, to tell whether the file moved under it.
 */
export async function readConfigFileText(path: string): Promise<string | null> {
  try {
    const file = await openConfig(path, true);
    try {
      if (!(await file.stat()).isFile()) return null;
      return await file.readFile('utf8');
    } finally {
      await file.close();
    }
  } catch {
    return null;
  }
}

export async function loadConfig(path: string, cache?: ConfigCache, options: LoadOptions = {}): Promise<LoadedConfig> {
  let text: string;
  let links: number;
  try {
    const file = await openConfig(path, options.fileOnly);
    try {
      const info = await file.stat();
      links = info.nlink;
      // A device (/dev/zero) or a socket would be read for ever; a pipe (--config <(…)) is fine, and so is a file of
      // any sane size. What a config is not is said, not waited on.
      const notAFile = info.isCharacterDevice() || info.isBlockDevice() ? 'a device' : info.isSocket() ? 'a socket'
        : info.isFIFO() && options.fileOnly ? 'a named pipe (it was a file when the gateway started; a pipe is read only at a start)' : undefined;
      const tooBig = info.isFile() && info.size > MAX_CONFIG_BYTES ? tooBigWhy(`${(info.size / 2 ** 20).toFixed(0)} MiB`) : undefined;
      if (notAFile || tooBig) {
        const why = notAFile ? `it is ${notAFile}, not a file` : tooBig!;
        throw new ConfigError(path, [{ path: [], message: why }], [`cannot read ${path}: ${why}`]);
      }
      const bytes = await readBounded(file);
      if (!bytes) {
        const why = tooBigWhy(`more than ${MAX_CONFIG_BYTES / 2 ** 20} MiB`);
        throw new ConfigError(path, [{ path: [], message: why }], [`cannot read ${path}: ${why}`]);
      }
      // Windows editors save "Unicode" as UTF-16: read as UTF-8 it is a null byte every other character.
      if ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff)) {
        const why = 'the file is UTF-16 (its byte-order mark says so); save it as UTF-8';
        throw new ConfigError(path, [{ path: [], message: why }], [`cannot read ${path}: ${why}`]);
      }
      text = bytes.toString('utf8');
    } finally {
      await file.close();
    }
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : String((error as Error).message);
    throw new ConfigError(path, [{ path: [], message: `cannot read the config file (${why})` }], [`cannot read ${path}: ${why}`]);
  }
  // Reached by a path yet linked nowhere: a file mounted on its own whose source was since replaced on the host
  // (an editor or `sed -i` renames a new file over it). What is read here is the old text, not the user's edit.
  // The mount table confirms it (some FUSE file systems report no links for any file).
  if (links === 0 && await isReplacedMount(await realpath(path).catch(() => path))) {
    const why = 'the file was replaced after it was mounted on its own, and what is here is still the old file; restart the container, or mount the directory that holds the file instead of the file';
    throw new ConfigError(path, [{ path: [], message: why }], [`cannot read ${path}: ${why}`]);
  }
  const key = cache ? createHash('sha256').update(text).digest('base64url') : undefined;
  const cached = key === undefined ? undefined : cache!.load(key);
  // What validation checks against `run --listen` is checked again for a config kept by its text alone.
  if (cached) {
    const problems = httpPortProblems(cached.portForwards, cached.http.listen, options);
    if (problems.length > 0) throw configError(path, text, problems);
  }
  let config: Config;
  try {
    config = cached ?? parseConfigText(text, path, options);
  } catch (error) {
    // Every problem in one run: a rules.dir that cannot be read is one of them, not the next run's news.
    if (!(error instanceof ConfigError) || error.problems.length === 0 || error.problems[0]!.path.length === 0) throw error;
    // A file the parser could not read has no rules.dir to look at.
    const value = (() => {
      try {
        return parseYaml(text).value;
      } catch {
        return undefined;
      }
    })();
    const dir = rulesDirOf(value);
    const dirProblem = await rulesDirProblem(dir, path);
    if (dirProblem) throw configError(path, text, [...error.problems, dirProblem]);
    if (typeof dir !== 'string' || dir === '') throw error;
    // So are its templates' problems that need no config to be found (a file that is no template, a syntax error);
    // what needs one to render them is said to be left for the run after the config's problems are fixed.
    const templates = await userTemplateProblemsAlone(isAbsolute(dir) ? dir : resolve(dirname(path), dir), path);
    if (templates.unrendered === 0 && templates.problems.length === 0) throw error;
    const both = configError(path, text, [...error.problems, ...templates.problems]);
    if (templates.unrendered === 0) throw both;
    const one = templates.unrendered === 1;
    const note = `(${templates.unrendered} template${one ? '' : 's'} of rules.dir ${one ? 'was' : 'were'} parsed, not rendered: `
      + `${one ? 'its' : 'their'} rules are checked once the config is valid)`;
    throw new ConfigError(path, both.problems, [...both.lines, note]);
  }
  if (key !== undefined && !cached) cache!.remember(key, config);
  // A relative rules.dir is relative to the config file, not to wherever the command was started.
  const dir = config.rules.dir;
  return { path, text, config: dir && !isAbsolute(dir) ? { ...config, rules: { ...config.rules, dir: resolve(dirname(path), dir) } } : config };
}

const rulesDirOf = (value: unknown): unknown => (value as { rules?: { dir?: unknown } } | null)?.rules?.dir;

/**
 * The rules.dir the config file at `path` names (relative to the file, as loadConfig resolves it), whether or not the
 * config is valid: a reload the file or its templates failed watches it for the fix. Undefined when the file cannot
 * be read or parsed, or names none.
 */
export async function rulesDirNamed(path: string): Promise<string | undefined> {
  try {
    const file = await openConfig(path, true);
    let text: string;
    try {
      const info = await file.stat();
      if (!info.isFile() || info.size > MAX_CONFIG_BYTES) return undefined;
      text = await file.readFile('utf8');
    } finally {
      await file.close();
    }
    const dir = rulesDirOf(parseYaml(text).value);
    return typeof dir === 'string' && dir !== '' ? resolve(dirname(path), dir) : undefined;
  } catch {
    return undefined;
  }
}

/** rules.dir (relative to the config file) when it names no directory that can be read, as its problem. */
async function rulesDirProblem(dir: unknown, path: string): Promise<Problem | undefined> {
  if (typeof dir !== 'string' || dir === '') return undefined;
  const full = isAbsolute(dir) ? dir : resolve(dirname(path), dir);
  try {
    if ((await stat(full)).isDirectory()) return undefined;
    return { path: ['rules', 'dir'], message: `cannot read ${shown(full)} (not a directory)` };
  } catch (error) {
    return { path: ['rules', 'dir'], message: `cannot read ${shown(full)} (${unreadableDirWhy(error)})` };
  }
}

/** YAML text → validated Config, or a ConfigError listing every problem with its path and line. */
export function parseConfigText(text: string, source: string, options: ValidateOptions = {}): Config {
  let parsed: ReturnType<typeof parseYaml>;
  try {
    parsed = parseYaml(text);
  } catch (error) {
    if (!(error instanceof YamlSyntaxError)) throw error;
    // What stops the file being read, and the keys it repeats besides, in the file's order.
    const located = [
      ...error.faults.map((fault) => ({ problem: { path: [], message: fault.text }, line: fault.line, text: fault.text })),
      ...error.problems.map((problem) => ({ problem, line: problem.line, text: `${formatPath(problem.path)}: ${problem.message}${problem.line ? ` (line ${problem.line})` : ''}` })),
    ].sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
    throw new ConfigError(source, located.map((l) => l.problem), located.map((l) => l.text));
  }
  if (parsed.empty) {
    // Said as such, not as the first key the validator misses ("vlans: is required"): a file saved empty, or with
    // every line commented out, is a different mistake from one that forgot its VLANs.
    const why = emptyWhy(text);
    throw new ConfigError(source, [{ path: [], message: `the file is empty${why}` }], [`${source} is empty${why}`]);
  }
  const result = validateConfig(parsed.value, options);
  if (result.ok && parsed.problems.length === 0) return result.config;
  throw configError(source, text, [...parsed.problems, ...(result.ok ? [] : result.problems)]);
}

/** Problems → a ConfigError whose lines carry each problem's line in the file (looked up only now). */
export function configError(source: string, text: string, problems: readonly Problem[]): ConfigError {
  const lineOf = lineFinder(text);
  // In the file's order, so the list reads top to bottom beside the file; a problem with no line (a key that is
  // missing) first. The sort is stable: problems on one line keep the order the checks found them in.
  const located = problems.map((problem) => ({ problem, line: problem.line ?? lineOf(problem.path, problem.at) }))
    .sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  const lines = located.map(({ problem, line }) => `${formatPath(problem.path)}: ${problem.message}${line ? ` (line ${line})` : ''}`);
  return new ConfigError(source, located.map((l) => l.problem), lines);
}

/** What follows "F is empty" for a file that holds no settings: what it holds instead, and what a config needs. */
function emptyWhy(text: string): string {
  const lines = text.replace(/^\uFEFF/, '').split(/\r\n|\r|\n/).map((l) => l.trim()).filter((l) => l !== '');
  const holds = lines.length === 0 ? ''
    : lines.every((l) => l.startsWith('#')) ? ' (only comments)'
    : lines.every((l) => l.startsWith('#') || l.startsWith('%') || /^(?:---|\.\.\.)(?:\s|$)/.test(l)) ? ' (only comments or document markers)'
    : ' (no settings)';
  return `${holds}: a config needs at least vlans`;
}
