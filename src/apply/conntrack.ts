/**
 * Clearing the UDP flows a change of the port forwards leaves going the wrong way (plan/conntrack.ts), once the nat
 * table is written: one `conntrack -L` of the UDP entries (filtered to the port where the clears are for one), the
 * stale ones picked as the listing comes, in slices that let the event loop turn (ListingReader), then one
 * `conntrack -D` per address and port that has stale entries (deleteFilters), a few at a time. A forwarded range of
 * 1,000 ports with one client stuck on one of them is two processes, not 1,000: conntrack takes no range of ports
 * (`--orig-port-dst 6000-6010` is read as 6000).
 *
 * Each `conntrack -D` reads the whole table: conntrack-tools (1.4.7 in Debian 12, 1.4.8 in Alpine; src/conntrack.c,
 * CT_DELETE) dumps every entry of the family and matches the filter itself, handing the kernel only the family and a
 * mark; so does `-L` (and a status). At 100,000 entries that is about 0.25 s of CPU per delete here, and the deletes
 * are as many as the addresses and ports with stale flows. Nothing in the tool does it with fewer reads: a filter
 * takes one value per option, no set or range of ports; `-R FILE` runs each line as a command of its own (a read of
 * the table per `-D` line), and `-R -` opens /dev/stdin by name, which fails on the socket Node gives a child as its
 * stdin; `-A` cannot change an entry in place (1.4.7 asks with NLM_F_EXCL: EEXIST, seen with strace), and `-U`
 * reads the whole table as `-D` does.
 *
 * Not part of the atomic write: the rules stay applied whatever happens here, and what could not be cleared is said
 * as a warning. A conntrack that is not installed is said as such; one killed or unable to start is a failure like
 * any other, never taken for one that is missing.
 */
import { asRun, CommandError, shownCommand, type CommandRunner } from '../exec/runner.js';
import { entryAddresses } from '../observe/parse-conntrack.js';
import { portText, StalePicker } from '../plan/conntrack.js';
import type { ConntrackClear, Warning } from '../plan/types.js';

export interface FlowsCleared {
  /** The stale entries found, and deleted (or gone by themselves meanwhile). */
  readonly cleared: number;
  /** The conntrack tool is not installed: nothing was cleared (CONNTRACK_MISSING says so). */
  readonly missing?: boolean;
  /** What could not be cleared, and why (a failure other than the tool missing). */
  readonly warning?: string;
}

export const CONNTRACK_MISSING = 'the conntrack tool is not installed (not on the PATH): when a UDP port forward is added, removed or changed, '
  + 'the UDP flows it leaves going the wrong way are not cleared (a client that was sending to the port before it was forwarded stays '
  + 'with the gateway, and one forwarded by a forward since removed or moved keeps going to the old host, while they keep sending); '
  + 'install conntrack-tools (Alpine: apk add conntrack-tools; Debian: apt-get install conntrack), as the image does';

export const UNPOLICED_CONNTRACK_MISSING = 'the conntrack tool is not installed (not on the PATH): flows forwarded before the policy was in place '
  + '(between the NICs being attached and this start) keep the verdict and the NAT (none) they started with while they go on; '
  + 'install conntrack-tools (Alpine: apk add conntrack-tools; Debian: apt-get install conntrack), as the image does';

/**
 * What a clear of the flows forwarded without the policy or the NAT (Plan.unpoliced) says it did. `started`: said by
 * the supervisor's start pass, where the NICs came with ip_forward on before it (a container's start).
 */
export function unpolicedClearedMessage(cleared: number, unpoliced: { readonly bypassed?: true }, started = false): string {
  const flows = `${cleared} flow${cleared === 1 ? '' : 's'}`;
  const how = unpoliced.bypassed
    ? 'forwarded while a jump of the gateway\'s was missing or bypassed (put back now)'
    : `forwarded before the policy was in place${started ? ' (the NICs were attached with ip_forward on before the gateway started)' : ''}`;
  return `cleared ${flows} ${how}: their next packets meet the policy and the NAT`;
}

/** CONNTRACK_MISSING as a plan's warning (said by a pass with a clear to do, or that would have one: plan). */
export const CONNTRACK_MISSING_WARNING: Warning = { kind: 'conntrack_missing', text: CONNTRACK_MISSING };

/** What a clear's outcome (clearStaleFlows') has to say as a plan's warning, if anything. */
export function flowsWarning(outcome: FlowsCleared | undefined): Warning | undefined {
  if (outcome?.missing) return CONNTRACK_MISSING_WARNING;
  return outcome?.warning === undefined ? undefined : { kind: 'flows_not_cleared', text: outcome.warning };
}

