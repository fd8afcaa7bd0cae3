/**
 * The metrics a gateway exports: names and labels are a contract (README). A private Registry, never the
 * global one. Values that come from the kernel are written by the stats collector on its timer; the scrape only
 * serialises what is there, and the text is cached until something changes, so a scrape costs a string copy.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { DROP_REASONS, WARNING_KINDS } from '../plan/types.js';

/** What asked for a pass; `drift`: the stats collector's reading found our tables or sets not as planned. */
export type Trigger = 'start' | 'schedule' | 'drift' | 'netlink' | 'reload';
const TRIGGERS: readonly Trigger[] = ['start', 'schedule', 'drift', 'netlink', 'reload'];
export type DriftKind = 'rules' | 'jump' | 'address' | 'link' | 'route' | 'sysctl' | 'set';

export class Metrics {
  readonly registry = new Registry();
  private cached: string | undefined;

  readonly buildInfo = new Gauge({ name: 'vlan_gateway_build_info', help: 'Version of the gateway and of Node.js; always 1.', labelNames: ['version', 'node_version'], registers: [this.registry] });
  readonly reloads = new Counter({ name: 'vlan_gateway_config_reloads_total', help: 'Config reloads by result (success, failure).', labelNames: ['result'], registers: [this.registry] });
  readonly lastReloadOk = new Gauge({ name: 'vlan_gateway_config_last_reload_successful', help: '1 if the last config (re)load was valid, else 0.', registers: [this.registry] });
  readonly reconciles = new Counter({ name: 'vlan_gateway_reconciles_total', help: 'Reconcile passes by trigger and result (success, failure).', labelNames: ['trigger', 'result'], registers: [this.registry] });
  readonly reconcileSeconds = new Histogram({
    name: 'vlan_gateway_reconcile_duration_seconds', help: 'Time of one reconcile pass (observe, plan, apply).', labelNames: ['trigger'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [this.registry],
  });
  readonly lastSuccess = new Gauge({ name: 'vlan_gateway_last_successful_reconcile_timestamp_seconds', help: 'Unix time of the last successful reconcile.', registers: [this.registry] });
  /**
   * The plan's warnings (plan/warnings.ts) as the last good pass found them, by kind (each warning's, plan/types.ts): an
   * IPv6 hole had no series to alert on, and then one series that did not say which warning it counted.
   */
  readonly warnings = new Gauge({
    name: 'vlan_gateway_warnings', labelNames: ['kind'], registers: [this.registry],
    help: `Warnings the last successful reconcile found about the namespace, by kind (${WARNING_KINDS.join(', ')}); \`vlan-gateway status\` lists them with their fixes.`,
  });
  readonly driftRepairs = new Counter({ name: 'vlan_gateway_drift_repairs_total', help: 'Things found changed behind our back and put back, by kind.', labelNames: ['kind'], registers: [this.registry] });
  readonly restores = new Counter({ name: 'vlan_gateway_iptables_restores_total', help: 'iptables-restore runs by table and result.', labelNames: ['table', 'result'], registers: [this.registry] });
  readonly vlanUp = new Gauge({ name: 'vlan_gateway_vlan_up', help: '1 when the VLAN\'s NIC is found, up, has carrier and holds the gateway address, else 0.', labelNames: ['vlan', 'interface'], registers: [this.registry] });
  readonly uplinkUp = new Gauge({
    name: 'vlan_gateway_uplink_up', labelNames: ['interface'], registers: [this.registry],
    help: '1 when the uplink\'s NIC is found, up and has carrier, and the default route can go through it (uplink.gateway on one of its networks), else 0 (interface="": no NIC found).',
  });
  readonly addressConflict = new Gauge({
    name: 'vlan_gateway_address_conflict', labelNames: ['vlan', 'interface', 'mac'], registers: [this.registry],
    help: '1 when another device (mac) answers ARP for the VLAN\'s gateway address too (an address conflict), else 0 (mac=""). Only for VLANs holding their gateway address and probed; none while conflict detection is off.',
  });
  readonly rxBytes = this.ifCounter('vlan_gateway_interface_receive_bytes_total', 'Bytes received on a VLAN\'s NIC.');
  readonly rxPackets = this.ifCounter('vlan_gateway_interface_receive_packets_total', 'Packets received on a VLAN\'s NIC.');
  readonly rxDrops = this.ifCounter('vlan_gateway_interface_receive_drops_total', 'Received packets dropped on a VLAN\'s NIC.');
  readonly txBytes = this.ifCounter('vlan_gateway_interface_transmit_bytes_total', 'Bytes sent on a VLAN\'s NIC.');
  readonly txPackets = this.ifCounter('vlan_gateway_interface_transmit_packets_total', 'Packets sent on a VLAN\'s NIC.');
  readonly txDrops = this.ifCounter('vlan_gateway_interface_transmit_drops_total', 'Packets to send dropped on a VLAN\'s NIC.');
  readonly forwardedPackets = new Counter({ name: 'vlan_gateway_forwarded_packets_total', help: 'Forwarded packets by source and destination zone (VLAN name or uplink) and action.', labelNames: ['from', 'to', 'action'], registers: [this.registry] });
  readonly forwardedBytes = new Counter({ name: 'vlan_gateway_forwarded_bytes_total', help: 'Forwarded bytes by source and destination zone and action.', labelNames: ['from', 'to', 'action'], registers: [this.registry] });
  readonly natPackets = new Counter({ name: 'vlan_gateway_nat_packets_total', help: 'Packets that set up a NAT mapping (one per connection), by VLAN and kind.', labelNames: ['vlan', 'kind'], registers: [this.registry] });
  readonly natBytes = new Counter({ name: 'vlan_gateway_nat_bytes_total', help: 'Bytes of the packets that set up a NAT mapping, by VLAN and kind.', labelNames: ['vlan', 'kind'], registers: [this.registry] });
  readonly droppedPackets = new Counter({
    name: 'vlan_gateway_dropped_packets_total', labelNames: ['reason'], registers: [this.registry],
    help: 'Packets the gateway drops outside its forwarding policy, by reason: invalid (conntrack state), spoofed (a source its NIC may not forward from: a VLAN subnet\'s on another NIC, or one outside the VLAN\'s subnet and routed networks, or a broadcast address), unmanaged (from or to a NIC the gateway does not manage), waiting (to a VLAN whose NIC is not attached), hairpin (back out of the NIC it came in on; to a network routed behind a host of that VLAN it is forwarded).',
  });
  readonly droppedBytes = new Counter({ name: 'vlan_gateway_dropped_bytes_total', help: 'Bytes of the packets the gateway drops outside its forwarding policy, by reason.', labelNames: ['reason'], registers: [this.registry] });
  readonly conntrackEntries = new Gauge({ name: 'vlan_gateway_conntrack_entries', help: 'Connection-tracking entries in the gateway\'s namespace.', registers: [this.registry] });
  readonly conntrackLimit = new Gauge({ name: 'vlan_gateway_conntrack_limit', help: 'Maximum connection-tracking entries.', registers: [this.registry] });
  readonly httpRefused = new Counter({ name: 'vlan_gateway_http_refused_total', help: 'HTTP requests refused because the client is on a VLAN that http.allowFrom does not let in, by VLAN.', labelNames: ['vlan'], registers: [this.registry] });
  readonly statsErrors = new Counter({ name: 'vlan_gateway_stats_read_errors_total', help: 'Failed reads of kernel counters.', registers: [this.registry] });
  // Prometheus' usual name: a restart of the process (whose first reading starts the kernel-derived series again) shows.
  readonly startTime = new Gauge({ name: 'process_start_time_seconds', help: 'Start time of the process since unix epoch in seconds.', registers: [this.registry] });

  constructor(version: string) {
    this.buildInfo.set({ version, node_version: process.version }, 1);
    // Known label values start at 0, so rate() and alerts work from the first scrape.
    for (const kind of ['rules', 'jump', 'address', 'link', 'route', 'sysctl', 'set'] as const) this.driftRepairs.inc({ kind }, 0);
    for (const kind of WARNING_KINDS) this.warnings.set({ kind }, 0);
    for (const result of ['success', 'failure']) this.reloads.inc({ result }, 0);
    for (const table of ['filter', 'nat']) {
      for (const result of ['success', 'failure']) this.restores.inc({ table, result }, 0);
    }
    this.startTime.set(Math.round((performance.timeOrigin) / 1000));
    for (const reason of DROP_REASONS) {
      this.droppedPackets.inc({ reason }, 0);
      this.droppedBytes.inc({ reason }, 0);
    }
    for (const trigger of TRIGGERS) {
      for (const result of ['success', 'failure']) this.reconciles.inc({ trigger, result }, 0);
    }
  }

  private ifCounter(name: string, help: string): Counter<'vlan' | 'interface'> {
    return new Counter({ name, help, labelNames: ['vlan', 'interface'], registers: [this.registry] });
  }

  /** Call after changing values so the next scrape re-serialises. */
  changed(): void {
    this.cached = undefined;
  }

  async text(): Promise<string> {
    this.cached ??= await this.registry.metrics();
    return this.cached;
  }
}
