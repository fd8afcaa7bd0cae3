/**
 * What a pass says about the VLANs' and the uplink's NICs, once, as it appears: a binding's note, a NIC lost since the
 * last good pass, and one there again. Pure: from the desired state that pass planned and this pass's.
 */
import type { Link } from '../observe/facts.js';
import { isPlainWait, namesUnclaimedNics, unclaimedNics, uplinkUnnamed } from '../plan/match.js';
import type { Desired } from '../plan/types.js';
import { uplinkOverlaps } from '../plan/warnings.js';

export interface Notice {
  readonly fields: Record<string, string | number | readonly string[] | undefined>;
  readonly message: string;
  /**
   * Default warn; info where nothing need be wrong (a VLAN not attached yet, beside a NIC of no VLAN); debug for each
   * VLAN of a notice that says many at once.
   */
  readonly level?: 'debug' | 'info' | 'warn';
}

/** How many VLANs a notice about many names in its message; the rest are counted (its `vlans` field lists them all). */
const VLANS_NAMED = 5;

/**
 * One notice for the VLANs that lost (or got back) their NICs in one pass: one VLAN's own, or, for several (Docker
 * detaches every network of a Compose project at once: 100 lines in a burst), one line naming the first few and
 * counting the rest, and each VLAN's own at debug.
 */
function vlansNotice(each: readonly Notice[], vlans: ReadonlyArray<{ name: string; nic: string }>, many: (named: string) => string,
  level: Notice['level']): Notice[] {
  if (each.length <= 1) return [...each];
  const named = vlans.slice(0, VLANS_NAMED).map((v) => `${v.name} on ${v.nic}`).join(', ')
    + (vlans.length > VLANS_NAMED ? ` and ${vlans.length - VLANS_NAMED} more` : '');
  return [{ fields: { vlans: vlans.map((v) => v.name) }, message: many(named), ...(level ? { level } : {}) }, ...each.map((n) => ({ ...n, level: 'debug' as const }))];
}

/**
 * The end of a note that was said as it appeared (and is said no more): told once, at info, with what it was. The last
 * word in the log about the uplink or a VLAN was otherwise the warning, while /status had long stopped showing it.
 */
const noteEnded = (fields: Notice['fields'], now: string, was: string): Notice => ({ fields, message: `${now} (it was: ${was})`, level: 'info' });

