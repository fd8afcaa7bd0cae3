/**
 * The component tier's convergence walk (test/component/converge.test.ts) run twice, step by step: on the semantic
 * fake (test/fakes/netfilter.ts) and on a real network namespace with the same NICs (veth links with the fake's names,
 * MACs and addresses; their peers in a namespace of their own), Docker's DNS chains and the same default route. After
 * every step both must end the same: our chains and jumps and Docker's in iptables-save (counters dropped), our sets'
 * members, the addresses, the default route, ip_forward; and both must have planned the same steps, with the same
 * warnings, and then nothing more. So must `plan --detailed-exitcode`'s verdict, and the error of a nat table the
 * kernel refuses. A difference is a fake that makes the component tests prove something the kernel does not do (or a
 * product that depends on what differs). Set CONVERGE_SEED=<n> to walk another order.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { userRulesGuard } from '../../src/apply/user-rules-check.js';
import { parseConfigText } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { inNamespace, type CommandRunner } from '../../src/exec/runner.js';
import type { Templates } from '../../src/plan/desired.js';
import type { Step } from '../../src/plan/types.js';
import { reconcileOnce } from '../../src/reconcile/once.js';
import { loadTemplates } from '../../src/template/load.js';
import { nicChanges, randomWalk, STATES, UPLINK, type State } from '../helpers/converge-states.js';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { tearDownAlways } from '../helpers/teardown.js';
import { dockerMac, FakeNetns } from '../fakes/netfilter.js';
import { runner } from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const NS = `vgwk-df-${process.pid}`;
/** Where the veth peers live, so that the gateway's namespace holds only the NICs the fake has. */
const PEERS = `vgwk-dfp-${process.pid}`;
const SEED = Number(process.env.CONVERGE_SEED ?? 7);

const parse = (yaml: string, name = 'test.yaml') => parseConfigText(yaml, name);
const templateCache = new Map<string, Templates>();
async function templatesFor(config: Config): Promise<Templates> {
  const dir = config.rules.dir;
  if (!templateCache.has(dir ?? '')) templateCache.set(dir ?? '', await loadTemplates(dir));
  return templateCache.get(dir ?? '')!;
}

// ---- the two namespaces ---------------------------------------------------------------------------------------------

interface Side {
  readonly name: 'fake' | 'kernel';
  readonly runner: CommandRunner;
  /** docker network connect / disconnect until exactly these NICS (and the uplink) are attached. */
  attachOnly(nics: readonly string[]): Promise<void>;
}

function fakeSide(): Side & { fake: FakeNetns } {
  // This machine has iptables-legacy installed (as the kernel namespace sees it): so must the fake.
  const fake = new FakeNetns({ links: [UPLINK], defaultRoute: { gateway: '203.0.113.1', dev: 'eth0' }, dockerDns: true, legacy: 'installed' });
  const attached = new Map<string, string>();
  return {
    name: 'fake', fake, runner: fake,
    attachOnly: async (nics) => {
      const { remove, add } = nicChanges(attached, nics);
      for (const link of remove) fake.removeLink(link);
      for (const spec of add) fake.addLink(spec);
    },
  };
}

const ip = (...args: string[]) => runner.run(['ip', ...args]);