/** Is the conntrack tool missing here? Only a program that is not there says yes (for `plan`, which clears nothing). */
export async function conntrackMissing(runner: CommandRunner): Promise<boolean> {
  try {
    await runner.run(['conntrack', '--version'], { allowFailure: true });
    return false;
  } catch (error) {
    return error instanceof CommandError && error.notFound;
  }
}

const what = (clears: readonly ConntrackClear[]) => [...new Set(clears.map((c) => `${portText(c.ports)} (port forward ${c.forward})`))].join(', ');

/** How many `conntrack -D` run at once. */
const DELETES_AT_ONCE = 4;
/** What `conntrack -D` says (exit 1) when its entry is gone already (expired, or made again by the new rules). */
const NONE_DELETED = /: 0 flow entries have been deleted\.$/m;
/**
 * What `conntrack -D` says (exit 1) when an entry it listed was gone by the time it deleted it: it stops there, the
 * entries after it left in place. Seen with real flows whenever deletes of thousands of entries run side by side (two
 * ports of a forwarded range, 20,000 stale flows: 4 times in 5, each delete stopped part-way, some several times
 * running); an entry that expires between the two can do it too. Such a delete runs again, alone, once the others are
 * done: that deletes the rest.
 */
const ENTRY_GONE = /: Operation failed: such conntrack doesn't exist$/m;
/** How many times a delete that keeps finding an entry gone runs alone. */
const ALONE_ATTEMPTS = 5;

/** How long the pick may hold the event loop at a time (the supervisor serves /metrics and /healthz from it). */
const SLICE_MS = 4;
/** How much of the listing is read between two looks at the clock (about 400 lines). */
const SLICE_CHARS = 64 * 1024;

/**
 * Lines of a listing to a picker as the pieces come, never for more than SLICE_MS at a time: with 100,000 UDP entries
 * (15 MB of text) `conntrack -L` took the event loop for 0.6-1.3 s in one go when the listing was split and parsed
 * whole, and /metrics, /healthz and the supervisor's timers waited that long. A piece is cut in slices of at most
 * SLICE_CHARS; past SLICE_MS, the rest waits for the next turn of the loop (setImmediate).
 */
class ListingReader {
  private readonly slices: string[] = [];
  private tail = '';
  private draining = false;
  private done: Promise<void> = Promise.resolve();

  constructor(private readonly take: (line: string) => void) {}

  push(piece: string): void {
    for (let i = 0; i < piece.length; i += SLICE_CHARS) this.slices.push(piece.slice(i, i + SLICE_CHARS));
    if (!this.draining) this.done = this.drain();
  }

  /** Once the listing is all pushed: resolves when every line has been taken. */
  async end(): Promise<void> {
    await this.done;
    if (this.tail !== '') this.take(this.tail);
    this.tail = '';
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      let since = performance.now();
      while (this.slices.length > 0) {
        if (performance.now() - since >= SLICE_MS) {
          await new Promise<void>((resolve) => setImmediate(resolve));
          since = performance.now();
        }
        const text = this.tail + this.slices.shift()!;
        const last = text.lastIndexOf('\n');
        if (last < 0) {
          this.tail = text;
          continue;
        }
        this.tail = text.slice(last + 1);
        for (let start = 0; start <= last;) {
          const end = text.indexOf('\n', start);
          this.take(text.slice(start, end));
          start = end + 1;
        }
      }
    } finally {
      this.draining = false;
    }
  }
}

/**
 * Runs `conntrack -D` with each filter, DELETES_AT_ONCE at a time; one that stopped at an entry gone meanwhile runs
 * again alone (ENTRY_GONE). Throws the first failure (a delete that found nothing to delete is none).
 */
async function runDeletes(runner: CommandRunner, filters: readonly string[][]): Promise<void> {
  const queue = [...filters];
  let failure: unknown;
  const again: string[][] = [];
  /** Runs one delete; what it said when it stopped at an entry gone (the rest of its entries are still there). */
  const remove = async (filter: string[]): Promise<string | undefined> => {
    const argv = ['conntrack', ...filter];
    const result = await runner.run(argv, { allowFailure: true }).catch((error: unknown) => ({ error }));
    if ('error' in result) failure ??= result.error;
    else if (result.exitCode !== 0 && !NONE_DELETED.test(result.stderr)) {
      if (ENTRY_GONE.test(result.stderr)) return result.stderr;
      failure ??= new CommandError(asRun(runner, argv), result.exitCode, result.stderr);
    }
    return undefined;
  };
  const worker = async () => {
    for (let filter = queue.shift(); filter && failure === undefined; filter = queue.shift()) {
      if (await remove(filter) !== undefined) again.push(filter);
    }
  };
  await Promise.all(Array.from({ length: DELETES_AT_ONCE }, worker));
  for (const filter of again) {
    for (let attempt = 1; failure === undefined; attempt++) {
      const stopped = await remove(filter);
      if (stopped === undefined) break;
      if (attempt === ALONE_ATTEMPTS) failure = new CommandError(asRun(runner, ['conntrack', ...filter]), 1, stopped);
    }
  }
  if (failure !== undefined) throw failure;
}

