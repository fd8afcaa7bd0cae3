/**
 * Forwarding cost through the router, small packets. Three namespaces of our own: a router with a NIC per VLAN
 * of a 100-VLAN config, and two clients on veths: A in the LAST VLAN, B in the one before it (the last VLAN's
 * rules point at it, so A → B walks the pair chain VGW-P-<last>-<last-1>). iperf3 sends 64-byte UDP from A to
 * B for a bounded time; the rate is read from the router's egress NIC counter (what it forwarded), next to what
 * iperf3 sent and received. Conditions, interleaved round by round:
 *   none     no rules at all;
 *   notrack  only the raw-table CT --notrack rule that ours-new uses (its own cost, as a control);
 *   ours     our rules; data packets are ESTABLISHED (iperf3's UDP handshake), so they pass VGW-SOURCES (with ipset,
 *            one lookup returns a VLAN host's packet) and stop at VGW-FORWARD's replies accept;
 *   ours-new our rules with conntrack bypassed (raw CT --notrack) so that EVERY packet walks the worst path:
 *            VGW-FORWARD's branch list to the last VLAN, its from-chain to the pair branch, and the whole pair chain;
 *   linear   1,000 non-matching rules in FORWARD.
 */
import { inNamespace, type CommandRunner } from '../src/exec/runner.js';
import type { Templates } from '../src/plan/desired.js';
import { pairChain, fromChain, FORWARD_CHAIN, SOURCES_CHAIN, zoneKey } from '../src/plan/chains.js';
import type { Plan } from '../src/plan/types.js';
import { reconcileOnce } from '../src/reconcile/once.js';
import { clientAddressOf, gatewayOf, generateConfig, nicBatch, nicName, type ConfigShape } from './configs.js';
import { stats, WithoutIpset, type Stats } from './measure.js';
import type { Namespaces } from './netns.js';

export type Condition = 'none' | 'notrack' | 'ours' | 'ours-new' | 'linear';
const CONDITIONS: readonly Condition[] = ['none', 'notrack', 'linear', 'ours', 'ours-new'];

interface ForwardingSample {
  readonly forwardedPps: number;
  readonly sentPps: number;
  readonly receivedPps: number;
}

export interface ForwardingResult {
  readonly shape: ConfigShape;
  readonly ipset: boolean;
  readonly seconds: number;
  readonly byCondition: Record<Condition, { forwarded: Stats; sent: Stats; received: Stats }>;
  /** Rules a NEW packet A → B evaluates in our chains (from the rendered plan). */
  readonly worstPathRules: number;
  /** Packets counted by the pair chain's last rule in the last ours-new run (proof of the path). */
  readonly pairChainPackets: number;
  readonly pairChainName: string;
}

const PORT = 5201;
const LINEAR_RULES = 1000;

