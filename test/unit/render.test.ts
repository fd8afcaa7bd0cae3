/**
 * Rendering: for each fixture config, the exact iptables-restore text a fresh namespace gets (golden files in
 * test/golden/<name>.restore), planned against synthetic facts where every NIC is attached as Docker would and
 * ip_forward is 0 (so the FORWARD jump is written as `vgw:hook-fwd-was-0`: the apply switches forwarding on, and
 * `down` will switch it off again).
 * `UPDATE_GOLDEN=1 npx ava test/unit/render.test.ts` rewrites the golden files; review the diff line by line
 * before committing it: these files are the product's rules as a person reads them.
 *
 * Then broken user templates: each is refused before anything is applied, with a message naming its file.
 */
import { execFile } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import test from 'ava';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { ConfigError } from '../../src/config/problems.js';
import type { Facts } from '../../src/observe/facts.js';
import { PlanError } from '../../src/plan/check.js';
import { forgetRenderedChains, planDesired, type Templates } from '../../src/plan/desired.js';
import { diff } from '../../src/plan/diff.js';
import { formatPlan } from '../../src/plan/format.js';
import { syntheticFacts } from '../../src/plan/synthetic.js';
import type { Plan } from '../../src/plan/types.js';
import { loadTemplates, userTemplatesText } from '../../src/template/load.js';
import { checkRuleBody, guarded, renderRules, TemplateError } from '../../src/template/render.js';

const root = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));
const UPDATE = process.env.UPDATE_GOLDEN === '1';

/** A config file read the way the product reads it (a relative rules.dir is relative to the file). */
async function readConfig(path: string): Promise<Config> {
  return (await loadConfig(root(path))).config;
}

/** Synthetic facts, minus the NICs a fixture wants missing (not attached yet); with an ipset tool, or without. */
function factsFor(config: Config, missing: readonly string[] = [], ipset = false): Facts {
  const facts = syntheticFacts(config);
  return { ...facts, links: facts.links.filter((l) => !missing.includes(l.name)), ...(ipset ? { sets: new Map() } : {}) };
}

function planFresh(config: Config, templates: Templates, missing: readonly string[] = [], ipset = false): Plan {
  const facts = factsFor(config, missing, ipset);
  return diff(planDesired(config, facts, templates), facts);
}

const payloads = (plan: Plan) => plan.steps.flatMap((s) => (s.kind === 'table' ? [s.payload] : [])).join('');

/** The lab example is rendered from where it ships, so the golden follows the file users copy. */
const EXTRA_FIXTURES: Record<string, string> = { lab: 'examples/lab.yaml' };
/** Fixture-specific facts: NICs that are not attached. */
const MISSING: Record<string, readonly string[]> = { waiting: ['eth9'] };

const fixtureNames = (await readdir(root('test/fixtures'))).filter((f) => f.endsWith('.yaml')).map((f) => f.slice(0, -'.yaml'.length));
const fixtures = [
  ...Object.entries(EXTRA_FIXTURES).map(([name, path]) => ({ name, path })),
  ...fixtureNames.sort().map((name) => ({ name, path: `test/fixtures/${name}.yaml` })),
];

// Each fixture twice: without the ipset tool (every pair branched by its NIC), and with it (replies counted per
// pair by the accounting sets; under `default: accept` the pairs without rules are accepted by set lookups).
for (const { name, path } of fixtures) for (const ipset of [false, true]) {
  test(`golden restore text: ${name}${ipset ? ' (with ipset)' : ''}`, async (t) => {
    const config = await readConfig(path);
    const templates = await loadTemplates(config.rules.dir);
    const actual = payloads(planFresh(config, templates, MISSING[name], ipset));
    const goldenPath = root(`test/golden/${name}${ipset ? '.ipset' : ''}.restore`);
    if (UPDATE) {
      await writeFile(goldenPath, actual);
      t.log(`wrote ${goldenPath}`);
      t.pass();
      return;
    }
    let expected: string;
    try {
      expected = await readFile(goldenPath, 'utf8');
    } catch {
      t.fail(`no golden file ${goldenPath}; run UPDATE_GOLDEN=1 npx ava test/unit/render.test.ts and review it`);
      return;
    }
    t.is(actual, expected);
  });
}

// The same config object twice is the planner's memo, and the same inputs its chain cache: the second plan was the
// first's rules again, and this held whatever the render did. Each is now rendered as a new process renders it.
test('rendering is deterministic: the same config and facts give byte-identical payloads', async (t) => {
  const fresh = async () => {
    const [config, templates] = [await readConfig('test/fixtures/policy.yaml'), await loadTemplates()];
    forgetRenderedChains(); // with nothing awaited after it: no other test's render comes between
    return payloads(planFresh(config, templates));
  };
  t.is(await fresh(), await fresh());
});

test('a fresh namespace plans addresses, both tables, and ip_forward last (fail closed)', async (t) => {
  const config = await readConfig('examples/lab.yaml');
  const plan = planFresh(config, await loadTemplates());
  // syntheticFacts points the default route at uplink.gateway already, so there is no route step.
  t.deepEqual(plan.steps.map((s) => (s.kind === 'table' ? `table ${s.table}` : s.kind === 'sysctl' ? `sysctl ${s.key}=${s.value}` : `${s.kind} ${'address' in s ? s.address : ''}`)), [
    'address-add 192.168.10.1',
    'address-add 192.168.20.1',
    'table filter',
    'table nat',
    'sysctl net.ipv4.ip_forward=1',
  ]);
});

test('a VLAN whose NIC is missing is shown as waiting and left out of every rule but two drops (from and to its subnet); the rest is planned', async (t) => {
  const config = await readConfig('test/fixtures/waiting.yaml');
  const plan = planFresh(config, await loadTemplates(), MISSING.waiting);
  const text = formatPlan(plan);
  t.true(text.startsWith([
    'vlan office (id 10, 192.168.10.0/24): on eth1',
    'vlan lab (id 20, 192.168.20.0/24): on eth2',
    'vlan iot (id 30, 192.168.30.0/24): waiting for eth9',
    'uplink: on eth0',
    '',
  ].join('\n')), text);
  // No NIC carries its hosts yet, so a source in its subnet is forged wherever it comes in; and traffic to it,
  // which the default route would take out of the uplink (and the MASQUERADE hide), goes nowhere.
  const spoofDrop = /^-A VGW-SOURCES -m comment --comment vgw:\S+ -s 192\.168\.30\.0\/24 -j DROP$/m;
  const waitingDrop = /^-A VGW-FORWARD -m comment --comment vgw:\S+ -d 192\.168\.30\.0\/24 -j DROP$/m;
  t.regex(payloads(plan), spoofDrop);
  t.regex(payloads(plan), waitingDrop);
  t.true(payloads(plan).indexOf('-d 192.168.30.0/24') < payloads(plan).indexOf('--ctstate ESTABLISHED'), 'before replies are accepted: a flow that began before its NIC went');
  t.notRegex(payloads(plan).replace(spoofDrop, '').replace(waitingDrop, ''), /eth9|192\.168\.30\.|VGW-FROM-30|-30-/);
  t.false(plan.steps.some((s) => 'nic' in s && s.nic === 'eth9'));
});

test('the waiting line says "waiting" once', async (t) => {
  // The binding's note already reads "waiting for eth9"; the line must not prefix it with another "waiting:".
  const config = await readConfig('test/fixtures/waiting.yaml');
  const text = formatPlan(planFresh(config, await loadTemplates(), MISSING.waiting));
  t.notRegex(text, /waiting: waiting/);
  t.regex(text, /^vlan iot \(id 30, 192\.168\.30\.0\/24\): waiting for eth9$/m);
});

test('the uplink line carries its note: an snatTo the uplink NIC does not hold', async (t) => {
  const lab = await readConfig('examples/lab.yaml');
  const config = { ...lab, uplink: { ...lab.uplink, nat: 'snat' as const, snatTo: '198.51.100.7' } };
  const text = formatPlan(planFresh(config, await loadTemplates()));
  t.regex(text, /^uplink: on eth0 \(uplink\.snatTo 198\.51\.100\.7 is not an address of eth0 \(it has [^)]+\): replies reach the gateway only if /m);
});

