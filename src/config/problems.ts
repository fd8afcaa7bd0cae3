/** A config problem: where it is (a path into the document) and a plain sentence. */
export type PathSegment = string | number;

export interface Problem {
  readonly path: readonly PathSegment[];
  readonly message: string;
}

/** `vlans[0].gateway` — the form users see in every error. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const segment of path) {
    out += typeof segment === 'number' ? `[${segment}]` : out === '' ? segment : `.${segment}`;
  }
  return out || '(top level)';
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly source: string,
    readonly problems: readonly Problem[],
    readonly lines: readonly string[] = problems.map((p) => `${formatPath(p.path)}: ${p.message}`),
  ) {
    super(`${source}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${lines.map((l) => `  ${l}`).join('\n')}`);
  }
}

/** Why a rules.dir (or a file in it) could not be read, in the words every rules.dir problem uses. */
export function unreadableDirWhy(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? 'no such directory' : code === 'ENOTDIR' ? 'not a directory' : code === 'EISDIR' ? 'is a directory'
    : code === 'EACCES' ? 'permission denied' : code ?? (error as Error).message;
}
