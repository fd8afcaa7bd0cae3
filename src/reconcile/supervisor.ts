/**
 * The reconcile loop of `vlan-gateway run`. Triggers (start, schedule, drift, netlink, reload) only ask for a pass;
 * passes never overlap, requests that arrive during one coalesce into the next, passes are at least
 * `minIntervalMs` apart, and after a failure the next attempt waits with exponential backoff. Each pass is
 * observe → plan → apply (which rolls back on failure), and its outcome is recorded for metrics, health and
 * /status. The supervisor owns timers only; the HTTP server, monitor and cron live beside it in cli/ (run.ts
 * wires them).
 */
import { createHash } from 'node:crypto';
import type { ApplyError } from '../apply/apply.js';
import type { ApplyObserver } from '../apply/observer.js';
import { CONNTRACK_MISSING, UNPOLICED_CONNTRACK_MISSING, unpolicedClearedMessage } from '../apply/conntrack.js';
import { systemClock, type Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import { asRun, type CommandRunner } from '../exec/runner.js';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../log.js';
import type { CollectorState } from '../metrics/collector.js';
import { countersAfterPayload, countersAfterRestore, membersAddedBy, ZERO, type Count } from '../metrics/counters.js';
import type { DriftKind, Metrics, Trigger } from '../metrics/metrics.js';
import { backendFindingsOf, type Backend, type BackendFindings, type KnownSets, type KnownTables, type Link, type RoutedPrefix } from '../observe/facts.js';
import type { Templates } from '../plan/desired.js';
import { linksAfter, tablesAfter } from '../plan/after.js';
import { summarizeStep } from '../plan/format.js';
import { nextHopOn } from '../plan/match.js';
import { mergeUnpoliced } from '../plan/conntrack.js';
import type { Desired, Plan, UplinkBinding, VlanBinding } from '../plan/types.js';
import type { AddressConflicts } from './conflicts.js';
import { driftOf } from './drift.js';
import { bindingNotices, CarrierLog, noCarrier, unclaimedNicNotices } from './notices.js';
import { knownSetsAfter, reconcileOnce, type Mode } from './once.js';
import { failedPassSays, isFatal, isRefusal } from './pass-failure.js';
import { countByKind } from './warning-kinds.js';

export interface ConfigState {
  readonly path: string;
  readonly text: string;
  readonly config: Config;
  readonly templates: Templates;
}

export const configHash = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 16);

export interface SupervisorOptions {
  readonly minIntervalMs: number;
  /** /healthz fails when a requested pass has waited, or passes have failed, for longer than this. */
  readonly healthTimeoutMs: number;
  readonly backoffInitialMs: number;
  readonly backoffMaxMs: number;
  /**
   * How recently the stats collector must have found our tables as planned for a pass to plan from the tables it
   * knows instead of reading them (see KnownTables); unset: every pass reads them.
   */
  readonly knownTablesMaxAgeMs?: number;
  /**
   * How long a command may run before the runner kills it (cli/run.ts gives the supervisor a runner withDeadline):
   * only said, when a pass has waited long for one. Unset: not said.
   */
  readonly commandTimeoutMs?: number;
  /** How long a pass waits for one command before the log says which, and why the pass is not done (default 5000). */
  readonly slowCommandMs?: number;
  /** Intervals (backoff, minIntervalMs, health, ages) on its monotonic clock; its wall clock for the times shown. */
  readonly clock?: Clock;
  /**
   * Where a pass keeps the clear of the flows forwarded without the policy (Plan.unpoliced) until it has run
   * (cli/flows-left.ts, UnpolicedLeft): killed between the tables and the clear, the next start finds it. Unset: not kept.
   */
  readonly unpolicedLeft?: {
    read(): Plan['unpoliced'];
    write(unpoliced: Plan['unpoliced']): void;
    /** Removes the file once the clear written has run, if it still holds that one (not one written since). */
    remove(written: NonNullable<Plan['unpoliced']>): void;
  };
}

export interface ReconcileRecord {
  readonly time: string;
  readonly trigger: Trigger;
  readonly result: 'success' | 'failure';
  readonly durationMs: number;
  readonly changes: readonly string[];
  readonly drift: readonly DriftKind[];
  /** A successful pass: whether it read the tables, or planned from the ones the supervisor knew (KnownTables). */
  readonly tables?: 'read' | 'known';
  readonly error?: string;
}