test('IPv6 forwarding on is a warning under the uplink line, not a step, naming what is open and both fixes; off, absent (no IPv6) or dropped by an ip6tables FORWARD of the operator\'s, nothing', async (t) => {
  const config = await readConfig('examples/lab.yaml');
  const templates = await loadTemplates();
  const base = factsFor(config);
  const withIpv6 = (value: string, more: Partial<Facts> = {}): Facts => ({ ...base, sysctls: { ...base.sysctls, 'net.ipv6.conf.all.forwarding': value }, ...more });
  const on = diff(planDesired(config, withIpv6('1'), templates), withIpv6('1'));
  t.deepEqual(on.warnings, [{ kind: 'ipv6_forwarding', text: 'net.ipv6.conf.all.forwarding is 1 and no ip6tables FORWARD policy drops: IPv6 is routed between the VLANs, '
    + 'and between them and the uplink, with none of this policy and no NAT (the gateway programs IPv4 only): an IPv6 host on any side '
    + 'reaches the IPv6 hosts of the others. Switch it off (docker run --sysctl net.ipv6.conf.all.forwarding=0, or Compose sysctls; '
    + 'outside a container sysctl -w net.ipv6.conf.all.forwarding=0), or drop forwarded IPv6 with a policy of your own (ip6tables -P FORWARD DROP)' }]);
  t.regex(formatPlan(on), /^uplink: on eth0\nbackend: iptables-nft\nwarning: net\.ipv6\.conf\.all\.forwarding is 1 /m);
  t.deepEqual(on.steps, diff(planDesired(config, base, templates), base).steps, 'the same steps: the gateway does not touch it');
  // Under --netns, the commands to run are shown as they run there.
  const prefixed = withIpv6('1', { commandPrefix: ['ip', 'netns', 'exec', 'gw'] });
  t.regex(diff(planDesired(config, prefixed, templates), prefixed).warnings![0]!.text,
    /outside a container ip netns exec gw sysctl -w net\.ipv6\.conf\.all\.forwarding=0\), or drop forwarded IPv6 with a policy of your own \(ip netns exec gw ip6tables -P FORWARD DROP\)$/);
  // The operator's own ip6tables FORWARD drops what it does not accept: IPv6 forwarding has a policy, theirs.
  const dropped = withIpv6('1', { ipv6ForwardDroppedBy: 'ip6tables-nft' });
  t.is(diff(planDesired(config, dropped, templates), dropped).warnings, undefined);
  t.is(diff(planDesired(config, withIpv6('0'), templates), withIpv6('0')).warnings, undefined);
  t.is(diff(planDesired(config, base, templates), base).warnings, undefined);
  // Linux 6.17+: all.force_forwarding forwards on every NIC with all.forwarding 0, and is named as the one to switch off.
  const forced = withIpv6('0', { sysctls: { ...base.sysctls, 'net.ipv6.conf.all.forwarding': '0', 'net.ipv6.conf.all.force_forwarding': '1' } });
  t.regex(diff(planDesired(config, forced, templates), forced).warnings![0]!.text,
    /^net\.ipv6\.conf\.all\.force_forwarding is 1 and no ip6tables FORWARD policy drops: .* \(docker run --sysctl net\.ipv6\.conf\.all\.force_forwarding=0, /);
  const forcedDropped: Facts = { ...forced, ipv6ForwardDroppedBy: 'ip6tables-nft' };
  t.is(diff(planDesired(config, forcedDropped, templates), forcedDropped).warnings, undefined);
});

// Linux 6.17+ forwards IPv6 that comes in on a NIC whose own force_forwarding is 1, with both all.* at 0 (seen in a
// namespace: a VLAN's NIC set so passed its hosts' pings to the other VLAN, and the other's replies only once its NIC
// was set too). The warning read the two all.* sysctls alone, and said nothing.
test('a NIC of its own forwarding IPv6 (its force_forwarding 1, all.* 0) is a warning naming the NIC, what is open and both fixes; dropped by an ip6tables FORWARD of the operator\'s, nothing', async (t) => {
  const config = await readConfig('examples/lab.yaml');
  const templates = await loadTemplates();
  const base = factsFor(config);
  const sysctls = { ...base.sysctls, 'net.ipv6.conf.all.forwarding': '0', 'net.ipv6.conf.all.force_forwarding': '0', 'net.ipv6.conf.default.force_forwarding': '0' };
  const withNics = (nics: string[], more: Partial<Facts> = {}): Facts => ({ ...base, sysctls, ipv6ForceForwardingNics: nics, ...more });
  const warnings = (facts: Facts) => diff(planDesired(config, facts, templates), facts).warnings;
  const one = diff(planDesired(config, withNics(['eth1']), templates), withNics(['eth1']));
  t.deepEqual(one.warnings, [{ kind: 'ipv6_forwarding', text: 'net.ipv6.conf.eth1.force_forwarding is 1 and no ip6tables FORWARD policy drops: IPv6 that comes in on eth1 is routed to '
    + 'the gateway\'s other NICs (Linux 6.17 and later, whatever net.ipv6.conf.all.forwarding says), to the VLANs and the uplink, with none of this '
    + 'policy and no NAT (the gateway programs IPv4 only): an IPv6 host there reaches the IPv6 hosts of the others (their replies come back through '
    + 'a NIC set so too). Switch it off (in a container: drop the --sysctl, Compose sysctls or network option that sets it; outside one '
    + 'sysctl -w net.ipv6.conf.eth1.force_forwarding=0), or drop forwarded IPv6 with a policy of your own (ip6tables -P FORWARD DROP)' }]);
  t.deepEqual(one.steps, diff(planDesired(config, base, templates), base).steps, 'the same steps: the gateway does not touch it');
  // Several NICs (a dot in a name is a slash in its sysctl), and the default every NIC attached later starts with; under --netns.
  t.deepEqual(warnings(withNics(['eth0', 'eth0.10', 'eth2'], { sysctls: { ...sysctls, 'net.ipv6.conf.default.force_forwarding': '1' }, commandPrefix: ['ip', 'netns', 'exec', 'gw'] }))?.map((w) => w.text), [
    'net.ipv6.conf.eth0.force_forwarding, net.ipv6.conf.eth0/10.force_forwarding, net.ipv6.conf.eth2.force_forwarding are 1 and no ip6tables FORWARD policy '
      + 'drops: IPv6 that comes in on eth0, eth0.10 or eth2 is routed to the gateway\'s other NICs (Linux 6.17 and later, whatever net.ipv6.conf.all.forwarding '
      + 'says), to the VLANs and the uplink, with none of this policy and no NAT (the gateway programs IPv4 only): an IPv6 host there reaches the IPv6 hosts '
      + 'of the others (their replies come back through a NIC set so too); net.ipv6.conf.default.force_forwarding is 1 too, so each NIC attached from now on '
      + 'forwards as well. Switch it off (in a container: drop the --sysctl, Compose sysctls or network option that sets it, net.ipv6.conf.default.force_forwarding '
      + 'included; outside one ip netns exec gw sysctl -w net.ipv6.conf.eth0.force_forwarding=0 net.ipv6.conf.eth0/10.force_forwarding=0 '
      + 'net.ipv6.conf.eth2.force_forwarding=0 net.ipv6.conf.default.force_forwarding=0), or drop forwarded IPv6 with a policy of your own '
      + '(ip netns exec gw ip6tables -P FORWARD DROP)',
  ]);
  t.is(warnings(withNics(['eth1'], { ipv6ForwardDroppedBy: 'ip6tables-nft' })), undefined);
  t.is(warnings(withNics([])), undefined);
  // all.forwarding on as well: one warning, that one (it opens every NIC).
  const all = withNics(['eth1'], { sysctls: { ...sysctls, 'net.ipv6.conf.all.forwarding': '1' } });
  t.deepEqual(warnings(all)!.map((w) => w.text.slice(0, w.text.indexOf(' is 1'))), ['net.ipv6.conf.all.forwarding']);
});

