/**
 * IPv4 address conflict detection for the VLANs' gateway addresses (RFC 5227's probe; what NetworkManager and
 * systemd-networkd do), report-only. Linux does no duplicate-address detection: a gateway address that another
 * device on the VLAN holds too (a physical router left there, a mistyped config) is added silently, both answer
 * ARP, and the VLAN's hosts flip between them. The config says to take the address, so it is taken; this says so,
 * loudly: a log line, a warning in /status, and `vlan_gateway_address_conflict`.
 *
 * When: after a pass adds a gateway address, once its announce has gone out (apply/observer.ts announced()); after a pass,
 * for each gateway address held that was never probed (a supervisor restarted on a namespace that kept them); and at
 * the drift checks: one in conflict at every check, so a conflict put right goes, and the others every 5 minutes
 * (RECHECK_FREE_MS), so a new one is found. One
 * probe per VLAN at a time, none sooner than PROBE_MIN_GAP_MS after its last, PROBE_CONCURRENCY at once, never
 * awaited by a pass or /readyz, killed at stop. No arping, or no NET_RAW: one log line, and nothing is reported.
 *
 * A probe answered by another NIC of the gateway's that carries one of its networks (a VLAN's, the uplink) is no
 * conflict but is said too (warn line, /status warning): the two NICs share a segment and, with Linux's default
 * arp_ignore=0, answer for each other's addresses, so hosts there may take the wrong NIC's MAC and have their packets
 * dropped as forged. That answer is the only sign of it the gateway sees; with arp_ignore=1 there is none (nor harm).
 */
import { systemClock, type Clock } from '../clock.js';
import type { CommandRunner } from '../exec/runner.js';
import { CommandError } from '../exec/runner.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import { normalizeMac, probeOutcome, type ProbeOutcome } from '../observe/parse-arping.js';
import type { Step } from '../plan/types.js';
import { noCarrier } from './notices.js';
import type { SupervisorView } from './supervisor.js';

/** How many probes run at once (a probe that hears nothing lasts 2 s: 100 VLANs take 25 s). */
const PROBE_CONCURRENCY = 8;
/** No VLAN is probed again sooner than this after its last probe began, whatever the drift schedule. */
const PROBE_MIN_GAP_MS = 5000;
/**
 * A VLAN whose last probe heard nobody else is probed again at the first drift check this long after it: a new
 * conflict is found within minutes, and 100 VLANs cost two broadcasts and a process each per 5 minutes, not per 30 s
 * (at the default schedule, every drift check would otherwise keep 8 probes running for 25 s of each 30). A VLAN
 * in conflict, or not told about yet, is probed at every drift check: a conflict put right goes within one.
 */
export const RECHECK_FREE_MS = 300_000;
/** How long a pass's later passes leave an address it added to the probe that follows its announce (announced()). */
const ANNOUNCE_WAIT_MS = 30_000;
/** A probe lasts at most 3 s (-w 3); one that has not ended well after that is killed. */
const PROBE_TIMEOUT_MS = 10_000;

/** RFC 5227's probe, twice, a second apart (iputils' arping stops at the first answer: exit 1). */
const probeCommand = (nic: string, address: string): string[] => ['arping', '-D', '-c', '2', '-w', '3', '-I', nic, address];

export interface Conflict {
  /** The other device's MAC (the first that answered the last probe). */
  readonly mac: string;
  /** When the conflict was first seen (ISO time). */
  readonly since: string;
}

interface Entry {
  readonly vlan: string;
  readonly nic: string;
  readonly address: string;
  /** Our NIC's MAC (a reply from it is no conflict). */
  mac?: string;
  /** Queued or running. */
  busy: boolean;
  /** When its last probe began (monotonic). */
  lastStart: number;
  /** Whether a probe of it has told anything yet. */
  probed: boolean;
  conflict?: Conflict;
  /** Another NIC of the gateway's, one of its networks, answered the last probe: the two share one segment. */
  shared?: Shared;
}

/** A NIC of the gateway's that carries one of its networks: a VLAN's, or the uplink. */
interface NetworkNic {
  readonly nic: string;
  /** `vlan lab`, `the uplink`. */
  readonly what: string;
}

interface Shared extends NetworkNic {
  /** Its MAC, which answered. */
  readonly mac: string;
  /** When first heard (ISO time). */
  readonly since: string;
}

