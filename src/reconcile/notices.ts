/**
 * What a pass says about the VLANs' and the uplink's NICs, once, as it appears: a binding's note, and a NIC lost
 * since the last good pass. Pure: from the desired state that pass planned and this pass's.
 */
import type { Desired } from '../plan/types.js';

export interface Notice {
  readonly fields: Record<string, string | undefined>;
  readonly message: string;
}

export function bindingNotices(before: Desired | undefined, desired: Desired): Notice[] {
  const notices: Notice[] = [];
  // A note on a bound uplink (an snatTo it does not hold, a gateway off its networks) is logged once, as it appears.
  const { uplink } = desired;
  if (uplink.nic && uplink.note && uplink.note !== before?.uplink.note) notices.push({ fields: { uplink: uplink.nic.name }, message: uplink.note });
  // So is a bound VLAN's (two NICs in its subnet: the one used is named).
  for (const b of desired.vlans) {
    if (b.nic && b.note && b.note !== before?.vlans.find((v) => v.vlan.name === b.vlan.name)?.note) notices.push({ fields: { vlan: b.vlan.name, interface: b.nic.name }, message: b.note });
  }
  // A VLAN or the uplink that had its NIC and waits now cuts hosts off: said once, when it happens (a NIC
  // detached is usually Docker's doing; a gateway address gone with Docker's own, which the kernel removes
  // with it, is not).
  if (before?.uplink.nic && !uplink.nic) notices.push({ fields: { uplink: before.uplink.nic.name, note: uplink.note }, message: `the uplink lost its NIC (${before.uplink.nic.name}): the VLANs have no way out until it is back` });
  for (const b of desired.vlans) {
    const had = before?.vlans.find((v) => v.vlan.name === b.vlan.name)?.nic;
    if (had && !b.nic) notices.push({ fields: { vlan: b.vlan.name, interface: had.name, note: b.note }, message: `vlan ${b.vlan.name} lost its NIC (${had.name}): its hosts are cut off until it is back` });
  }
  return notices;
}