test('the other backend\'s FORWARD filtering anything is a warning naming it, its policy and rules, and the fix', async (t) => {
  const config = await readConfig('examples/lab.yaml');
  const templates = await loadTemplates();
  const base: Facts = { ...factsFor(config), backend: 'nft', backendWhy: 'Docker\'s DNS chains are there' };
  const other = (otherForward: Facts['otherForward']): Facts => ({ ...base, otherForward });
  const dropping = diff(planDesired(config, base, templates), other({ backend: 'legacy', policy: 'DROP', rules: 2 }));
  t.deepEqual(dropping.warnings, [{ kind: 'other_backend_forward', text: 'iptables-legacy\'s FORWARD chain (policy DROP, 2 rules) filters forwarded packets too (the kernel '
    + 'runs both rule sets), and the gateway\'s rules are in iptables-nft: what the gateway\'s policy accepts can still be dropped there. '
    + 'Empty it (iptables-legacy -P FORWARD ACCEPT; iptables-legacy -F FORWARD) or move those rules to iptables-nft' }]);
  t.regex(formatPlan(dropping), /^uplink: on eth0\nbackend: iptables-nft \(Docker's DNS chains are there\)\nwarning: iptables-legacy's FORWARD chain \(policy DROP, 2 rules\)/m);
  t.regex(diff(planDesired(config, base, templates), other({ backend: 'legacy', rules: 1 })).warnings?.[0]?.text ?? '', /FORWARD chain \(1 rule\)/);
  t.is(diff(planDesired(config, base, templates), base).warnings, undefined);
});

test('an uplink NIC that is missing is shown as waiting, and no default route is planned through it', async (t) => {
  const config = await readConfig('examples/lab.yaml');
  const plan = planFresh(config, await loadTemplates(), ['eth0']);
  const text = formatPlan(plan);
  t.regex(text, /^uplink: waiting for eth0$/m);
  t.notRegex(text, /^uplink: waiting: /m);
  t.false(plan.steps.some((s) => s.kind === 'route'), 'no route while the uplink NIC is missing');
  t.is(plan.desired.route, undefined);
  // The VLANs are still planned: their addresses and rules do not wait for the uplink.
  t.deepEqual(plan.steps.filter((s) => s.kind === 'address-add').map((s) => 'address' in s && s.address), ['192.168.10.1', '192.168.20.1']);
});

// ---- broken user templates ---------------------------------------------------------------------------------------

const broken = (name: string) => `test/fixtures/broken-templates/${name}`;

/** A rules.dir of its own with filter/forward.hbs holding `forward`, removed after `use`. */
async function withForwardTemplate(forward: string, use: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    await mkdir(join(dir, 'filter'));
    await writeFile(join(dir, 'filter', 'forward.hbs'), forward);
    await use(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function planWithUserDir(dir: string): Promise<Plan> {
  const config = await readConfig('examples/lab.yaml');
  const templates = await loadTemplates(dir);
  const facts = syntheticFacts(config);
  return diff(planDesired(config, facts, templates), facts);
}

test('the render with every NIC present (validate\'s) keeps the uplink outside every VLAN: one on 172.16.0.0/12 still has {{uplink.nic}}', async (t) => {
  // The synthetic uplink sat at 172.17.0.2/24, inside this VLAN, and was taken for its NIC: the uplink had no NIC, the
  // fixture's `-o {{../uplink.nic}}` rendered as `-o -p tcp`, and `validate` said "iptables refuses it: Bad argument `tcp'".
  const dir = await mkdtemp(join(tmpdir(), 'vgw-synthetic-'));
  try {
    const path = join(dir, 'gateway.yaml');
    await writeFile(path, `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 172.16.0.0/12, gateway: 172.16.0.1}
rules:
  dir: ${root('test/fixtures/rules.d')}
`);
    const { config } = await loadConfig(path);
    const desired = planDesired(config, syntheticFacts(config), await loadTemplates(config.rules.dir));
    const user = desired.chains.find((c) => c.name === 'VGW-USER-FORWARD')!.rules.map((r) => r.line.replace(/^-m comment --comment vgw:\S+ /, ''));
    t.deepEqual(user.slice(0, 2), [
      '-i eth1 -o eth0 -p tcp --dport 25 -m comment --comment "no-smtp-office" -j REJECT',
      '-i eth2 -o eth0 -p tcp --dport 25 -m comment --comment "no-smtp-lab" -j REJECT',
    ]);
    // Without uplink.gateway, the first /24 from Docker's 172.17.0.0 that no VLAN holds.
    t.deepEqual(syntheticFacts(config).links.find((l) => l.name === 'eth0')?.addresses, [{ address: '172.32.0.2', prefix: 24 }]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a rendered line has its whitespace folded: tabs, runs of spaces and the ends; blank lines are dropped', (t) => {
  const source = '-s {{a}}\t-j  ACCEPT \n\n   \n  -d {{a}} -j DROP\n-p tcp\t\t-j\u00a0REJECT\n';
  t.deepEqual(renderRules(source, 'fold.hbs', { a: '10.0.0.1' }), ['-s 10.0.0.1 -j ACCEPT', '-d 10.0.0.1 -j DROP', '-p tcp -j REJECT']);
});

// A quoted value is applied as written: `--log-prefix "a  b"` was applied as "a b", the whole line folded. iptables
// keeps the spaces, and iptables-save prints them back (checked in test/kernel/user-rules-quoted.test.ts).
test('whitespace inside double quotes is kept as written; outside them it is folded', (t) => {
  const source = '-j  LOG\t--log-prefix "a  b"  \n-m comment --comment "  x   y " -j ACCEPT\n'
    + '-p tcp -m string --algo bm --string " {{s}} " -j DROP\n';
  t.deepEqual(renderRules(source, 'fold.hbs', { s: 'GET  /' }), [
    '-j LOG --log-prefix "a  b"',
    '-m comment --comment "  x   y " -j ACCEPT',
    '-p tcp -m string --algo bm --string " GET  / " -j DROP',
  ]);
});

test('a user template with a syntax error is a TemplateError naming the file', async (t) => {
  const error = await t.throwsAsync(planWithUserDir(broken('syntax')), { instanceOf: TemplateError });
  t.is(error?.message, `${broken('syntax')}/filter/forward.hbs: syntax error on template line 1: "{{#each vlans}}" is never closed; `
    + 'end the block with {{/each}}');
});

test('a user template using a value that does not exist is a TemplateError (strict), naming the file and position', async (t) => {
  const error = await t.throwsAsync(planWithUserDir(broken('missing-variable')), { instanceOf: TemplateError });
  t.is(error?.message, `${broken('missing-variable')}/filter/forward.hbs: "nicname" is not defined (template line 3, column 6)`);
});

test('a user template naming a value that does not exist in a helper\'s argument (#each vlanz) is a TemplateError, not nothing', async (t) => {
  const error = await t.throwsAsync(planWithUserDir(broken('helper-typo')), { instanceOf: TemplateError });
  t.is(error?.message, `${broken('helper-typo')}/filter/forward.hbs: vlanz is not a value templates have (top level: vlans, waiting, uplink, zones)`);
  t.throws(() => renderRules('{{#if uplink.nicc}}\n-j DROP\n{{/if}}\n', 'f.hbs', guarded({ uplink: { nic: null } })), {
    message: 'f.hbs: uplink.nicc is not a value templates have (uplink: nic)',
  });
  // A field that exists without a value is read as null: {{#if}} guards it.
  t.deepEqual(renderRules('{{#if uplink.nic}}\n-o {{uplink.nic}} -j DROP\n{{/if}}\n-j ACCEPT\n', 'f.hbs', guarded({ uplink: { nic: null } })), ['-j ACCEPT']);
  t.deepEqual(renderRules('{{#each vlans}}\n-i {{nic}} -j DROP\n{{/each}}\n', 'f.hbs', guarded({ vlans: [{ nic: 'eth1' }, { nic: 'eth2' }] })), ['-i eth1 -j DROP', '-i eth2 -j DROP']);
});

test('a user template naming what every object inherits (toString, constructor, __proto__) is a TemplateError, not a value Handlebars silently denies', (t) => {
  // Handlebars refuses a property that is not the data's own: the value read as nothing (the {{#if}} block went, the
  // rule lost its address) and three lines of Handlebars' own went to stderr, outside the log.
  const data = () => guarded({ vlans: [{ name: 'office', nic: 'eth1' }], uplink: { nic: 'eth0' } });
  t.throws(() => renderRules('{{#if uplink.toString}}\n-o {{uplink.nic}} -j DROP\n{{/if}}\n', 'f.hbs', data()), {
    instanceOf: TemplateError, message: 'f.hbs: uplink.toString is not a value templates have (uplink: nic)',
  });
  t.throws(() => renderRules('{{#each vlans}}\n{{#if constructor}}-i {{nic}} -j DROP{{/if}}\n{{/each}}\n', 'f.hbs', data()), {
    instanceOf: TemplateError, message: 'f.hbs: vlans[0].constructor is not a value templates have (vlans[0]: name, nic)',
  });
  t.throws(() => renderRules('-s {{__proto__}}10.0.0.0/8 -j RETURN\n', 'f.hbs', data()), {
    instanceOf: TemplateError, message: 'f.hbs: __proto__ is not a value templates have (top level: vlans, uplink)',
  });
  t.throws(() => renderRules('{{#each vlans.map}}\n-j DROP\n{{/each}}\n', 'f.hbs', data()), {
    instanceOf: TemplateError, message: 'f.hbs: vlans.map is not a value templates have (vlans: an index)',
  });
  // What the data holds itself is read as before: a list's length and items, by index too.
  t.deepEqual(renderRules('{{#if vlans.length}}\n-i {{vlans.[0].nic}} -j DROP\n{{/if}}\n{{#each (lookup vlans 0)}}{{/each}}-j ACCEPT\n', 'f.hbs', data()), ['-i eth1 -j DROP', '-j ACCEPT']);
});

test('a user template writing a mapping or a list where a value goes says which, not "[object Object]"', (t) => {
  const data = () => guarded({ vlans: [{ name: 'office', nic: 'eth1' }], uplink: { nic: 'eth0', snatTo: null } });
  t.throws(() => renderRules('-o {{uplink}} -j DROP\n', 'f.hbs', data()), {
    instanceOf: TemplateError,
    message: 'f.hbs, rendered line 1: uplink is a mapping, not a value to write into a rule: write one of its fields (nic, snatTo), like {{uplink.nic}}',
  });
  t.throws(() => renderRules('{{#each vlans}}\n-i {{this}} -j DROP\n{{/each}}\n', 'f.hbs', data()), {
    instanceOf: TemplateError, message: 'f.hbs, rendered line 1: vlans[0] is a mapping, not a value to write into a rule: write one of its fields (name, nic)',
  });
  t.throws(() => renderRules('-i {{vlans}} -j DROP\n', 'f.hbs', data()), {
    instanceOf: TemplateError, message: 'f.hbs, rendered line 1: vlans is a list, not a value to write into a rule: write each item with {{#each vlans}}…{{/each}}',
  });
});

test('a user template whose "../" climbs above the top level, or a helper called without its values, gets a sentence, not a JavaScript error', (t) => {
  // The {{else}} of an {{#each}} is at the {{#each}}'s own level: "../" there leaves the data (Handlebars threw
  // "Cannot read properties of undefined (reading 'uplink')").
  const data = guarded({ vlans: [], uplink: { nic: 'eth0' } });
  t.throws(() => renderRules('{{#each vlans}}\n-i {{nic}} -j DROP\n{{else}}\n-o {{../uplink.nic}} -j DROP\n{{/each}}\n', 'f.hbs', data), {
    instanceOf: TemplateError,
    message: 'f.hbs: "uplink" was looked up above the top level of the data: a "../" too many '
      + '(the {{else}} part of an {{#each}} is at the level of the {{#each}} itself, not inside the list)',
  });
  t.throws(() => renderRules('-j {{lookup}}\n', 'f.hbs', data), {
    instanceOf: TemplateError, message: 'f.hbs: a helper was called without the values it takes (like {{lookup}} without a list or a mapping and a key)',
  });
});

const OUTSIDE = '(allowed: letters, digits, space and ._:,/!=+@%"-, and in a double-quoted value any printable ASCII character but \\)';
const INSIDE = '(in double quotes: printable ASCII characters, but not \\, which iptables reads as an escape)';
test('a rendered line with a character rules may not hold names the character and what is allowed', (t) => {
  const error = t.throws(() => renderRules("-j ACCEPT\n-m comment --comment 'x' -j ACCEPT\n", 'f.hbs', {}), { instanceOf: TemplateError });
  t.is(error?.message, `f.hbs line 2: "-m comment --comment 'x' -j ACCEPT" has a character that is not allowed in a rule: "'" ${OUTSIDE}`);
});

// Outside double quotes a rule holds what options, names and addresses are written with; inside them, the text of a
// value. A backslash is refused in both: in quotes iptables-restore reads it as an escape ("a\"b" is a"b).
const refusedCharacters: Array<[string, string, 'outside' | 'inside']> = [
  ['-j LOG --log-prefix [FW]', '[', 'outside'],
  ['-p tcp -m string --algo bm --hex-string |0d0a| -j DROP', '|', 'outside'],
  ['-j ACCEPT # a note', '#', 'outside'],
  ['-j ACCEPT; -F', ';', 'outside'],
  ['-j LOG --log-prefix "[FW" DROP]', ']', 'outside'],
  ['-m comment --comment "a" \\"b" -j ACCEPT', '\\', 'outside'],
  ['-m comment --comment "a \\" -j ACCEPT', '\\', 'inside'],
  ['-m comment --comment "a\tb" -j ACCEPT', '\t', 'inside'],
  ['-m comment --comment "a\rb" -j ACCEPT', '\r', 'inside'],
  ['-m comment --comment "caf\u00e9" -j ACCEPT', '\u00e9', 'inside'],
];
for (const [body, char, where] of refusedCharacters) {
  test(`a rendered line ${JSON.stringify(body)} is refused, naming the character and where it stands`, (t) => {
    const error = t.throws(() => renderRules('-j ACCEPT\n{{body}}\n', 'rules.d/filter/forward.hbs', { body }), { instanceOf: TemplateError });
    t.is(error?.message, `rules.d/filter/forward.hbs, rendered line 2: ${JSON.stringify(body)} has a character that is not allowed `
      + `${where === 'inside' ? `in a quoted value: ${JSON.stringify(char)} ${INSIDE}` : `in a rule: ${JSON.stringify(char)} ${OUTSIDE}`}`);
  });
}

// Inside double quotes iptables-restore reads no character as syntax but the closing quote (and \): a log prefix in
// brackets, a hex string between bars, a comment with an apostrophe were refused, though iptables takes them and
// iptables-save prints them back as written (nft and legacy, 1.8.9).
test('a double-quoted value may hold any printable ASCII character but \\ and the quote: brackets, bars, apostrophes', (t) => {
  const bodies = [
    '-j LOG --log-prefix "[FW DROP] "',
    '-p tcp -m string --algo bm --hex-string "|0d0a|" -j DROP',
    '-p tcp -m string --algo bm --string "GET |0d0a| HTTP" -j DROP',
    '-m comment --comment "it\'s [office] | {lab} #1 $HOME `id` ;&*?~^()<>" -j ACCEPT',
    '-j NFLOG --nflog-prefix "[vgw]  dropped"',
    '-m comment --comment "" -j ACCEPT',
  ];
  t.deepEqual(renderRules(bodies.join('\n'), 'rules.d/filter/forward.hbs', {}), bodies);
  // Written in the template as they are, refused lines beside them are named by the template's line.
  const error = t.throws(() => renderRules(`${bodies.join('\n')}\n-p tcp  --log-prefix  "[FW  DROP]"\n`, 'rules.d/filter/forward.hbs', {}),
    { instanceOf: TemplateError });
  t.is(error?.message, 'rules.d/filter/forward.hbs line 7: "-p tcp --log-prefix \\"[FW  DROP]\\"" has no -j target');
});

// Handlebars has no comparison: a rule for one VLAN of a loop could only be written with its subnet by hand.
test('(eq a b) picks one VLAN out of a loop, by name or by id; given other than two values it is a sentence', async (t) => {
  await withForwardTemplate([
    '{{#each vlans}}',
    '{{#if (eq name "lab")}}',
    '-i {{nic}} -p tcp --dport 25 -j REJECT',
    '{{else if (eq id 10)}}',
    '-i {{nic}} -p udp --dport 53 -j DROP',
    '{{/if}}',
    '{{#unless (eq name "office")}}',
    '-i {{nic}} -o {{../uplink.nic}} -p tcp --dport 23 -j DROP',
    '{{/unless}}',
    '{{/each}}',
    '',
  ].join('\n'), async (dir) => {
    const plan = await planWithUserDir(dir);
    const forward = /^-A VGW-USER-FORWARD .*$/gm;
    const payload = plan.steps.flatMap((s) => (s.kind === 'table' ? [s.payload] : [])).join('');
    t.deepEqual(payload.match(forward)?.map((l) => l.replace(/-m comment --comment vgw:\S+ /, '')), [
      '-A VGW-USER-FORWARD -i eth1 -p udp --dport 53 -j DROP',
      '-A VGW-USER-FORWARD -i eth2 -p tcp --dport 25 -j REJECT',
      '-A VGW-USER-FORWARD -i eth2 -o eth0 -p tcp --dport 23 -j DROP',
    ]);
  });
  t.throws(() => renderRules('{{#each vlans}}\n{{#if (eq name)}}\n-i {{nic}} -j DROP\n{{/if}}\n{{/each}}\n', 'f.hbs', guarded({ vlans: [{ name: 'lab', nic: 'eth2' }] })), {
    instanceOf: TemplateError, message: 'f.hbs: (eq …) compares two values, and was given 1: write (eq name "iot")',
  });
  t.deepEqual(renderRules('{{#if (eq id "10")}}\n-j DROP\n{{/if}}\n', 'f.hbs', guarded({ id: 10 })), [], 'as written: the number 10 is not the text "10"');
});

test('{{log}} is not a helper templates have: stdout is the supervisor\'s log stream', (t) => {
  t.throws(() => renderRules('{{log "hello"}}\n-j ACCEPT\n', 'f.hbs', {}), {
    instanceOf: TemplateError, message: 'f.hbs: {{log}} is not available in rule templates (it would write into the gateway\'s log stream)',
  });
});

test('a user template that multiplies its output (partials ten times over) is refused at 4 MiB, quickly and in little memory', async (t) => {
  // 10^7 lines of 10 characters from a 600-byte template: checking them took 3 minutes and 4.8 GB, and then the
  // process ran out of memory (a reload ended the supervisor). The render now stops once it has written 4 MiB.
  let source = '{{#*inline "a0"}}-j ACCEPT\n{{/inline}}';
  for (let i = 1; i <= 7; i++) source += `{{#*inline "a${i}"}}${`{{> a${i - 1}}}`.repeat(10)}{{/inline}}`;
  source += '{{> a7}}\n';
  const started = performance.now();
  await withForwardTemplate(source, async (dir) => {
    const error = await t.throwsAsync(planWithUserDir(dir), { instanceOf: TemplateError });
    t.is(error?.message, `${dir}/filter/forward.hbs: renders more than 4 MiB of rules (about 40,000), the most a template may: `
      + 'loops nested inside one another ({{#each}} in {{#each}}) or partials that call each other multiply what it writes');
  });
  // Half a second here alone; the bound only has to tell that from the minutes (or the crash) it was, on a machine
  // whose every core other tests share (10 s failed twice so, at a load average of 15).
  t.true(performance.now() - started < 60_000, `${Math.round(performance.now() - started)} ms`);
});

test('loops nested inside one another are counted once each: 4 MiB of rules is the limit, not 4 MiB times the depth', (t) => {
  const vlans = Array.from({ length: 300 }, (_, i) => ({ nic: `eth${i}` }));
  // 300 x 300 lines of about 30 characters (2.7 MB, which counted at both depths would be 5.4) pass, and the rules
  // are what they were; 300 x 300 x 300 do not.
  const two = renderRules('{{#each vlans}}{{#each ../vlans}}\n-i {{../nic}} -o {{nic}} -j ACCEPT\n{{/each}}{{/each}}\n', 'f.hbs', guarded({ vlans }), true);
  t.is(two.length, 90_000);
  t.is(two[301], '-i eth1 -o eth1 -j ACCEPT');
  t.throws(() => renderRules('{{#each vlans}}{{#each ../vlans}}{{#each ../../vlans}}\n-i {{../../nic}} -o {{nic}} -m comment --comment "a fairly long comment of ours" -j ACCEPT\n{{/each}}{{/each}}{{/each}}\n',
    'f.hbs', guarded({ vlans }), true), { instanceOf: TemplateError, message: /^f\.hbs: renders more than 4 MiB of rules/ });
});

test('a partial that includes itself is a sentence, not a JavaScript stack overflow', (t) => {
  t.throws(() => renderRules('{{#*inline "p"}}-j ACCEPT\n{{> p}}{{/inline}}{{> p}}\n', 'f.hbs', {}, true), {
    instanceOf: TemplateError, message: 'f.hbs: calls itself without end (a partial that includes itself, {{> name}} inside its own {{#*inline "name"}})',
  });
});

test('a partial block that includes itself ({{#> p}} inside its own inline) is said as a partial calling itself, not as blocks nested deep', (t) => {
  t.throws(() => renderRules('{{#*inline "p"}}{{#> p}}-j ACCEPT{{/p}}\n{{/inline}}{{#> p}}{{/p}}\n', 'f.hbs', guarded({ vlans: [] }), true), {
    instanceOf: TemplateError, message: 'f.hbs: calls itself without end (a partial that includes itself, {{> name}} inside its own {{#*inline "name"}})',
  });
});

test('blocks nested 2,000 deep, without a partial, are said as such, not as a partial that includes itself', (t) => {
  const deep = `${'{{#if vlans}}'.repeat(2000)}-j ACCEPT${'{{/if}}'.repeat(2000)}\n`;
  t.throws(() => renderRules(deep, 'f.hbs', guarded({ vlans: [] }), true), {
    instanceOf: TemplateError,
    message: 'f.hbs: nests blocks deeper than the gateway reads ({{#if}}, {{#each}} or {{#with}} inside one another a thousand times and more); a template needs a few levels',
  });
});

test('a user template line with -F is refused: templates write rule bodies, not commands', async (t) => {
  const error = await t.throwsAsync(planWithUserDir(broken('flush')), { instanceOf: TemplateError });
  t.is(error?.message, `${broken('flush')}/filter/forward.hbs line 2: "-F VGW-FORWARD -j ACCEPT" uses -F: `
    + 'templates write rule bodies, the planner writes commands');
});

// iptables reads a short option's value attached (-IFORWARD, -tnat, after flags that take none: -vIFORWARD) and a
// long option's after "=" (--append=FORWARD): each is the command or table option it spells, and refused as one.
const commandLines: Array<[string, string]> = [
  ['-j ACCEPT -IFORWARD', '-I (in -IFORWARD)'],
  ['-j ACCEPT -AFORWARD', '-A (in -AFORWARD)'],
  ['-j ACCEPT -DFORWARD', '-D (in -DFORWARD)'],
  ['-j ACCEPT -RFORWARD', '-R (in -RFORWARD)'],
  ['-FVGW-FORWARD -j ACCEPT', '-F (in -FVGW-FORWARD)'],
  ['-j ACCEPT -XVGW-X', '-X (in -XVGW-X)'],
  ['-j ACCEPT -NVGW-X', '-N (in -NVGW-X)'],
  ['-j ACCEPT -PFORWARD', '-P (in -PFORWARD)'],
  ['-j ACCEPT -EVGW-X', '-E (in -EVGW-X)'],
  ['-j ACCEPT -ZFORWARD', '-Z (in -ZFORWARD)'],
  ['-j ACCEPT -LFORWARD', '-L (in -LFORWARD)'],
  ['-j ACCEPT -SFORWARD', '-S (in -SFORWARD)'],
  ['-tnat -j DNAT --to-destination 10.0.0.1', '-t (in -tnat)'],
  ['-j ACCEPT -vIFORWARD', '-I (in -vIFORWARD)'],
  ['-j ACCEPT -nx4F', '-F (in -nx4F)'],
  ['-j ACCEPT --append=FORWARD', '--append (in --append=FORWARD)'],
  ['-j ACCEPT --insert=FORWARD', '--insert (in --insert=FORWARD)'],
  ['-j ACCEPT --delete=FORWARD', '--delete (in --delete=FORWARD)'],
  ['-j ACCEPT --replace=FORWARD', '--replace (in --replace=FORWARD)'],
  ['-j ACCEPT --new-chain=VGW-X', '--new-chain (in --new-chain=VGW-X)'],
  ['-j ACCEPT --new=VGW-X', '--new (in --new=VGW-X)'],
  ['-j ACCEPT --delete-chain=VGW-X', '--delete-chain (in --delete-chain=VGW-X)'],
  ['--flush=FORWARD -j ACCEPT', '--flush (in --flush=FORWARD)'],
  ['-j ACCEPT --policy=FORWARD', '--policy (in --policy=FORWARD)'],
  ['-j ACCEPT --rename-chain=VGW-X', '--rename-chain (in --rename-chain=VGW-X)'],
  ['-j ACCEPT --zero=FORWARD', '--zero (in --zero=FORWARD)'],
  ['-j ACCEPT --list=FORWARD', '--list (in --list=FORWARD)'],
  ['-j ACCEPT --list-rules=FORWARD', '--list-rules (in --list-rules=FORWARD)'],
  ['--table=nat -j ACCEPT', '--table (in --table=nat)'],
  ['-j ACCEPT --table nat', '--table'],
  ['-j ACCEPT -t nat', '-t'],
  ['-j ACCEPT -C FORWARD', '-C'],
  ['-j ACCEPT -CFORWARD', '-C (in -CFORWARD)'],
  ['-j ACCEPT --check=FORWARD', '--check (in --check=FORWARD)'],
];
for (const [body, uses] of commandLines) {
  test(`a user template line ${JSON.stringify(body)} is refused, naming the template file and line`, (t) => {
    const error = t.throws(() => renderRules(`-j ACCEPT\n{{body}}\n`, 'rules.d/filter/forward.hbs', { body }), { instanceOf: TemplateError });
    t.is(error?.message, `rules.d/filter/forward.hbs, rendered line 2: ${JSON.stringify(body)} uses ${uses}: `
      + 'templates write rule bodies, the planner writes commands');
  });
}

// A quote that opens and never closes (or sits inside a word) is refused here. iptables-restore 1.8.9 reads such a quote
// to the end of the line: `--comment x"y -j ACCEPT` becomes the comment "xy -j ACCEPT" and a rule with no target at
// all, though the checks here saw -j ACCEPT; `--log-prefix "-A FORWARD` fails the whole table at apply time.
for (const body of ['-j LOG --log-prefix "-A FORWARD', '-m comment --comment x"y -j ACCEPT']) {
  test(`a user template line with a quote that does not pair, ${JSON.stringify(body)}, is refused, naming the template file and line`, (t) => {
    const error = t.throws(() => renderRules(`-j ACCEPT\n{{body}}\n`, 'rules.d/filter/forward.hbs', { body }), { instanceOf: TemplateError });
    t.is(error?.message, `rules.d/filter/forward.hbs, rendered line 2: ${JSON.stringify(body)} has an unbalanced quote`);
  });
}

// The planner reads a rule's target as -j NAME, -g NAME, --jump NAME or --goto NAME, outside quotes (its checks of jump
// targets, loops and set writes). iptables reads other spellings too: a quoted option (`"-j" VGW-X`), the name attached
// (`-jVGW-X`, `--goto=VGW-X`), after flags (`-vj`), an abbreviation (`--got`). Such a jump to an undeclared chain or
// into a loop passed validate and failed the apply in the kernel (exit 1), a config error that should have been exit 2.
const hiddenTargets: Array<[string, string]> = [
  ['-p tcp "-j" VGW-NOPE', 'has the option "-j" in quotes, which iptables reads as the option itself: write options without quotes (quotes are for text, like a comment with spaces)'],
  // The comment's value is "-j" (iptables takes the word after --comment whatever it starts with); the jump is --got.
  ['-m comment --comment "-j" --got VGW-NOPE', 'writes its target as --got: write it as -j TARGET (or -g CHAIN), the option and the name as two words'],
  ['-p tcp "-jVGW-NOPE"', 'has the option "-jVGW-NOPE" in quotes, which iptables reads as the option itself: write options without quotes (quotes are for text, like a comment with spaces)'],
  ['-p tcp "--goto" VGW-FORWARD', 'has the option "--goto" in quotes, which iptables reads as the option itself: write options without quotes (quotes are for text, like a comment with spaces)'],
  ['-p tcp --got VGW-NOPE', 'writes its target as --got: write it as -j TARGET (or -g CHAIN), the option and the name as two words'],
  ['-p tcp --jum VGW-NOPE', 'writes its target as --jum: write it as -j TARGET (or -g CHAIN), the option and the name as two words'],
  ['-p tcp --jump=VGW-NOPE', 'writes its target as --jump=VGW-NOPE: write it as -j TARGET (or -g CHAIN), the option and the name as two words'],
  ['-p tcp --goto=VGW-FORWARD', 'writes its target as --goto=VGW-FORWARD: write it as -j TARGET (or -g CHAIN), the option and the name as two words'],
  ['-p tcp -jVGW-NOPE', 'writes its target as -jVGW-NOPE: write it as -j TARGET (or -g CHAIN), the option and the name as two words'],
  ['-p tcp -vg VGW-NOPE', 'writes its target as -vg: write it as -j TARGET (or -g CHAIN), the option and the name as two words'],
];
for (const [body, why] of hiddenTargets) {
  test(`a user template line whose target the planner would not see, ${JSON.stringify(body)}, is refused, naming the template file and line`, (t) => {
    const error = t.throws(() => renderRules(`-j ACCEPT\n{{body}}\n`, 'rules.d/filter/forward.hbs', { body }), { instanceOf: TemplateError });
    t.is(error?.message, `rules.d/filter/forward.hbs, rendered line 2: ${JSON.stringify(body)} ${why}`);
  });
}

// Every refused line and every broken template of rules.dir in one run: the first alone was said, and a template
// with three bad lines took three runs of validate (or three reloads) to fix.
test('every refused line of a template is said in one error, each with its rendered line', (t) => {
  const error = t.throws(() => renderRules('-j ACCEPT\nhello\n-p tcp -X foo -j ACCEPT\n-p udp\n', 'rules.d/filter/forward.hbs', {}), { instanceOf: TemplateError });
  t.is(error?.message, [
    'rules.d/filter/forward.hbs line 2: "hello" is not a rule body (it must start with an option such as -s or -j)',
    'rules.d/filter/forward.hbs line 3: "-p tcp -X foo -j ACCEPT" uses -X: templates write rule bodies, the planner writes commands',
    'rules.d/filter/forward.hbs line 4: "-p udp" has no -j target',
  ].join('\n'));
  t.deepEqual([error?.file, error?.line], ['rules.d/filter/forward.hbs', { rendered: 2, template: 2 }], 'the first problem is the error\'s own');
});

// Handlebars drops a line that holds a block's tag alone, so a template's output and its source part ways at the first
// {{#if}}: "rendered line 2" was template line 4, and a user counted lines of output they never saw.
test('a refused line is named by its line in the template where one line there is the rule as written; by its output line where a value made it', (t) => {
  const source = '{{#if nic}}\n-o {{nic}} -j ACCEPT\n{{/if}}\n-p tcp --dport 23\n{{#each ports}}\n-p tcp --dport {{this}}\n{{/each}}\n';
  const error = t.throws(() => renderRules(source, 'rules.d/filter/forward.hbs', { nic: 'eth1', ports: [25] }), { instanceOf: TemplateError });
  t.is(error?.message, [
    'rules.d/filter/forward.hbs line 4: "-p tcp --dport 23" has no -j target',
    'rules.d/filter/forward.hbs, rendered line 3: "-p tcp --dport 25" has no -j target',
  ].join('\n'));
});

// `! -s 10.0.0.0/8 -j MASQUERADE` is iptables' own spelling of a negated first match (iptables-save prints it so):
// it was refused as "not a rule body (it must start with an option such as -s or -j)".
test('a rule whose first match is negated (! -s, ! -d) is a rule body; a ! before anything but an option is not', (t) => {
  t.deepEqual(renderRules('! -s 10.0.0.0/8 -p tcp --dport 25 -j REJECT\n! -d 192.168.0.0/16 -j ACCEPT\n', 'rules.d/nat/postrouting.hbs', {}),
    ['! -s 10.0.0.0/8 -p tcp --dport 25 -j REJECT', '! -d 192.168.0.0/16 -j ACCEPT']);
  for (const body of ['! hello -j DROP', '!-s 10.0.0.0/8 -j DROP', '!']) {
    t.is(checkRuleBody(body), `${JSON.stringify(body)} is not a rule body (it must start with an option such as -s or -j)`);
  }
});

test('a template refusing thousands of lines says the first 20 and counts the rest', (t) => {
  const error = t.throws(() => renderRules('{{#each lines}}-p tcp\n{{/each}}', 'rules.d/filter/forward.hbs', { lines: Array.from({ length: 5000 }, (_, i) => i) }),
    { instanceOf: TemplateError });
  const lines = error?.message.split('\n') ?? [];
  t.is(lines.length, 21);
  t.is(lines[19], 'rules.d/filter/forward.hbs, rendered line 20: "-p tcp" has no -j target');
  t.is(lines[20], '(and 4980 more lines refused)');
});

test('every broken template of rules.dir is said in one error, by file', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    await mkdir(join(dir, 'filter'));
    await mkdir(join(dir, 'nat'));
    await writeFile(join(dir, 'filter', 'forward.hbs'), '-j ACCEPT\nhello\n');
    await writeFile(join(dir, 'nat', 'postrouting.hbs'), '{{nosuch}}\n');
    await writeFile(join(dir, 'nat', 'prerouting.hbs'), '-p tcp -j\n');
    const error = await t.throwsAsync(planWithUserDir(dir), { instanceOf: TemplateError });
    t.is(error?.message, [
      `${dir}/filter/forward.hbs line 2: "hello" is not a rule body (it must start with an option such as -s or -j)`,
      `${dir}/nat/postrouting.hbs: "nosuch" is not defined (template line 1, column 3)`,
      `${dir}/nat/prerouting.hbs line 1: "-p tcp -j" has no -j target`,
    ].join('\n'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a quoted jump into a loop is a config error naming the template, not a kernel failure at apply', async (t) => {
  await withForwardTemplate('-j ACCEPT\n-p tcp "-j" VGW-FORWARD\n', async (dir) => {
    const error = await t.throwsAsync(planWithUserDir(dir), { instanceOf: TemplateError });
    t.is(error?.message, `${dir}/filter/forward.hbs line 2: "-p tcp \\"-j\\" VGW-FORWARD" has the option "-j" in quotes, `
      + 'which iptables reads as the option itself: write options without quotes (quotes are for text, like a comment with spaces)');
  });
});

test('matches and targets that merely start like a command or table option are rule bodies', (t) => {
  const bodies = [
    '-p tcp -m tcp --dport 22 -j ACCEPT',
    '-s 10.0.0.0/8 -d 10.1.0.0/16 -i eth1 -o eth0 -j ACCEPT',
    '-p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu',
    '-p tcp -j DNAT --to-destination 10.0.0.1:22',
    '-p tcp -j DNAT --to-destination=10.0.0.1:22',
    '-j MARK --set-mark 1',
    '-j LOG --log-prefix "X"',
    '-j LOG --log-prefix "-A FORWARD "',
    '-m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT',
    '-m set --match-set vgw-office src -j DROP',
    '-m comment --comment "Table-driven" -j RETURN',
    '-f -j DROP',
    '-m policy --dir in --pol ipsec -j ACCEPT',
    '-m addrtype --dst-type LOCAL -j RETURN',
    '-m time --timestart 08:00 --timestop 18:00 -j ACCEPT',
    '-m limit --limit 5/min --limit-burst 10 -j ACCEPT',
    '-g VGW-USER-FORWARD',
    '--jump ACCEPT',
    '-p tcp --goto VGW-USER-FORWARD',
    '-m owner --gid-owner 5 -j ACCEPT',
    '-m comment --comment "a --got b -jX" -j ACCEPT',
  ];
  t.deepEqual(renderRules(bodies.join('\n'), 'rules.d/filter/forward.hbs', {}), bodies);
});

// A quoted word that starts with a dash is the value of the option before it, as iptables-restore reads it (checked
// with --test): a string to match, a comment, a log prefix. These were refused as "the option ... in quotes".
test('a quoted value that starts with a dash, beside the rule\'s target, is a value', (t) => {
  const bodies = [
    '-p tcp -m string --algo bm --string "-g" -j DROP',
    '-m comment --comment "-x" -j ACCEPT',
    '-j LOG --log-prefix "-FW-"',
    '-m comment --comment "--" -j ACCEPT',
  ];
  t.deepEqual(renderRules(bodies.join('\n'), 'rules.d/filter/forward.hbs', {}), bodies);
});

test('a user template jumping to an undeclared VGW- chain is a PlanError naming the file', async (t) => {
  const error = await t.throwsAsync(planWithUserDir(broken('undeclared-jump')), { instanceOf: PlanError });
  t.is(error?.message, `filter VGW-USER-FORWARD rule 2 (from ${broken('undeclared-jump')}/filter/forward.hbs line 2) jumps to VGW-NOPE, `
    + 'which is not a chain declared in the filter table');
});

test('a rules.dir laid out as a Kubernetes ConfigMap mount (files behind ..data links) is read through its links', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    await mkdir(join(dir, '..2026_11_28_20_00_00.1', 'filter'), { recursive: true });
    await writeFile(join(dir, '..2026_11_28_20_00_00.1', 'filter', 'forward.hbs'), '-p tcp --dport 25 -j REJECT\n');
    await symlink('..2026_11_28_20_00_00.1', join(dir, '..data'));
    await symlink(join('..data', 'filter'), join(dir, 'filter'));
    const templates = await loadTemplates(dir);
    t.deepEqual(templates.user.map((u) => [u.hook, u.template.file, u.template.source]), [['forward', join(dir, 'filter', 'forward.hbs'), '-p tcp --dport 25 -j REJECT\n']]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a link in rules.dir back to a directory that holds it is not followed: the walk ends, and the templates are read', async (t) => {
  // readdir's recursive walk followed `current -> .` for ever: validate, a start or a reload hung.
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    await mkdir(join(dir, 'filter'));
    await writeFile(join(dir, 'filter', 'forward.hbs'), '-p tcp --dport 25 -j REJECT\n');
    await symlink('.', join(dir, 'current'));
    await symlink('..', join(dir, 'filter', 'up'));
    const templates = await Promise.race([loadTemplates(dir), delay(30_000, undefined, { ref: false })]);
    t.deepEqual(templates?.user.map((u) => [u.hook, u.template.file]), [['forward', join(dir, 'filter', 'forward.hbs')]]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// The walk's depth is what keeps a link to / from walking the machine. A link to / itself would make this test the
// machine's: any stray .hbs file three levels down (/tmp/x/y.hbs) is named as misplaced, as it should be.
test('a link in rules.dir to a deep tree (as to /) is walked three levels down, no further: templates a level too deep are still named', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  const tree = await mkdtemp(join(tmpdir(), 'vgw-tree-'));
  try {
    await mkdir(join(dir, 'filter'));
    await writeFile(join(dir, 'filter', 'forward.hbs'), '-p tcp --dport 25 -j REJECT\n');
    // Levels below rules.dir through the link: root (1), a (2), b (3); c would be the fourth.
    await mkdir(join(tree, 'a', 'b', 'c', 'd'), { recursive: true });
    for (const deep of [['a', 'b', 'c'], ['a', 'b', 'c', 'd']]) await writeFile(join(tree, ...deep, 'far.hbs'), '-j RETURN\n');
    await symlink(tree, join(dir, 'root'));
    const templates = await Promise.race([loadTemplates(dir), delay(30_000, undefined, { ref: false })]);
    t.deepEqual(templates?.user.map((u) => [u.hook, u.template.file]), [['forward', join(dir, 'filter', 'forward.hbs')]]);
    await writeFile(join(tree, 'a', 'b', 'near.hbs'), '-j RETURN\n');
    const near = await t.throwsAsync(loadTemplates(dir), { instanceOf: ConfigError });
    t.deepEqual(near!.lines.filter((l) => l.includes('is not a known template')).map((l) => /\S+\.hbs/.exec(l)?.[0]), [join(dir, 'root', 'a', 'b', 'near.hbs')]);
    await rm(join(dir, 'root'));
    await mkdir(join(dir, 'old', 'nat'), { recursive: true });
    await writeFile(join(dir, 'old', 'nat', 'postrouting.hbs'), '-j RETURN\n');
    const misplaced = await t.throwsAsync(loadTemplates(dir), { instanceOf: ConfigError });
    t.regex(misplaced!.lines[0]!, /old\/nat\/postrouting\.hbs is not a known template/);
  } finally {
    await rm(dir, { recursive: true, force: true });
    await rm(tree, { recursive: true, force: true });
  }
});

test('a template that is no file (a link to a device) or larger than a template may render is a config error, not read', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    await mkdir(join(dir, 'filter'));
    await mkdir(join(dir, 'nat'));
    await symlink('/dev/zero', join(dir, 'filter', 'forward.hbs')); // read for ever, into memory
    const device = await t.throwsAsync(loadTemplates(dir), { instanceOf: ConfigError });
    t.deepEqual(device?.lines, [`rules.dir: cannot read ${join(dir, 'filter', 'forward.hbs')} (it is a device, not a template file)`]);
    await rm(join(dir, 'filter', 'forward.hbs'));
    await writeFile(join(dir, 'nat', 'postrouting.hbs'), '-j RETURN\n'.repeat(500_000)); // 5 MB
    const big = await t.throwsAsync(loadTemplates(dir), { instanceOf: ConfigError });
    t.deepEqual(big?.lines, [`rules.dir: cannot read ${join(dir, 'nat', 'postrouting.hbs')} (it is 5 MiB; a template is at most 4 MiB)`]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('every file of rules.dir that is no template or cannot be read is said, not the first alone', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    await mkdir(join(dir, 'filter'));
    await mkdir(join(dir, 'nat', 'prerouting.hbs'), { recursive: true });
    await symlink('/dev/zero', join(dir, 'filter', 'forward.hbs'));
    await writeFile(join(dir, 'filter', 'input.hbs'), '-j ACCEPT\n');
    await writeFile(join(dir, 'nat', 'postrouting.hbs'), '-j RETURN\n');
    const error = await t.throwsAsync(loadTemplates(dir), { instanceOf: ConfigError });
    t.deepEqual(error?.lines, [
      `rules.dir: ${join(dir, 'filter', 'input.hbs')} is not a known template; use filter/forward.hbs, nat/prerouting.hbs, nat/postrouting.hbs `
      + '(they fill VGW-USER-FORWARD, VGW-USER-PREROUTING, VGW-USER-POSTROUTING)',
      `rules.dir: cannot read ${join(dir, 'filter', 'forward.hbs')} (it is a device, not a template file)`,
      `rules.dir: cannot read ${join(dir, 'nat', 'prerouting.hbs')} (is a directory)`,
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('what a reload compares of rules.dir is read without following a link loop or reading a device', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    await mkdir(join(dir, 'filter'));
    await mkdir(join(dir, 'nat'));
    await writeFile(join(dir, 'filter', 'forward.hbs'), '-j ACCEPT\n');
    await symlink('/dev/zero', join(dir, 'nat', 'postrouting.hbs'));
    await symlink('.', join(dir, 'current'));
    const text = await Promise.race([userTemplatesText(dir), delay(30_000, undefined, { ref: false })]);
    t.regex(text ?? 'hung', /^\[\["filter\/forward\.hbs","-j ACCEPT\\n"\],\["nat\/postrouting\.hbs","\(\d+ 0 \d+(\.\d+)?\)"\]\]$/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a file in rules.dir that is not a known template is a config error', async (t) => {
  const error = await t.throwsAsync(loadTemplates(broken('unknown-file')), { instanceOf: ConfigError });
  t.deepEqual(error?.lines, [`rules.dir: ${broken('unknown-file')}/filter/input.hbs is not a known template; use filter/forward.hbs, `
    + 'nat/prerouting.hbs, nat/postrouting.hbs (they fill VGW-USER-FORWARD, VGW-USER-PREROUTING, VGW-USER-POSTROUTING)']);
});

test('a rules.dir that does not exist is a config error', async (t) => {
  const error = await t.throwsAsync(loadTemplates('test/fixtures/no-such-dir'), { instanceOf: ConfigError });
  t.deepEqual(error?.lines, ['rules.dir: cannot read test/fixtures/no-such-dir (no such directory)']);
});

// The kernel refuses these at commit time; the planner refuses them first, so a broken user template is a config
// error (PlanError, exit 2, nothing applied) rather than a failed apply (test/component/converge.test.ts has one
// that only the kernel can catch, and its rollback).
const refusedByPlanner: Array<[string, string, string]> = [
  ['a user nat template using DROP', 'nat-drop',
    `nat VGW-USER-POSTROUTING rule 1 (from ${broken('nat-drop')}/nat/postrouting.hbs line 1) uses DROP, which the nat table does not allow `
    + '(filter in the forward template instead)'],
  ['a user template that jumps back into VGW-FORWARD (a loop)', 'loop',
    `jump loop: VGW-FORWARD -> VGW-USER-FORWARD -> VGW-FORWARD (from ${broken('loop')}/filter/forward.hbs)`],
  ['a user filter template using DNAT', 'nat-in-filter',
    `filter VGW-USER-FORWARD rule 1 (from ${broken('nat-in-filter')}/filter/forward.hbs line 2) uses DNAT, which belongs in the nat table`],
  ['a user prerouting template using SNAT', 'snat-in-prerouting',
    `nat VGW-USER-PREROUTING rule 1 (from ${broken('snat-in-prerouting')}/nat/prerouting.hbs line 2) uses SNAT in PREROUTING; `
    + 'source NAT belongs in POSTROUTING'],
  ['a user postrouting template using DNAT', 'dnat-in-postrouting',
    `nat VGW-USER-POSTROUTING rule 1 (from ${broken('dnat-in-postrouting')}/nat/postrouting.hbs line 2) uses DNAT in POSTROUTING; `
    + 'destination NAT belongs in PREROUTING'],
];
for (const [title, dir, message] of refusedByPlanner) {
  test(`${title} is refused before the kernel sees it`, async (t) => {
    const error = await t.throwsAsync(planWithUserDir(broken(dir)), { instanceOf: PlanError });
    t.is(error?.message, message);
  });
}

// iptables refuses -o in PREROUTING and -i in POSTROUTING, but not in the user's chains jumped to from there (nft and
// legacy alike), where such a rule never matches: `-o {{uplink.nic}}` in nat/prerouting.hbs applied and did nothing.
test('a nat template matching the outgoing NIC in PREROUTING, or the incoming one in POSTROUTING, is refused naming the rule', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    await mkdir(join(dir, 'nat'), { recursive: true });
    await writeFile(join(dir, 'nat', 'prerouting.hbs'), '-i {{uplink.nic}} -p tcp --dport 8080 -j DNAT --to-destination 192.168.10.100:80\n-o eth0 -p tcp --dport 8081 -j ACCEPT\n');
    await writeFile(join(dir, 'nat', 'postrouting.hbs'), '-o eth0 -s 10.9.0.0/16 -j MASQUERADE\n! --in-interface eth1 -j ACCEPT\n');
    const error = await t.throwsAsync(planWithUserDir(dir), { instanceOf: PlanError });
    t.is(error?.message, [
      `nat VGW-USER-POSTROUTING rule 2 (from ${dir}/nat/postrouting.hbs line 2) matches an incoming NIC (-i) in POSTROUTING, where a packet has none any more: `
        + 'the match cannot work there (iptables refuses -i in POSTROUTING itself)',
      `nat VGW-USER-PREROUTING rule 2 (from ${dir}/nat/prerouting.hbs line 2) matches an outgoing NIC (-o) in PREROUTING, where a packet has none yet: `
        + 'the match cannot work there (iptables refuses -o in PREROUTING itself)',
    ].join('\n'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// A target's text is read outside quoted strings: a comment cannot hide a loop, nor lend a rule its target.
test('a jump hidden behind a quoted comment that says -j is found, and a comment saying -j is not a target', async (t) => {
  await withForwardTemplate('-m comment --comment "x -j ACCEPT y" -j VGW-FORWARD\n', async (dir) => {
    const loop = await t.throwsAsync(planWithUserDir(dir), { instanceOf: PlanError });
    t.is(loop?.message, `jump loop: VGW-FORWARD -> VGW-USER-FORWARD -> VGW-FORWARD (from ${dir}/filter/forward.hbs)`);
  });
  await withForwardTemplate('-m comment --comment "a -j ACCEPT" -j VGW-FROM-10\n-m comment --comment "to -j DROP" -p tcp --dport 25 -j REJECT\n',
    async (dir) => {
      await t.notThrowsAsync(planWithUserDir(dir));
    });
});

test('targets the kernel takes only in mangle or raw are refused in filter and nat, naming the table', async (t) => {
  await withForwardTemplate('-j DSCP --set-dscp 1\n-p tcp -j CT --notrack\n-j TTL --ttl-set 64\n', async (dir) => {
    const error = await t.throwsAsync(planWithUserDir(dir), { instanceOf: PlanError });
    const file = `${dir}/filter/forward.hbs`;
    t.is(error?.message, [
      `filter VGW-USER-FORWARD rule 1 (from ${file} line 1) uses DSCP, which the kernel allows only in the mangle table (the gateway writes filter and nat)`,
      `filter VGW-USER-FORWARD rule 2 (from ${file} line 2) uses CT, which the kernel allows only in the raw table (the gateway writes filter and nat)`,
      `filter VGW-USER-FORWARD rule 3 (from ${file} line 3) uses TTL, which the kernel allows only in the mangle table (the gateway writes filter and nat)`,
    ].join('\n'));
  });
});

test('a user template may fill sets of its own, not the gateway\'s: a SET target writing into a VGW- set is refused', async (t) => {
  // Each spelling iptables reads (checked with iptables-restore --test): the set's name after "=" or in quotes, the
  // option abbreviated. Those three passed, and a rule of rules.dir added its sources to VGW-NICS-0.
  const rules = [
    '-s 10.9.9.9 -j SET --add-set VGW-SUBNETS src',
    '-s 10.9.9.8 -j SET --del-set VGW-NICS-0 src',
    '-j SET --add-set seen src',
    '-s 10.9.9.7 -j SET --add-set=VGW-NICS-0 src',
    '-s 10.9.9.6 -j SET --ad VGW-PAIRS-0 src,dst',
    '-s 10.9.9.5 -j SET --del-s "VGW-ROUTED" src,src',
    '-m comment --comment "not --add-set VGW-NICS-0" -j SET --map-set=VGW-NICS-0 src --map-mark',
    '-m set --match-set VGW-SUBNETS src -j SET --add-set seen src',
  ];
  await withForwardTemplate(`${rules.join('\n')}\n`, async (dir) => {
    const error = await t.throwsAsync(planWithUserDir(dir), { instanceOf: PlanError });
    const file = `${dir}/filter/forward.hbs`;
    t.is(error?.message, [
      `filter VGW-USER-FORWARD rule 1 (from ${file} line 1) writes into VGW-SUBNETS, the gateway's own set: use a set of your own`,
      `filter VGW-USER-FORWARD rule 2 (from ${file} line 2) writes into VGW-NICS-0, the gateway's own set: use a set of your own`,
      `filter VGW-USER-FORWARD rule 4 (from ${file} line 4) writes into VGW-NICS-0, the gateway's own set: use a set of your own`,
      `filter VGW-USER-FORWARD rule 5 (from ${file} line 5) writes into VGW-PAIRS-0, the gateway's own set: use a set of your own`,
      `filter VGW-USER-FORWARD rule 6 (from ${file} line 6) writes into VGW-ROUTED, the gateway's own set: use a set of your own`,
      `filter VGW-USER-FORWARD rule 7 (from ${file} line 7) writes into VGW-NICS-0, the gateway's own set: use a set of your own`,
    ].join('\n'));
  });
});

test('what the product writes passes the same checks: user chains jumped to once, ACCEPT and REJECT in user templates', async (t) => {
  // (The golden tests above cover the shipped templates: DNAT in PREROUTING, MASQUERADE and SNAT in POSTROUTING.)
  await t.notThrowsAsync(planWithUserDir('test/fixtures/rules.d'));
});

test('a user template only the kernel refuses (a match outside its hooks) passes the planner', async (t) => {
  // Not every refusal can be known up front; this one is left to the kernel, and apply rolls back (converge.test.ts).
  await t.notThrowsAsync(planWithUserDir(broken('kernel-rejects')));
});

// iptables (nft and legacy alike) keeps 255 characters of a comment and drops the rest without a word: a user's
// comment of 300 characters was applied cut, and validate said nothing.
test('a comment longer than iptables keeps is refused, naming its length; 255 characters pass', (t) => {
  const comment = (n: number) => `-p tcp --dport 25 -m comment --comment "${'a'.repeat(n)}" -j REJECT`;
  t.is(checkRuleBody(comment(255)), undefined);
  t.is(checkRuleBody(comment(256)), `${JSON.stringify(comment(256))} has a comment of 256 characters: iptables keeps 255 and cuts the rest without a word`);
  const unquoted = `-m comment --comment ${'b'.repeat(300)} -j ACCEPT`;
  t.is(checkRuleBody(unquoted), `${JSON.stringify(unquoted)} has a comment of 300 characters: iptables keeps 255 and cuts the rest without a word`);
  // A long --log-prefix, or a long word after a quoted "--comment" (a value, not the option), is not a comment.
  t.is(checkRuleBody(`-m comment --comment "--comment" -m string --algo bm --string "${'c'.repeat(100)}" -j DROP`), undefined);
});

// iptables cuts a LOG prefix to 29 characters (and, on legacy, an NFLOG prefix to 63) as it cuts a comment, without a
// word: `--log-prefix "telnet from {{name}} to the uplink: "` was applied as "telnet from office to the upl".
test('a log prefix longer than iptables keeps is refused, naming its length; 29 characters pass', (t) => {
  const log = (prefix: string) => `-p tcp --dport 23 -j LOG --log-prefix "${prefix}" --log-level 4`;
  t.is(checkRuleBody(log('telnet from office to upl: ')), undefined);
  t.is(checkRuleBody(log('x'.repeat(29))), undefined);
  const long = log('telnet from office to the uplink: ');
  t.is(checkRuleBody(long), `${JSON.stringify(long)} has a log prefix of 34 characters: iptables keeps 29 and cuts the rest without a word`);
  const nflog = (n: number) => `-j NFLOG --nflog-group 2 --nflog-prefix ${'n'.repeat(n)}`;
  t.is(checkRuleBody(nflog(63)), undefined);
  t.is(checkRuleBody(nflog(64)), `${JSON.stringify(nflog(64))} has a NFLOG prefix of 64 characters: iptables keeps 63 and cuts the rest without a word`);
  // A long text that is the value of another option, or a quoted "--log-prefix" (a value), is no prefix.
  t.is(checkRuleBody(`-m string --algo bm --string "--log-prefix" -m comment --comment "${'c'.repeat(100)}" -j DROP`), undefined);
});

// A supervisor runs for months and compiles each new text of a user's template (every reload that edits one): the
// compiled templates were kept for good, one per text ever rendered (about 9 KB of heap and 35 KB of RSS apiece). Serial:
// its child's 600 compiles would otherwise take the CPU from the tests of this file that are timed.
test.serial('edited templates do not pile up: 600 texts of a user template rendered one after another leave the heap as it was', async (t) => {
  const script = `
    import { renderRules } from './src/template/render.ts';
    const model = { vlans: [{ nic: 'eth1', name: 'office' }] };
    const edit = (n) => '{{!-- edit ' + n + ' --}}\\n{{#each vlans}}\\n-i {{nic}} -p tcp --dport ' + (1000 + n) + ' -m comment --comment "edit-' + n + '-{{name}}" -j RETURN\\n{{/each}}\\n';
    const render = (n) => renderRules(edit(n), 'rules.d/filter/forward.hbs', model);
    for (let n = 0; n < 100; n++) render(n); // what stays (the cache at its bound, the engine's own) is there before
    globalThis.gc();
    const before = process.memoryUsage().heapUsed;
    for (let n = 100; n < 700; n++) render(n);
    globalThis.gc();
    console.log(JSON.stringify({ grewKb: Math.round((process.memoryUsage().heapUsed - before) / 1024), last: render(699) }));
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', '--import=tsx', '--input-type=module', '-e', script], { cwd: root(''), timeout: 60_000 });
  const { grewKb, last } = JSON.parse(stdout) as { grewKb: number; last: string[] };
  t.deepEqual(last, ['-i eth1 -p tcp --dport 1699 -m comment --comment "edit-699-office" -j RETURN']);
  t.log(`the heap grew by ${grewKb} KB over 600 edits`);
  t.true(grewKb < 1024, `the heap grew by ${grewKb} KB over 600 edits`);
});

// iptables-restore reads a line into 10,240 bytes and takes the rest for a line of its own: a user's rule of 12,249
// characters passed validate's own checks, and iptables then refused "Bad argument `yyyy…'", naming no rule (and a
// rest that was a word like COMMIT committed the rule cut short although the restore failed).
test('a rule body longer than iptables-restore reads as one line is refused, shown by its start and length; 8,192 characters pass', (t) => {
  // Comments of 200 characters after the target, cut to n characters (iptables would take them: 3 words in 222).
  const rule = (n: number) => `-s 10.1.2.3 -j ACCEPT${' -m comment --comment '.padEnd(222, 'y').repeat(60)}`.slice(0, n);
  t.is(rule(8192).length, 8192);
  t.is(checkRuleBody(rule(8192)), undefined);
  t.is(checkRuleBody(rule(8193)), '"-s 10.1.2.3 -j ACCEPT -m comment --comme…" (8,193 characters) is too long for a rule: iptables-restore reads '
    + 'about 10,000 characters of a line and takes the rest for a line of its own; a rule here is at most 8,192 characters (split it '
    + 'into several rules, or match long lists with an ipset of your own)');
  // In a template, the line is named with the file, as every refused line is.
  t.throws(() => renderRules(`-j ACCEPT\n${rule(12_249)}\n`, 'f.hbs', {}, true), {
    instanceOf: TemplateError,
    message: 'f.hbs line 2: "-s 10.1.2.3 -j ACCEPT -m comment --comme…" (12,249 characters) is too long for a rule: iptables-restore '
      + 'reads about 10,000 characters of a line and takes the rest for a line of its own; a rule here is at most 8,192 characters (split '
      + 'it into several rules, or match long lists with an ipset of your own)',
  });
});