export class AddressConflicts {
  private readonly entries = new Map<string, Entry>();
  /** VLANs whose gateway address a pass added, until its announce has gone out (announced()), and since when. */
  private readonly announcing = new Map<string, number>();
  /** The gateway addresses the last pass left held (passed()): an announce of another is of no VLAN now. */
  private held: Map<string, Held> | undefined;
  /** Announces heard before the last pass returned: the next passed() probes those whose address it leaves held. */
  private readonly early = new Map<string, AddressAdd>();
  private readonly queue: Entry[] = [];
  private running = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  private stopped = false;
  /** A start of the queue is due (enqueue). */
  private kicked = false;
  /** The MACs of the gateway's NICs, as the last pass found them: a reply from one of them is no other device. */
  private ownMacs: readonly string[] = [];
  /** The NICs of the gateway's networks (VLANs, uplink) by MAC, as the last pass found them. */
  private networkNics = new Map<string, NetworkNic>();
  /**
   * The NICs up without carrier, as the last pass found them: a probe there is sent into a dead link and hears nobody
   * (arping exits 0), which would say a conflict is over, or that there is none, while nothing changed. Not probed
   * until their carrier is back (the link event brings a pass, the next drift check the probe).
   */
  private deaf = new Set<string>();
  /** Why detection is off (no arping, no NET_RAW), once found. */
  off: string | undefined;
  /** The last probe error said (an unknown one is logged once, not at every probe). */
  private saidFailure: string | undefined;

  constructor(
    private readonly runner: CommandRunner,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    /** The gaps between probes on its monotonic clock; a conflict's `since` on its wall clock. */
    private readonly clock: Clock = systemClock,
  ) {}

  private now(): number {
    return this.clock.monotonic();
  }

  /** The conflicts standing now, by VLAN. */
  get conflicts(): ReadonlyMap<string, Conflict & { readonly interface: string; readonly address: string }> {
    const out = new Map<string, Conflict & { interface: string; address: string }>();
    for (const e of this.entries.values()) if (e.conflict) out.set(e.vlan, { ...e.conflict, interface: e.nic, address: e.address });
    return out;
  }

  /**
   * One line per standing conflict, and per VLAN whose probe another of the gateway's networks' NICs answered, for
   * /status's warnings (and so `vlan-gateway status`).
   */
  warnings(): string[] {
    const conflicts = [...this.conflicts].map(([vlan, c]) => `vlan ${vlan}: another device (${c.mac}) answers ARP for the gateway address ${c.address} on `
      + `${c.interface} too (an address conflict, seen since ${c.since}): the VLAN's hosts send to whichever answered them last; take the address `
      + 'off that device, or give the VLAN another gateway');
    const shared = [...this.entries.values()].filter((e) => e.shared).map((e) => `${sharedMessage(e, e.shared!)} (seen since ${e.shared!.since})`);
    return [...conflicts, ...shared];
  }

