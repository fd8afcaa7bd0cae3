/** The forwarding rules: what their from and to reference, and ports only where the protocol has them. Pure. */
import { asArray, asString, isObject, problemList, type Raw } from './cross-field.js';
import { shown, type PathSegment, type Problem } from './problems.js';
import { ZONE_REF } from './schema.js';
import type { Zones } from './zones.js';

/** `portListProblem` is validate.ts's: what is wrong with a rule's port list. */
export function forwardingProblems(input: Raw, { zoneVlan, zoneProblem, unforwardedAddress }: Zones, portListProblem: (ports: unknown) => string | undefined): Problem[] {
  const { problems, add } = problemList();
  const forwarding = isObject(input.forwarding) ? input.forwarding : {};
  asArray(forwarding.rules).forEach((raw, index) => {
    if (!isObject(raw)) return;
    const at = (key: string): PathSegment[] => ['forwarding', 'rules', index, key];
    const from = asString(raw.from);
    const to = asString(raw.to);
    for (const [key, ref] of [['from', from], ['to', to]] as const) {
      if (ref === undefined) continue;
      const problem = zoneProblem(ref) ?? unforwardedAddress(ref);
      if (problem) add(at(key), problem);
    }
    if (from !== undefined && to !== undefined && from === to) {
      add(at('to'), from === 'uplink' ? 'from and to are both the uplink' : `from and to are both ${shown(from)}; traffic inside one VLAN does not pass the router`);
    } else if (from !== undefined && to !== undefined && ZONE_REF.test(from) && ZONE_REF.test(to)) {
      const vlan = zoneVlan(from);
      if (vlan && zoneVlan(to) === vlan) {
        add(at('to'), `from (${from}) and to (${to}) are both in ${vlan.name ?? `vlans[${vlan.index}]`}; `
          + 'traffic inside one VLAN does not pass the router, so the rule never matches');
      }
    }
    // A proto the schema refuses (TCP, 6) is its problem alone: "needs proto: tcp" beside it would mislead.
    const proto = raw.proto === undefined ? undefined : asString(raw.proto);
    const protoKnown = raw.proto === undefined || ['tcp', 'udp', 'icmp', 'all'].includes(proto ?? '');
    if (raw.ports !== undefined) {
      if (protoKnown && proto !== 'tcp' && proto !== 'udp') add(at('ports'), 'needs proto: tcp or proto: udp');
      const problem = portListProblem(raw.ports);
      if (problem) add(at('ports'), problem);
    }
  });
  return problems;
}
