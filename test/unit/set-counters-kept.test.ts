/**
 * Sets destroyed by a script whose later line fails come back with their members' counters (runSetScript reads them
 * first, as it reads those of members it deletes: in one `ipset save` of every set, one process however many sets).
 * Checked with the semantic fake.
 */
import test from 'ava';
import { destroyLine, runSetScript, type SetLine } from '../../src/apply/ipsets.js';
import { FakeNetns } from '../fakes/netfilter.js';

/** `count` accounting sets of two members each, with counters of their own, and a set the script leaves alone. */
async function namespaceWithSets(count: number): Promise<{ ns: FakeNetns; names: string[] }> {
  const ns = new FakeNetns({ links: [{ name: 'eth1', addresses: ['192.168.10.2/24'] }] });
  const names = Array.from({ length: count }, (_, i) => `VGW-PAIRS-${i}`);
  const lines = names.flatMap((name, i) => [
    `create ${name} hash:net,iface counters hashsize 1024 -exist`,
    `add ${name} 192.168.${i}.0/24,eth1 packets ${i + 1} bytes ${84 * (i + 1)} -exist`,
    `add ${name} 10.0.${i}.0/24,eth1 packets ${100 + i} bytes ${8400 + i} -exist`,
  ]);
  lines.push('create VGW-SUBNETS hash:net counters hashsize 1024 -exist', 'add VGW-SUBNETS 192.168.10.0/24 packets 5 bytes 420 -exist');
  await ns.run(['ipset', 'restore'], { input: `${lines.join('\n')}\n` });
  return { ns, names };
}

const destroys = (names: readonly string[]): SetLine[] => names.map((set, i) => destroyLine({
  kind: 'set-destroy', set, type: 'hash:net,iface', members: [`192.168.${i}.0/24,eth1`, `10.0.${i}.0/24,eth1`],
}));

/** A line after the destroys that ipset refuses: the script stops there, and the lines before it are undone. */
const failing = (names: readonly string[]): SetLine => ({ line: 'destroy VGW-NOT-THERE', step: destroys(names)[0]!.step });

for (const count of [2, 6]) {
  test(`${count} sets destroyed, the script failing after them: each is made again with its members' counters`, async (t) => {
    const { ns, names } = await namespaceWithSets(count);
    const before = ns.saveSets(true);
    await t.throwsAsync(runSetScript(ns, [...destroys(names), failing(names)]), { message: /Error in line \d+/ });
    t.is(ns.saveSets(true), before);
    const reads = ns.history.filter((c) => c.startsWith('ipset save'));
    t.deepEqual(reads, ['ipset save'], 'one process reads them all');
  });
}
