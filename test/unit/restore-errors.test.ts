/**
 * restoreFailureContext (src/apply/parse-restore-failure.ts): the failing line of a restore payload, numbered, with two lines either
 * side. The stderr texts are what iptables 1.8.9 printed on this machine for such payloads (nft and legacy).
 */
import test from 'ava';
import { CommandError } from '../../src/exec/runner.js';
import { ApplyError } from '../../src/apply/apply.js';
import { refusedAtCommit, refusedRulesText, refusedUserRules, restoreFailureContext } from '../../src/apply/parse-restore-failure.js';
import type { TableStep } from '../../src/plan/types.js';
import { gatewayRefusal } from '../../src/cli/reload.js';

const PAYLOAD = ['*nat', ':VGW-X - [0:0]', '-A VGW-X -p udp --dport 9 -j TCPMSS --clamp-mss-to-pmtu', '-A POSTROUTING -j VGW-X', 'COMMIT', ''].join('\n');
const AROUND_3 = [
  '     1 | *nat',
  '     2 | :VGW-X - [0:0]',
  '>    3 | -A VGW-X -p udp --dport 9 -j TCPMSS --clamp-mss-to-pmtu',
  '     4 | -A POSTROUTING -j VGW-X',
  '     5 | COMMIT',
].join('\n');

const STDERRS: Array<[string, string]> = [
  ['a line iptables-nft cannot parse', 'iptables-nft-restore v1.8.9 (nf_tables): Bad IP address "999.1.1.1"\nError occurred at line: 3\n'
    + "Try `iptables-nft-restore -h' or 'iptables-nft-restore --help' for more information.\n"],
  ['a rule the kernel refuses (nft)', 'iptables-nft-restore v1.8.9 (nf_tables): \nline 3: RULE_APPEND failed (Invalid argument): rule in chain VGW-X\n'],
  ['a line iptables-legacy cannot parse', "iptables-restore v1.8.9 (legacy): host/network `999.1.1.1' not found\nError occurred at line: 3\n"],
  ['a table the kernel refuses (legacy)', 'iptables-restore: line 3 failed\n'],
];
for (const [title, stderr] of STDERRS) {
  test(`the failing line and its neighbours: ${title}`, (t) => {
    t.is(restoreFailureContext(PAYLOAD, stderr), AROUND_3);
  });
}

test('at the edges the context is cut short; a stderr without a line number gives none', (t) => {
  t.is(restoreFailureContext(PAYLOAD, 'iptables-restore: line 1 failed\n'), ['>    1 | *nat', '     2 | :VGW-X - [0:0]', '     3 | -A VGW-X -p udp --dport 9 -j TCPMSS --clamp-mss-to-pmtu'].join('\n'));
  t.is(restoreFailureContext(PAYLOAD, 'iptables-nft-restore: unable to initialize table \'nat\'\n'), '');
});

// iptables-nft names every line of a table the kernel refused (it judges the nf_tables batch whole), in a message cut
// at about 1 KiB: 40 refused rules of one chain printed 17 lines and "line " (iptables 1.8.9, this machine).
test('the rules of rules.dir the kernel refuses: each named by its chain and number, and where iptables cut its list short', (t) => {
  const user = Array.from({ length: 20 }, (_, i) => `-A VGW-USER-FORWARD -m comment --comment vgw:h${i} -p udp --dport ${i + 1} -j TCPMSS --clamp-mss-to-pmtu`);
  const payload = ['*filter', ':VGW-USER-FORWARD - [0:0]', ':VGW-FORWARD - [0:0]', '-A VGW-FORWARD -j VGW-USER-FORWARD', ...user, 'COMMIT', ''].join('\n');
  const refused = (lines: number[], tail = '') => `iptables-nft-restore v1.8.9 (nf_tables): \n${lines.map((n) => `line ${n}: RULE_APPEND failed (Invalid argument): rule in chain VGW-USER-FORWARD\n`).join('')}${tail}`;
  const two = refusedUserRules('filter', payload, refused([6, 9]));
  t.deepEqual(two, {
    rules: [
      { table: 'filter', chain: 'VGW-USER-FORWARD', rule: 2, text: '-p udp --dport 2 -j TCPMSS --clamp-mss-to-pmtu', reason: 'Invalid argument' },
      { table: 'filter', chain: 'VGW-USER-FORWARD', rule: 5, text: '-p udp --dport 5 -j TCPMSS --clamp-mss-to-pmtu', reason: 'Invalid argument' },
    ],
    cut: false,
  });
  // Each by its template, and the line there where one line is the rule as written (not the one a value made).
  const template = { file: '/r/filter/forward.hbs', source: '{{#each ports}}\n-p udp --dport {{this}} -j TCPMSS --clamp-mss-to-pmtu\n{{/each}}\n  -p udp  --dport 5 -j TCPMSS --clamp-mss-to-pmtu\n' };
  t.is(refusedRulesText(two.rules, two.cut, (chain) => (chain === 'VGW-USER-FORWARD' ? template : undefined)), '\n'
    + 'the rules of rules.dir the kernel refuses (its reasons are in dmesg):\n'
    + 'filter VGW-USER-FORWARD rule 2 (from /r/filter/forward.hbs): the kernel refuses it (Invalid argument): -p udp --dport 2 -j TCPMSS --clamp-mss-to-pmtu\n'
    + 'filter VGW-USER-FORWARD rule 5 (from /r/filter/forward.hbs line 4): the kernel refuses it (Invalid argument): -p udp --dport 5 -j TCPMSS --clamp-mss-to-pmtu');
  // Cut short: the lines it names, past 10 counted, and that more may be refused.
  const cut = refusedUserRules('filter', payload, refused(Array.from({ length: 12 }, (_, i) => i + 5), 'line '));
  t.true(cut.cut);
  t.is(cut.rules.length, 12);
  t.deepEqual(refusedRulesText(cut.rules, cut.cut).split('\n').slice(-3), [
    'filter VGW-USER-FORWARD rule 10: the kernel refuses it (Invalid argument): -p udp --dport 10 -j TCPMSS --clamp-mss-to-pmtu',
    '(and 2 more)',
    '(iptables cut its list short: rules after the last may be refused too)',
  ]);
  // A line of the gateway's own, legacy's COMMIT, a parse error: no rule of rules.dir to name.
  t.deepEqual(refusedUserRules('filter', payload, 'iptables-nft-restore v1.8.9 (nf_tables): \nline 4: RULE_APPEND failed (Invalid argument): rule in chain VGW-FORWARD\n').rules, []);
  t.deepEqual(refusedUserRules('filter', payload, 'iptables-restore: line 25 failed\n'), { rules: [], cut: false });
});

