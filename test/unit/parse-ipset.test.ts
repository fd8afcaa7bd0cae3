import test from 'ava';
import { parseIpsetHeaders, parseIpsetReferences, parseIpsetSave } from '../../src/observe/parse-ipset.js';

// As ipset 7.17 prints `ipset list -t` (a set of ours, one that is not, and one of ours with no members).
const HEADERS = `Name: VGW-PAIRS-0
Type: hash:net,iface
Revision: 8
Header: family inet hashsize 4096 maxelem 65536 counters bucketsize 48 initval 0xe433ed14
Size in memory: 301616
References: 97
Number of entries: 4656

Name: blocklist
Type: hash:ip
Revision: 6
Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x5a3c1f00
Size in memory: 200
References: 0
Number of entries: 3

Name: VGW-NICS-0
Type: hash:net,iface
Revision: 8
Header: family inet hashsize 1024 maxelem 65536 counters bucketsize 12 initval 0xec66e263
Size in memory: 744
References: 96
Number of entries: 0
`;

test('parseIpsetHeaders: our sets (VGW-*) with their type, size and number of members; others left out', (t) => {
  t.deepEqual([...parseIpsetHeaders(HEADERS)], [
    ['VGW-PAIRS-0', { type: 'hash:net,iface', entries: 4656, hashsize: 4096, maxelem: 65536, bucketsize: 48 }],
    ['VGW-NICS-0', { type: 'hash:net,iface', entries: 0, hashsize: 1024, maxelem: 65536, bucketsize: 12 }],
  ]);
  t.deepEqual([...parseIpsetHeaders('')], [], 'no sets at all');
  t.deepEqual([...parseIpsetHeaders('Name: VGW-X\nType: hash:ip\n')], [], 'a block without its count is not taken as empty');
});

test('parseIpsetReferences: how many rules use each of our sets (what a destroy would be refused for); others left out', (t) => {
  t.deepEqual([...parseIpsetReferences(HEADERS)], [['VGW-PAIRS-0', 97], ['VGW-NICS-0', 96]]);
  t.deepEqual([...parseIpsetReferences('')], []);
});

test('parseIpsetSave: our sets with their type and members (counters dropped), others left out', (t) => {
  const text = [
    'create VGW-PAIRS-0 hash:net,iface family inet hashsize 1024 maxelem 65536 counters',
    'add VGW-PAIRS-0 192.168.10.0/24,eth2 packets 40 bytes 3360',
    'add VGW-PAIRS-0 0.0.0.0/1,eth0 packets 0 bytes 0',
    'create VGW-NICS-0 hash:net,iface family inet hashsize 1024 maxelem 65536 counters',
    'create other hash:ip family inet hashsize 1024 maxelem 65536',
    'add other 10.0.0.1',
    '',
  ].join('\n');
  t.deepEqual([...parseIpsetSave(text)].map(([name, set]) => [name, set.type, [...set.members]]), [
    ['VGW-PAIRS-0', 'hash:net,iface', ['192.168.10.0/24,eth2', '0.0.0.0/1,eth0']],
    ['VGW-NICS-0', 'hash:net,iface', []],
  ]);
  // What it was created with, as the kernel prints it back (a set made smaller than the gateway makes it is made again).
  const old = parseIpsetSave('create VGW-PAIRS-0 hash:net,iface family inet hashsize 2048 maxelem 1000 counters bucketsize 12 initval 0x1\n');
  t.like(old.get('VGW-PAIRS-0'), { hashsize: 2048, maxelem: 1000, bucketsize: 12 });
  // A set whose buckets the kernel will grow no more (see BUCKET_LIMIT): the planner makes it again.
  const stuck = parseIpsetSave('create VGW-PAIRS-0 hash:net,iface family inet hashsize 65536 maxelem 65536 counters bucketsize 64 initval 0x98f9424e\n');
  t.like(stuck.get('VGW-PAIRS-0'), { hashsize: 65536, bucketsize: 64 });
});

