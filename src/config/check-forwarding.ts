/** The forwarding rules: what their from and to reference, and ports only where the protocol has them. Pure. */
import { asArray, asString, isObject, problemList, type Raw } from './cross-field.js';
import { shown, type PathSegment, type Problem } from './problems.js';
import { ZONE_REF } from './schema.js';
import type { Zones } from './zones.js';

const PROTOS = new Set(['tcp', 'udp', 'icmp', 'all']);

/** `portListProblem` is validate.ts's: what is wrong with a rule's port list. */
export function forwardingProblems(input: Raw, { zoneVlan, zoneProblem, unforwardedAddress }: Zones, portListProblem: (ports: unknown) => string | undefined): Problem[] {
  const { problems, add } = problemList();
  const forwarding = isObject(input.forwarding) ? input.forwarding : {};
  // What is wrong with a reference, and with a port list, depends on it alone: 10,000 rules name a few dozen VLANs
  // and ports, and each was worked out again for every rule (a third of validating a 10,000-rule config).
  const refProblems = new Map<string, string | undefined>();
  const refProblem = (ref: string) => {
    if (refProblems.has(ref)) return refProblems.get(ref);
    const problem = zoneProblem(ref) ?? unforwardedAddress(ref);
    refProblems.set(ref, problem);
    return problem;
  };
  const portProblems = new Map<unknown, string | undefined>();
  const portProblem = (ports: unknown) => {
    if (portProblems.has(ports)) return portProblems.get(ports);
    const problem = portListProblem(ports);
    if (typeof ports === 'string' || typeof ports === 'number') portProblems.set(ports, problem); // never a mapping or list
    return problem;
  };
  const rules = asArray(forwarding.rules);
  const path = (index: number, key: string): PathSegment[] => ['forwarding', 'rules', index, key];
  for (let index = 0; index < rules.length; index++) {
    const raw = rules[index];
    if (!isObject(raw)) continue;
    const from = asString(raw.from);
    const to = asString(raw.to);
    const fromProblem = from === undefined ? undefined : refProblem(from);
    if (fromProblem) add(path(index, 'from'), fromProblem);
    const toProblem = to === undefined ? undefined : refProblem(to);
    if (toProblem) add(path(index, 'to'), toProblem);
    if (from !== undefined && to !== undefined && from === to) {
      add(path(index, 'to'), from === 'uplink' ? 'from and to are both the uplink' : `from and to are both ${shown(from)}; traffic inside one VLAN does not pass the router`);
    } else if (from !== undefined && to !== undefined && ZONE_REF.test(from) && ZONE_REF.test(to)) {
      const vlan = zoneVlan(from);
      if (vlan && zoneVlan(to) === vlan) {
        add(path(index, 'to'), `from (${from}) and to (${to}) are both in ${vlan.name ?? `vlans[${vlan.index}]`}; `
          + 'traffic inside one VLAN does not pass the router, so the rule never matches');
      }
    }
    // A proto the schema refuses (TCP, 6) is its problem alone: "needs proto: tcp" beside it would mislead.
    const proto = raw.proto === undefined ? undefined : asString(raw.proto);
    const protoKnown = raw.proto === undefined || PROTOS.has(proto ?? '');
    if (raw.ports !== undefined) {
      if (protoKnown && proto !== 'tcp' && proto !== 'udp') add(path(index, 'ports'), 'needs proto: tcp or proto: udp');
      const problem = portProblem(raw.ports);
      if (problem) add(path(index, 'ports'), problem);
    }
  }
  return problems;
}
