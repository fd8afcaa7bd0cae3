/**
 * The V8 code cache the launcher (src/launcher.ts) loaded the bundle with, if any. `run` asks for it to be saved
 * once its first pass is done, so that the cache holds the functions a start needs; other commands save at exit.
 */
export interface CodeCache {
  /** used: V8 took the cache; rejected: it did not (another node, other V8 flags); absent: none yet; off: disabled. */
  readonly state: 'used' | 'rejected' | 'absent' | 'off';
  /** Writes the cache for this node, these flags and this bundle, when it is missing or made by a lighter command. */
  save(maker: 'run' | 'cli'): void;
}

let current: CodeCache | undefined;

export function setCodeCache(cache: CodeCache | undefined): void {
  current = cache;
}

export function codeCache(): CodeCache | undefined {
  return current;
}