/** Never throws: the outcome says what was cleared, or why not. */
export async function clearStaleFlows(runner: CommandRunner, clears: readonly ConntrackClear[]): Promise<FlowsCleared> {
  const ports = new Set(clears.map((c) => portText(c.ports)));
  const single = ports.size === 1 && clears[0]!.ports[0] === clears[0]!.ports[1] ? ['--orig-port-dst', String(clears[0]!.ports[0])] : [];
  try {
    const picker = new StalePicker(clears);
    const reader = new ListingReader((line) => picker.take(line));
    await runner.run(['conntrack', '-L', '-p', 'udp', ...single], { onStdout: (piece) => reader.push(piece) });
    await reader.end();
    await runDeletes(runner, picker.deletes());
    return { cleared: picker.stale.length };
  } catch (error) {
    if (error instanceof CommandError && error.notFound) return { cleared: 0, missing: true };
    const why = error instanceof CommandError ? error.message : String((error as Error)?.message ?? error);
    return {
      cleared: 0,
      warning: `the UDP flows to ${what(clears)} could not be cleared: ${why}. The rules are applied; those flows keep going where `
        + `they went while they keep sending (clear them by hand: ${shownCommand(runner.prefix, 'conntrack -D -p udp -d <the gateway\'s address> --orig-port-dst PORT')})`,
    };
  }
}

/**
 * The entries of the flows the namespace forwarded before the gateway's policy was there (Plan.unpoliced), and the
 * deletes that take them: every entry whose original source and destination are both other hosts' (not one of
 * `local`, the gateway's own addresses, nor loopback: Docker's DNS, the health check) and that was not NATed (its
 * reply tuple is its original swapped), any protocol, one `conntrack -D -s SRC -d DST -r DST -q SRC` per pair of
 * hosts. Pure.
 *
 * A NATed flow was set up by a NAT that was there, ours or the one a router had before the gateway: not one
 * forwarded with none, as what comes before the policy in a container is (nothing in its namespace NATs a forwarded
 * flow then). It goes on as any flow a policy change finds (the gateway does not cut tracked connections), and its
 * entry is left alone, as is the reply tuple filter's doing for the same pair's other entries: deleted, a flow
 * masqueraded to the Internet lost its mapping, and its server's next packet reached the gateway itself, which
 * reset the connection (a download that went on through a `down` and the `apply` after it).
 */
export class UnpolicedPicker {
  private readonly local: ReadonlySet<string>;
  private readonly pairs = new Map<string, string[]>();
  count = 0;

  constructor(local: readonly string[]) {
    this.local = new Set(local);
  }

  take(line: string): void {
    const a = entryAddresses(line);
    if (!a || this.isLocal(a.src) || this.isLocal(a.dst) || a.replySrc !== a.dst || a.replyDst !== a.src) return;
    this.count++;
    const key = `${a.src} ${a.dst}`;
    if (!this.pairs.has(key)) this.pairs.set(key, ['-D', '-s', a.src, '-d', a.dst, '-r', a.dst, '-q', a.src]);
  }

  deletes(): string[][] {
    return [...this.pairs.values()];
  }

  private isLocal(address: string): boolean {
    return this.local.has(address) || address.startsWith('127.') || address.includes(':');
  }
}

/** Clears the flows forwarded before the policy was there (see UnpolicedPicker). Never throws. */
export async function clearUnpolicedFlows(runner: CommandRunner, local: readonly string[]): Promise<FlowsCleared> {
  try {
    const picker = new UnpolicedPicker(local);
    const reader = new ListingReader((line) => picker.take(line));
    await runner.run(['conntrack', '-L'], { onStdout: (piece) => reader.push(piece) });
    await reader.end();
    await runDeletes(runner, picker.deletes());
    return { cleared: picker.count };
  } catch (error) {
    if (error instanceof CommandError && error.notFound) return { cleared: 0, missing: true };
    const why = error instanceof CommandError ? error.message : String((error as Error)?.message ?? error);
    return {
      cleared: 0,
      warning: `the flows forwarded before the gateway's policy was in place could not be cleared: ${why}. The rules are applied; `
        + `those flows keep the verdict and the NAT (none) they started with while they go on (clear them by hand: ${shownCommand(runner.prefix, 'conntrack -D -s HOST -d HOST')})`,
    };
  }
}
