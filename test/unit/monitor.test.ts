import test from 'ava';
import { pino } from 'pino';
import type { Child, CommandRunner } from '../../src/exec/runner.js';
import { ExecaRunner } from '../../src/exec/execa-runner.js';
import { mayMatter, NetlinkMonitor } from '../../src/observe/monitor.js';
import { listensToRouteEvents, routeListeners } from '../../src/observe/netlink-listening.js';

// Lines as `ip -o monitor link address` prints them (iproute2 6.1).
test('IPv6 address events and our own gateway addresses appearing are not triggers; other addresses and links are', (t) => {
  t.false(mayMatter('3: a1    inet6 fe80::40ca:13ff:fed7:3868/64 scope link \\       valid_lft forever preferred_lft forever'));
  t.false(mayMatter('Deleted 3: a1    inet6 fe80::40ca:13ff:fed7:3868/64 scope link \\       valid_lft forever preferred_lft forever'));
  t.true(mayMatter('3: a1    inet 10.1.1.2/24 brd 10.1.1.255 scope global a1\\       valid_lft forever preferred_lft forever'), 'Docker attaching an address: a trigger');
  t.false(mayMatter('3: a1    inet 10.1.1.1/24 metric 7010 scope global secondary a1\\       valid_lft forever preferred_lft forever'), 'our own gateway address appearing: not news');
  t.true(mayMatter('Deleted 3: a1    inet 10.1.1.1/24 metric 7010 scope global secondary a1\\       valid_lft forever preferred_lft forever'), 'ours removed: drift');
  t.true(mayMatter('4: eth3@if12: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP \\    link/ether 02:42:c0:a8:1e:02 brd ff:ff:ff:ff:ff:ff link-netnsid 0'));
  t.true(mayMatter('Deleted 4: eth3@if12: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN \\    link/ether 02:42:c0:a8:1e:02'));
  t.true(mayMatter('monitor restarted'));
});

// Route lines as `ip -o monitor link address route` prints them (iproute2 6.1) around `ip addr add 192.168.10.2/24`
// and `ip route add 10.99.0.0/24 via 192.168.10.5`.
test('routes through a NIC and the default route are triggers; the kernel\'s own and the local table\'s are not', (t) => {
  t.true(mayMatter('10.99.0.0/24 via 192.168.10.5 dev a0 '), 'a network routed through a VLAN host: a source that NIC may now forward from');
  t.true(mayMatter('Deleted 10.99.0.0/24 via 192.168.10.5 dev a0 '));
  t.true(mayMatter('default via 203.0.113.1 dev eth0 '), 'the default route: which NIC is the uplink');
  t.true(mayMatter('Deleted default via 203.0.113.1 dev eth0 '), 'the default route removed: drift');
  t.false(mayMatter('default via 203.0.113.1 dev eth0 proto 122 '), 'our own apply setting it: not news');
  t.true(mayMatter('Deleted default via 203.0.113.1 dev eth0 proto 122 '), 'ours removed: drift');
  t.false(mayMatter('192.168.10.0/24 dev a0 proto kernel scope link src 192.168.10.2 '), 'the connected route comes with its address event');
  t.false(mayMatter('local 192.168.10.2 dev a0 table local proto kernel scope host src 192.168.10.2 '));
  t.false(mayMatter('broadcast 192.168.10.255 dev a0 table local proto kernel scope link src 192.168.10.2 '));
  t.false(mayMatter('local fe80::b8ff:7ff:fe68:709a dev a0 table local proto kernel metric 0 pref medium'));
  t.false(mayMatter('fe80::/64 dev a0 proto kernel metric 256 pref medium'));
  t.false(mayMatter('default via fe80::1 dev eth0 proto ra metric 1024 expires 1799sec hoplimit 64 pref medium'), 'IPv6: nothing here routes it');
  t.false(mayMatter('2001:db8:1::/64 dev eth0 proto ra metric 1024 expires 86399sec pref medium'));
  t.false(mayMatter('Deleted 2001:db8:1::/64 dev eth0 proto ra metric 1024 pref medium'));
  t.false(mayMatter('multicast ff00::/8 dev eth0 proto boot metric 256 pref medium'));
});

test('an ip monitor that keeps exiting at once (its namespace gone) is restarted later each time, and logged once', async (t) => {
  const starts: number[] = [];
  const runner: CommandRunner = {
    run: () => Promise.reject(new Error('not used')),
    start: (): Child => {
      starts.push(performance.now());
      return { pid: undefined, onLine: () => undefined, exited: Promise.resolve(1), stop: () => Promise.resolve() };
    },
  };
  const logs: Array<{ msg: string; suppressed?: number }> = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as { msg: string }) });
  const events: string[] = [];
  const monitor = new NetlinkMonitor(runner, log, (line) => events.push(line), 10, 80);
  monitor.start();
  // Eight starts, however long a loaded machine takes to give them (a fixed 450 ms window counted 4 under a load of
  // 11): a timer never fires early, so each gap's lower bound holds under any load, and the bounds are what rule out
  // a restart loop (without the backoff the gaps are about 0 ms).
  const deadline = performance.now() + 10_000;
  while (starts.length < 8 && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  await monitor.stop();
  const gaps = starts.slice(1, 8).map((at, i) => at - starts[i]!);
  const shown = `${gaps.map(Math.round).join(', ')} ms`;
  t.is(gaps.length, 7, `${starts.length} starts in 10 s`);
  // 10, 20, 40, 80, then 80 ms (the cap); 1 ms of slack for the clocks' rounding.
  const least = [10, 20, 40, 80, 80, 80, 80];
  t.true(gaps.every((gap, i) => gap >= least[i]! - 1), `doubling: ${shown}, at least ${least.join(', ')}`);
  // The cap: uncapped, the last two would wait 320 and 640 ms; both would have to be late by 220 ms to pass for it.
  t.true(Math.min(gaps[5]!, gaps[6]!) < 300, `held at the cap: ${shown}`);
  t.is(logs.filter((l) => l.msg.startsWith('ip monitor ')).length, 1, 'one warning for the run of exits');
  t.true(events.every((e) => e === 'monitor restarted'), 'each restart asks for a pass (events may have been missed)');
});

