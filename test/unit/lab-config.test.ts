/**
 * `lab up --config FILE` with a config the gateway takes but the lab cannot build (its uplink network and Internet
 * host are fixed, its client needs room in each VLAN): the problems as `validate` says a config's, with the file,
 * each at its path and line, and exit 2. They were said bare ("vlan docs: 203.0.113.0/24 overlaps the uplink network
 * 203.0.113.0/24"), naming neither the file nor the key to change. Pure: the lab is planned, nothing is built.
 */
import test from 'ava';
import { labTopologyOf } from '../../src/cli/lab.js';
import { describeError, exitCodeOf } from '../../src/cli/errors.js';
import { parseConfigText } from '../../src/config/load.js';
import type { CommandRunner } from '../../src/exec/runner.js';
import { LabInputError, labUp } from '../../src/lab/index.js';

const FILE = '/etc/vlan-gateway/lab.yaml';
const OFFICE = '  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\n';

/** What `vlan-gateway lab up --config FILE` prints for the file's text (after "vlan-gateway: "), or the topology. */
function labOf(text: string) {
  const loaded = { path: FILE, text, config: parseConfigText(text, FILE) };
  return labTopologyOf(loaded, 'cfg');
}

function refusal(text: string): { message: string; code: number } {
  try {
    labOf(text);
  } catch (error) {
    return { message: describeError(error), code: exitCodeOf(error) };
  }
  throw new Error('the lab was planned');
}

const header = (n: number) => `the lab cannot be built from ${FILE}, though the gateway takes it (${n} problem${n === 1 ? '' : 's'} with what the lab sets up itself):`;

const rows: Array<{ title: string; yaml: string; lines: string[] }> = [
  {
    title: 'a VLAN on the lab\'s uplink network, and one holding its Internet host',
    yaml: `vlans:\n${OFFICE}  - {name: docs, id: 20, subnet: 203.0.113.0/24, gateway: 203.0.113.1}\n  - {name: web, id: 30, subnet: 198.51.100.0/24, gateway: 198.51.100.1}\n`,
    lines: [
      'vlans[1].subnet: 203.0.113.0/24 overlaps the lab\'s uplink network (with no uplink.gateway, 203.0.113.0/24); give the VLAN another subnet, or set uplink.gateway on another network (line 3)',
      'vlans[2].subnet: 198.51.100.0/24 holds 198.51.100.10, the lab\'s Internet host; give the VLAN another subnet (line 4)',
    ],
  },
  {
    // Valid for the gateway (the next hop is outside the VLAN); the lab puts the uplink in the gateway's /24.
    title: 'a VLAN inside the /24 of uplink.gateway',
    yaml: 'uplink: {gateway: 10.0.0.1}\nvlans:\n  - {name: office, id: 10, subnet: 10.0.0.128/25, gateway: 10.0.0.129}\n',
    lines: ['vlans[0].subnet: 10.0.0.128/25 overlaps the lab\'s uplink network (the /24 of uplink.gateway, 10.0.0.0/24); give the VLAN another subnet (line 3)'],
  },
  {
    title: 'a subnet with no room for the lab\'s client, and a VLAN named as the lab\'s Internet host',
    yaml: 'vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/30, gateway: 192.168.10.1}\n  - {name: internet, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}\n',
    lines: [
      'vlans[0].subnet: 192.168.10.0/30 is too small for the lab, which puts the gateway, the router\'s NIC and a client in it (a /29 or larger holds them) (line 2)',
      'vlans[1].name: "internet" is the name the lab gives its Internet host (a column of lab check\'s matrix); give the VLAN another name (line 3)',
    ],
  },
  {
    title: 'uplink.gateway on the Internet host\'s network, snatTo the Internet host, a forward to the router\'s own lab address',
    yaml: `uplink:\n  gateway: 198.51.100.1\n  nat: snat\n  snatTo: 198.51.100.10\nvlans:\n${OFFICE}portForwards:\n  - {port: 2222, to: 192.168.10.2}\n`,
    lines: [
      'uplink.gateway: 198.51.100.1 is in 198.51.100.0/24, the network of the lab\'s Internet host (198.51.100.10): the lab puts the uplink in the /24 of uplink.gateway; use another network (line 2)',
      'uplink.snatTo: 198.51.100.10 is the lab\'s Internet host; use an address of the router\'s uplink (line 4)',
      'portForwards[0].to: 192.168.10.2 is the address the lab gives the router\'s NIC on office (as Docker would); forward to another host address (line 8)',
    ],
  },
];

for (const row of rows) {
  test(`lab up refuses ${row.title}, with the file, the path and the line`, (t) => {
    t.deepEqual(refusal(row.yaml), { message: [header(row.lines.length), ...row.lines.map((l) => `  ${l}`)].join('\n'), code: 2 });
  });
}

// "vlan lab: interface eth0 is already used in the router": a VLAN on the NIC named eth0, valid for the gateway (which
// finds an uplink the config does not name by its route), could not be built, the lab's uplink being eth0 always.
test('a VLAN bound to eth0 by name, or by MAC beside an uplink by MAC, is built: the lab\'s uplink takes another name', (t) => {
  const byName = labOf(`vlans:\n${OFFICE}  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1, interface: eth0}\n`);
  t.deepEqual(byName.vlans.map((v) => v.routerInterface), ['eth2', 'eth0']);
  t.is(byName.uplink.routerInterface, 'eth1');
  const byMac = labOf(`uplink: {interface: {mac: "02:00:00:00:00:01"}}\nvlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, interface: eth0}\n  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1, interface: {mac: "02:00:00:00:00:20"}}\n`);
  t.like(byMac.uplink, { routerInterface: 'eth1', routerMac: '02:00:00:00:00:01' });
  t.like(byMac.vlans[1], { routerInterface: 'eth2', routerMac: '02:00:00:00:00:20' });
});

// The hint named no lab: `vlan-gateway lab down` removes the lab named demo, not this one.
test('lab up over a lab that stands names that lab in the command to remove it', async (t) => {
  const topology = labOf(`vlans:\n${OFFICE}`);
  // `ip netns list` alone is asked: the namespaces that stand are found, and nothing is built.
  const runner = {
    run: async (argv: readonly string[]) => {
      if (argv.join(' ') !== 'ip netns list') throw new Error(`not expected: ${argv.join(' ')}`);
      return { stdout: 'vgwlab-cfg-router (id: 3)\nvgwlab-cfg-sw\n', stderr: '', exitCode: 0 };
    },
  } as unknown as CommandRunner;
  await t.throwsAsync(labUp(runner, topology), {
    instanceOf: LabInputError,
    message: 'lab cfg already exists (vgwlab-cfg-router, vgwlab-cfg-sw); run `vlan-gateway lab down --name cfg` first',
  });
});
