/**
 * The `vlan-gateway` command (built to dist/vlan-gateway.mjs): loads the CLI bundle (dist/cli.cjs) through V8's
 * code cache.
 *
 * Why: a restarted router is judged by its time to ready (issue 3: 1 s), and much of the CLI's start-up
 * was V8 parsing and compiling the 1 MB bundle and then, lazily, each function a start runs. Node 22 can cache that
 * itself (module.enableCompileCache); Node 20 cannot, so this does the same with vm.Script's cachedData.
 *
 * A cache is only valid for one node binary, one set of V8 flags and one bundle. V8 rejects the first two itself
 * but checks only the source's length, so the file name is a digest of all of them and a rebuilt bundle never
 * meets an old cache. The cache is written beside the bundle when there is none, when V8 rejected it, or when
 * `run` finds one made by a lighter command (the image build makes one with `validate`; a start then upgrades it
 * to the functions a start needs). A read-only install runs without one. VLAN_GATEWAY_CODE_CACHE=off disables it.
 */
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, fstatSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeFileSync, type Stats } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import type { CodeCache } from './cli/code-cache.js';
import type { main as Main } from './cli/main.js';
import { holdSignalsWhileLoading } from './cli/signals.js';

// Before the bundle loads (a few hundred ms on a busy machine): a SIGHUP or SIGTERM meanwhile is held for `run`
// (src/cli/signals.ts), instead of killing it. What comes before this line is Node's own start-up (about 0.1 s; this
// file's imports, node builtins, add a few ms, and a CommonJS launcher would start no sooner within the noise): Node
// resets every signal's disposition and the signal mask as it starts, so a SIGTERM then (an ignore or a block set by
// a wrapper included) still ends the process with 143. Measured, and left: it is not ours to close.
holdSignalsWhileLoading();

const bundle = join(dirname(fileURLToPath(import.meta.url)), 'cli.cjs');
const off = process.env.VLAN_GATEWAY_CODE_CACHE === 'off';

type Exports = { main: typeof Main };

/** Owned by this user (or root) and writable by nobody else. */
const ownOnly = (s: Stats) => (s.uid === process.getuid?.() || s.uid === 0) && (s.mode & 0o022) === 0;

/**
 * The cache file, read only when its directory and the file itself are this user's (or root's) alone: V8's cached
 * data is compiled code, which V8 checks against the source's length only, so a cache another user could write
 * (a directory left world-writable by a umask of 000) would be their code run as root.
 */
function readOwnFile(file: string): Buffer {
  if (!ownOnly(statSync(dirname(file)))) throw new Error('not ours alone');
  const fd = openSync(file, 'r');
  try {
    if (!ownOnly(fstatSync(fd))) throw new Error('not ours alone');
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The bundle compiled, with the cache when there is one; and the cache written when it can be improved on. */
class CachedBundle implements CodeCache {
  readonly state: CodeCache['state'];
  private readonly cacheFile: string;
  /** The command that made the cache read ("run" or "cli"). */
  private readonly madeBy: string;
  /** Kept only until the cache is written or cannot be improved on: the supervisor runs for months. */
  private script: Script | undefined;

  constructor() {
    const source = readFileSync(bundle);
    const key = createHash('sha256')
      .update(`${process.version} ${process.arch} ${JSON.stringify(process.execArgv)} ${process.env.NODE_OPTIONS ?? ''}\n`)
      .update(source)
      .digest('hex')
      .slice(0, 24);
    this.cacheFile = join(dirname(bundle), 'code-cache', `${key}.bin`);
    // The file: a line naming the command that made it, then V8's data.
    let cached: Buffer | undefined;
    let madeBy = '';
    if (!off) {
      try {
        const raw = readOwnFile(this.cacheFile);
        const newline = raw.indexOf(10);
        madeBy = raw.subarray(0, newline).toString('latin1');
        cached = raw.subarray(newline + 1);
      } catch {
        // none yet
      }
    }
    this.madeBy = madeBy;
    // The CommonJS wrapper on a line of its own (lineOffset -1), so positions in stack traces are the bundle's own.
    this.script = new Script(`(function (exports, require, module, __filename, __dirname) {\n${source.toString('latin1')}\n})`, {
      filename: bundle,
      lineOffset: -1,
      ...(cached ? { cachedData: cached } : {}),
    });
    this.state = off ? 'off' : !cached ? 'absent' : this.script.cachedDataRejected ? 'rejected' : 'used';
  }

  /** Runs the bundle's top level, as Node's CommonJS loader would, and returns its exports. */
  load(): Exports {
    const module = { exports: {} as Exports };
    const wrapper = this.script!.runInThisContext() as (...args: unknown[]) => void;
    if (off || (this.state === 'used' && this.madeBy === 'run')) this.script = undefined;
    wrapper(module.exports, createRequire(bundle), module, bundle, dirname(bundle));
    return module.exports;
  }

  save(maker: 'run' | 'cli'): void {
    if (!this.script) return;
    if (this.state === 'used' && maker !== 'run') return;
    const data = this.script.createCachedData();
    this.script = undefined;
    try {
      // Modes given, not left to the umask: the cache is code this user runs (see readOwnFile).
      const dir = dirname(this.cacheFile);
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      // Made open to others before (an older version, under a umask of 000): a cache there would never be read.
      const made = statSync(dir);
      if (made.uid === process.getuid?.() && (made.mode & 0o022) !== 0) chmodSync(dir, made.mode & 0o755);
      const partial = `${this.cacheFile}.${process.pid}`;
      writeFileSync(partial, Buffer.concat([Buffer.from(`${maker}\n`), data]), { mode: 0o644 });
      renameSync(partial, this.cacheFile); // whole or not at all, even with several processes starting at once
    } catch {
      // a read-only install: start without a cache, as before
    }
  }
}

const codeCache = new CachedBundle();
process.once('exit', () => codeCache.save('cli'));
process.exitCode = await codeCache.load().main(process.argv.slice(2), { codeCache });
