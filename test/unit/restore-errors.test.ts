/**
 * restoreFailureContext (src/apply/apply.ts): the failing line of a restore payload, numbered, with two lines either
 * side. The stderr texts are what iptables 1.8.9 printed on this machine for such payloads (nft and legacy).
 */
import test from 'ava';
import { restoreFailureContext } from '../../src/apply/apply.js';

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
