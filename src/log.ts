/** Structured JSON logs on stdout (pino); level from --log-level or LOG_LEVEL. */
import { pino, type Logger } from 'pino';

export type { Logger };

export function makeLogger(level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { name: 'vlan-gateway' }, timestamp: pino.stdTimeFunctions.isoTime });
}

/** Logs the first of a run of identical failures, then at most one line per interval with how many were held back. */
export class RateLimitedLog {
  private lastKey: string | undefined;
  private lastAt = 0;
  private suppressed = 0;

  constructor(private readonly log: Logger, private readonly intervalMs = 30_000, private readonly now = () => Date.now()) {}

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
