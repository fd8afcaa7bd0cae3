/**
 * A command a message shows, under --netns, is shown as it was run and as the operator runs it by hand: with `ip
 * netns exec NAME` in front. Errors the product made above the runner (a read that failed in part, a conntrack delete)
 * and the commands it tells the operator to run showed them bare: copied, they act on the operator's own namespace.
 * The runner here answers as the tools do, through the same inNamespace (and withDeadline, as `run` has it).
 */
import test from 'ava';
import { clearStaleFlows } from '../../src/apply/conntrack.js';
import { setInUseAdvice } from '../../src/apply/hints.js';
import { describeError } from '../../src/cli/errors.js';
import { CommandError, inNamespace, withDeadline, type CommandRunner, type RunResult } from '../../src/exec/runner.js';
import { readFactsStaged, readTables } from '../../src/observe/read.js';
import { warningsOf } from '../../src/plan/warnings.js';

const NS = 'vgw-u2-test';

/**
 * What the tools answer, by the command inside the namespace (a key ending in ` …` answers every command it starts);
 * every other command succeeds with no output.
 */
function namespace(answers: Record<string, Partial<RunResult>>): { runner: CommandRunner; ran: string[] } {
  const ran: string[] = [];
  const host: CommandRunner = {
    run: async (argv, options) => {
      ran.push(argv.join(' '));
      const inside = argv.slice(4).join(' ');
      const answer = answers[inside] ?? Object.entries(answers).find(([key]) => key.endsWith(' …') && inside.startsWith(key.slice(0, -1)))?.[1] ?? {};
      const result: RunResult = { stdout: answer.stdout ?? '', stderr: answer.stderr ?? '', exitCode: answer.exitCode ?? 0 };
      if (result.exitCode !== 0 && !options?.allowFailure) throw new CommandError(argv, result.exitCode, result.stderr, result.stdout);
      if (options?.onStdout) {
        options.onStdout(result.stdout);
        return { ...result, stdout: '' };
      }
      return result;
    },
    start: (argv) => {
      throw new Error(`not expected here: ${argv.join(' ')}`);
    },
  };
  return { runner: inNamespace(host, NS), ran };
}

const CAT = 'cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding /proc/sys/net/ipv6/conf/all/force_forwarding '
  + '/proc/sys/net/ipv6/conf/default/force_forwarding /proc/net/ip_tables_names';

test('a sysctl that cannot be read names the cat that was run, in the namespace it was run in', async (t) => {
  const { runner, ran } = namespace({
    [CAT]: { exitCode: 1, stderr: 'cat: /proc/sys/net/ipv4/ip_forward: No such file or directory\n' },
    'ip -json -batch -': { stdout: '[]\n[]\n' },
  });
  // As `plan --netns` reads, and as `run --netns` does (its runner has a deadline around the namespace's).
  for (const reader of [runner, withDeadline(runner, 60_000)]) {
    const error = await t.throwsAsync(readFactsStaged(reader, { backend: 'nft' }).facts, { instanceOf: CommandError });
    t.is(describeError(error), `ip netns exec ${NS} cat /proc/sys/net/ipv4/ip_forward exited 1: cat: /proc/sys/net/ipv4/ip_forward: No such file or directory`);
  }
  t.true(ran.includes(`ip netns exec ${NS} ${CAT}`), 'what the message shows is what ran');
});

test('an iptables save refused for want of a privilege names the save as it was run', async (t) => {
  const { runner } = namespace({ 'iptables-nft-save -c': { exitCode: 4, stderr: 'iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n' } });
  const error = await t.throwsAsync(readTables(runner, Promise.resolve(undefined), 'nft'), { instanceOf: CommandError });
  t.regex(error!.message, new RegExp(`^ip netns exec ${NS} iptables-nft-save -c exited 4: `));
});

test('a table iptables cannot read: the nft command to look with is one to run in the namespace', async (t) => {
  const { runner } = namespace({
    'iptables-nft-save -c': { exitCode: 1, stderr: 'Parsing nftables rule failed\n' },
    'iptables-nft-save -c -t filter': { exitCode: 1, stderr: 'Parsing nftables rule failed\n' },
  });
  const error = await t.throwsAsync(readTables(runner, Promise.resolve(undefined), 'nft'));
  t.regex(error!.message, new RegExp(`; look with \`ip netns exec ${NS} nft list table ip (filter|nat)\`, and remove`));
});

test('UDP flows that could not be cleared: the failing conntrack and the one to clear them by hand, both in the namespace', async (t) => {
  const { runner } = namespace({ 'conntrack -L -p udp --orig-port-dst 51820': { exitCode: 1, stderr: 'conntrack v1.4.7 (conntrack-tools): Operation failed: invalid parameters\n' } });
  const outcome = await clearStaleFlows(runner, [{ kind: 'conntrack-clear', ports: [51820, 51820], forward: 'added', local: ['192.168.10.1'] }]);
  t.is(outcome.warning, `the UDP flows to 51820 (port forward added) could not be cleared: ip netns exec ${NS} conntrack -L -p udp --orig-port-dst 51820 exited 1: `
    + 'conntrack v1.4.7 (conntrack-tools): Operation failed: invalid parameters. The rules are applied; those flows keep going where they went '
    + `while they keep sending (clear them by hand: ip netns exec ${NS} conntrack -D -p udp -d <the gateway's address> --orig-port-dst PORT)`);
});

test('a conntrack delete that fails names the delete as it was run', async (t) => {
  const entry = 'udp      17 29 src=192.168.20.5 dst=192.168.10.1 sport=40000 dport=51820 [UNREPLIED] src=192.168.10.1 dst=192.168.20.5 sport=51820 dport=40000 mark=0 use=1\n';
  const { runner } = namespace({
    'conntrack -L -p udp --orig-port-dst 51820': { stdout: entry },
    'conntrack -D …': { exitCode: 1, stderr: 'conntrack v1.4.7 (conntrack-tools): Operation failed: Permission denied\n' },
  });
  const outcome = await clearStaleFlows(runner, [{ kind: 'conntrack-clear', ports: [51820, 51820], forward: 'added', local: ['192.168.10.1'] }]);
  t.regex(outcome.warning ?? '', new RegExp(`could not be cleared: ip netns exec ${NS} conntrack -D -p udp .*exited 1: .*Permission denied`));
});

test('commands a warning or a hint tells the operator to run carry the namespace they are for', (t) => {
  const prefix = ['ip', 'netns', 'exec', NS];
  const empty = { chains: new Set<string>(), rules: new Map() };
  const facts = { sysctls: {}, backend: 'nft' as const, tables: { filter: empty, nat: empty }, sets: new Map(), otherForward: { backend: 'legacy' as const, policy: 'DROP', rules: 0 } };
  t.regex(warningsOf({ ...facts, commandPrefix: prefix })[0]!.text,
    new RegExp(`Empty it \\(ip netns exec ${NS} iptables-legacy -P FORWARD ACCEPT; ip netns exec ${NS} iptables-legacy -F FORWARD\\)`));
  t.regex(warningsOf(facts)[0]!.text, /Empty it \(iptables-legacy -P FORWARD ACCEPT; iptables-legacy -F FORWARD\)/, 'in its own namespace: as it was');
  t.is(setInUseAdvice('VGW-SUBNETS', 'nft', prefix), 'a rule outside the gateway\'s chains still refers to it: in iptables-legacy '
    + `(ip netns exec ${NS} iptables-legacy-save | grep -w VGW-SUBNETS), or in a table the gateway does not write `
    + `(ip netns exec ${NS} iptables-nft-save -t mangle, -t raw); delete that rule and run again`);
});