/** A failed pass, as its log line says it: what asked for it, the failures in a row, and when it is retried (none: not). */
export interface FailedAttempt {
  readonly trigger: Trigger;
  readonly failures: number;
  readonly retryInMs?: number;
}

/** When requests coalesce, the pass is labelled with the weightiest (a drift found outranks a routine check). */
const PRIORITY: Record<Trigger, number> = { schedule: 0, drift: 1, netlink: 2, start: 3, reload: 4 };

export interface SupervisorView {
  readonly vlans: readonly VlanBinding[];
  readonly uplink: UplinkBinding;
  readonly links: readonly Link[];
  /** The routes other than the default and the kernel's own, as read (who is behind which NIC: http/access.ts). */
  readonly routes: readonly RoutedPrefix[];
}

/** A command a pass has started and that has not returned yet. */
export interface WaitedCommand {
  readonly command: string;
  /** When it started, on the supervisor's monotonic clock (how long it has run). */
  readonly since: number;
  /** When it started, on the wall clock (the time /status shows). */
  readonly at: number;
}

export class Supervisor {
  private current: ConfigState;
  /** What the passes run their commands through: the runner, noting what each pass is waiting for (waitingFor). */
  private readonly passRunner: CommandRunner;
  /** The commands of the pass in flight not returned yet, oldest first. */
  private readonly waiting = new Set<WaitedCommand>();
  /** The last pass whose slow command was logged. */
  private slowSaidFor = -1;
  private pending: Trigger | undefined;
  private pendingSince: number | undefined;
  private failingSince: number | undefined;
  private failures = 0;
  private notBefore = 0;
  private lastStart = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private stopped = false;
  private forwardingWasOff = false;
  /**
   * What the last good pass left in the sets (KnownSets), and read of the tables or wrote to them (KnownTables).
   * Forgotten after a failed pass, and when the stats collector finds the kernel differs from it.
   */
  private knownSets: KnownSets | undefined;
  private knownTables: KnownTables | undefined;
  /** When the stats collector last found our tables exactly as planned. */
  private tablesCheckedAt: number | undefined;
  /** Bumped when the collector finds drift: a pass that was running meanwhile must not remember what it started from. */
  private knownEpoch = 0;
  /** Passes started so far: a collector's reading that one overlapped is not taken at its word (collectorState). */
  private passesStarted = 0;
  /** Passes that wrote, and where they left the counters they set, until a stats reading takes them. */
  private writes = 0;
  private restartedCounters: Array<{ write: number; counts: ReadonlyMap<string, Count> }> = [];
  private readonly failureLog: RateLimitedLog;
  /** Read for every interval (monotonic) and every time shown (wall): see clock.ts. */
  readonly clock: Clock;
  /** See SupervisorOptions; set by cli/drift-schedule.ts once the drift schedule is known. */
  knownTablesMaxAgeMs: number | undefined;