export function bindingNotices(before: Desired | undefined, desired: Desired): Notice[] {
  const notices: Notice[] = [];
  // A note on a bound uplink (an snatTo it does not hold, a gateway off its networks) is logged once, as it appears.
  const { uplink } = desired;
  if (uplink.nic && uplink.note && uplink.note !== before?.uplink.note) notices.push({ fields: { uplink: uplink.nic.name }, message: uplink.note });
  // And its end, on the NIC it had: the warning above ("eth0 is down: no default route is set until it is up") was
  // otherwise never answered, the route put back showing only among a pass's changes.
  if (uplink.nic && !uplink.note && before?.uplink.nic?.name === uplink.nic.name && before.uplink.note) {
    notices.push(noteEnded({ uplink: uplink.nic.name }, `the uplink ${uplink.nic.name} is in order again`, before.uplink.note));
  }
  // So is a bound VLAN's (two NICs in its subnet: the one used is named), and its end: the NIC it did not use detached
  // (or the one it used, and it is on the other now: "vlan office on eth3 is in order again").
  for (const b of desired.vlans) {
    const was = before?.vlans.find((v) => v.vlan.name === b.vlan.name);
    if (b.nic && b.note && b.note !== was?.note) notices.push({ fields: { vlan: b.vlan.name, interface: b.nic.name }, message: b.note });
    if (b.nic && !b.note && was?.nic && was.note) notices.push(noteEnded({ vlan: b.vlan.name, interface: b.nic.name }, `vlan ${b.vlan.name} on ${b.nic.name} is in order again`, was.note));
  }
  // A VLAN or the uplink that had its NIC and waits now cuts hosts off: said once, when it happens (a NIC
  // detached is usually Docker's doing; a gateway address gone with Docker's own, which the kernel removes
  // with it, is not).
  if (before?.uplink.nic && !uplink.nic) notices.push({ fields: { uplink: before.uplink.nic.name, note: uplink.note }, message: `the uplink lost its NIC (${before.uplink.nic.name}): the VLANs have no way out until it is back` });
  // An uplink waiting from the start, or waiting for something else now, says what for, once (info, as a VLAN's wait:
  // Docker may attach it a moment later); its NICs are then not told as networks no VLAN is for (unclaimedNicNotices).
  if (!uplink.nic && uplink.note && !before?.uplink.nic && uplink.note !== before?.uplink.note) {
    notices.push({ fields: { note: uplink.note }, message: `the uplink is not routed: ${uplink.note}`, level: 'info' });
  }
  // Its return too, after a pass without it (it shows among the changes only as a chain rewritten, which does not
  // answer the warning above). A VLAN's, below.
  if (before && !before.uplink.nic && uplink.nic) notices.push({ fields: { uplink: uplink.nic.name }, message: `the uplink is on ${uplink.nic.name}: the VLANs have a way out`, level: 'info' });
  const lost: Notice[] = [];
  const lostVlans: Array<{ name: string; nic: string }> = [];
  const back: Notice[] = [];
  const backVlans: Array<{ name: string; nic: string }> = [];
  for (const b of desired.vlans) {
    const was = before?.vlans.find((v) => v.vlan.name === b.vlan.name);
    const had = was?.nic;
    // A VLAN's return (or its NIC attached after the start) is told too, as the uplink's is: its gateway address
    // added, among the changes, did not answer the warning about its loss.
    if (before && !had && b.nic) {
      back.push({ fields: { vlan: b.vlan.name, interface: b.nic.name }, message: `vlan ${b.vlan.name} is on ${b.nic.name}: its hosts are routed`, level: 'info' });
      backVlans.push({ name: b.vlan.name, nic: b.nic.name });
    }
    if (had && !b.nic) {
      lost.push({ fields: { vlan: b.vlan.name, interface: had.name, note: b.note }, message: `vlan ${b.vlan.name} lost its NIC (${had.name}): its hosts are cut off until it is back` });
      lostVlans.push({ name: b.vlan.name, nic: had.name });
    }
    // A waiting VLAN's note that says more than "not attached yet" is said once too, as it appears: `docker logs` is
    // where a user looks when a VLAN is not routed. A NIC in its subnet it may not take is a warning; NICs that are
    // no VLAN's are told (info): one may be this VLAN's network under another subnet (a typo in the config), but
    // also the next VLAN's, a moment before the gateway binds it, or a network that is no VLAN's.
    else if (!b.nic && b.note !== undefined && b.note !== was?.note && !isPlainWait(b)) {
      notices.push({ fields: { vlan: b.vlan.name }, message: `vlan ${b.vlan.name} is not routed: ${b.note}`, ...(namesUnclaimedNics(b) ? { level: 'info' as const } : {}) });
    }
    // What such a warning said ends, the VLAN still waiting, now only for its NIC to be attached (the NIC it could not
    // take detached): told once, at info, or its last word would stay the warning. Not the end of a note told as
    // information (NICs no VLAN took, named): that VLAN only waits, as it did, and nothing was wrong.
    else if (!b.nic && isPlainWait(b) && was && !was.nic && was.note !== undefined && !isPlainWait(was) && !namesUnclaimedNics(was)) {
      notices.push(noteEnded({ vlan: b.vlan.name }, `vlan ${b.vlan.name} is not routed, now ${b.note}`, was.note));
    }
  }
  // A VLAN's subnet that overlapped the uplink's network (a warning of the plan's, logged as it appeared) and does no
  // more, the uplink on a NIC then and now (without one nothing is said of its networks) and the VLAN still configured.
  // (The same VLAN overlapping otherwise now, another address of the uplink's, is a warning of its own, said as it appears.)
  if (before?.uplink.nic && uplink.nic) {
    const still = new Set(uplinkOverlaps(uplink, desired.vlans).map((o) => o.vlan));
    for (const o of uplinkOverlaps(before.uplink, before.vlans)) {
      if (still.has(o.vlan) || !desired.vlans.some((b) => b.vlan.name === o.vlan)) continue;
      notices.push(noteEnded({ vlan: o.vlan, uplink: uplink.nic.name }, `vlan ${o.vlan}'s subnet overlaps no network of the uplink's now`, o.warning));
    }
  }
  notices.push(...vlansNotice(lost, lostVlans, (named) => `${lostVlans.length} VLANs lost their NICs (${named}): their hosts are cut off until they are back`, undefined));
  notices.push(...vlansNotice(back, backVlans, (named) => `${backVlans.length} VLANs are on their NICs (${named}): their hosts are routed`, 'info'));
  return notices;
}

