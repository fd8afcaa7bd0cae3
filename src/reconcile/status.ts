/** The /status document: what a person or a script needs to see what the router is doing. */
import type { Supervisor } from './supervisor.js';
import { configHash } from './supervisor.js';

export interface ReloadState {
  at?: string;
  result?: 'success' | 'failure';
  errors: string[];
}

export function statusDocument(supervisor: Supervisor, reload: ReloadState, version: string): object {
  const desired = supervisor.lastDesired;
  const links = supervisor.lastLinks ?? [];
  const { path, text, config } = supervisor.config;
  const vlans = config.vlans.map((vlan) => {
    const binding = desired?.vlans.find((b) => b.vlan.name === vlan.name);
    const nic = binding?.nic ? links.find((l) => l.name === binding.nic!.name) ?? binding.nic : undefined;
    return {
      name: vlan.name,
      id: vlan.id,
      subnet: vlan.subnet,
      gateway: vlan.gateway,
      interface: nic?.name ?? null,
      mac: nic?.mac ?? null,
      addresses: nic ? nic.addresses.map((a) => `${a.address}/${a.prefix}`) : [],
      state: !desired ? 'unknown' : nic ? 'up' : 'waiting',
      ...(binding?.note ? { note: binding.note } : {}),
    };
  });
  const health = supervisor.health();
  return {
    version,
    config: { path, hash: configHash(text) },
    backend: supervisor.backend ?? null,
    ready: supervisor.ready,
    healthy: health.healthy,
    ...(health.reason ? { unhealthyReason: health.reason } : {}),
    uplink: { interface: desired?.uplink.nic?.name ?? null, ...(desired?.uplink.note ? { note: desired.uplink.note } : {}) },
    vlans,
    waiting: vlans.filter((v) => v.state === 'waiting').map((v) => v.name),
    warnings: [...supervisor.warned],
    lastReconcile: supervisor.lastRecord ?? null,
    reconciling: supervisor.running ?? null,
    lastSuccessfulReconcile: supervisor.lastSuccessAt ? new Date(supervisor.lastSuccessAt).toISOString() : null,
    driftRepairs: supervisor.driftCounts,
    reload: { lastAt: reload.at ?? null, lastResult: reload.result ?? null, lastErrors: reload.errors },
  };
}
