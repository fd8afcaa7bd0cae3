import test from 'ava';
import { setCreate } from '../../src/apply/ipsets.js';

const hashsizeOf = (line: string) => Number(/hashsize (\d+)/.exec(line)![1]);
/** Members "net,nic" for every net × nic, as an accounting set holds them. */
const pairs = (nets: number, nics: number) => Array.from({ length: nets }, (_, n) => Array.from({ length: nics }, (_, d) => `10.${n >> 8}.${n & 255}.0/24,n${d}`)).flat();
const single = (count: number) => Array.from({ length: count }, (_, n) => `10.${n >> 8}.${n & 255}.0/24`);

test('setCreate sizes the hash table for the members: a power of two, at least one bucket each, never below the default 1,024', (t) => {
  const hashsize = (members: number) => hashsizeOf(setCreate('VGW-SUBNETS', 'hash:net', single(members)));
  t.is(setCreate('VGW-SUBNETS', 'hash:net', single(4656)), 'create VGW-SUBNETS hash:net counters hashsize 8192 -exist');
  t.deepEqual([0, 2, 1024, 1025, 2048, 9602].map(hashsize), [1024, 1024, 1024, 2048, 2048, 16384]);
});

test('setCreate spreads the nets of a hash:net,iface set whose nets share members over 4 × nets² buckets (two that meet would overflow one)', (t) => {
  // The 10k benchmark's accounting set: 97 nets × 48 NICs. 4 × 97² = 37,636 → 65,536.
  t.is(setCreate('VGW-PAIRS-0', 'hash:net,iface', pairs(97, 48)), 'create VGW-PAIRS-0 hash:net,iface counters hashsize 65536 -exist');
  t.is(hashsizeOf(setCreate('VGW-PAIRS-0', 'hash:net,iface', pairs(22, 20))), 2048); // 4 × 22² = 1,936
  // The NIC sets: the two halves of "any address", each with every NIC: 4 × 2² is below the members.
  t.is(hashsizeOf(setCreate('VGW-NICS-0', 'hash:net,iface', pairs(2, 48))), 1024);
  // One member per net (VGW-SUBNET-NICS): nothing shares a bucket's widening, sized by the members only.
  t.is(hashsizeOf(setCreate('VGW-SUBNET-NICS', 'hash:net,iface', single(4000).map((n, i) => `${n},n${i}`))), 4096);
  // Capped: the kernel memory of a bucket pointer each is the container's. 513 nets × 48 would want 4 × 513².
  t.is(hashsizeOf(setCreate('VGW-PAIRS-0', 'hash:net,iface', pairs(513, 48))), 2 ** 16);
  // Beyond the cap, the members alone still size it.
  t.is(hashsizeOf(setCreate('VGW-PAIRS-0', 'hash:net,iface', pairs(2000, 48))), 2 ** 17);
});

test('setCreate gives a set of more members than the kernel\'s default maxelem (65,536) room for them: the next power of two', (t) => {
  const routed = (count: number) => Array.from({ length: count }, (_, i) => `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255},eth0`);
  t.is(setCreate('VGW-ROUTED', 'hash:net,iface', routed(65_536)), 'create VGW-ROUTED hash:net,iface counters hashsize 65536 -exist');
  t.is(setCreate('VGW-ROUTED', 'hash:net,iface', routed(65_537)), 'create VGW-ROUTED hash:net,iface counters hashsize 131072 maxelem 131072 -exist');
  t.is(setCreate('VGW-ROUTED', 'hash:net,iface', routed(200_000)), 'create VGW-ROUTED hash:net,iface counters hashsize 262144 maxelem 262144 -exist');
});
