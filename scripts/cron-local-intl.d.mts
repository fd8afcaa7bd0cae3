// Types for cron-local-intl.mjs (imported by build.mjs, and by test/unit/cron-local-intl.test.ts).
import type { Plugin } from 'esbuild';

export interface CronLocalIntlOptions {
  /** Changes node-cron's source before it is bound (a test's stand-in for another node-cron). */
  readonly edit?: (source: string) => string;
}
export declare function cronLocalIntlPlugin(options?: CronLocalIntlOptions): Plugin;
export declare function cronLocalIntlProblem(options?: CronLocalIntlOptions & {
  /** How long node-cron may run before the check fails (30 s). */
  readonly timeoutMs?: number;
}): Promise<string | undefined>;
