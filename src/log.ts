/** Structured JSON logs on stdout (pino); level from --log-level or LOG_LEVEL. */
import { pino, stdSerializers, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * The errors this program classifies where they happen (a command that failed, a table the kernel refused, a config
 * or template that is invalid): their message says what went wrong and where. Their stack trace, and the plan step
 * an ApplyError carries (the whole restore payload and its undo), tell an operator nothing and bury the message in
 * `docker logs`; anything else (a TypeError: a bug of ours) keeps its stack.
 */
const CLASSIFIED = new Set([
  'AccountingError', 'ApplyError', 'BackendError', 'CommandError', 'ConfigError', 'FailureError', 'ForeignSetError',
  'InUseError', 'PlanError', 'TemplateError', 'UsageError', 'YamlSyntaxError',
]);
/** Fields of a classified error left out of a log line: what its message says already, or too long to read. */
const LEFT_OUT = new Set(['name', 'stack', 'stdout', 'stderr']);

function serializeError(error: unknown): unknown {
  if (!(error instanceof Error) || !CLASSIFIED.has(error.name)) return stdSerializers.err(error as Error);
  const out: Record<string, unknown> = { type: error.name, message: error.message };
  for (const [key, value] of Object.entries(error)) {
    if (LEFT_OUT.has(key) || value === undefined) continue;
    const scalar = value === null || ['string', 'number', 'boolean'].includes(typeof value);
    if (scalar || (Array.isArray(value) && value.every((v) => typeof v === 'string'))) out[key] = value;
  }
  return out;
}

export function makeLogger(level = process.env.LOG_LEVEL ?? 'info', destination?: DestinationStream): Logger {
  const options = { level, base: { name: 'vlan-gateway' }, timestamp: pino.stdTimeFunctions.isoTime, serializers: { err: serializeError } };
  return destination ? pino(options, destination) : pino(options);
}

/** Logs the first of a run of identical failures, then at most one line per interval with how many were held back. */
export class RateLimitedLog {
  private lastKey: string | undefined;
  private lastAt = -Infinity;
  private suppressed = 0;

  /** `now`: monotonic milliseconds (a wall clock set back would hold every line back by as much). */
  constructor(private readonly log: Logger, private readonly intervalMs = 30_000, private readonly now = () => performance.now()) {}

  error(key: string, fields: object, message: string): void {
    this.at('error', key, fields, message);
  }

  warn(key: string, fields: object, message: string): void {
    this.at('warn', key, fields, message);
  }

  private at(level: 'error' | 'warn', key: string, fields: object, message: string): void {
    const t = this.now();
    if (key === this.lastKey && t - this.lastAt < this.intervalMs) {
      this.suppressed++;
      return;
    }
    this.log[level]({ ...fields, ...(this.suppressed > 0 ? { suppressed: this.suppressed } : {}) }, message);
    this.lastKey = key;
    this.lastAt = t;
    this.suppressed = 0;
  }

  reset(): void {
    this.lastKey = undefined;
    this.suppressed = 0;
  }
}
