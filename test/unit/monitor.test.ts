import test from 'ava';
import { mayMatter } from '../../src/observe/monitor.js';

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
