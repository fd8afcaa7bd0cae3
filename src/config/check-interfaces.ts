/** The NICs the VLANs and the uplink are on, checked against one another. Pure. */
import { asArray, isObject, problemList, type Raw } from './cross-field.js';
import type { Problem } from './problems.js';
import { IFNAME, MAC, notANic, notANicMac } from './schema.js';

/** A NIC carries one VLAN, and never the uplink too. */
export function interfaceProblems(input: Raw): Problem[] {
  const { problems, add } = problemList();
  // A name or MAC no NIC has is the schema's to report: "lo is the uplink's interface" beside it would add nothing.
  const refKey = (ref: unknown) => (typeof ref === 'string' && IFNAME.test(ref) && !notANic(ref) ? `name ${ref}`
    : isObject(ref) && typeof ref.mac === 'string' && MAC.test(ref.mac) && !notANicMac(ref.mac) ? `MAC ${ref.mac.toLowerCase()}` : undefined);
  const uplinkRef = refKey(isObject(input.uplink) ? input.uplink.interface : undefined);
  const usedBy = new Map<string, number>();
  asArray(input.vlans).forEach((raw, index) => {
    const key = isObject(raw) ? refKey(raw.interface) : undefined;
    if (key === undefined) return;
    const first = usedBy.get(key);
    if (first !== undefined) add(['vlans', index, 'interface'], `${key.replace(/^\w+ /, '')} is already the interface of vlans[${first}]`);
    else usedBy.set(key, index);
    if (key === uplinkRef) add(['vlans', index, 'interface'], `${key.replace(/^\w+ /, '')} is the uplink's interface`);
  });
  return problems;
}
