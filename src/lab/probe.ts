/**
 * Real packets between lab namespaces: serving agents (agent.ts) and one-shot probes (ping, or an agent in
 * connect mode), all started through a CommandRunner inside a namespace. A probe never throws for a packet
 * that does not arrive: it reports `blocked` with what it saw, said as how it was refused: a TCP reset or an ICMP
 * error (refused, unreachable, prohibited) comes back at once, a silent drop only as no answer.
 */
import { inNamespace, type Child, type CommandRunner } from '../exec/runner.js';
import { agentBatchArgv, agentConnectArgv, agentServeArgv, parseAgentReply, parseBatchOutput, type AgentReply, type AgentSocket } from './agent.js';
import type { Stop, Verdict } from './expect.js';
import { LabError } from './topology.js';

export interface ProbeSpec {
  /** The namespace the probe runs in. */
  readonly namespace: string;
  readonly kind: 'ping' | 'tcp' | 'udp';
  readonly target: string;
  readonly port?: number;
  /** Source address to bind (a secondary address of the namespace). */
  readonly localAddress?: string;
  readonly timeoutMs?: number;
}

export interface ProbeOutcome {
  readonly actual: Verdict;
  /** For tcp/udp probes that got an answer: what the server saw. */
  readonly reply?: AgentReply;
  /** For a blocked probe: how, when the probe could tell (an agent's own failure cannot). */
  readonly stop?: Stop;
  readonly detail: string;
}

const DEFAULT_TIMEOUT_MS = 1500;

export async function runProbe(runner: CommandRunner, spec: ProbeSpec): Promise<ProbeOutcome> {
  const ns = inNamespace(runner, spec.namespace);
  const timeoutMs = spec.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  // The outer timeout only guards against a wedged process; the probe's own timeout decides the verdict.
  const guard = { allowFailure: true, timeoutMs: timeoutMs + 5000 };
  if (spec.kind === 'ping') {
    const wait = String(Math.max(1, Math.round(timeoutMs / 1000)));
    const source = spec.localAddress ? ['-I', spec.localAddress] : [];
    const result = await ns.run(['ping', '-n', '-c', '1', '-W', wait, ...source, spec.target], guard);
    const line = result.stdout.split('\n').find((l) => /bytes from/.test(l));
    if (result.exitCode === 0 && line) return { actual: 'pass', detail: line.replace(/^.*bytes from /, 'reply from ').trim() };
    const icmp = result.stdout.split('\n').find((l) => /Unreachable|Prohibited|filtered/i.test(l))?.trim();
    if (!icmp) return { actual: 'blocked', stop: 'dropped', detail: 'no answer (dropped)' };
    const detail = `refused: ICMP ${icmp.replace(/^From \S+ icmp_seq=\d+ /, '').toLowerCase()}`;
    // A port unreachable is a reject's; a host unreachable the client's own kernel also says when its gateway does
    // not answer ARP (a waiting VLAN, a router not applied yet): not said to be either.
    return /Port Unreachable/i.test(icmp) ? { actual: 'blocked', stop: 'refused', detail } : { actual: 'blocked', detail };
  }
  if (spec.port === undefined) throw new LabError(`${spec.kind} probe to ${spec.target} needs a port`);
  const argv = agentConnectArgv(spec.kind, spec.target, spec.port, timeoutMs, spec.localAddress);
  const result = await ns.run(argv, guard);
  return connectOutcome(spec.kind, result.stdout.trim() || result.stderr.trim() || `exit ${result.exitCode}`);
}

export interface ConnectProbe {
  readonly kind: 'tcp' | 'udp';
  readonly target: string;
  readonly port: number;
  readonly localAddress?: string;
}

/**
 * TCP/UDP probes from one namespace, run by one agent process with at most `limit` in flight (a node start per
 * probe costs more than most probes take). Outcomes keep the input order.
 */
export async function runProbeBatch(
  runner: CommandRunner,
  namespace: string,
  probes: readonly ConnectProbe[],
  options: { timeoutMs?: number; limit?: number } = {},
): Promise<ProbeOutcome[]> {
  if (probes.length === 0) return [];
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const limit = options.limit ?? 32;
  const argv = agentBatchArgv(probes.map((p) => ({ proto: p.kind, host: p.target, port: p.port, ...(p.localAddress ? { localAddress: p.localAddress } : {}) })), timeoutMs, limit);
  const rounds = Math.ceil(probes.length / limit);
  const result = await inNamespace(runner, namespace).run(argv, { allowFailure: true, timeoutMs: rounds * timeoutMs + 10_000 });
  const printed = parseBatchOutput(result.stdout);
  const failure = result.stderr.trim() || `exit ${result.exitCode}`;
  return probes.map((p, i) => connectOutcome(p.kind, printed.get(i) ?? `no result from the probe agent (${failure})`));
}