  ready = false;
  backend: Backend | undefined;
  /**
   * What the last pass that read both backends found besides the one it chose (its warnings: the passes after it read
   * that backend alone), and when. Older than FINDINGS_MAX_AGE_MS, the next pass reads both again.
   */
  private backendFindings: { readonly findings: BackendFindings; readonly at: number } | undefined;
  lastDesired: Desired | undefined;
  /** The last pass's warnings' texts (plan/warnings.ts), for /status; each is logged when it first appears. */
  warned: ReadonlySet<string> = new Set();
  /** The conntrack tool was found missing, and the log said so (once per process). */
  private conntrackMissingSaid = false;
  /**
   * What the namespace looks like as far as the last pass knows, for /status and `vlan_up`: the VLANs bound to
   * NICs by the config it planned with, and the NICs as it left them (as read, plus what it wrote; as read when its
   * write failed and was rolled back). Not the whole facts, whose 10,000 parsed rules need not live on.
   */
  view: SupervisorView | undefined;
  /** The NICs' carriers as good passes told them (a failed pass's view says nothing), a flapping one held back. */
  private readonly carrierLog = new CarrierLog();
  /** The NICs no VLAN took (not the uplink) at the last good pass, with their addresses: each is told once (notices.ts). */
  private unclaimedNics: ReadonlyMap<string, string> | undefined;
  lastRecord: ReconcileRecord | undefined;
  /**
   * The pass running now, if any. /readyz turns 200 once forwarding is in place, which on the first pass is before
   * the pass (the accounting sets' fill) ends and is recorded: /status shows it as running meanwhile.
   */
  running: { readonly trigger: Trigger; readonly since: string } | undefined;
  /** The wall-clock time of the last good pass (shown: /status, vlan_gateway_last_successful_reconcile). */
  lastSuccessAt: number | undefined;
  readonly driftCounts: Record<DriftKind, number> = { rules: 0, jump: 0, address: 0, link: 0, route: 0, sysctl: 0, set: 0 };
  private firstPassDone!: () => void;
  /** Resolves when the first pass has finished, well or not. */
  readonly firstPass = new Promise<void>((resolve) => (this.firstPassDone = resolve));
  private firstGoodPassDone!: () => void;
  /** Resolves when the first pass that succeeds has finished (the first pass, or one after it when that failed). */
  readonly firstGoodPass = new Promise<void>((resolve) => (this.firstGoodPassDone = resolve));
  /**
   * Called when a pass fails in a way retrying cannot fix (a missing capability); returns whether the process stops
   * for it (not yet ready: the stop's fatal line then says it all, not a pass line promising a retry).
   */
  onFatal: ((error: unknown) => boolean) | undefined;
  /**
   * Called when the kernel refused a rule of the user's templates (one only the kernel checks: iptables' parser and
   * ours let it through), or refused a config that had not applied yet at commit whoever's rule it was
   * (ApplyError.commitRefusal), rolled back in full. With `reverted`, the config that last applied is running again;
   * `refused` is the config whose pass the kernel refused. The failed pass is said by it alone, with `attempt`'s fields
   * and the error (the supervisor's own "reconcile failed" line is not logged for it).
   */
  onConfigRefused: ((error: ApplyError, reverted: boolean, refused: ConfigState, attempt: FailedAttempt) => void) | undefined;
  /**
   * Probes for other devices holding the VLANs' gateway addresses (set by cli/run.ts): told of each pass's result and
   * of each address announced; /status shows what it finds.
   */
  conflicts: AddressConflicts | undefined;
  /** The config of the last pass that succeeded: what a config the kernel refuses is replaced by. */
  private lastGood: ConfigState | undefined;

  /** options.minIntervalMs, or what a reload changed it to (reconcile.minIntervalMs). */
  minIntervalMs: number;

  constructor(
    runner: CommandRunner,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    initial: ConfigState,
    private readonly options: SupervisorOptions,
  ) {
    this.minIntervalMs = options.minIntervalMs;
    this.current = initial;
    this.clock = options.clock ?? systemClock;
    this.knownTablesMaxAgeMs = options.knownTablesMaxAgeMs;
    this.failureLog = new RateLimitedLog(log, 30_000, () => this.clock.monotonic());
    this.passRunner = this.noting(runner);
  }

  /**
   * The runner, noting each command until it returns; one still running after slowCommandMs is logged, once, with
   * what it is: a helper that hangs (the xtables lock held elsewhere, a stopped process) holds the pass and every
   * pass after it, and the log, /healthz and /status then say what the gateway waits for instead of nothing.
   */
  private noting(runner: CommandRunner): CommandRunner {
    return {
      run: async (argv, options) => {
        const entry: WaitedCommand = { command: asRun(runner, argv).join(' '), since: this.now(), at: this.clock.wall() };
        this.waiting.add(entry);
        const trigger = this.running?.trigger;
        const slowMs = this.options.slowCommandMs ?? 5000;
        const timeout = this.options.commandTimeoutMs;
        const pass = this.passesStarted;
        const slow = setTimeout(() => {
          if (this.slowSaidFor === pass) return; // one line per pass, for the first command that is slow
          this.slowSaidFor = pass;
          const killed = timeout === undefined ? '' : `; it is killed after ${timeout / 1000} s, and the pass retried`;
          this.log.warn({ trigger, command: entry.command, waitedMs: slowMs }, `a reconcile pass has waited ${slowMs / 1000} s for \`${entry.command}\`${killed}`);
        }, slowMs);
        slow.unref();
        try {
          return await runner.run(argv, options);
        } finally {
          clearTimeout(slow);
          this.waiting.delete(entry);
        }
      },
      start: (argv, options) => runner.start(argv, options),
      ...(runner.prefix ? { prefix: runner.prefix } : {}),
    };
  }

  /** Monotonic milliseconds: what every interval here is measured on (never the wall clock, which steps). */
  private now(): number {
    return this.clock.monotonic();
  }

  /** The oldest command the pass in flight is waiting for, if any (/status, /healthz). */
  get waitingFor(): WaitedCommand | undefined {
    return this.waiting.values().next().value;
  }

