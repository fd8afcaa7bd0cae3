/**
 * restoreFailureContext (src/apply/apply.ts): the failing line of a restore payload, numbered, with two lines either
 * side. The stderr texts are what iptables 1.8.9 printed on this machine for such payloads (nft and legacy).
 */
import test from 'ava';
import { ApplyError, applyPlan, restoreFailureContext } from '../../src/apply/apply.js';
import { CommandError, type CommandRunner } from '../../src/exec/runner.js';
import type { Plan } from '../../src/plan/types.js';

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

// iptables-legacy hands the kernel a table whole at COMMIT and names that line: a rule of rules.dir the kernel
// refuses (TCPMSS on a UDP rule) was not attributed, so a supervisor never refused the config and every pass failed.
test('legacy: a table refused at COMMIT when this round wrote rules of rules.dir only names their chain; with chains of ours written too, none', async (t) => {
  const payload = ['*filter', ':VGW-USER-FORWARD - [0:0]', '-A VGW-USER-FORWARD -p udp -j TCPMSS --clamp-mss-to-pmtu', 'COMMIT', ''].join('\n');
  const step = { kind: 'table', table: 'filter', payload, undo: '*filter\nCOMMIT\n', chains: [], jumps: [] } as const;
  const runner: CommandRunner = {
    run: async (argv, options) => {
      if (options?.input === payload) throw new CommandError(argv, 1, 'iptables-restore: line 4 failed\n');
      return { stdout: '', stderr: '', exitCode: 0 };
    },
    start: () => { throw new Error('not used'); },
  };
  const plan = { steps: [step] } as unknown as Plan;
  const legacy = await t.throwsAsync(applyPlan(runner, 'legacy', plan), { instanceOf: ApplyError });
  t.is(legacy?.userChain, 'VGW-USER-FORWARD');
  t.is(legacy?.failedLine, 'COMMIT');
  t.regex(legacy!.message, /iptables-legacy refuses a table whole and names no rule; this round wrote rules of rules\.dir only \(VGW-USER-FORWARD\): one of them/);
  // The same with a chain of ours written beside it (the first apply, say): either may be refused, so neither is named.
  const ours = { ...step, payload: payload.replace('COMMIT', '-A VGW-FORWARD -j VGW-USER-FORWARD\nCOMMIT') };
  const notTheirs = await t.throwsAsync(applyPlan({ ...runner, run: async (argv, options) => {
    if (options?.input === ours.payload) throw new CommandError(argv, 1, 'iptables-restore: line 5 failed\n');
    return { stdout: '', stderr: '', exitCode: 0 };
  } }, 'legacy', { steps: [ours] } as unknown as Plan), { instanceOf: ApplyError });
  t.is(notTheirs?.userChain, undefined);
});
