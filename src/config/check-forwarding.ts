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
  // What is wrong with a reference, with a pair of them, and with a port list, depends on it alone: 10,000 rules name a
  // few dozen VLANs, a few hundred pairs of them and a few dozen port lists, and each was worked out again for every
  // rule (a third of validating a 10,000-rule config). Each is worked out once, kept as its message or null.
  const refProblems = new Map<string, string | null>();
  const refProblem = (ref: string) => {
    let problem = refProblems.get(ref);
    if (problem === undefined) refProblems.set(ref, problem = zoneProblem(ref) ?? unforwardedAddress(ref) ?? null);
    return problem;
  };
  const pairProblems = new Map<string, Map<string, string | null>>();
  const pairProblem = (from: string, to: string) => {
    let byTo = pairProblems.get(from);
    if (byTo === undefined) pairProblems.set(from, byTo = new Map());
    let problem = byTo.get(to);
    if (problem === undefined) byTo.set(to, problem = samePlaceProblem(from, to, zoneVlan) ?? null);
    return problem;
  };
  const portProblems = new Map<unknown, string | null>();
  const portProblem = (ports: unknown) => {
    let problem = portProblems.get(ports);
    if (problem !== undefined) return problem;
    problem = portListProblem(ports) ?? null;
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
    const fromProblem = from === undefined ? null : refProblem(from);
    if (fromProblem) add(path(index, 'from'), fromProblem);
    const toProblem = to === undefined ? null : refProblem(to);
    if (toProblem) add(path(index, 'to'), toProblem);
    const samePlace = from === undefined || to === undefined ? null : pairProblem(from, to);
    if (samePlace) add(path(index, 'to'), samePlace);
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

/** A rule whose from and to are one place (the uplink, or one VLAN): traffic between them does not pass the router. */
function samePlaceProblem(from: string, to: string, zoneVlan: Zones['zoneVlan']): string | undefined {
  if (from === to) {
    return from === 'uplink' ? 'from and to are both the uplink' : `from and to are both ${shown(from)}; traffic inside one VLAN does not pass the router`;
  }
  if (!ZONE_REF.test(from) || !ZONE_REF.test(to)) return undefined;
  const vlan = zoneVlan(from);
  if (!vlan || zoneVlan(to) !== vlan) return undefined;
  return `from (${from}) and to (${to}) are both in ${vlan.name ?? `vlans[${vlan.index}]`}; traffic inside one VLAN does not pass the router, so the rule never matches`;
}
