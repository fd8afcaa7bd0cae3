/**
 * What one duplicate-address probe says (src/observe/parse-arping.ts), on output as iputils' arping 20221126 prints
 * it (captured in namespaces: a macvlan NIC holding the address, and a host on its bridge holding it too or not),
 * and as busybox's prints a MAC.
 */
import test from 'ava';
import { arpingSenders, normalizeMac, probeOutcome } from '../../src/observe/parse-arping.js';

const FREE = 'ARPING 192.168.20.1 from 0.0.0.0 eth1\nSent 2 probes (2 broadcast(s))\nReceived 0 response(s)\n';
const TAKEN = 'ARPING 192.168.10.1 from 0.0.0.0 eth2\nUnicast reply from 192.168.10.1 [36:DF:F8:37:10:31]  0.540ms\nSent 1 probes (1 broadcast(s))\nReceived 1 response(s)\n';

test('nobody else answers: free (exit 0); our own kernel never answers our probe', (t) => {
  t.deepEqual(probeOutcome({ exitCode: 0, stdout: FREE, stderr: '' }, '192.168.20.1'), { kind: 'free' });
});

test('another device answers (exit 1): taken, with its MAC in lowercase', (t) => {
  t.deepEqual(probeOutcome({ exitCode: 1, stdout: TAKEN, stderr: '' }, '192.168.10.1'), { kind: 'taken', mac: '36:df:f8:37:10:31' });
  t.deepEqual(arpingSenders(TAKEN, '192.168.10.1'), ['36:df:f8:37:10:31']);
  // A line about another address is not this one's answer.
  t.deepEqual(arpingSenders(TAKEN, '192.168.10.2'), []);
});

test("busybox's MACs (ether_ntoa: no leading zeros) are written as iputils' are", (t) => {
  t.is(normalizeMac('2:42:ac:11:0:2'), '02:42:ac:11:00:02');
  const busybox = 'ARPING to 192.168.10.1 from 0.0.0.0 via eth2\nUnicast reply from 192.168.10.1 [2:42:ac:11:0:2] 0.544ms\nSent 1 probe(s) (1 broadcast(s))\nReceived 1 reply (0 request(s), 0 broadcast(s))\n';
  t.deepEqual(probeOutcome({ exitCode: 1, stdout: busybox, stderr: '' }, '192.168.10.1'), { kind: 'taken', mac: '02:42:ac:11:00:02' });
});

test('a reply from our own NIC, or from any NIC of the gateway\'s, is no conflict', (t) => {
  t.deepEqual(probeOutcome({ exitCode: 1, stdout: TAKEN, stderr: '' }, '192.168.10.1', '36:df:f8:37:10:31'), { kind: 'own', mac: '36:df:f8:37:10:31' });
  // Which of them answered: the NIC of the gateway's that shares the probed NIC's segment (conflicts.ts names it).
  t.deepEqual(probeOutcome({ exitCode: 1, stdout: TAKEN, stderr: '' }, '192.168.10.1', ['02:42:c0:a8:0a:02', '36:DF:F8:37:10:31']),
    { kind: 'own', mac: '36:df:f8:37:10:31' });
  t.deepEqual(probeOutcome({ exitCode: 1, stdout: TAKEN, stderr: '' }, '192.168.10.1', ['02:42:c0:a8:0a:02']), { kind: 'taken', mac: '36:df:f8:37:10:31' });
});

test('no arping, or no NET_RAW: detection cannot work here, and says why', (t) => {
  t.deepEqual(probeOutcome({ exitCode: null, stdout: '', stderr: 'spawn arping ENOENT', notFound: true }, '192.168.10.1'),
    { kind: 'unusable', reason: 'arping is not installed (iputils-arping)' });
  // Without NET_RAW, an arping without file capabilities is refused its raw socket (exit 2) …
  t.deepEqual(probeOutcome({ exitCode: 2, stdout: '', stderr: 'arping: socket: Operation not permitted\n' }, '192.168.10.1'), {
    kind: 'unusable',
    reason: 'arping may not open a raw socket here (arping: socket: Operation not permitted): the gateway lacks the NET_RAW capability '
      + '(Docker gives it by default; after --cap-drop ALL, add --cap-add NET_RAW)',
  });
  // … Debian's (cap_net_raw=ep) is not run at all: node's spawn fails, or `ip netns exec` says so with exit 1.
  t.like(probeOutcome({ exitCode: null, stdout: '', stderr: 'spawn EPERM' }, '192.168.10.1'), { kind: 'unusable' });
  t.like(probeOutcome({ exitCode: 1, stdout: '', stderr: 'exec of "arping" failed: Operation not permitted\n' }, '192.168.10.1'), { kind: 'unusable' });
});

test('a probe that tells nothing this time: the NIC down (said on stdout) or gone, or the probe killed', (t) => {
  t.deepEqual(probeOutcome({ exitCode: 2, stdout: 'Interface "eth2" is down\n', stderr: '' }, '192.168.10.1'),
    { kind: 'failed', reason: 'exit 2: Interface "eth2" is down', nicAway: true });
  t.deepEqual(probeOutcome({ exitCode: 2, stdout: '', stderr: 'arping: Device eth9 not available.\n' }, '192.168.10.1'),
    { kind: 'failed', reason: 'exit 2: arping: Device eth9 not available.', nicAway: true });
  // The NIC deleted (or set down) while the probe ran.
  t.deepEqual(probeOutcome({ exitCode: 2, stdout: 'ARPING 192.168.10.1 from 0.0.0.0 eth2\n', stderr: 'arping: recvfrom: Network is down\n' }, '192.168.10.1'),
    { kind: 'failed', reason: 'exit 2: arping: recvfrom: Network is down', nicAway: true });
  t.deepEqual(probeOutcome({ exitCode: null, stdout: '', stderr: 'killed by SIGKILL (the gateway is stopping)' }, '192.168.10.1'),
    { kind: 'failed', reason: 'killed or not started: killed by SIGKILL (the gateway is stopping)' });
  // Exit 1 without a reply line is no conflict (busybox's errors exit 1).
  t.like(probeOutcome({ exitCode: 1, stdout: '', stderr: 'arping: bad address' }, '192.168.10.1'), { kind: 'failed' });
});