// What counts as the kernel refusing a payload at commit (a reload's config refused and reverted: CommitRefusal), and
// what is a restore that could not do its work, retried as any failed pass. The texts are iptables 1.8.9's, on this
// machine (the lock held past the wait with XTABLES_LOCKFILE of a test's own; a killed one has no exit code).
test('refused at commit: the kernel\'s verdict on the payload, not the lock held, a restore killed or memory short', (t) => {
  const legacy = ['iptables-legacy-restore', '--noflush', '--wait'];
  const nft = ['iptables-nft-restore', '--noflush'];
  const refused = (argv: string[], exitCode: number | null, stderr: string) => refusedAtCommit(PAYLOAD, new CommandError(argv, exitCode, stderr));
  t.true(refused(legacy, 1, 'iptables-restore: line 5 failed\n'), 'legacy, at its COMMIT');
  t.true(refused(nft, 4, 'iptables-nft-restore v1.8.9 (nf_tables): \nline 3: RULE_APPEND failed (Invalid argument): rule in chain VGW-X\n'), 'nft, a rule named');
  t.true(refused(nft, 4, 'iptables-nft-restore v1.8.9 (nf_tables): \nline 3: RULE_APPEND failed (No such file or directory): rule in chain VGW-X\n'), 'a module missing');
  t.false(refused(legacy, 1, 'iptables-restore: line 3 failed\n'), 'legacy, a rule line: its parser\'s');
  t.false(refused(legacy, 4, "Can't lock /run/xtables.lock: Resource temporarily unavailable\nAnother app is currently holding the xtables lock. Stopped waiting after 5s.\n"), 'the lock held');
  t.false(refused(legacy, null, 'killed by SIGKILL'), 'killed');
  t.false(refused(nft, 4, 'iptables-nft-restore v1.8.9 (nf_tables): \nline 3: RULE_APPEND failed (Cannot allocate memory): rule in chain VGW-X\n'), 'memory short');
  t.false(refused(nft, 2, 'iptables-nft-restore v1.8.9 (nf_tables): Bad IP address "999.1.1.1"\nError occurred at line: 3\n'), 'a parse error');
  t.false(refusedAtCommit(PAYLOAD, new Error('spawn iptables-legacy-restore ENOENT')), 'not run');
});

// What a reload refused at commit with no rule of rules.dir named says (src/cli/reload.ts): the gateway's own rules,
// named by iptables-nft or alone in the table iptables-legacy refused, are not looked for in the user's templates.
test('a reload refused at commit with no rule of rules.dir named says whose rules they were', (t) => {
  const step = { kind: 'table', table: 'nat', payload: PAYLOAD, undo: '', chains: [], jumps: [] } as unknown as TableStep;
  const refused = (failedLine: string, userChains: string[]) =>
    gatewayRefusal(new ApplyError('applying the nat table failed', step, true, [], failedLine, undefined, [], { table: 'nat', userChains }));
  t.is(refused('-A VGW-X -p udp --dport 9 -j TCPMSS --clamp-mss-to-pmtu', []),
    'the kernel refuses a rule of the nat table the gateway renders from the config, not one of rules.dir (a kernel without a module it needs, or a bug of vlan-gateway: please report it)');
  t.is(refused('COMMIT', []),
    'the kernel refuses the nat table as the gateway renders it from the config, with no rule of rules.dir changed (a kernel without a module it needs, or a bug of vlan-gateway: please report it)');
  t.is(refused('COMMIT', ['VGW-USER-POSTROUTING']),
    'the kernel refuses the nat table, for a rule of rules.dir (VGW-USER-POSTROUTING) or one the gateway renders from the config: iptables-legacy names no rule, and this config changes both');
});