  get config(): ConfigState {
    return this.current;
  }

  /** The longest a failed pass waits before it is retried (its backoff doubles up to this). */
  get backoffMaxMs(): number {
    return this.options.backoffMaxMs;
  }

  /** A valid new config: the next pass applies only the difference. */
  replaceConfig(next: ConfigState): void {
    this.current = next;
    // A new config is what an operator does to end a run of failures: it is tried now, not after the backoff the
    // failures built up (up to backoffMaxMs). Its own failure starts the backoff again, from its first step.
    if (this.notBefore > this.now()) {
      this.notBefore = 0;
      this.failures = 0;
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.trigger('reload');
  }

  trigger(trigger: Trigger): void {
    if (this.stopped) return;
    // A netlink event is the namespace changing (a NIC up, attached, given its address): what failed may pass now,
    // so it is tried after minIntervalMs, not after the backoff. The failures still count: one more doubles it.
    if (trigger === 'netlink' && this.notBefore > this.now()) {
      this.notBefore = 0;
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.pending === undefined || PRIORITY[trigger] > PRIORITY[this.pending]) this.pending = trigger;
    this.pendingSince ??= this.now();
    this.arm();
  }

  private arm(): void {
    if (this.inFlight || this.timer || this.pending === undefined || this.stopped) return;
    const due = Math.max(this.lastStart + this.minIntervalMs, this.notBefore);
    this.passAfter(Math.max(0, due - this.now()));
  }

  /**
   * The pass, `ms` from now and not before. A Node timer counts its delay from the event loop's cached time, which a
   * busy turn leaves behind the real one: it fired that much early (passes 4 ms inside minIntervalMs under CI's load),
   * so the rest is waited again. Measured on the real clock: this is the timer's wait, whatever clock the supervisor
   * was given.
   */
  private passAfter(ms: number): void {
    const armedAt = performance.now();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const rest = ms - (performance.now() - armedAt);
      if (rest > 0) {
        this.passAfter(rest);
        return;
      }
      this.inFlight = this.pass().finally(() => {
        this.inFlight = undefined;
        this.arm();
      });
    }, ms);
  }

  private async pass(): Promise<void> {
    const trigger = this.pending!;
    this.pending = undefined;
    const requestedAt = this.pendingSince;
    this.pendingSince = undefined;
    this.lastStart = this.now();
    this.running = { trigger, since: new Date(this.clock.wall()).toISOString() };
    this.passesStarted++;
    const started = performance.now();
    const endTimer = this.metrics.reconcileSeconds.startTimer({ trigger });
    // The kernel counters this pass's writes set, in the order written: a rewrite restarts its rules at zero, its
    // rollback (a failed pass) puts back what the pass read (zero, where it planned from the tables it knew).
    const restarted = new Map<string, Count>();
    // The clear this pass kept in the unpoliced-left file before it wrote the tables, and whether it succeeded.
    let unpolicedWritten: Plan['unpoliced'];
    let succeeded = false;
    const observer: ApplyObserver = {
      restore: (table, ok) => this.metrics.restores.inc({ table, result: ok ? 'success' : 'failure' }),
      written: (step, undone) => {
        for (const [key, count] of undone ? countersAfterRestore(step.undo) : countersAfterPayload(step.payload)) restarted.set(key, count);
      },
      // A set made again holds its members' counters as the apply read them, which a reading since may have passed.
      remade: (_set, counters) => {
        for (const [member, count] of counters) restarted.set(member, count);
      },
      // Ready means forwarding as configured: the accounting sets' members may still be being written (no verdict
      // depends on them), and if only they fail, the pass fails and is retried, but the router stays ready.
      forwarding: () => {
        this.ready = true;
      },
      // After the pass has returned: the probe for another holder of the address follows its announce.
      announced: (step) => this.conflicts?.announced(step),
      // What could not be cleared is among the plan's warnings (logged below); what was, is said here.
      flowsCleared: (outcome) => this.saidCleared(outcome.cleared, { trigger }),
      unpolicedCleared: (outcome, why) => {
        if (outcome.cleared > 0) this.log.info({ trigger, cleared: outcome.cleared }, unpolicedClearedMessage(outcome.cleared, why, trigger === 'start'));
        if (outcome.warning) this.log.warn({ trigger }, outcome.warning);
        if (outcome.missing) this.log.warn({ trigger }, UNPOLICED_CONNTRACK_MISSING);
        // Done (it took what an earlier run left too); kept where conntrack failed, for the next start.
        // Only the clear it wrote: a file that holds another, written beside this pass since, is still to do.
        if (outcome.warning === undefined && unpolicedWritten) this.options.unpolicedLeft?.remove(unpolicedWritten);
      },
    };
    const used = this.current;
    const { config, templates } = used;
    const knownEpoch = this.knownEpoch;
    // Both backends are read again now and then: a warning about the other one goes once it is put right.
    const lookAgain = !this.backendFindings || this.now() - this.backendFindings.at > FINDINGS_MAX_AGE_MS;
    const knownTables = lookAgain ? undefined : this.usableKnownTables();
    const backend = lookAgain ? undefined : this.backend;
    try {
      const { facts, plan } = await reconcileOnce(this.passRunner, config, templates, {
        observer,
        // Kept before the tables are written: killed after them, before the clear, the next start finds it.
        beforeWrite: async (_facts, planned) => {
          const left = this.options.unpolicedLeft;
          if (planned.unpoliced && left) left.write(unpolicedWritten = mergeUnpoliced(left.read(), planned.unpoliced));
        },
        onDesired: (seen, desired) => {
          this.view = { vlans: desired.vlans, uplink: desired.uplink, links: seen.links, routes: seen.routed ?? [] };
        },
        memory: {
          forwardingWasOff: this.forwardingWasOff,
          ...(this.knownSets ? { knownSets: this.knownSets } : {}),
          ...(knownTables ? { knownTables } : {}),
        },
        ...(backend && this.backendFindings ? { backend, backendFindings: this.backendFindings.findings } : {}),
      });
      this.forwardingWasOff = Boolean(plan.forwardingWasOff);
      if (backend === undefined) this.backendFindings = { findings: backendFindingsOf(facts), at: this.now() };
      for (const member of membersAddedBy(plan)) restarted.set(member, ZERO);
      const unchanged = knownEpoch === this.knownEpoch;
      this.knownSets = unchanged ? knownSetsAfter(plan) : undefined;
      // What it read or knew, and what it wrote on top (the collector's next reading checks both).
      const wroteTables = plan.steps.some((s) => s.kind === 'table');
      this.knownTables = unchanged ? { backend: facts.backend, tables: wroteTables ? tablesAfter(facts.tables, plan) : facts.tables } : undefined;
      const drift = driftOf(this.lastDesired, plan);
      for (const kind of drift) {
        this.driftCounts[kind]++;
        this.metrics.driftRepairs.inc({ kind });
      }
      // Notes on the NICs (reconcile/notices.ts) and the plan's warnings, each logged once, as it appears.
      const { notices: unclaimedNotices, unclaimed } = unclaimedNicNotices(this.unclaimedNics, plan.desired, facts.links);
      this.unclaimedNics = unclaimed;
      for (const notice of [...bindingNotices(this.lastDesired, plan.desired), ...unclaimedNotices]) this.log[notice.level ?? 'warn'](notice.fields, notice.message);
      const warnings = plan.warnings ?? [];
      for (const warning of warnings) {
        if (this.warned.has(warning.text) || (warning.kind === 'conntrack_missing' && this.conntrackMissingSaid)) continue;
        this.log.warn(warning.text);
        // The tool missing is the machine's, said once: each later pass that would clear flows would say it again.
        if (warning.kind === 'conntrack_missing') this.conntrackMissingSaid = true;
      }
      // One text, one warning: as /status lists them, so they are counted.
      const byText = new Map(warnings.map((w) => [w.text, w]));
      this.warned = new Set(byText.keys());
      for (const [kind, count] of Object.entries(countByKind(byText.values()))) this.metrics.warnings.set({ kind }, count);
      this.backend = facts.backend;
      this.lastDesired = plan.desired;
      this.view = { vlans: plan.desired.vlans, uplink: plan.desired.uplink, links: linksAfter(facts.links, plan.steps), routes: facts.routed ?? [] };
      for (const notice of this.carrierLog.notices(this.view, this.clock.monotonic())) this.log[notice.level ?? 'warn'](notice.fields, notice.message);
      this.conflicts?.passed(this.view, plan.steps);
      this.lastSuccessAt = this.clock.wall();
      this.lastGood = used;
      // A run of failures ended: said at info even when nothing is left to change (the previous rules stood), or
      // the log's last word would stay the rate-limited error while /status and /healthz say all is well.
      const failedFor = this.failingSince === undefined ? undefined : this.now() - this.failingSince;
      this.failures = 0;
      this.failingSince = undefined;
      this.notBefore = 0;
      this.ready = true;
      succeeded = true;
      this.failureLog.reset();
      const changes = plan.steps.map(summarizeStep);
      // Whether this pass read the tables, or planned (and wrote) from the ones it knew.
      const tables = knownTables && facts.tables === knownTables.tables ? 'known' : 'read';
      this.record({ trigger, result: 'success', durationMs: performance.now() - started, changes, drift, tables });
      this.metrics.lastSuccess.set(this.lastSuccessAt / 1000);
      this.updateVlanUp(config);
      const recovered = failedFor === undefined ? {} : { recoveredAfterMs: Math.round(failedFor) };
      // A repair of drift (someone else changed our chains, jumps, addresses, route, sysctls or sets while we ran) is a
      // warning: an on-call engineer filtering for warnings saw nothing when FORWARD was flushed by hand.
      if (changes.length > 0) this.log[drift.length > 0 ? 'warn' : 'info']({ trigger, changes, drift, tables, ...recovered, durationMs: Math.round(performance.now() - started) }, 'reconciled: changes applied');
      else if (failedFor !== undefined) this.log.info({ trigger, tables, ...recovered, durationMs: Math.round(performance.now() - started) }, 'reconciled: in sync, failing no more');
      // The start's pass is said whatever it found: a supervisor restarted where its rules stand (`run --netns`, a
      // container restarted in a pod's namespace) otherwise logged "vlan-gateway starting" and then nothing.
      else this.log[trigger === 'start' ? 'info' : 'debug']({ trigger, tables, durationMs: Math.round(performance.now() - started) }, 'reconciled: in sync');
    } catch (error) {
      this.knownSets = undefined;
      this.knownTables = undefined;
      this.failures++;
      const startedFailing = this.failingSince === undefined;
      this.failingSince ??= requestedAt ?? this.lastStart;
      const delay = Math.min(this.options.backoffInitialMs * 2 ** (this.failures - 1), this.options.backoffMaxMs);
      this.notBefore = this.now() + delay;
      const message = (error as Error)?.message ?? String(error);
      this.record({ trigger, result: 'failure', durationMs: performance.now() - started, changes: [], drift: [], error: message });
      this.updateVlanUp(config); // as the failed pass found the NICs: a gateway address it could not add is not up
      // A config refused at commit that had never applied is not retried: the one that last applied runs again at
      // once (below), so the line says no retry, and that pass is no recovery from a run of failures.
      const reverting = isRefusal(error, this.current === used) && this.lastGood !== undefined && this.lastGood !== used;
      const refused = isRefusal(error, this.current === used) ? error : undefined;
      // The gateway's own rules refused with the config that applied before (a NIC attached since, a module
      // unloaded): no new config to refuse, a failing pass as any other. A table refused whole (iptables-legacy
      // names no rule) that held rules of rules.dir this pass wrote is said too: at a start, in a fresh namespace,
      // every pass writes our chains beside the user's, so no chain is ever named, and the template went unsaid.
      const mayBeUsers = refused?.failedLine === 'COMMIT' && (refused.commitRefusal?.userChains.length ?? 0) > 0;
      const toldRefused = refused !== undefined && (reverting || refused.userChain !== undefined || mayBeUsers) ? this.onConfigRefused : undefined;
      const attempt: FailedAttempt = { trigger, failures: this.failures, ...(reverting ? {} : { retryInMs: delay }) };
      // A failure no retry can fix, before the start was ready, stops the process with a fatal line of its own: this
      // one said "previous rules left in place" and a retry that never came, before it. A refusal told to
      // onConfigRefused is said there, with this line's fields, in one line: two error lines for one refusal, at
      // each retry, said the same thing twice.
      const stopping = isFatal(error) && this.onFatal?.(error) === true;
      if (!stopping && !toldRefused) this.failureLog.error(message, { ...attempt, err: error }, failedPassSays(error));
      if (reverting && startedFailing) this.failingSince = undefined;
      // Retry the same request after the backoff; a newer request rides along.
      if (this.pending === undefined || PRIORITY[trigger] > PRIORITY[this.pending]) this.pending = trigger;
      this.pendingSince ??= requestedAt ?? this.lastStart;
      // A payload the kernel refuses at commit fails every pass alike, and holds up every other change (a NIC Docker
      // attaches, drift): a config that has not applied yet is refused as a reload with an invalid file is, and the
      // one that last applied (known to apply) runs again, at once. So it is whoever's rule was refused: one of the
      // user's templates (iptables-nft names it; iptables-legacy names no rule, and a reload may change the config
      // and a template at once), or one the gateway renders from the config (a kernel without a module, a bug of
      // ours). Not a pass that could not do its work (the xtables lock held, a restore killed, memory short): that
      // one is retried as any failed pass. With no config that applied (a start), the passes go on failing, and a
      // refused template is said.
      if (refused) {
        if (reverting) {
          this.current = this.lastGood!;
          this.notBefore = 0;
          this.failures = 0;
          this.pending = 'reload';
        }
        toldRefused?.(refused, reverting, used, attempt);
      }
    } finally {
      if (restarted.size > 0) {
        this.restartedCounters.push({ write: ++this.writes, counts: restarted });
        // A collector that stopped reading (none runs) must not make this grow for ever; the oldest matter least.
        if (this.restartedCounters.length > 64) this.restartedCounters.shift();
      }
      this.running = undefined;
      endTimer();
      this.metrics.changed();
      this.firstPassDone();
      if (succeeded) this.firstGoodPassDone();
    }
  }

  /**
   * What a stats collector's reading is checked against, and where its findings go. A reading that a pass
   * overlapped (running when it started, or started since) may have caught the pass's writes half-way, or
   * compared them with the desired state before it: what it finds vouches for nothing and asks for no pass. Drift
   * it finds still makes the supervisor forget what it knew, so the next pass reads; the next reading asks for it.
   */
  collectorState(): CollectorState {
    const passesBefore = this.passesStarted;
    const runningBefore = this.inFlight !== undefined;
    const overlapped = () => runningBefore || this.inFlight !== undefined || this.passesStarted !== passesBefore;
    const writesBefore = this.writes;
    const take = (done: (write: number) => boolean): ReadonlyMap<string, Count> => {
      const taken = this.restartedCounters.filter((w) => done(w.write));
      this.restartedCounters = this.restartedCounters.filter((w) => !done(w.write));
      if (taken.length === 1) return taken[0]!.counts;
      const merged = new Map<string, Count>();
      for (const w of taken) for (const [key, count] of w.counts) merged.set(key, count);
      return merged;
    };
    const restarted = take((write) => write <= writesBefore);
    return {
      ...(restarted.size > 0 ? { restarted } : {}),
      // A pass running when the reading read the kernel may have written then, or be between a write and its
      // rollback: its writes are known once it has ended. (A pass that starts later wrote after the reading.)
      restartedSince: async () => {
        await this.inFlight;
        return take((write) => write > writesBefore);
      },
      ...(this.lastDesired ? { desired: this.lastDesired } : {}),
      ...(this.backend ? { backend: this.backend } : {}),
      setsDrifted: () => this.setsDrifted(overlapped()),
      tablesChecked: (inSync) => this.tablesChecked(inSync, overlapped()),
      // ip_forward off (by hand, or a tool): a pass now rather than at the next schedule; it reads the sysctls anyway.
      sysctlsDrifted: () => {
        if (!overlapped()) this.trigger('drift');
      },
    };
  }

  /**
   * Our sets do not hold what the last pass left in them (the stats collector read every member): the next pass
   * reads them in full, and it is asked for now (unless a pass overlapped the reading: see collectorState).
   */
  setsDrifted(overlapped = false): void {
    this.knownEpoch++;
    if (this.knownSets === undefined && !this.inFlight) return;
    this.knownSets = undefined;
    if (!overlapped) this.trigger('drift');
  }

  /**
   * The stats collector read our tables: as planned, or not. Not as planned is drift: what the supervisor knew of
   * the tables is forgotten, and a pass, which reads them, is asked for now (unless a pass overlapped the reading).
   */
  tablesChecked(inSync: boolean, overlapped = false): void {
    if (inSync) {
      if (!overlapped) this.tablesCheckedAt = this.now();
      return;
    }
    this.tablesCheckedAt = undefined;
    this.knownEpoch++;
    this.knownTables = undefined;
    if (!overlapped) this.trigger('drift');
  }

  private usableKnownTables(): KnownTables | undefined {
    const maxAge = this.knownTablesMaxAgeMs;
    if (!this.knownTables || maxAge === undefined || this.tablesCheckedAt === undefined) return undefined;
    return this.now() - this.tablesCheckedAt <= maxAge ? this.knownTables : undefined;
  }

  private record(record: Omit<ReconcileRecord, 'time'>): void {
    this.lastRecord = { time: new Date(this.clock.wall()).toISOString(), ...record, durationMs: Math.round(record.durationMs * 10) / 10 };
    this.metrics.reconciles.inc({ trigger: record.trigger, result: record.result });
  }

  /**
   * 1 for a VLAN whose NIC is bound, up, has carrier and holds its gateway address, as the last pass left them (see
   * view: a NIC set down that a failed pass could not bring up keeps its addresses, and routes nobody);
   * and for the uplink when its NIC is bound, up and has carrier, and the default route can go through it (as
   * desired.ts decides the route). A carrier change is a netlink event, and so a pass (one that writes nothing).
   */
  private updateVlanUp(config: Config): void {
    const view = this.view;
    if (!view) return;
    this.metrics.vlanUp.reset();
    for (const binding of view.vlans) {
      const nic = binding.nic && view.links.find((l) => l.name === binding.nic!.name);
      const up = Boolean(nic && nic.up && !noCarrier(nic) && nic.addresses.some((a) => a.address === binding.vlan.gateway));
      this.metrics.vlanUp.set({ vlan: binding.vlan.name, interface: binding.nic?.name ?? '' }, up ? 1 : 0);
    }
    const uplink = view.uplink.nic && (view.links.find((l) => l.name === view.uplink.nic!.name) ?? view.uplink.nic);
    const { gateway } = config.uplink;
    const uplinkUp = Boolean(uplink?.up && !noCarrier(uplink) && (gateway === undefined || nextHopOn(uplink, gateway)));
    this.metrics.uplinkUp.reset();
    this.metrics.uplinkUp.set({ interface: uplink?.name ?? '' }, uplinkUp ? 1 : 0);
  }

  /**
   * kube-proxy's rule: unhealthy when a requested change has waited, or passes have failed, past the timeout; and
   * when the pass in flight has run that long. The reason names the command a pass waits for, if it waits for one.
   */
  health(): { healthy: boolean; reason?: string } {
    const t = this.now();
    const limit = this.options.healthTimeoutMs;
    const s = (since: number) => Math.round((t - since) / 1000);
    const waited = this.inFlight ? this.waitingFor : undefined;
    const why = waited ? ` (a pass is waiting for \`${waited.command}\`, for ${s(waited.since)} s)` : '';
    if (this.failingSince !== undefined && t - this.failingSince > limit) {
      return { healthy: false, reason: `reconciles have failed for ${s(this.failingSince)} s${why}` };
    }
    if (this.pendingSince !== undefined && t - this.pendingSince > limit) {
      return { healthy: false, reason: `a requested change has waited ${s(this.pendingSince)} s${why}` };
    }
    if (this.inFlight && t - this.lastStart > limit) {
      return { healthy: false, reason: `a pass has run for ${s(this.lastStart)} s${why}` };
    }
    return { healthy: true };
  }

  /** Resolves when no pass is running or due now (tests and shutdown). */
  async idle(): Promise<void> {
    while (this.inFlight) await this.inFlight;
  }

  /** Stops passes and waits for the one in flight (then `idled` is told); with `down`, removes what the gateway added. */
  /** The UDP flows a pass's conntrack clears deleted, said when there were some. */
  private saidCleared(cleared: number, fields: object): void {
    if (cleared > 0) this.log.info({ ...fields, cleared }, `cleared ${cleared} UDP flow${cleared === 1 ? '' : 's'} a port forward's change left going the wrong way`);
  }

  async stop(mode?: Mode, idled?: () => void): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.idle();
    idled?.();
    if (mode === 'down') {
      const { config, templates } = this.current;
      const { plan, flows } = await reconcileOnce(this.passRunner, config, templates, {
        mode: 'down', memory: { forwardingWasOff: this.forwardingWasOff }, ...(this.backend ? { backend: this.backend } : {}),
      });
      this.log.info({ changes: plan.steps.map(summarizeStep) }, 'removed what the gateway added (--cleanup-on-exit)');
      this.saidCleared(flows?.cleared ?? 0, { cleanup: true });
      if (flows?.warning) this.log.warn(flows.warning);
      if (flows?.missing && !this.conntrackMissingSaid) this.log.warn(CONNTRACK_MISSING);
    }
  }
}

/** How long the other backend's findings (warnings) are carried before both backends are read again. */
const FINDINGS_MAX_AGE_MS = 60_000;
