import test from 'ava';
import { outInterfaceOf, tokenAfter, verdictOf } from '../../src/plan/rule-text.js';

const CASES: Array<[string, string | undefined, string | undefined]> = [
  // body, target, out interface
  ['-o eth2 -j VGW-P-10-20', 'VGW-P-10-20', 'eth2'],
  ['-m comment --comment vgw:abc -i eth1 -g VGW-FROM-10', 'VGW-FROM-10', undefined],
  ['--out-interface eth0 --jump MASQUERADE', 'MASQUERADE', 'eth0'],
  ['-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', 'ACCEPT', undefined],
  ['-s 10.0.0.0/8 -m comment --comment "x-j y" -j DROP', 'DROP', undefined], // "x-j" is not the flag
  ['-p tcp --dport 22 -o lab0', undefined, 'lab0'], // no target
  ['-o eth1 -j', undefined, 'eth1'], // a flag without a value
  ['-j REJECT --reject-with icmp-port-unreachable -o eth3', 'REJECT', 'eth3'],
];

test('verdictOf and outInterfaceOf read the token after the leftmost whole-token flag', (t) => {
  for (const [body, target, out] of CASES) {
    t.is(verdictOf(body), target, body);
    t.is(outInterfaceOf(body), out, body);
  }
});

test('tokenAfter takes the leftmost of several flags, not the first flag listed', (t) => {
  t.is(tokenAfter('-d 192.168.10.5 --to-destination 192.168.20.7:22', ['--to-destination', '-d']), '192.168.10.5');
  t.is(tokenAfter('--source 10.1.0.0/16 -j ACCEPT', ['-s', '--source']), '10.1.0.0/16');
  t.is(tokenAfter('-j DNAT --to-destination 10.0.0.1', ['--to-destination']), '10.0.0.1');
});