function linearPayload(): string {
  const lines = ['*filter'];
  for (let k = 0; k < LINEAR_RULES; k++) lines.push(`-A FORWARD -s 198.18.${k >> 8}.${k & 255}/32 -j DROP`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * Empties filter, nat and raw (rules and user chains) with a plain restore. Not `nft flush ruleset`: under
 * `npm run`, PATH starts with node_modules/.bin, where `nft` is @vercel/nft's CLI, not nftables.
 */
async function flushAll(router: CommandRunner): Promise<void> {
  await router.run(['iptables-nft-restore'], { input: '*filter\nCOMMIT\n*nat\nCOMMIT\n*raw\nCOMMIT\n' });
}

async function waitListening(ns: CommandRunner, port: number): Promise<void> {
  const deadline = performance.now() + 3000;
  while (performance.now() < deadline) {
    const { stdout } = await ns.run(['ss', '-Hltn', 'sport', '=', `:${port}`], { allowFailure: true });
    if (stdout.trim() !== '') return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`iperf3 server did not listen on ${port} within 3 s`);
}

async function txPackets(router: CommandRunner, nic: string): Promise<number> {
  const { stdout } = await router.run(['ip', '-json', '-s', 'link', 'show', 'dev', nic]);
  const [link] = JSON.parse(stdout) as Array<{ stats64?: { tx?: { packets?: number } } }>;
  return link?.stats64?.tx?.packets ?? 0;
}

/** One bounded iperf3 run A → B (at most `seconds` of traffic; hard timeouts on both processes). */
async function iperf(router: CommandRunner, a: CommandRunner, b: CommandRunner, target: string, egress: string, seconds: number): Promise<ForwardingSample> {
  const server = b.start(['iperf3', '-s', '-1', '-B', target, '-p', String(PORT)]);
  try {
    await waitListening(b, PORT);
    const before = await txPackets(router, egress);
    const result = await a.run(
      ['iperf3', '-c', target, '-p', String(PORT), '-u', '-l', '64', '-b', '0', '-t', String(seconds), '-J'],
      { allowFailure: true, timeoutMs: (seconds + 15) * 1000 },
    );
    const after = await txPackets(router, egress);
    const json = JSON.parse(result.stdout || '{}') as {
      error?: string;
      end?: { sum?: { packets?: number; lost_packets?: number; seconds?: number } };
    };
    const sum = json.end?.sum;
    if (json.error || !sum?.packets || !sum.seconds) throw new Error(`iperf3 failed: ${json.error ?? result.stderr.trim()}`);
    return {
      forwardedPps: (after - before) / sum.seconds,
      sentPps: sum.packets / sum.seconds,
      receivedPps: (sum.packets - (sum.lost_packets ?? 0)) / sum.seconds,
    };
  } finally {
    await server.stop();
  }
}

/** 1-based position of the first rule in `chain` whose body contains `needle` (rules evaluated to get there). */
function position(plan: Plan, chain: string, needle: string): number {
  const rules = plan.desired.chains.find((c) => c.name === chain)?.rules ?? [];
  const i = rules.findIndex((r) => r.line.includes(needle));
  if (i < 0) throw new Error(`no rule with ${needle} in ${chain}`);
  return i + 1;
}

export async function forwardingBench(runner: CommandRunner, namespaces: Namespaces, templates: Templates, options: {
  shape: ConfigShape; rounds: number; seconds: number; ipset?: boolean;
}, log: (line: string) => void): Promise<ForwardingResult> {
  const { shape, rounds, seconds } = options;
  const ipset = options.ipset ?? true;
  const last = shape.vlans;
  const prev = last - 1;
  const config = generateConfig(shape);
  const made: string[] = [];
  try {
    const routerNs = await namespaces.create('fwd-r', 1);
    const aNs = await namespaces.create('fwd-a');
    const bNs = await namespaces.create('fwd-b');
    made.push(routerNs, aNs, bNs);
    await namespaces.batch(routerNs, nicBatch(shape, new Map([[last, aNs], [prev, bNs]])));
    for (const [ns, vlan] of [[aNs, last], [bNs, prev]] as const) {
      await namespaces.batch(ns, [
        `addr add ${clientAddressOf(vlan)}/24 dev c0`, 'link set c0 up', `route add default via ${gatewayOf(vlan)}`, '',
      ].join('\n'));
    }
    const router = inNamespace(runner, routerNs);
    const product = ipset ? router : new WithoutIpset(router);
    const a = inNamespace(runner, aNs);
    const b = inNamespace(runner, bNs);

    // Our apply once: gateway addresses on every VLAN NIC, ip_forward, and our rules (also the reference plan).
    const { plan } = await reconcileOnce(product, config, templates);
    if (plan.desired.vlans.some((v) => !v.nic)) throw new Error('router NICs not all matched');
    const fromKey = zoneKey(last);
    const pair = pairChain(fromKey, zoneKey(prev));
    const sourcesCheck = plan.desired.chains.some((c) => c.name === SOURCES_CHAIN)
      ? position(plan, SOURCES_CHAIN, plan.desired.sets.length > 0 ? '--match-set VGW-SUBNET-NICS' : `-i ${nicName(last)} -s `) : 0;
    const worstPathRules = 1 // FORWARD's jump
      + sourcesCheck // VGW-SOURCES, to the rule that returns a VLAN host's packet
      + position(plan, FORWARD_CHAIN, `-i ${nicName(last)} `)
      + position(plan, fromChain(fromKey), `-o ${nicName(prev)} `)
      + (plan.desired.chains.find((c) => c.name === pair)?.rules.length ?? 0);

    // The rules our apply wrote, saved once and restored for each "ours" round (same rules, no re-planning).
    const ours = (await router.run(['iptables-nft-save'])).stdout;
    if (!ours.includes(`:${pair} `)) throw new Error(`our apply did not create ${pair}`);

    const setCondition = async (condition: Condition) => {
      await flushAll(router); // our ipset (if any) stays: nothing matches on it then
      if (condition === 'none') {
        const { stdout } = await router.run(['iptables-nft-save']);
        if (/^-A /m.test(stdout)) throw new Error('rules left after the flush');
      }
      if (condition === 'linear') {
        await router.run(['iptables-nft-restore', '--noflush'], { input: linearPayload() });
        const { stdout } = await router.run(['iptables-nft-save', '-t', 'filter']);
        const forward = stdout.split('\n').filter((l) => l.startsWith('-A FORWARD '));
        const stray = forward.filter((l) => !l.startsWith('-A FORWARD -s 198.18.'));
        if (forward.length !== LINEAR_RULES) throw new Error(`FORWARD holds ${forward.length} rules, not ${LINEAR_RULES}: ${stray.join('; ')}`);
      }
      if (condition === 'ours' || condition === 'ours-new') await router.run(['iptables-nft-restore'], { input: ours });
      if (condition === 'ours-new' || condition === 'notrack') {
        await router.run(['iptables-nft', '-w', '-t', 'raw', '-A', 'PREROUTING', '-j', 'CT', '--notrack']);
      }
    };

    const samples = Object.fromEntries(CONDITIONS.map((c) => [c, [] as ForwardingSample[]])) as Record<Condition, ForwardingSample[]>;
    let pairChainPackets = 0;
    for (let round = 0; round < rounds; round++) {
      for (const condition of CONDITIONS) {
        log(`  round ${round + 1}/${rounds}: ${condition}`);
        await setCondition(condition);
        samples[condition].push(await iperf(router, a, b, clientAddressOf(prev), nicName(prev), seconds));
        if (condition === 'ours-new') {
          const { stdout } = await router.run(['iptables-nft-save', '-c', '-t', 'filter']);
          const lastRule = stdout.split('\n').filter((l) => l.includes(`-A ${pair} `)).pop() ?? '';
          pairChainPackets = Number(/^\[(\d+):/.exec(lastRule)?.[1] ?? 0);
        }
      }
    }
    await flushAll(router);

    const byCondition = Object.fromEntries(CONDITIONS.map((c) => [c, {
      forwarded: stats(samples[c].map((s) => s.forwardedPps)),
      sent: stats(samples[c].map((s) => s.sentPps)),
      received: stats(samples[c].map((s) => s.receivedPps)),
    }])) as ForwardingResult['byCondition'];
    return { shape, ipset, seconds, byCondition, worstPathRules, pairChainPackets, pairChainName: pair };
  } finally {
    for (const ns of made) await namespaces.remove(ns);
  }
}