/**
 * A NIC with an address that no VLAN took and that is not the uplink: a network connected to the container that the
 * config has no VLAN for (a `vlans` entry forgotten, or a subnet typed wrong while every VLAN is bound elsewhere),
 * which was silence: nothing waits, and nothing is routed. Told once per NIC and addresses, as it appears, as
 * information (a management network may be connected on purpose); not where a waiting VLAN's note names it already.
 * Nor while the uplink waits for its NIC: the NIC it is meant to take (uplink.gateway or uplink.interface typed
 * wrong) would be told as "not the uplink", with a VLAN as the way to have it routed; the uplink's own note says
 * what it waits for, and a NIC still unclaimed once it has one is told then.
 * `before`: what the last pass found unclaimed (undefined at the first), returned anew as `unclaimed`.
 */
export function unclaimedNicNotices(before: ReadonlyMap<string, string> | undefined, desired: Desired, links: readonly Link[]): { notices: Notice[]; unclaimed: Map<string, string> } {
  // Unless nothing names the uplink and there is no default route (a router of internal networks only): no NIC is
  // the one meant for it then, and a forgotten vlans entry would be silence again.
  if (!desired.uplink.nic && !uplinkUnnamed(desired.uplink)) return { notices: [], unclaimed: new Map(before ?? []) };
  const unclaimed = unclaimedNics(desired.vlans, links, desired.uplink.nic?.name);
  const waitingNamesThem = desired.vlans.some(namesUnclaimedNics);
  const notices: Notice[] = [];
  for (const [nic, held] of unclaimed) {
    if (waitingNamesThem || before?.get(nic) === held) continue;
    notices.push({ fields: { interface: nic }, level: 'info', message: `${nic} has ${held}, in no VLAN of the config, and is not the uplink: the gateway does not route it (a VLAN whose subnet holds its address would be)` });
  }
  return { notices, unclaimed };
}

/** An up NIC without carrier (read so: `carrier` absent is not known, and taken as there). */
export const noCarrier = (nic: Link): boolean => nic.up && nic.carrier === false;

const noCarrierSays = (subject: string, what: string) => `${subject} has no carrier (cable out, peer or parent link down): ${what} until it has`;
export const UPLINK_NO_CARRIER = 'the VLANs have no way out';
export const VLAN_NO_CARRIER = 'its hosts cannot reach the gateway';

/** What /status says of a bound NIC: the planner's note on it, and that it has no carrier if so. */
export function carrierNote(nic: Link, note: string | undefined, what: string): string | undefined {
  if (!noCarrier(nic)) return note;
  return note ? `${note}; ${noCarrierSays(nic.name, what)}` : noCarrierSays(nic.name, what);
}

interface CarrierView {
  readonly vlans: ReadonlyArray<{ readonly vlan: { readonly name: string }; readonly nic?: Link }>;
  readonly uplink: { readonly nic?: Link };
  readonly links: readonly Link[];
}