/** What a connect probe printed, as a verdict and a detail that says how a blocked one was refused. */
export function connectOutcome(kind: 'tcp' | 'udp', text: string): ProbeOutcome {
  const reply = parseAgentReply(text);
  if (reply) return { actual: 'pass', reply, detail: text };
  return { actual: 'blocked', ...refusal(kind, text) };
}

function refusal(kind: 'tcp' | 'udp', text: string): { stop?: Stop; detail: string } {
  if (text === 'timeout') return { stop: 'dropped', detail: 'no answer (dropped)' };
  const code = /^error (\S+)/.exec(text)?.[1];
  switch (code) {
    // Linux reports both a TCP reset and an ICMP port unreachable to a connecting TCP socket as ECONNREFUSED.
    case 'ECONNREFUSED': return { stop: 'refused', detail: kind === 'tcp' ? 'refused (TCP reset or ICMP port unreachable)' : 'refused: ICMP port unreachable' };
    // Also what the client's own kernel says when its gateway does not answer ARP: not said to be either.
    case 'EHOSTUNREACH': return { detail: 'refused: ICMP host unreachable or prohibited' };
    case 'ENETUNREACH': return { detail: 'refused: ICMP network unreachable' };
    default: return { detail: text };
  }
}

/** Runs `fn` over `items` with at most `limit` in flight; results keep the input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}

export interface RunningAgent {
  readonly namespace: string;
  stop(): Promise<void>;
}

/**
 * What a serving agent's "error SPEC CODE" means to the person running `lab check`. A port something else holds in
 * the namespace (a server started there to explore the lab, or another check of the same lab) said only
 * "agent in vgwlab-demo-c10: error tcp/0.0.0.0:80 EADDRINUSE".
 */
function agentError(namespace: string, line: string): string {
  const busy = /^error (tcp|udp)\/([0-9.]+):(\d+) EADDRINUSE$/.exec(line);
  if (busy) {
    const [, proto, address, port] = busy;
    return `lab check cannot serve ${proto}/${port} in ${namespace}${address === '0.0.0.0' ? '' : ` on ${address}`}, which its probes need: another process there holds the port `
      + `(a server of your own, or another lab check of this lab; see: ip netns exec ${namespace} ss -${proto === 'tcp' ? 't' : 'u'}lnp); stop it and check again`;
  }
  return `agent in ${namespace}: ${line}`;
}

/** Starts a serving agent in `namespace` and waits until every socket is bound. */
export async function startAgent(
  runner: CommandRunner,
  namespace: string,
  sockets: readonly AgentSocket[],
  ttlSeconds: number,
  readyTimeoutMs = 10_000,
): Promise<RunningAgent> {
  const child: Child = inNamespace(runner, namespace).start(agentServeArgv(sockets, ttlSeconds));
  const lines: string[] = [];
  let timer: NodeJS.Timeout | undefined;
  const ready = new Promise<void>((resolve, reject) => {
    child.onLine((line) => {
      lines.push(line);
      if (line === 'ready') resolve();
      else if (line.startsWith('error')) reject(new LabError(agentError(namespace, line)));
    });
    // What it printed, and the end of its stderr, where node says why it failed (an agent that died of an error
    // said "no output": its stderr was not kept).
    const said = () => [lines.join(' / '), child.stderrTail?.().trim() ?? ''].filter(Boolean).join('\n') || 'no output';
    void child.exited.then((code) => reject(new LabError(`agent in ${namespace} exited (${code ?? 'signal'}) before it was ready: ${said()}`)));
    timer = setTimeout(() => reject(new LabError(`agent in ${namespace} not ready after ${readyTimeoutMs} ms: ${said()}`)), readyTimeoutMs);
  });
  try {
    await ready;
  } catch (error) {
    await child.stop();
    throw error;
  } finally {
    clearTimeout(timer);
  }
  return { namespace, stop: () => child.stop() };
}
