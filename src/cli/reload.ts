/**
 * Reloading the config of `vlan-gateway run`, on SIGHUP and when the file or the templates of its rules.dir change.
 * A valid config goes to the supervisor with the settings it changes; one that fails to load, or that the kernel
 * refuses once a pass writes it, is said (in /status, the metrics and the log) and the running config kept.
 */
import { realpath, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { dirname } from 'node:path';
import type { ApplyError } from '../apply/apply.js';
import { readConfigFileText, rulesDirNamed } from '../config/load.js';
import { isMountPoint } from '../config/mounts.js';
import { serialized } from '../config/reload.js';
import type { Config } from '../config/schema.js';
import { ConfigWatch } from '../config/watch.js';
import { hostPort } from '../http/server.js';
import { RateLimitedLog, type Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import type { ReloadState } from '../reconcile/status.js';
import type { ConfigState, FailedAttempt, Supervisor } from '../reconcile/supervisor.js';
import { userTemplateOf } from '../apply/user-rules-check.js';
import type { Templates } from '../plan/desired.js';
import { userTemplatesText } from '../template/load.js';
import { sourceLineOf } from '../template/render.js';
import type { DriftSchedule } from './drift-schedule.js';
import { describeErrorLinesOf } from './errors.js';
import { loadChecked, type RulesCheck } from './load-checked.js';
import type { PlanCache } from './plan-cache.js';
import { runSettings, type RunArgs } from './run-options.js';
import type { HeldSignals } from './signals.js';

/** How long a config that fails to load must stay as it is before the failure is reported (see reload). */
const RELOAD_SETTLE_MS = 300;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface ReloadParts {
  readonly path: string;
  readonly args: RunArgs;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly supervisor: Supervisor;
  readonly planCache: PlanCache | undefined;
  readonly rulesCheck: RulesCheck;
  /** The last reload's outcome, as /status shows it. */
  readonly state: ReloadState;
  readonly driftSchedule: DriftSchedule;
  /** Where the HTTP endpoints were asked to listen, and where they do (undefined until an interface has the address). */
  readonly listen: string;
  readonly address: AddressInfo | undefined;
}

const inputsOf = (loaded: ConfigState) => JSON.stringify([loaded.text, loaded.templates]);

/** What the file watch asks a reload for; said instead as the files whose change the reload found (changedFiles). */
const FILE_CHANGED = 'file changed';
/** How many changed files a reload's `why` names; its `changed` field lists them all. */
const FILES_NAMED = 3;

/**
 * The files of `next` that differ from those of `running`: the config file, and each template of rules.dir edited,
 * added or removed. A config that names another rules.dir is its own change: the templates there are not said to have
 * changed. A reload's `why` said "file changed" alone, which read as gateway.yaml when only a template had been edited.
 */
function changedFiles(running: ConfigState, next: ConfigState): string[] {
  const files: string[] = next.text === running.text ? [] : [next.path];
  if (next.config.rules.dir !== running.config.rules.dir) return files;
  const sources = (state: ConfigState) => new Map(state.templates.user.map((u) => [u.template.file, u.template.source]));
  const before = sources(running);
  const after = sources(next);
  for (const file of new Set([...after.keys(), ...before.keys()])) if (before.get(file) !== after.get(file)) files.push(file);
  return files;
}

/** What asked for a reload, the file watch's request said as the files found changed (when some were). */
function reloadWhy(reasons: readonly string[], changed: readonly string[]): string {
  const named = changed.slice(0, FILES_NAMED).join(', ') + (changed.length > FILES_NAMED ? ` and ${changed.length - FILES_NAMED} more` : '');
  return reasons.map((r) => (r === FILE_CHANGED && changed.length > 0 ? `${named} changed` : r)).join(', ');
}

export class Reloads {
  // The config the kernel refused after a reload had taken it: the file is often read twice for one write (an
  // in-place write fires two events), and the second read must not hand it over again, to fail again and roll
  // back again. A SIGHUP does retry it (what the kernel refused may have changed: a module loaded).
  private refusedInputs: string | undefined;
  /** What asked for the next round. */
  private readonly reasons = new Set<string>();
  private readonly round: () => Promise<void>;
  private isPipe = false;
  /**
   * The rules.dir of the config the last reload rejected, watched beside the running one's until a reload succeeds:
   * a config that names a directory not made yet, or one whose template is broken, is rejected, and the user's fix
   * (making the directory, editing the template) must reach the gateway as an edit of the file does.
   */
  private pendingRulesDir: string | undefined;
  private watcher: ConfigWatch | undefined;
  /** Set by close(): the supervisor is stopping, and a round in flight neither applies nor says anything more. */
  private closed = false;
  /** The rounds asked for so far, settled once none runs. */
  private rounds: Promise<void> = Promise.resolve();
  private readonly onHup = () => this.request('SIGHUP');
  /**
   * A refusal that every pass meets again (no config has applied yet, or the running one's template renders a rule
   * the kernel refuses) is said once per 30 s, as the supervisor says a failing pass: its retries back off from
   * 0.5 s, and each used to log it again.
   */
  private readonly refusalLog: RateLimitedLog;

  constructor(private readonly parts: ReloadParts) {
    this.refusalLog = new RateLimitedLog(parts.log, 30_000);
    // One reload at a time, the last write winning (config/reload.ts). A file that fails to load and is changed
    // within RELOAD_SETTLE_MS was being written (an in-place write read half-way): loaded again, not reported.
    this.round = serialized(() => this.reload());
    parts.supervisor.onConfigRefused = (error, reverted, refused, attempt) => this.refused(error, reverted, refused, attempt);
  }

  /** Reloads from now on: on SIGHUP (one held during the start too) and on every change to the config's files. */
  async start(early: HeldSignals): Promise<void> {
    const { path, log, supervisor } = this.parts;
    // A pipe (--config <(…)) holds the config once, read at the start: read again it waits for a writer for ever,
    // holding up every later reload and the stop behind it. Said instead of waited on.
    this.isPipe = await stat(path).then((info) => info.isFIFO(), () => false);
    process.on('SIGHUP', this.onHup);
    early.releaseHup();
    if (early.hup && !early.stop) this.request('SIGHUP'); // a stop asked for too: nothing to reload for
    this.watcher = new ConfigWatch(path, () => this.request(FILE_CHANGED), {
      onWatchError: (watched, error) => log.warn({ path: watched }, `cannot watch ${watched} for changes (${watchFailure(error)}): a change there needs a SIGHUP to be read`),
    });
    this.watcher.rearm(supervisor.config.config.rules.dir);
    // Said once, beside the start pass rather than before it.
    void realpath(path).catch(() => path).then(isMountPoint).then((alone) => {
      if (alone) log.warn({ path }, `the config file is mounted on its own: an edit on the host that replaces the file (most editors, sed -i) will not reach this process; mount the directory that holds it instead (-v DIR:${dirname(path)}:ro)`);
    });
  }

  /**
   * No more reloads: none asked for from now on, and one in flight (reading or checking the file when the stop
   * came) drops what it read, saying nothing, at its next step. Resolves once it has: a stop logs "stopped" after
   * it, and neither a "config reloaded" nor a config handed to a stopped supervisor comes after that.
   */
  close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    process.off('SIGHUP', this.onHup);
    return this.rounds;
  }

  private request(reason: string): void {
    const { path, log } = this.parts;
    if (this.closed) return;
    if (this.isPipe) {
      log.warn({ why: reason, path }, 'the config is a pipe, read once at the start: there is nothing to reload; give a file to reload it');
      return;
    }
    this.reasons.add(reason);
    this.rounds = this.round().catch((error: unknown) => {
      if (!this.closed) log.error({ err: error }, 'reload failed');
    });
  }

  /** What a reload reads: the config file, and the templates of the rules.dir in effect. */
  private async inputsText(): Promise<string> {
    return JSON.stringify([
      await readConfigFileText(this.parts.path),
      await userTemplatesText(this.parts.supervisor.config.config.rules.dir),
    ]);
  }

  private async reload(): Promise<{ again: boolean }> {
    const { path, args, metrics, supervisor, planCache, rulesCheck, state: reload } = this.parts;
    // A round nobody asked for is a second look the last one asked for (its texts moved under it: a write landed
    // meanwhile, or rules.dir came, went or moved, whose templates it now reads): not a reload unless it finds
    // something new.
    const stopped = { again: false };
    if (this.closed) return stopped;
    const asked = this.reasons.size > 0;
    const reasons = asked ? [...this.reasons] : [FILE_CHANGED]; // what asked for this round (none: the text moved under the last one)
    const why = reasons.join(', ');
    this.reasons.clear();
    // Counted and dated before the files are read: a read dated after a write read what it wrote. Each line of the
    // round carries its number (`read`), which /status counts.
    reload.reads += 1;
    reload.lastReadAt = new Date().toISOString();
    const log = this.parts.log.child({ read: reload.reads });
    const before = await this.inputsText();
    const at = new Date().toISOString();
    try {
      // a valid config is kept for the next start; the file the start read is a file still (a pipe made in its place is
      // refused, not waited on)
      const next = await loadChecked(path, args.listen, rulesCheck, planCache, true);
      if (this.closed) return stopped;
      if (this.refusedInputs !== undefined && !why.includes('SIGHUP') && inputsOf(next) === this.refusedInputs) {
        log.debug({ why }, 'config reloaded: still the one the kernel refused, not applied again');
        return { again: (await this.inputsText()) !== before };
      }
      // The user's templates are part of what a reload reads: an edited template with the same config counts.
      const changed = next.text !== supervisor.config.text || JSON.stringify(next.templates) !== JSON.stringify(supervisor.config.templates);
      if (!changed && !asked) {
        log.debug('config read again: unchanged');
        return { again: (await this.inputsText()) !== before };
      }
      this.refusedInputs = undefined;
      this.pendingRulesDir = undefined;
      // The file put back as it runs, after a rejected reload: said as a reload is, since the rejection was.
      const wasRejected = reload.result === 'failure';
      reload.at = at;
      reload.result = 'success';
      reload.errors = [];
      metrics.reloads.inc({ result: 'success' });
      metrics.lastReloadOk.set(1);
      if (changed) {
        const files = changedFiles(supervisor.config, next);
        log.info({ why: reloadWhy(reasons, files), changed: files }, 'config reloaded');
        this.applySettings(next.config, log);
        supervisor.replaceConfig(next);
      } else {
        log[why.includes('SIGHUP') || wasRejected ? 'info' : 'debug']({ why }, 'config reloaded: unchanged');
      }
    } catch {
      if (this.closed) return stopped;
      await sleep(RELOAD_SETTLE_MS);
      if (this.closed) return stopped;
      if ((await this.inputsText()) !== before) return { again: true };
      // The same inputs as before the load, and yet the load may have read them half-written: a file written again in
      // place with the same text (truncated, then written) was read empty in between, and "is empty" was reported
      // for a file that never changed. Only a failure the settled inputs meet again is reported.
      const error = await loadChecked(path, args.listen, rulesCheck, planCache, true).then(() => undefined, (e: unknown) => e);
      if (this.closed) return stopped;
      if (error === undefined || (await this.inputsText()) !== before) {
        for (const reason of reasons) this.reasons.add(reason); // the next round is still this one's, for the log
        return { again: true };
      }
      this.pendingRulesDir = await rulesDirNamed(path);
      reload.at = at;
      reload.result = 'failure';
      const lines = describeErrorLinesOf(error);
      reload.errors = lines.map((l) => l.text);
      metrics.reloads.inc({ result: 'failure' });
      metrics.lastReloadOk.set(0);
      // Each line's `path` is the file it is about: its template where the fault is in one, else the config file.
      for (const line of lines) log.error({ why, path: line.file ?? path }, `reload rejected, keeping the running config: ${line.text}`);
    } finally {
      this.watcher?.rearm(supervisor.config.config.rules.dir, this.pendingRulesDir);
      metrics.changed();
    }
    // A write between the read and the watches' rearm has no event of its own: the texts tell.
    return { again: !this.closed && (await this.inputsText()) !== before };
  }

  /**
   * A rule of rules.dir the kernel refused when a pass wrote it, or a new config's table refused at commit whoever's
   * rule it was (gatewayRefusal): said as a rejected reload is (the reload had passed every check made before the
   * kernel), with the config that last applied running again if there is one. The failed pass is said here alone, in
   * one line with its fields (`attempt`, the error): the supervisor's "reconcile failed" line said it again, at each
   * retry.
   */
  private refused(error: ApplyError, reverted: boolean, refused: ConfigState, attempt: FailedAttempt): void {
    const { path, log, metrics, supervisor, state: reload } = this.parts;
    const { rule, fields: where } = refusalSaid(error, refused.templates, path);
    // Where the refused rule is: its template and the line there (path, line, rule: where known), not gateway.yaml
    // and the restore text's line, which no operator can find in their files; that line is kept as restoreLine.
    const fields = { ...attempt, ...where, restoreLine: error.failedLine, err: error };
    // The retry, said once: in words here (the backoff's cap, not each delay: the line stands for the next 30 s of
    // retries), the next one's delay in retryInMs.
    const retried = `the pass is retried with backoff, at most ${supervisor.backoffMaxMs / 1000} s apart, until the template is fixed`;
    if (!reverted && supervisor.lastDesired) {
      // The config that applied before renders a rule the kernel refuses now (a NIC attached since gave a
      // template new data): not a reload's doing, and there is nothing older to go back to.
      const message = `${rule}; the running config stays, and ${retried}`;
      this.refusalLog.error(`${message}\n${error.failedLine ?? ''}`, fields, message);
      return;
    }
    const keeping = reverted ? 'the config that last applied runs again' : `no config has applied yet: ${retried}`;
    // A reload that passed every check counted as a success when it was read; refused now, it is a failure too.
    if (reverted) {
      this.refusedInputs = inputsOf(refused);
      metrics.reloads.inc({ result: 'failure' });
      this.applySettings(supervisor.config.config); // the settings of the config that runs again
    }
    reload.result = 'failure';
    // The restore text's line where no rule of rules.dir is named (the gateway's own, one iptables named by its chain
    // alone); legacy names none; a rule named is said with its text, and several are each said in the lines below.
    const line = error.failedLine && error.failedLine !== 'COMMIT' && error.refusedRules.length === 0 ? `: ${error.failedLine}` : '';
    reload.errors = [`${rule}${line}`, ...error.message.split('\n').map((l) => l.trim()).filter(Boolean), keeping];
    metrics.lastReloadOk.set(0);
    metrics.changed();
    const message = `${rule}; ${keeping}`;
    if (reverted) log.error(fields, message);
    else this.refusalLog.error(`${message}\n${error.failedLine ?? ''}`, fields, message);
  }

  /**
   * The settings of the supervisor itself a reload changes too, where no option overrides them: the drift
   * check's schedule and the minimum interval at once; the HTTP address at the next start (the endpoints are
   * what is watching this one), which is said.
   */
  private applySettings(next: Config, log = this.parts.log): void {
    const { args, supervisor, driftSchedule, listen, address } = this.parts;
    const settings = runSettings(args, next);
    if (settings.schedule !== driftSchedule.schedule) {
      driftSchedule.change(settings.schedule);
      log.info({ schedule: driftSchedule.schedule }, 'reconcile.schedule changed: the drift check runs on the new schedule');
    }
    if (settings.minIntervalMs !== supervisor.minIntervalMs) {
      supervisor.minIntervalMs = settings.minIntervalMs;
      log.info({ minIntervalMs: settings.minIntervalMs }, 'reconcile.minIntervalMs changed');
    }
    if (settings.listen !== listen) {
      log.warn({ listen: settings.listen, serving: address ? hostPort(address) : listen }, `http.listen changed to ${settings.listen}: the endpoints stay where they are until the next start`);
    }
  }
}

/** Where a refused rule of rules.dir is, for the log's fields: its template, and the line there where it can be told. */
interface RulePlace {
  readonly path?: string;
  readonly line?: number;
  readonly chain: string;
  readonly rule: number;
}

/** "/etc/vlan-gateway/rules.d/nat/postrouting.hbs line 3 (VGW-USER-POSTROUTING rule 1)". */
function placeText(place: RulePlace): string {
  const chain = `${place.chain} rule ${place.rule}`;
  return place.path === undefined ? chain : `${place.path}${place.line === undefined ? '' : ` line ${place.line}`} (${chain})`;
}

/**
 * What a refusal is said as, and its fields: the rules of rules.dir the kernel refused, each by its template and the
 * line there (sourceLineOf: the one line of the template that is the rule as written; a rule that a loop or a value
 * made is named by its number in the chain, which is its place among the rules the template renders); a table
 * iptables-legacy refused whole, by the likely chain and its template; the gateway's own rules (gatewayRefusal), by
 * the config file. `path` is always there, as a rejected reload's: the template the message names first, else the
 * config file.
 */
function refusalSaid(error: ApplyError, templates: Templates, configPath: string): { rule: string; fields: Record<string, unknown> } {
  const templateOf = userTemplateOf(templates);
  if (error.userChain === undefined) return { rule: gatewayRefusal(error), fields: { path: configPath } };
  const chainFile = templateOf(error.userChain)?.file;
  const chainSaid = `${error.userChain}${chainFile ? `, from ${chainFile}` : ''}`;
  if (error.failedLine === 'COMMIT') {
    // iptables-legacy names no rule (it refuses the table at COMMIT): the chain is then the likely one.
    const table = error.step.kind === 'table' ? error.step.table : '';
    return { rule: `the kernel refuses the ${table} table, likely for a rule of rules.dir (${chainSaid})`, fields: { path: chainFile ?? configPath, chain: error.userChain } };
  }
  const places = error.refusedRules.map((r): RulePlace => {
    const template = templateOf(r.chain);
    const line = template && sourceLineOf(template.source, r.text);
    return { ...(template ? { path: template.file } : {}), ...(line ? { line } : {}), chain: r.chain, rule: r.rule };
  });
  const [first] = places;
  if (first === undefined) return { rule: `the kernel refuses a rule of rules.dir (${chainSaid})`, fields: { path: chainFile ?? configPath, chain: error.userChain } };
  if (places.length === 1) return { rule: `the kernel refuses a rule of rules.dir, ${placeText(first)}: ${error.refusedRules[0]!.text}`, fields: { ...first, path: first.path ?? configPath } };
  // Several refused (iptables-nft names each, in every table committed): each is named, here and in the error's lines
  // (and `rules`, each with its template); `path` is the first's, as the message names them.
  return {
    rule: `the kernel refuses ${places.length} rules of rules.dir: ${places.map(placeText).join(', ')}`,
    fields: { path: first.path ?? configPath, rules: places },
  };
}

/**
 * What a config refused at commit is refused for, when no rule of rules.dir is named (ApplyError.commitRefusal): a line
 * of the gateway's own that iptables-nft named; or, from iptables-legacy, which names only COMMIT, a table that held
 * rules of rules.dir this config changed beside the gateway's (either may be the one), or none (the gateway's own).
 * The gateway's own refused is a kernel without a module they need, or a bug of vlan-gateway: said, so that nobody
 * looks for it in their templates.
 */
export function gatewayRefusal(error: ApplyError): string {
  const table = error.commitRefusal?.table ?? (error.step.kind === 'table' ? error.step.table : '');
  const ours = 'a kernel without a module it needs, or a bug of vlan-gateway: please report it';
  if (error.failedLine !== undefined && error.failedLine !== 'COMMIT') {
    return `the kernel refuses a rule of the ${table} table the gateway renders from the config, not one of rules.dir (${ours})`;
  }
  const user = error.commitRefusal?.userChains ?? [];
  if (user.length > 0) {
    return `the kernel refuses the ${table} table, for a rule of rules.dir (${user.join(', ')}) or one the gateway renders from the config: `
      + 'iptables-legacy names no rule, and this config changes both';
  }
  return `the kernel refuses the ${table} table as the gateway renders it from the config, with no rule of rules.dir changed (${ours})`;
}

/** Why a watch could not be set, in words (inotify's limits named: they are what to raise). */
function watchFailure(error: unknown): string {
  switch ((error as NodeJS.ErrnoException).code) {
    case 'ENOENT': return 'it does not exist';
    case 'EACCES': return 'permission denied';
    case 'ENOTDIR': return 'a part of the path is not a directory';
    case 'ENOSPC': return 'no inotify watches left: raise fs.inotify.max_user_watches';
    case 'EMFILE': return 'no inotify instances left: raise fs.inotify.max_user_instances';
    default: return error instanceof Error ? error.message : String(error);
  }
}