/** What a carrier line is told of: the uplink's NIC, or a VLAN's, as one pass's view binds them. */
interface CarrierSubject {
  /** The subject and its NIC: a VLAN bound to another NIC is another subject. */
  readonly key: string;
  readonly subject: string;
  readonly fields: Notice['fields'];
  readonly what: string;
  readonly lacking: boolean;
  /** Administratively up (a NIC down has no carrier to speak of: `lacking` is false). */
  readonly up: boolean;
}

function carrierSubjects(view: CarrierView): CarrierSubject[] {
  const subjects: CarrierSubject[] = [];
  const add = (key: string, subject: string, nic: Link, fields: Notice['fields'], what: string) => {
    const link = view.links.find((l) => l.name === nic.name);
    if (link) subjects.push({ key, subject, fields, what, lacking: noCarrier(link), up: link.up });
  };
  const uplink = view.uplink.nic;
  if (uplink) add(`uplink ${uplink.name}`, `the uplink ${uplink.name}`, uplink, { uplink: uplink.name }, UPLINK_NO_CARRIER);
  for (const b of view.vlans) {
    if (b.nic) add(`vlan ${b.vlan.name} ${b.nic.name}`, `vlan ${b.vlan.name}'s NIC ${b.nic.name}`, b.nic, { vlan: b.vlan.name, interface: b.nic.name }, VLAN_NO_CARRIER);
  }
  return subjects;
}

/**
 * The uplink's or a VLAN's NIC that lost its carrier (or has none when first seen), and one that has it again. Nothing
 * in the plan changes with a carrier: without these lines the log would not say why the VLANs lost the Internet.
 *
 * A carrier that flaps (a bad cable, a port going up and down) is a link event and so a pass each time, 100 ms apart:
 * each NIC is told at most `lines` times in `intervalMs` (a loss and its return, told as they happen); the changes
 * after are held, and the first pass once the interval is over (a drift check, at the latest) tells where the carrier
 * stands, with `changes`: how many there were since the last line told. /status and the gauges follow every change.
 */
export class CarrierLog {
  private readonly told = new Map<string, { lacking: boolean; changes: number; times: number[]; up: boolean }>();

  constructor(private readonly intervalMs = 30_000, private readonly lines = 2) {}

  /** What a good pass's view tells, at `now` (monotonic ms). A failed pass's view is not given: it says nothing. */
  notices(view: CarrierView, now: number): Notice[] {
    const notices: Notice[] = [];
    const subjects = carrierSubjects(view);
    for (const key of this.told.keys()) if (!subjects.some((s) => s.key === key)) this.told.delete(key);
    for (const s of subjects) {
      // First seen: as if it had had its carrier, so that one without it is told.
      const entry = this.told.get(s.key) ?? { lacking: false, changes: 0, times: [], up: false };
      this.told.set(s.key, entry);
      const justUp = s.up && !entry.up;
      entry.up = s.up;
      // The first look at a NIC just seen or just brought up: a veth or macvlan has its carrier some milliseconds
      // after `up` (the kernel's link watch), and that carrier's arrival is a link event, so a pass follows. Told
      // now, each NIC Docker attached was a loss and a return in the log, which also spent the flap limit's lines and
      // held back a real loss that came soon after. Without it still at the next pass, it is told then.
      if (justUp && s.lacking) continue;
      if (s.lacking !== entry.lacking) {
        entry.lacking = s.lacking;
        entry.changes++;
      }
      if (entry.changes === 0) continue;
      entry.times = entry.times.filter((t) => now - t < this.intervalMs);
      if (entry.times.length >= this.lines) continue;
      const fields = entry.changes > 1 ? { ...s.fields, changes: entry.changes } : s.fields;
      notices.push(s.lacking ? { fields, message: noCarrierSays(s.subject, s.what) } : { fields, message: `${s.subject} has its carrier again`, level: 'info' });
      entry.changes = 0;
      entry.times.push(now);
    }
    return notices;
  }
}
