/** The lab: the write-up's network in network namespaces, built, checked with real packets, and removed. */
export { AGENT_SCRIPT, agentBatchArgv, agentConnectArgv, agentServeArgv, parseAgentReply, parseBatchOutput, type AgentReply, type AgentSocket } from './agent.js';
export { labDown, labUp, labUpCommands, listLabNamespaces, listLabs } from './build.js';
export { labCheck, type CheckOptions, type CheckResult, type CheckRow } from './check.js';
export { formatMatrix } from './matrix.js';
export { INTERNET, MAX_PROBES, planLabAgents, planLabProbes, ruleProbes, type LabProbePlan, type PlannedProbe } from './probe-plan.js';
export { expectedPortForwardVerdict, expectedUplinkNat, expectedVerdict, zoneOfAddress, type ProbeProto, type Verdict, type Zone } from './expect.js';
export { connectOutcome, mapLimit, runProbe, runProbeBatch, startAgent, type ConnectProbe, type ProbeOutcome, type ProbeSpec, type RunningAgent } from './probe.js';
export {
  assertLabName, DEFAULT_LAB_NAME, INTERNET_HOST, LAB_NAME, LabError, LabInputError, labPrefix, planLabTopology,
  type LabClient, type LabTopology, type LabUplink, type LabVlan,
} from './topology.js';