  /**
   * A pass has succeeded, leaving the NICs as `view` says: addresses no longer held are forgotten (their conflict
   * goes with them), and those held that were never probed are probed, except the ones a pass added whose announce
   * has not gone out yet: their probe follows it (announced()).
   */
  passed(view: SupervisorView, steps: readonly Step[]): void {
    if (this.stopped || this.off) return;
    const held = heldAddresses(view);
    this.held = held;
    this.ownMacs = view.links.map((l) => l.mac).filter(Boolean);
    this.networkNics = networkNics(view);
    this.deaf = new Set(view.links.filter(noCarrier).map((l) => l.name));
    let changed = false;
    for (const [vlan, e] of this.entries) {
      const now = held.get(vlan);
      if (now?.nic === e.nic && now.address === e.address) {
        e.mac = now.mac;
        continue;
      }
      this.entries.delete(vlan);
      changed ||= e.probed;
      // Its warn line is not left standing without an end: the address it was about is no longer ours there.
      if (e.conflict) {
        this.log.info({ vlan, interface: e.nic, address: e.address, mac: e.conflict.mac }, `address conflict on vlan ${vlan} is no longer watched: `
          + `the gateway no longer holds ${e.address} on ${e.nic}`);
      }
      // Nor is a shared-segment warning's.
      if (e.shared) {
        this.log.info({ vlan, interface: e.nic, address: e.address, sharedWith: e.shared.nic, mac: e.shared.mac }, `vlan ${vlan}: ${e.shared.nic} `
          + `(${e.shared.what}) answering ARP on ${e.nic} for ${e.address} is no longer watched: the gateway no longer holds ${e.address} on ${e.nic}`);
      }
    }
    // The NIC that answered for one of ours, as this pass leaves the networks: its network renamed, it is said by its
    // new name; its network gone from the config (the NIC left in the namespace, answering still), it is a NIC of none
    // of the gateway's networks, which a probe does not warn of, and its warning goes now (the next probe tells
    // nothing, and would leave it standing); the NIC gone or unbound, likewise.
    for (const e of this.entries.values()) {
      if (!e.shared) continue;
      const now = this.networkNics.get(e.shared.mac);
      if (now?.nic === e.shared.nic) {
        if (now.what !== e.shared.what) e.shared = { ...e.shared, what: now.what };
        continue;
      }
      // The same NIC name with another MAC: Docker replaced the NIC (random MACs since Docker 25). The warning was of
      // the old MAC's answers; the next probe tells whether the new one answers too.
      const renewed = [...this.networkNics].find(([, n]) => n.nic === e.shared!.nic);
      const fields = { vlan: e.vlan, interface: e.nic, address: e.address, sharedWith: e.shared.nic, mac: e.shared.mac };
      if (renewed) {
        this.log.info(fields, `vlan ${e.vlan}: ${e.shared.nic} (${renewed[1].what}) has another MAC now (${renewed[0]}): the answers of ${e.shared.mac} `
          + `for ${e.address} on ${e.nic} are no longer warned of`);
      } else {
        this.log.info(fields, `vlan ${e.vlan}: ${e.shared.nic} is no longer the NIC of one of the gateway's networks (it was ${e.shared.what}'s): its `
          + `answers for ${e.address} on ${e.nic} are no longer warned of`);
      }
      delete e.shared;
    }
    const t = this.now();
    for (const s of steps) if (s.kind === 'address-add') this.announcing.set(s.vlan, t);
    // An announce heard before this pass returned (a slow accounting fill holds the pass after its announces went
    // out, or the pass failed there): probed now if what it announced is held, else dropped.
    for (const [vlan, s] of this.early) if (sameAddress(held.get(vlan), s)) this.announcing.delete(vlan);
    this.early.clear();
    for (const [vlan, h] of held) {
      const announcing = this.announcing.get(vlan);
      if (this.entries.has(vlan) || (announcing !== undefined && t - announcing < ANNOUNCE_WAIT_MS)) continue;
      this.enqueue(this.entry(vlan, h.nic, h.address, h.mac));
    }
    if (changed) this.updateGauge();
  }

  /**
   * The announce (`arping -U`) of a gateway address a pass added has gone out: the probe follows it. Not before it,
   * nor instead of it: the probe's sender address is 0.0.0.0, so it changes nobody's ARP cache, and hosts that hold
   * another MAC for the gateway (a replaced container, or the other holder's) must get ours at once; a probe first
   * would hold the announce back by its 2 s, for an answer that changes nothing we do. After it, the other holder
   * still answers the probe (it ignores an announce of its own address; a host that defends its address answers it
   * with its own, which the probe then hears too), and our kernel, which never resolves its own address, has no
   * neighbour entry for the answer to change.
   */
  announced(step: AddressAdd): void {
    if (this.stopped || this.off) return;
    // Not held as the last pass left the NICs: a later pass took the address back or moved it (a reload that
    // changed the gateway, a NIC Docker replaced) before this announce went out, and another device that holds it
    // now is no conflict of ours; or this announce's own pass has not returned yet (passed() takes it then).
    const held = this.held?.get(step.vlan);
    if (!sameAddress(held, step)) {
      this.early.set(step.vlan, step);
      return;
    }
    this.announcing.delete(step.vlan);
    const e = this.entries.get(step.vlan);
    this.enqueue(e && sameAddress(e, step) ? e : this.entry(step.vlan, step.nic, step.address, held!.mac));
  }

  /** Probes queued or running (0: every probe asked for has ended and been judged). */
  get probing(): number {
    return this.running + this.queue.length;
  }

  /**
   * The drift check: the gateway addresses held are probed again, those in conflict (or never told about) at most
   * once per PROBE_MIN_GAP_MS, the others once per RECHECK_FREE_MS.
   */
  recheck(): void {
    if (this.stopped || this.off) return;
    const t = this.now();
    for (const e of this.entries.values()) {
      const gap = e.conflict || !e.probed ? PROBE_MIN_GAP_MS : RECHECK_FREE_MS;
      if (t - e.lastStart >= gap) this.enqueue(e);
    }
  }

