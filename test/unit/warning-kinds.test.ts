/**
 * vlan_gateway_warnings by kind: each warning a pass can carry, made by the code that makes it, carries the kind of
 * what it says, every kind is made by one of them, and the kind is given there, not read back from the text. And the
 * series: every kind is exported at 0 before anything is warned of, so an alert or a dashboard on a kind has a series
 * from the first scrape.
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { clearStaleFlows, CONNTRACK_MISSING, CONNTRACK_MISSING_WARNING, flowsWarning } from '../../src/apply/conntrack.js';
import { parseConfigText } from '../../src/config/load.js';
import { CommandError, type CommandRunner } from '../../src/exec/runner.js';
import { Metrics } from '../../src/metrics/metrics.js';
import type { Link } from '../../src/observe/facts.js';
import { WARNING_KINDS, type Warning, type WarningKind } from '../../src/plan/types.js';
import { uplinkOverlapWarnings, warningsOf } from '../../src/plan/warnings.js';
import { countByKind } from '../../src/reconcile/warning-kinds.js';
import { parseMetrics, series } from '../helpers/supervisor.js';

const lab = parseConfigText(await readFile(new URL('../../examples/lab.yaml', import.meta.url), 'utf8'), 'lab.yaml');
const empty = { chains: new Set<string>(), rules: new Map() };
const quiet: Parameters<typeof warningsOf>[0] = { sysctls: {}, backend: 'nft', tables: { filter: empty, nat: empty }, sets: new Map() };
const withSetRule = { chains: new Set(['VGW-SOURCES']), rules: new Map([['VGW-SOURCES', [{ body: '-m set --match-set VGW-SUBNETS src -j RETURN', packets: 0, bytes: 0 }]]]) };
/** The only warning `facts` gives. */
const only = (facts: Parameters<typeof warningsOf>[0]) => {
  const warnings = warningsOf(facts);
  if (warnings.length !== 1) throw new Error(`expected one warning, got ${warnings.length}: ${warnings.map((w) => w.text).join('\n')}`);
  return warnings[0]!;
};
const uplinkWith = (address: string, prefix: number) => ({ name: 'eth0', addresses: [{ address, prefix }] }) as unknown as Link;
const office = lab.vlans.find((v) => v.name === 'office')!;

/** conntrack -L failing as a broken conntrack does (not as a missing one). */
const failingConntrack: CommandRunner = {
  run: async (argv) => {
    throw new CommandError(argv, 1, 'conntrack v1.4.7 (conntrack-tools): Operation failed: invalid parameters\n');
  },
  start: (argv) => {
    throw new Error(`not expected here: ${argv.join(' ')}`);
  },
};

test('every warning a pass can carry has the kind of what it says, and every kind is made', async (t) => {
  const flows = await clearStaleFlows(failingConntrack, [{ kind: 'conntrack-clear', ports: [51820, 51820], forward: 'added', local: ['192.168.10.1'] }]);
  t.truthy(flows.warning, 'the failing conntrack is said');
  const made: Array<[WarningKind, Warning]> = [
    ['ipv6_forwarding', only({ ...quiet, sysctls: { 'net.ipv6.conf.all.forwarding': '1' } })],
    ['ipv6_forwarding', only({ ...quiet, sysctls: { 'net.ipv6.conf.all.force_forwarding': '1' }, commandPrefix: ['ip', 'netns', 'exec', 'gw'] })],
    ['ipv6_forwarding', only({ ...quiet, sysctls: { 'net.ipv6.conf.all.force_forwarding': '0' }, ipv6ForceForwardingNics: ['eth1'] })],
    ['ipv6_forwarding', only({ ...quiet, sysctls: { 'net.ipv6.conf.default.force_forwarding': '1' }, ipv6ForceForwardingNics: ['eth0', 'eth0.10'] })],
    ['other_backend_forward', only({ ...quiet, otherForward: { backend: 'legacy', policy: 'DROP', rules: 2 } })],
    ['other_backend_forward', only({ ...quiet, backend: 'legacy', otherForward: { backend: 'nft', rules: 1 } })],
    ['legacy_unreadable', only({ ...quiet, unreadLegacy: ['filter', 'nat'] })],
    ['ipset_missing', only({ sysctls: {}, backend: 'nft', tables: { filter: withSetRule, nat: empty } })],
    ['uplink_overlap', uplinkOverlapWarnings({ nic: uplinkWith('192.168.10.200', 25) }, [{ vlan: office }])[0]!],
    ['uplink_overlap', uplinkOverlapWarnings({ nic: uplinkWith('192.168.10.200', 32) }, [{ vlan: office }])[0]!],
    ['conntrack_missing', flowsWarning({ cleared: 0, missing: true })!],
    ['conntrack_missing', CONNTRACK_MISSING_WARNING],
    ['flows_not_cleared', flowsWarning(flows)!],
  ];
  for (const [kind, warning] of made) t.is(warning.kind, kind, warning.text);
  t.deepEqual([...new Set(made.map(([kind]) => kind))].sort(), [...WARNING_KINDS].sort(), 'each kind is made here');
  // The texts are what plan, apply, the log and /status say: the tool missing is the sentence the CLI says too.
  t.is(CONNTRACK_MISSING_WARNING.text, CONNTRACK_MISSING);
  t.is(flowsWarning(flows)?.text, flows.warning);
  t.is(flowsWarning({ cleared: 3 }), undefined, 'all cleared: nothing to say');
});

test('warnings counted by kind: every kind present, at 0 where none is', (t) => {
  const ipv6 = only({ ...quiet, sysctls: { 'net.ipv6.conf.all.forwarding': '1' } });
  const overlaps = uplinkOverlapWarnings({ nic: uplinkWith('192.168.0.1', 16) }, lab.vlans.map((vlan) => ({ vlan })));
  t.is(overlaps.length, lab.vlans.length, overlaps.map((w) => w.text).join('\n'));
  t.deepEqual(countByKind([ipv6, ...overlaps]), { ...Object.fromEntries(WARNING_KINDS.map((kind) => [kind, 0])), ipv6_forwarding: 1, uplink_overlap: lab.vlans.length });
});

test('vlan_gateway_warnings is exported for every kind, at 0, before any pass', async (t) => {
  const samples = series(parseMetrics(await new Metrics('0.0.0-test').text()), 'vlan_gateway_warnings');
  t.deepEqual(samples.map((s) => [s.labels, s.value]), WARNING_KINDS.map((kind) => [{ kind }, 0]));
});