test('parseIpsetSave: members found wherever their lines are (first line, between sets, before their set\'s create, back to an earlier set); a line without a member is none', (t) => {
  const text = [
    'add VGW-NICS-0 0.0.0.0/1,eth9 packets 1 bytes 2',
    'create VGW-PAIRS-0 hash:net,iface family inet hashsize 1024 maxelem 65536 counters',
    'add VGW-PAIRS-0 192.168.10.0/24,eth2',
    'add other 10.0.0.1',
    'add VGW-PAIRS-0',
    'create VGW-NICS-0 hash:net,iface family inet hashsize 1024 maxelem 65536 counters',
    'add VGW-NICS-0 128.0.0.0/1,eth9 packets 0 bytes 0',
    'add VGW-PAIRS-0 192.168.20.0/24,eth1 packets 7 bytes 588',
    'add VGW-GONE 10.0.0.0/8',
    'add VGW-PAIRS-0 10.0.0.0/8,eth1',
  ].join('\n');
  t.deepEqual([...parseIpsetSave(text)].map(([name, set]) => [name, [...set.members]]), [
    ['VGW-PAIRS-0', ['192.168.10.0/24,eth2', '192.168.20.0/24,eth1', '10.0.0.0/8,eth1']],
    ['VGW-NICS-0', ['0.0.0.0/1,eth9', '128.0.0.0/1,eth9']],
  ]);
  t.deepEqual([...parseIpsetSave('')], []);
  t.deepEqual([...parseIpsetSave('create VGW-SUBNETS hash:net family inet hashsize 1024 maxelem 65536 counters')].map(([n, s]) => [n, s.members.size]), [['VGW-SUBNETS', 0]]);
});

test('a set made without counters is marked, in ipset save and in ipset list -t (ipset 7.17)', (t) => {
  const save = [
    'create VGW-SUBNETS hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x18d6b3ab',
    'create VGW-SUBNET-NICS hash:net,iface family inet hashsize 1024 maxelem 65536 counters bucketsize 12 initval 0xb39bfed0',
  ].join('\n');
  const sets = parseIpsetSave(save);
  t.true(sets.get('VGW-SUBNETS')!.noCounters);
  t.is(sets.get('VGW-SUBNET-NICS')!.noCounters, undefined);
  const headers = parseIpsetHeaders([
    'Name: VGW-SUBNETS', 'Type: hash:net', 'Revision: 7', 'Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x18d6b3ab',
    'Size in memory: 456', 'References: 0', 'Number of entries: 0', '',
    'Name: VGW-SUBNET-NICS', 'Type: hash:net,iface', 'Revision: 7', 'Header: family inet hashsize 1024 maxelem 65536 counters bucketsize 12 initval 0xb39bfed0',
    'Size in memory: 456', 'References: 0', 'Number of entries: 0',
  ].join('\n'));
  t.like(headers.get('VGW-SUBNETS'), { type: 'hash:net', entries: 0, noCounters: true });
  t.like(headers.get('VGW-SUBNET-NICS'), { type: 'hash:net,iface', entries: 0, noCounters: undefined });
});

test('a set of family inet6 is marked, in ipset save and in ipset list -t (ipset 7.17); inet is the gateway\'s', (t) => {
  const sets = parseIpsetSave('create VGW-SUBNETS hash:net family inet6 hashsize 1024 maxelem 65536 counters bucketsize 12 initval 0x3d1c6e0a\n');
  t.is(sets.get('VGW-SUBNETS')!.family, 'inet6');
  t.is(parseIpsetSave('create VGW-SUBNETS hash:net family inet hashsize 1024 counters\n').get('VGW-SUBNETS')!.family, undefined);
  const headers = parseIpsetHeaders([
    'Name: VGW-SUBNETS', 'Type: hash:net', 'Revision: 7', 'Header: family inet6 hashsize 1024 maxelem 65536 counters bucketsize 12 initval 0x3d1c6e0a',
    'Size in memory: 1240', 'References: 0', 'Number of entries: 0',
  ].join('\n'));
  t.like(headers.get('VGW-SUBNETS'), { type: 'hash:net', entries: 0, family: 'inet6' });
});