  /** Stops probing: the queue is dropped and the probes running are killed; resolves once they have ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.length = 0;
    this.abort.abort('the gateway is stopping');
    await Promise.allSettled([...this.inFlight]);
  }

  private entry(vlan: string, nic: string, address: string, mac?: string): Entry {
    const e: Entry = { vlan, nic, address, ...(mac ? { mac } : {}), busy: false, lastStart: -Infinity, probed: false };
    const before = this.entries.get(vlan);
    this.entries.set(vlan, e);
    if (before?.probed) this.updateGauge();
    return e;
  }

  private enqueue(e: Entry): void {
    if (e.busy) return;
    e.busy = true;
    this.queue.push(e);
    // Not inside the pass that asked (its spawns would be its time): once it has returned.
    this.kick();
  }

  /** next() at the next turn of the event loop (once, however often asked meanwhile). */
  private kick(): void {
    if (this.kicked) return;
    this.kicked = true;
    setImmediate(() => {
      this.kicked = false;
      this.next();
    });
  }

  private next(): void {
    while (!this.stopped && !this.off && this.running < PROBE_CONCURRENCY && this.queue.length > 0) {
      const e = this.queue.shift()!;
      // Its address gone (or moved) since it was queued, or its NIC without carrier: not probed for nothing.
      if (this.entries.get(e.vlan) !== e || this.deaf.has(e.nic)) {
        e.busy = false;
        continue;
      }
      this.running++;
      const probe = this.probe(e).finally(() => {
        this.running--;
        e.busy = false;
        this.inFlight.delete(probe);
        this.next();
      });
      this.inFlight.add(probe);
      // One spawn per turn of the event loop: each holds the thread for a few milliseconds (the fork, and the wait
      // for the child's exec, longer on a busy machine), and eight at once kept a scrape or /healthz waiting 40-100 ms.
      if (this.running < PROBE_CONCURRENCY && this.queue.length > 0) this.kick();
      return;
    }
  }

  private async probe(e: Entry): Promise<void> {
    e.lastStart = this.now();
    let outcome: ProbeOutcome;
    try {
      const result = await this.runner.run(probeCommand(e.nic, e.address), { allowFailure: true, timeoutMs: PROBE_TIMEOUT_MS, signal: this.abort.signal });
      outcome = probeOutcome(result, e.address, [...this.ownMacs, ...(e.mac ? [e.mac] : [])]);
    } catch (error) {
      const c = error instanceof CommandError ? error : undefined;
      outcome = probeOutcome({ exitCode: null, stdout: c?.stdout ?? '', stderr: c?.stderr ?? String((error as Error)?.message ?? error), notFound: c?.notFound ?? false }, e.address, this.ownMacs);
    }
    if (this.stopped) return;
    if (outcome.kind === 'unusable') return this.turnOff(outcome.reason);
    if (this.entries.get(e.vlan) !== e) return; // its address went (or moved) meanwhile: what it found is of no VLAN now
    if (this.deaf.has(e.nic)) return; // its carrier lost meanwhile: it heard nobody, which tells nothing
    const fields = { vlan: e.vlan, interface: e.nic, address: e.address };
    if (outcome.kind === 'own') {
      const other = this.networkNics.get(outcome.mac);
      // A NIC of the namespace's that carries none of the gateway's networks (a veth peer left in it, as in the
      // 100-VLAN bench namespace) answers for every address it holds, harmlessly: hosts do not send through it.
      if (other === undefined || other.nic === e.nic) {
        const reason = 'a NIC of the gateway\'s own answered (another of its NICs is on that network)';
        if (reason !== this.saidFailure) this.log.info(fields, `address conflict probe told nothing: ${reason}`);
        this.saidFailure = reason;
        return;
      }
      if (e.shared?.mac !== outcome.mac || e.shared.nic !== other.nic) {
        e.shared = { ...other, mac: outcome.mac, since: e.shared?.since ?? new Date(this.clock.wall()).toISOString() };
        this.log.warn({ ...fields, sharedWith: other.nic, mac: outcome.mac }, sharedMessage(e, e.shared));
      }
      return;
    }
    if (outcome.kind === 'failed') {
      // Its NIC gone or down as it ran (Docker disconnecting a network, a NIC flapped): not the probe's to say, and
      // at a project's `down` it would be a line for every VLAN. The pass that follows takes the NIC's change.
      if (outcome.nicAway) return;
      if (outcome.reason !== this.saidFailure) this.log.info({ vlan: e.vlan, interface: e.nic, address: e.address }, `address conflict probe told nothing: ${outcome.reason}`);
      this.saidFailure = outcome.reason;
      return;
    }
    if (e.shared) {
      this.log.info({ ...fields, sharedWith: e.shared.nic, mac: e.shared.mac }, `vlan ${e.vlan}: ${e.shared.nic} (${e.shared.what}) no longer answers ARP `
        + `on ${e.nic} for ${e.address}`);
      delete e.shared;
    }
    const before = e.conflict;
    const first = !e.probed;
    e.probed = true;
    if (outcome.kind === 'taken') {
      if (before?.mac !== outcome.mac) {
        e.conflict = { mac: outcome.mac, since: before?.since ?? new Date(this.clock.wall()).toISOString() };
        this.log.warn({ ...fields, mac: outcome.mac }, `address conflict on vlan ${e.vlan}: another device (${outcome.mac}) answers ARP for the gateway `
          + `address ${e.address} on ${e.nic} too; the VLAN's hosts send to whichever answered them last (the gateway keeps the address, as configured)`);
        this.updateGauge();
      }
    } else if (before) {
      delete e.conflict;
      this.log.info({ ...fields, mac: before.mac }, `address conflict on vlan ${e.vlan} is over: nobody else answers for ${e.address} on ${e.nic} now`);
      this.updateGauge();
    } else if (first) {
      this.updateGauge();
    }
  }