/** A NIC as the fake makes it: its name, Docker's MAC for its address, its addresses in order, up with a carrier. */
async function addVeth(name: string, addresses: readonly string[]): Promise<void> {
  await ip('-n', NS, 'link', 'add', name, 'address', dockerMac(addresses[0]!), 'type', 'veth', 'peer', 'name', `p-${name}`, 'netns', PEERS);
  // No IPv6 on it: the fake's NICs have no link-local address (and no DAD to wait for).
  await runner.run(['ip', 'netns', 'exec', NS, 'sysctl', '-qw', `net.ipv6.conf.${name}.disable_ipv6=1`]);
  for (const cidr of addresses) await ip('-n', NS, 'addr', 'add', cidr, 'dev', name);
  await ip('-n', PEERS, 'link', 'set', `p-${name}`, 'up');
  await ip('-n', NS, 'link', 'set', name, 'up');
  // The carrier comes a moment later (the kernel's link watch): the fake's NICs have theirs from the start.
  for (let i = 0; /NO-CARRIER/.test((await ip('-n', NS, 'link', 'show', name)).stdout); i++) {
    if (i > 50) throw new Error(`${name} has no carrier after 5 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The kernel namespace, made as the fake starts: its links, its default route, its tables (Docker's DNS chains). */
async function kernelSide(fake: FakeNetns): Promise<Side> {
  await removeNamespaces(); // the previous test's (the tests run one after the other)
  await ip('netns', 'add', NS);
  await ip('netns', 'add', PEERS);
  await ip('-n', NS, 'link', 'set', 'lo', 'up');
  await runner.run(['ip', 'netns', 'exec', NS, 'sysctl', '-qw', 'net.ipv4.ip_forward=0']);
  await addVeth(UPLINK.name, UPLINK.addresses!);
  await ip('-n', NS, 'route', 'add', 'default', 'via', '203.0.113.1', 'dev', 'eth0');
  await runner.run(['ip', 'netns', 'exec', NS, 'iptables-nft-restore'], { input: fake.save('nft') });
  const attached = new Map<string, string>();
  return {
    name: 'kernel', runner: inNamespace(runner, NS),
    attachOnly: async (nics) => {
      const { remove, add } = nicChanges(attached, nics);
      for (const link of remove) await ip('-n', NS, 'link', 'del', link);
      for (const spec of add) await addVeth(spec.name, spec.addresses!);
    },
  };
}

async function removeNamespaces(): Promise<void> {
  await runner.run(['ip', 'netns', 'del', NS], { allowFailure: true });
  await runner.run(['ip', 'netns', 'del', PEERS], { allowFailure: true });
}
tearDownAlways('remove the namespaces', async () => {
  if (isRoot()) await removeNamespaces();
});

// ---- what each ends with, as text -----------------------------------------------------------------------------------

const run = async (side: Side, ...argv: string[]) => (await side.runner.run(argv)).stdout;

/** Our chains and jumps, and Docker's, from iptables-nft-save, each line after its table's name; counters dropped. */
async function rules(side: Side): Promise<string[]> {
  let table = '';
  const out: string[] = [];
  for (const line of (await run(side, 'iptables-nft-save')).split('\n')) {
    if (line.startsWith('*')) table = line.slice(1);
    else if (/VGW-|DOCKER_/.test(line)) out.push(`${table}: ${line.replace(/ \[\d+:\d+\]$/, '')}`);
  }
  return out;
}

/** Our sets as `ipset save` makes them and their members (sorted: the kernel lists them in hash order). */
async function sets(side: Side): Promise<string[]> {
  return (await run(side, 'ipset', 'save')).split('\n').filter(Boolean)
    // The kernel shows the hash's bucket size and seed; the fake only a bucket size it has raised.
    .map((l) => l.replace(/ bucketsize 12 initval 0x[\da-f]+$/, '').replace(/ initval 0x[\da-f]+$/, ''))
    .sort();
}

interface AddrJson { ifname: string; address: string; flags: string[]; addr_info: Array<{ family: string; local: string; prefixlen: number; metric?: number; secondary?: boolean }> }
async function addresses(side: Side): Promise<string[]> {
  const links = JSON.parse(await run(side, 'ip', '-json', 'addr', 'show')) as AddrJson[];
  return links.sort((a, b) => a.ifname.localeCompare(b.ifname)).flatMap((l) => [
    `${l.ifname} ${l.address} ${l.flags.filter((f) => ['UP', 'LOWER_UP', 'NO-CARRIER'].includes(f)).join(',')}`,
    ...l.addr_info.filter((a) => a.family === 'inet').map((a) => `    ${a.local}/${a.prefixlen}${a.metric ? ` metric ${a.metric}` : ''}${a.secondary ? ' secondary' : ''}`),
  ]);
}

async function defaultRoute(side: Side): Promise<unknown> {
  return JSON.parse(await run(side, 'ip', '-json', 'route', 'show', 'default'));
}

async function ending(side: Side) {
  return {
    rules: await rules(side),
    sets: await sets(side),
    addresses: await addresses(side),
    route: await defaultRoute(side),
    ipForward: (await run(side, 'sysctl', '-n', 'net.ipv4.ip_forward')).trim(),
  };
}

// ---- what each plans ------------------------------------------------------------------------------------------------

/**
 * Steps as the two can be compared: the members a step takes from a read of a set (a set destroyed, members deleted)
 * sorted, as the kernel lists them in hash order and the fake sorted; the order of such a list means nothing.
 */
const comparable = (steps: readonly Step[]) => steps.map((s) => (s.kind === 'set-destroy' ? { ...s, members: [...s.members].sort() }
  : s.kind === 'set-update' ? { ...s, del: [...s.del].sort() } : s));

/** `plan --detailed-exitcode`'s verdict as src/cli/plan.ts reaches it: 0 in sync, 2 changes pending, 1 an error. */
async function verdict(side: Side, config: Config): Promise<{ code: number; said: string; steps: unknown }> {
  const templates = await templatesFor(config);
  try {
    const planned = await reconcileOnce(side.runner, config, templates, { dryRun: true });
    await userRulesGuard(side.runner, templates, { readOnly: true })(planned.facts, planned.plan);
    return { code: planned.plan.steps.length > 0 ? 2 : 0, said: (planned.plan.warnings ?? []).map((w) => w.text).join('\n'), steps: comparable(planned.plan.steps) };
  } catch (error) {
    return { code: 1, said: (error as Error).message, steps: undefined };
  }
}

/** An apply as src/cli/apply.ts makes it (iptables asked about the user's rules before the first write). */
async function apply(side: Side, config: Config) {
  const templates = await templatesFor(config);
  return reconcileOnce(side.runner, config, templates, { beforeWrite: userRulesGuard(side.runner, templates) });
}

/** The lines of `a` and `b` that differ (a line diff of their JSON, `-` fake, `+` kernel), with a line around each. */
function lineDiff(a: unknown, b: unknown): string {
  const [x, y] = [a, b].map((v) => JSON.stringify(v, null, 1).split('\n'));
  const [m, n] = [x!.length, y!.length];
  const lcs = Array.from({ length: m + 1 }, () => new Array<number>(n + 1).fill(0));
  for (let i = m - 1; i >= 0; i--) for (let j = n - 1; j >= 0; j--) lcs[i]![j] = x![i] === y![j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
  const out: string[] = [];
  let [i, j] = [0, 0];
  while (i < m || j < n) {
    if (i < m && j < n && x![i] === y![j]) {
      out.push(`  ${x![i]}`);
      i++;
      j++;
    } else if (j < n && (i === m || lcs[i]![j + 1]! >= lcs[i + 1]![j]!)) out.push(`+ ${y![j++]}`);
    else out.push(`- ${x![i++]}`);
  }
  return out.filter((_line, k) => [k - 1, k, k + 1].some((near) => out[near] !== undefined && !out[near]!.startsWith('  '))).join('\n');
}

/** Whether the fake and the kernel agree on `what`; if not, the test fails with the lines that differ. */
function same(t: ExecutionContext, what: string, [fake, real]: readonly unknown[]): boolean {
  if (JSON.stringify(fake) === JSON.stringify(real)) return true;
  t.fail(`${what} differs (- fake, + kernel):\n${lineDiff(fake, real)}`);
  return false;
}

/** Walks both namespaces through `order`; returns whether they agreed at every step. */
async function walkBoth(t: ExecutionContext, sides: readonly Side[], order: readonly State[]): Promise<boolean> {
  let previous = '(fresh namespace)';
  for (const [i, state] of order.entries()) {
    const where = `step ${i + 1}: ${previous} → ${state.name}`;
    const config = parse(state.yaml, state.name);
    for (const side of sides) await side.attachOnly(state.nics);
    const before = await Promise.all(sides.map((s) => verdict(s, config)));
    if (!same(t, `${where}: plan --detailed-exitcode`, before)) return false;
    const applied = [];
    for (const side of sides) {
      try {
        const result = await apply(side, config);
        applied.push({ steps: comparable(result.plan.steps), warnings: result.plan.warnings ?? [] });
      } catch (error) {
        applied.push({ error: (error as Error).message });
      }
    }
    if (!same(t, `${where}: what apply did`, applied)) return false;
    const ends = await Promise.all(sides.map(ending));
    if (!same(t, `${where}: what the namespace ends with`, ends)) return false;
    const after = await Promise.all(sides.map((s) => verdict(s, config)));
    if (!same(t, `${where}: plan --detailed-exitcode after the apply`, after)) return false;
    if (!t.is(after[1]!.code, 0, `${where}: in sync after one apply`)) return false;
    previous = state.name;
  }
  return true;
}

kernel(`the convergence walk (CONVERGE_SEED=${SEED}) ends the same on the fake and on the kernel, step by step${NEEDS_ROOT}`, async (t) => {
  const fake = fakeSide();
  const sides = [fake, await kernelSide(fake.fake)];
  t.deepEqual(await ending(sides[0]!), await ending(sides[1]!), 'the two namespaces start the same');
  await walkBoth(t, sides, [...STATES, ...randomWalk(SEED, 12)]);
});

/** User templates of nat rules only the kernel refuses (they pass our checks and iptables' --test), in nat/<file>. */
const REFUSED_IN_NAT: ReadonlyArray<[string, string, string]> = [
  ['the owner match reached from PREROUTING', 'prerouting.hbs', '-m owner --uid-owner 0 -j ACCEPT'],
  ['TCPMSS on a UDP rule', 'postrouting.hbs', '-p udp --dport 9 -j TCPMSS --clamp-mss-to-pmtu'],
];

kernel(`a nat table the kernel refuses, at the first apply and in an update: the same verdict, error and rollback on the fake and on the kernel${NEEDS_ROOT}`, async (t) => {
  const fake = fakeSide();
  const sides = [fake, await kernelSide(fake.fake)];
  const [good, changed] = [STATES[1]!, STATES[2]!]; // the same NICs; filter, nat and the sets all change between them
  for (const side of sides) await side.attachOnly(good.nics);
  const dir = await mkdtemp(join(tmpdir(), 'vgw-df-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [what, file, rule] of REFUSED_IN_NAT) {
    const rules = join(dir, file.replace('.hbs', ''));
    await mkdir(join(rules, 'nat'), { recursive: true });
    await writeFile(join(rules, 'nat', file), `${rule}\n`);
    const refusedConfig = parse(`${changed.yaml}rules: {dir: ${rules}}\n`);
    for (const when of ['the first apply', 'an update']) {
      const where = `${what}, ${when}`;
      if (when === 'an update') for (const side of sides) await apply(side, parse(good.yaml));
      const before = await Promise.all(sides.map(ending));
      if (!same(t, `${where}: plan --detailed-exitcode`, await Promise.all(sides.map((s) => verdict(s, refusedConfig))))) return;
      const errors = [];
      for (const side of sides) errors.push(await apply(side, refusedConfig).then(() => 'applied', (error: unknown) => (error as Error).message));
      if (!same(t, `${where}: the apply's error`, errors)) return;
      t.regex(errors[1]!, /^applying the nat table failed: iptables-nft-restore failed \(exit 4\)/, `${where}: the kernel refused it`);
      // The user's rule named, with its template, at a first apply too (where our hook jumps are written in the same
      // restore: written after the rules, they were the lines iptables-nft named, and the template went unsaid).
      const chain = `VGW-USER-${file.replace('.hbs', '').toUpperCase()}`;
      t.regex(errors[1]!, new RegExp(`\\nline \\d+: RULE_APPEND failed \\(Invalid argument\\): rule in chain ${chain}\\n`), `${where}: iptables-nft names the user's rule`);
      t.true(errors[1]!.includes(`\nthe rules of rules.dir the kernel refuses (its reasons are in dmesg):\nnat ${chain} rule 1 (from ${join(rules, 'nat', file)} line 1): `
        + `the kernel refuses it (Invalid argument): ${rule}\n`), `${where}: the template and the rule are named\n${errors[1]!}`);
      if (!same(t, `${where}: the namespace after the failed apply`, await Promise.all(sides.map(ending)))) return;
      t.deepEqual(await ending(sides[1]!), before[1], `${where}: rolled back in full`);
    }
    // Back to a namespace the gateway has not touched, for the next one's first apply.
    for (const side of sides) await reconcileOnce(side.runner, parse(good.yaml), await templatesFor(parse(good.yaml)), { mode: 'down' });
  }
});
