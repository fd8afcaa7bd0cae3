/**
 * Netlink events: a long-running `ip -o monitor link address` child (through the command boundary). Each
 * event line is only a trigger; the reconcile reads the state afresh. If the child dies it is restarted after
 * a short delay, and the restart is reported.
 */
import type { Child, CommandRunner } from '../exec/runner.js';
import type { Logger } from '../log.js';
import { OUR_ADDRESS_METRIC } from '../plan/chains.js';

/**
 * Whether an event line can change anything we plan from. IPv6 addresses cannot (VLANs, NIC matching and our
 * gateway addresses are IPv4), and every new NIC brings them: its link-local address appears once duplicate
 * address detection is done, a second or so after the NIC came up, which would otherwise cost a pass per NIC
 * (100 VLANs attached at once: a string of passes right after start).
 */
export function mayMatter(line: string): boolean {
  if (/^(?:Deleted )?\d+: \S+\s+inet6 /.test(line)) return false;
  // A gateway address of ours appearing is our own apply's doing (nobody else uses our metric): not news. One
  // disappearing is drift, and is a trigger.
  return !OUR_ADDRESS_ADDED.test(line);
}

const OUR_ADDRESS_ADDED = new RegExp(`^\\d+: \\S+\\s+inet \\S+ metric ${OUR_ADDRESS_METRIC} `);

export class NetlinkMonitor {
  private child: Child | undefined;
  private stopped = false;
  private restartTimer: NodeJS.Timeout | undefined;
  restarts = 0;

  constructor(
    private readonly runner: CommandRunner,
    private readonly log: Logger,
    private readonly onEvent: (line: string) => void,
    private readonly restartDelayMs = 1000,
  ) {}

  start(): void {
    if (this.stopped) return;
    const child = this.runner.start(['ip', '-o', 'monitor', 'link', 'address']);
    this.child = child;
    child.onLine((line) => {
      if (mayMatter(line)) this.onEvent(line);
    });
    void child.exited.then((code) => {
      if (this.stopped || this.child !== child) return;
      this.restarts++;
      this.log.warn({ exitCode: code, restarts: this.restarts }, 'ip monitor exited; restarting it');
      this.restartTimer = setTimeout(() => {
        this.restartTimer = undefined;
        this.start();
        this.onEvent('monitor restarted'); // events may have been missed meanwhile
      }, this.restartDelayMs);
    });
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
