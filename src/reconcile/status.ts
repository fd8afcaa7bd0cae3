/** The /status document: what a person or a script needs to see what the router is doing. */
import type { Config, InterfaceRef } from '../config/schema.js';
import type { Link } from '../observe/facts.js';
import type { Supervisor } from './supervisor.js';
import { carrierNote, noCarrier, UPLINK_NO_CARRIER, VLAN_NO_CARRIER } from './notices.js';
import { configHash } from './supervisor.js';

export interface ReloadState {
  at?: string;
  result?: 'success' | 'failure';
  errors: string[];
  /**
   * How many times a reload has read the config's files (a file change, a SIGHUP, a second look at files that moved
   * under a read), whatever came of it, and when the last read began: a script (or a test) that wrote the file can
   * tell a read that began after its write from one that was under way.
   */
  reads: number;
  lastReadAt?: string;
}

/** A VLAN's NIC set down that the last pass, failed, could not bring up (its error says why): it keeps its addresses. */
const downNote = (nic: Link): string | undefined => (nic.up ? undefined : `${nic.name} is down: its hosts cannot reach the gateway until it is up`);

/**
 * How the NIC is found (plan/match.ts), as the config says: by the name or MAC `interface` gives, else a VLAN's by an
 * address in its subnet, the uplink's by uplink.gateway's network, else by the default route. Said for a NIC not
 * found yet too: what the gateway is looking for.
 */
const foundBy = (ref: InterfaceRef | undefined): 'name' | 'mac' | undefined => (ref === undefined ? undefined : typeof ref === 'string' ? 'name' : 'mac');
const uplinkFoundBy = (uplink: Config['uplink']) => foundBy(uplink.interface) ?? (uplink.gateway !== undefined ? 'gateway' : 'route');

export function statusDocument(supervisor: Supervisor, reload: ReloadState, version: string): object {
  const view = supervisor.view;
  const links = view?.links ?? [];
  const { path, text, config } = supervisor.config;
  const conflicts = supervisor.conflicts?.conflicts;
  const vlans = config.vlans.map((vlan) => {
    const conflict = conflicts?.get(vlan.name);
    const binding = view?.vlans.find((b) => b.vlan.name === vlan.name);
    const nic = binding?.nic ? links.find((l) => l.name === binding.nic!.name) ?? binding.nic : undefined;
    const note = nic ? [carrierNote(nic, binding?.note, VLAN_NO_CARRIER), downNote(nic)].filter(Boolean).join('; ') || undefined : binding?.note;
    const holdsGateway = nic?.addresses.some((a) => a.address === vlan.gateway);
    return {
      name: vlan.name,
      id: vlan.id,
      subnet: vlan.subnet,
      gateway: vlan.gateway,
      interface: nic?.name ?? null,
      mac: nic?.mac ?? null,
      // As the config the last pass planned with says (a reload since may say otherwise until its pass).
      foundBy: foundBy((binding?.vlan ?? vlan).interface) ?? 'subnet',
      // Whether the NIC holds the gateway address (what the VLAN's hosts route through); null while it waits.
      gatewayOnNic: holdsGateway ?? null,
      addresses: nic ? nic.addresses.map((a) => `${a.address}/${a.prefix}`) : [],
      // up: bound, up, with carrier and holding its gateway address; bound without one of them (a pass that could not
      // add it or bring the NIC up, a NIC whose link is down): down.
      state: !view || !binding ? 'unknown' : !nic ? 'waiting' : nic.up && !noCarrier(nic) && holdsGateway ? 'up' : 'down',
      ...(note ? { note } : {}),
      // Another device answers ARP for the gateway address too (reconcile/conflicts.ts).
      ...(conflict ? { conflict: { mac: conflict.mac, since: conflict.since } } : {}),
    };
  });
  const uplink = view?.uplink.nic && (links.find((l) => l.name === view.uplink.nic!.name) ?? view.uplink.nic);
  const uplinkNote = uplink ? carrierNote(uplink, view?.uplink.note, UPLINK_NO_CARRIER) : view?.uplink.note;
  const health = supervisor.health();
  return {
    version,
    config: { path, hash: configHash(text) },
    backend: supervisor.backend ?? null,
    ready: supervisor.ready,
    healthy: health.healthy,
    ...(health.reason ? { unhealthyReason: health.reason } : {}),
    uplink: {
      interface: uplink?.name ?? null,
      mac: uplink?.mac ?? null,
      foundBy: uplinkFoundBy(config.uplink),
      addresses: uplink ? uplink.addresses.map((a) => `${a.address}/${a.prefix}`) : [],
      ...(uplinkNote ? { note: uplinkNote } : {}),
    },
    vlans,
    waiting: vlans.filter((v) => v.state === 'waiting').map((v) => v.name),
    warnings: [...supervisor.warned, ...(supervisor.conflicts?.warnings() ?? [])],
    lastReconcile: supervisor.lastRecord ?? null,
    reconciling: supervisor.running ? { ...supervisor.running, ...waitingFor(supervisor) } : null,
    lastSuccessfulReconcile: supervisor.lastSuccessAt ? new Date(supervisor.lastSuccessAt).toISOString() : null,
    driftRepairs: supervisor.driftCounts,
    reload: { lastAt: reload.at ?? null, lastResult: reload.result ?? null, lastErrors: reload.errors, reads: reload.reads, lastReadAt: reload.lastReadAt ?? null },
  };
}

/** The command the pass in flight waits for, and since when: a helper that hangs is named, not guessed at. */
function waitingFor(supervisor: Supervisor): { waitingFor?: { command: string; since: string } } {
  const waited = supervisor.waitingFor;
  return waited ? { waitingFor: { command: waited.command, since: new Date(waited.at).toISOString() } } : {};
}
