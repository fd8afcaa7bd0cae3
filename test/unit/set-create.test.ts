import test from 'ava';
import { setCreate } from '../../src/apply/apply.js';

test('setCreate sizes the hash table for the members: a power of two, at least one bucket each, never below the default 1,024', (t) => {
  const hashsize = (members: number) => /hashsize (\d+)/.exec(setCreate('VGW-PAIRS-0', 'hash:net,iface', members))![1];
  t.is(setCreate('VGW-PAIRS-0', 'hash:net,iface', 4656), 'create VGW-PAIRS-0 hash:net,iface counters hashsize 8192 -exist');
  t.deepEqual([0, 2, 1024, 1025, 2048, 9602].map(hashsize), ['1024', '1024', '1024', '2048', '2048', '16384']);
});