  /** Detection is off for good (until a restart): no arping, or it cannot work here. */
  private turnOff(reason: string): void {
    if (this.off) return;
    this.off = reason;
    this.queue.length = 0;
    this.entries.clear();
    this.log.warn({ reason }, `address conflict detection is off: ${reason}`);
    this.updateGauge();
  }

  /** One series per VLAN holding its gateway address and probed: 1 with the other MAC, else 0 (mac=""). */
  private updateGauge(): void {
    const gauge = this.metrics.addressConflict;
    gauge.reset();
    for (const e of this.entries.values()) {
      if (e.probed) gauge.set({ vlan: e.vlan, interface: e.nic, mac: e.conflict?.mac ?? '' }, e.conflict ? 1 : 0);
    }
    this.metrics.changed();
  }
}

type AddressAdd = Extract<Step, { kind: 'address-add' }>;

interface Held {
  readonly nic: string;
  readonly address: string;
  /** The NIC's own MAC. */
  readonly mac: string;
}

const sameAddress = (a: { nic: string; address: string } | undefined, b: { nic: string; address: string }): boolean => a?.nic === b.nic && a.address === b.address;

/**
 * Two of the gateway's networks on one segment, and Linux's default ARP settings (arp_ignore=0: a NIC answers for any
 * address of the namespace's): `e`'s probe for its gateway address was answered by `other`, whose network it is not.
 */
function sharedMessage(e: Entry, other: Shared): string {
  return `vlan ${e.vlan}: the gateway's NIC ${other.nic} (${other.what}, ${other.mac}) answers ARP on ${e.nic} for the gateway address ${e.address}: `
    + `${e.nic} and ${other.nic} are on one network segment, where each NIC of the gateway's answers for all of its addresses (Linux's default, `
    + `arp_ignore=0), so a host may take the wrong NIC's MAC and have its packets dropped as forged (reason="spoofed"); start the gateway with `
    + '--sysctl net.ipv4.conf.all.arp_ignore=1 --sysctl net.ipv4.conf.all.arp_announce=2 (README, "Which NIC answers ARP")';
}

/** The NICs of the gateway's networks, VLANs' and the uplink's, by MAC. */
function networkNics(view: SupervisorView): Map<string, NetworkNic> {
  const out = new Map<string, NetworkNic>();
  const macOf = (name: string) => view.links.find((l) => l.name === name)?.mac;
  for (const b of view.vlans) {
    const mac = b.nic && macOf(b.nic.name);
    if (mac) out.set(normalizeMac(mac), { nic: b.nic!.name, what: `vlan ${b.vlan.name}` });
  }
  const uplink = view.uplink.nic && macOf(view.uplink.nic.name);
  if (uplink && !out.has(normalizeMac(uplink))) out.set(normalizeMac(uplink), { nic: view.uplink.nic!.name, what: 'the uplink' });
  return out;
}

/** The VLANs whose NIC holds their gateway address, as the view leaves them: NIC, address and the NIC's MAC. */
function heldAddresses(view: SupervisorView): Map<string, Held> {
  const out = new Map<string, Held>();
  for (const b of view.vlans) {
    if (!b.nic) continue;
    const link = view.links.find((l) => l.name === b.nic!.name);
    if (link?.addresses.some((a) => a.address === b.vlan.gateway)) out.set(b.vlan.name, { nic: link.name, address: b.vlan.gateway, mac: link.mac });
  }
  return out;
}
