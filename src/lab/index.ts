/** The lab: the write-up's network in network namespaces, built, checked with real packets, and removed. */
export { labDown, labUp, labUpCommands, listLabNamespaces, missingLabAddresses } from './build.js';
export { labCheck, type CheckResult, type CheckRow } from './check.js';
export { formatMatrix } from './matrix.js';
export { planLabAgents, planLabProbes, ruleProbes, type LabProbePlan } from './probe-plan.js';
export { expectedPortForwardVerdict, expectedUplinkNat, expectedVerdict } from './expect.js';
export { connectOutcome, mapLimit, runProbe, runProbeBatch, startAgent, type RunningAgent } from './probe.js';
export { assertLabName, DEFAULT_LAB_NAME, LabInputError, labPrefix, planLabTopology, type LabTopology } from './topology.js';