// A monitor killed (by a signal) or failing logged `"exitCode": null` (or 1) and "ip monitor exited; restarting it":
// neither how it ended nor what it said.
test('an ip monitor that ends is said with how it ended and the last line it wrote on stderr', async (t) => {
  const said = async (code: number | null, stderr?: string): Promise<string> => {
    let started = 0;
    const runner: CommandRunner = {
      run: () => Promise.reject(new Error('not used')),
      start: (): Child => {
        started++;
        const exited = started === 1 ? Promise.resolve(code) : new Promise<number | null>(() => undefined);
        return { pid: undefined, onLine: () => undefined, exited, stop: () => Promise.resolve(), ...(stderr === undefined ? {} : { stderrTail: () => stderr }) };
      },
    };
    const logs: Array<{ msg: string }> = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as { msg: string }) });
    const monitor = new NetlinkMonitor(runner, log, () => undefined, 10, 80);
    monitor.start();
    await new Promise((resolve) => setTimeout(resolve, 30));
    await monitor.stop();
    return logs.map((l) => l.msg).join('\n');
  };
  t.is(await said(null, ''), 'ip monitor was killed by a signal; restarting it');
  t.is(await said(1, 'Cannot open netlink socket: Operation not permitted\n'), 'ip monitor exited with status 1 (Cannot open netlink socket: Operation not permitted); restarting it');
  t.is(await said(0), 'ip monitor exited with status 0; restarting it');
});

// `ip` not on the PATH (or a spawn refused: EACCES, EMFILE): the child never ran, and the log said "ip monitor was killed
// by a signal; restarting it", which sent an operator looking for whoever killed it.
test('an ip monitor that cannot be started says so, with the spawn\'s error and what the gateway does meanwhile', async (t) => {
  const path = process.env.PATH;
  process.env.PATH = '/nonexistent-vgw-test';
  t.teardown(() => {
    process.env.PATH = path;
  });
  const logs: Array<{ level: number; msg: string; error?: string; retryInMs?: number }> = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as (typeof logs)[number]) });
  const monitor = new NetlinkMonitor(new ExecaRunner(), log, () => undefined, 1000, 30_000);
  monitor.start();
  const deadline = Date.now() + 5000;
  while (logs.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  await monitor.stop();
  t.deepEqual(logs.map((l) => [l.level, l.msg, l.error, l.retryInMs]), [[40,
    'ip monitor could not be started (spawn ip ENOENT: ip is not installed, or not on the PATH); trying again in 1 s. Meanwhile the gateway '
      + 'does not see NICs, addresses or routes change as they happen: the next drift check (reconcile.schedule) finds them',
    'spawn ip ENOENT', 1000]]);
});

// /proc/net/netlink as Linux 6.x shows it while `ip -o monitor link` runs: its two sockets (inodes 8136654, joined to
// group 1, and 8136655, the one it asks through, joined to none), the kernel's own and another protocol's.
const NETLINK_TABLE = [
  'sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode',
  '000000003202e6ee 0   0          00000000 0        0        0     2        0        4       ',
  '0000000080a6b8ed 4   0          00000000 0        0        0     2        0        1513    ',
  '00000000299ff8f7 0   3261306600 00000000 0        0        0     2        0        8136655 ',
  '000000008d575d43 0   20734      00000001 0        0        0     2        0        8136654 ',
  '000000007a0c1d2e 15  812        00000001 0        0        0     2        0        9001    ',
].join('\n');

test('a socket listens to rtnetlink events when it is NETLINK_ROUTE (Eth 0) with a group joined; a table laid out otherwise tells nothing', (t) => {
  t.deepEqual([...routeListeners(NETLINK_TABLE)!], ['8136654'], 'not the asking socket, the kernel\'s, nor another protocol\'s (15) with a group');
  t.deepEqual([...routeListeners(NETLINK_TABLE.replace('00000001 0        0        0     2        0        8136654', '00000000 0        0        0     2        0        8136654'))!], [], 'before it joins its groups');
  t.deepEqual([...routeListeners(NETLINK_TABLE.replace(/^(\S+ 0 +20734 +)00000001/m, '$100040000'))!], ['8136654'], 'a group of the high bits');
  t.is(routeListeners('sk Eth Pid Rmem Wmem\n0000 0 1 0 0'), undefined, 'no Groups column: nothing can be told');
});

// Serial: a test here empties PATH for a moment, and this one's ip would not be found.
test.serial('the ip monitor this process starts is found listening, and one that has exited is not', async (t) => {
  const log = pino({ level: 'silent' });
  const monitor = new NetlinkMonitor(new ExecaRunner(), log, () => undefined, 60_000, 60_000);
  t.false(await monitor.listening(1000), 'none started');
  monitor.start();
  const started = performance.now();
  try {
    t.true(await monitor.listening(5000));
    t.true(await listensToRouteEvents(monitor.pid!));
    t.log(`listening ${Math.round(performance.now() - started)} ms after the start`);
    t.false(await listensToRouteEvents(process.pid), 'this process holds no such socket');
  } finally {
    await monitor.stop();
  }
  t.false(await monitor.listening(1000), 'stopped');
});
