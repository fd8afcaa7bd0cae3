/**
 * Netlink events: a long-running `ip -o monitor link address route` child (through the command boundary). Each
 * event line is only a trigger; the reconcile reads the state afresh. If the child dies it is restarted after
 * a short delay, doubled at each exit that follows quickly (the namespace gone, say: it would otherwise be a
 * restart and a warning every second), and the restarts are reported at most once per 30 s. One that cannot be started
 * at all is tried again the same way; meanwhile only the passes on the drift schedule see the namespace change.
 */
import type { Child, CommandRunner } from '../exec/runner.js';
import { RateLimitedLog, type Logger } from '../log.js';
import { OUR_ADDRESS_METRIC, OUR_ROUTE_PROTO } from '../plan/chains.js';
import { listensToRouteEvents } from './netlink-listening.js';

/**
 * Whether an event line can change anything we plan from. IPv6 addresses cannot (VLANs, NIC matching and our
 * gateway addresses are IPv4), and every new NIC brings them: its link-local address appears once duplicate
 * address detection is done, a second or so after the NIC came up, which would otherwise cost a pass per NIC
 * (100 VLANs attached at once: a string of passes right after start).
 */
export function mayMatter(line: string): boolean {
  // Routes: the default route, and the networks routed through a NIC (the sources it may forward from). The
  // kernel's own (connected, local and broadcast routes, which come with each address) and IPv6's do not matter.
  if (/ proto kernel | table (?!main )/.test(line)) return false;
  // An IPv6 route (a router advertisement's, Docker's IPv6 default): nothing here routes IPv6.
  if (!/^(?:Deleted )?\d+: /.test(line) && /^(?:Deleted )?(?:[a-z]+ )?(?:default via )?[0-9a-f]*:[0-9a-f:]*[/ ]/.test(line)) return false;
  if (OUR_ROUTE_SET.test(line)) return false; // our own default route, set by our apply (one removed is drift)
  if (/^(?:Deleted )?\d+: \S+\s+inet6 /.test(line)) return false;
  // A gateway address of ours appearing is our own apply's doing (nobody else uses our metric): not news. One
  // disappearing is drift, and is a trigger.
  return !OUR_ADDRESS_ADDED.test(line);
}

const OUR_ADDRESS_ADDED = new RegExp(`^\\d+: \\S+\\s+inet \\S+ metric ${OUR_ADDRESS_METRIC} `);
const OUR_ROUTE_SET = new RegExp(`^default via \\S+ dev \\S+ proto ${OUR_ROUTE_PROTO} `);

/** A monitor that ran this long before it exited was working: its next restart waits the shortest delay again. */
const STABLE_MS = 10_000;
/**
 * How often /proc is looked at while a monitor has still to listen (at first; then less often, up to the longest step),
 * and for how long at most.
 */
const LISTEN_STEP_MS = 5;
const LISTEN_LONGEST_STEP_MS = 100;
export const LISTEN_GIVE_UP_MS = 10_000;

export class NetlinkMonitor {
  private child: Child | undefined;
  private stopped = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private readonly exitLog: RateLimitedLog;
  /** Exits in a row, each within STABLE_MS of its start: the next restart waits 2^n × restartDelayMs (capped). */
  private quickExits = 0;
  restarts = 0;

  constructor(
    private readonly runner: CommandRunner,
    log: Logger,
    private readonly onEvent: (line: string) => void,
    private readonly restartDelayMs = 1000,
    private readonly maxDelayMs = 30_000,
  ) {
    this.exitLog = new RateLimitedLog(log);
  }

  start(): void {
    if (this.stopped) return;
    const child = this.runner.start(['ip', '-o', 'monitor', 'link', 'address', 'route']);
    const startedAt = performance.now();
    this.child = child;
    child.onLine((line) => {
      if (mayMatter(line)) this.onEvent(line);
    });
    void child.exited.then((code) => {
      if (this.stopped || this.child !== child) return;
      this.restarts++;
      this.quickExits = performance.now() - startedAt < STABLE_MS ? this.quickExits + 1 : 0;
      const delay = Math.min(this.restartDelayMs * 2 ** Math.max(0, this.quickExits - 1), this.maxDelayMs);
      // One that could not be started at all (`ip` not on the PATH, no file descriptors left) was said to have been
      // killed by a signal: what failed, and what the gateway does without it, are said instead.
      const notStarted = child.startError?.();
      if (notStarted !== undefined) {
        const why = /\bENOENT\b/.test(notStarted) ? `${notStarted}: ip is not installed, or not on the PATH` : notStarted;
        this.exitLog.warn('not started', { error: notStarted, restarts: this.restarts, retryInMs: delay },
          `ip monitor could not be started (${why}); trying again in ${delay / 1000} s. Meanwhile the gateway does not see NICs, `
          + 'addresses or routes change as they happen: the next drift check (reconcile.schedule) finds them');
      } else {
        // How it ended, and what it said: `exitCode: null` alone told nobody that it was killed, nor why it failed.
        const said = child.stderrTail?.().trim().split('\n').at(-1) ?? '';
        const how = code === null ? 'was killed by a signal' : `exited with status ${code}`;
        this.exitLog.warn('exited', { exitCode: code, restarts: this.restarts, retryInMs: delay }, `ip monitor ${how}${said ? ` (${said})` : ''}; restarting it`);
      }
      this.restartTimer = setTimeout(() => {
        this.restartTimer = undefined;
        this.start();
        // Events may have been missed meanwhile: a pass reads the namespace again, once the new monitor listens (a
        // pass before that could not see a change made between its read and the subscription, and nothing would).
        void this.listening(LISTEN_GIVE_UP_MS).then(() => {
          if (!this.stopped) this.onEvent('monitor restarted');
        });
      }, delay);
    });
  }

  /**
   * Resolves true once the monitor started last listens for events (netlink-listening.ts), or when that cannot be
   * told (a child without a pid; /proc that does not say); false when it does not within `timeoutMs`, has exited, or
   * the monitor was stopped.
   */
  async listening(timeoutMs: number): Promise<boolean> {
    const child = this.child;
    if (child === undefined) return false;
    if (child.pid === undefined) return true;
    let exited = false;
    void child.exited.then(() => (exited = true));
    const deadline = performance.now() + timeoutMs;
    for (let step = LISTEN_STEP_MS; ; step = Math.min(step * 2, LISTEN_LONGEST_STEP_MS)) {
      if (this.stopped || exited || this.child !== child) return false;
      if ((await listensToRouteEvents(child.pid)) !== false) return !exited;
      if (performance.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, Math.min(step, Math.max(0, deadline - performance.now()))));
    }
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    await this.child?.stop();
  }
}
