/**
 * Config validation: a table of bad configs (YAML text) and the exact lines a user sees, every problem at once,
 * each with its path and, where it has one, its line. Then the good configs and their defaults.
 *
 * Rows marked `bug` describe what the product should print but does not yet; they run as `test.failing`
 * (they start failing the suite the day the bug is fixed, as a reminder to drop the mark).
 */
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, parseConfigText } from '../../src/config/load.js';
import { LISTEN_FORMS, parseListenAddress } from '../../src/config/listen.js';
import { ConfigError, formatPath, groupDigits } from '../../src/config/problems.js';
import { validateConfig } from '../../src/config/validate.js';
import type { Config } from '../../src/config/schema.js';

function problemsOf(text: string, options: { listen?: string } = {}): readonly string[] {
  try {
    parseConfigText(text, 'x.yaml', options);
  } catch (error) {
    if (error instanceof ConfigError) return error.lines;
    throw error;
  }
  return [];
}

const NAME_MESSAGE = 'must start with a lowercase letter, then lowercase letters, digits or "-", at most 12 characters';

interface Row {
  readonly title: string;
  readonly yaml: string;
  readonly lines: readonly string[];
  /** `run --listen`, which overrides http.listen. */
  readonly listen?: string;
  /** What is wrong in src/ when this row fails; the row then runs as test.failing. */
  readonly bug?: string;
}

/** A "billion laughs" file: each level doubles what its last alias stands for (2^60 values under `vlans`). */
const ALIAS_BOMB = `${Array.from({ length: 60 }, (_, i) => (i === 0 ? 'a0: &a0 [x, x]' : `a${i}: &a${i} [*a${i - 1}, *a${i - 1}]`)).join('\n')}
vlans: *a59
`;

const rows: Row[] = [
  {
    title: 'types',
    yaml: `vlans:
  - name: 5
    id: "ten"
    subnet: 192.168.10.0/24
    gateway: 192.168.10.1
    masquerade: yes
`,
    lines: [
      'vlans[0].name: must be a string, not a number (line 2)',
      'vlans[0].id: must be a number, not a string (line 3)',
      'vlans[0].masquerade: must be a boolean, not a string (line 6)',
    ],
  },
  {
    title: 'types of whole sections',
    yaml: `vlans: 5
forwarding: []
portForwards: {}
`,
    lines: [
      'vlans: must be an array, not a number (line 1)',
      'forwarding: must be an object, not an array (line 2)',
      'portForwards: must be an array, not an object (line 3)',
    ],
  },
  {
    title: 'a document that is not a mapping',
    yaml: '- a\n- b\n',
    lines: ['(top level): must be an object, not an array'],
  },
  {
    title: 'ranges and formats',
    yaml: `vlans:
  - name: office
    id: 4095
    subnet: 192.168.10.0/33
    gateway: 192.168.10.256
  - {name: lab, id: 0, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
  - {name: iot, id: 30.5, subnet: 192.168.30.0/24, gateway: 192.168.30.1}
`,
    lines: [
      'vlans[0].id: must be a VLAN id from 1 to 4094 (line 3)',
      'vlans[0].subnet: "192.168.10.0/33" is not an IPv4 prefix like 192.168.10.0/24 (line 4)',
      'vlans[0].gateway: "192.168.10.256" is not an IPv4 address (line 5)',
      'vlans[1].id: must be a VLAN id from 1 to 4094 (line 6)',
      'vlans[2].id: must be an integer, not a float (line 7)',
    ],
  },
  {
    title: 'enums',
    yaml: `uplink:
  nat: MASQUERADE
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
forwarding:
  default: reject
  rules:
    - {from: office, to: uplink, proto: sctp, action: allow}
`,
    lines: [
      'uplink.nat: must be one of masquerade, snat, none, not "MASQUERADE" (line 2)',
      'forwarding.default: must be one of accept, drop, not "reject" (line 6)',
      'forwarding.rules[0].proto: must be one of tcp, udp, icmp, all, not "sctp" (line 8)',
      'forwarding.rules[0].action: must be one of accept, drop, reject, not "allow" (line 8)',
    ],
  },
  {
    title: 'no VLANs',
    yaml: 'vlans: []\n',
    lines: ['vlans: must list at least one VLAN (line 1)'],
  },
  {
    title: 'unknown keys in flow mappings (the key is on the line reported)',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, vlan_id: 3}
portForwards:
  - {port: 22, to: 192.168.10.5, dest: 192.168.10.6}
`,
    lines: [
      'vlans[0].vlan_id: is not a known key (known: name, id, subnet, gateway, interface, masquerade) (line 2)',
      'portForwards[0].dest: is not a known key (known: proto, port, to, toPort) (line 4)',
    ],
  },
  {
    // The problem's path ends at the unknown key itself, so its line is the key's own, not where the enclosing mapping
    // starts (uplink → line 1, vlans[0] → line 5), and a top-level unknown key gets a line too.
    title: 'unknown keys in block mappings are reported at the key\'s own line, with the keys known there',
    yaml: `uplink:
  nat: masquerade
  gatway: 172.17.0.1
vlans:
  - name: office
    id: 10
    subnet: 192.168.10.0/24
    gateway: 192.168.10.1
    vlan_id: 3
extra: 1
`,
    lines: [
      'uplink.gatway: is not a known key (known: interface, gateway, nat, snatTo) (line 3)',
      'vlans[0].vlan_id: is not a known key (known: name, id, subnet, gateway, interface, masquerade) (line 9)',
      'extra: is not a known key (known: uplink, vlans, forwarding, portForwards, rules, reconcile, http) (line 10)',
    ],
  },
  {
    title: 'duplicate VLAN names and ids',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 10, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
  - {name: office, id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.1}
`,
    lines: [
      'vlans[1].id: 10 is already used by vlans[0] (line 3)',
      'vlans[2].name: "office" is already used by vlans[0] (line 4)',
    ],
  },
  {
    title: '"uplink" is not a VLAN name',
    yaml: `vlans:
  - {name: uplink, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
`,
    lines: ['vlans[0].name: "uplink" is reserved for the uplink (line 2)'],
  },
  {
    title: 'overlapping subnets, each pair reported once',
    yaml: `vlans:
  - {name: a, id: 10, subnet: 192.168.0.0/16, gateway: 192.168.0.1}
  - {name: b, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
  - {name: c, id: 30, subnet: 192.168.20.128/25, gateway: 192.168.20.129}
  - {name: d, id: 40, subnet: 10.0.0.0/24, gateway: 10.0.0.1}
`,
    lines: [
      'vlans[1].subnet: 192.168.20.0/24 overlaps vlans[0] (192.168.0.0/16) (line 3)',
      'vlans[2].subnet: 192.168.20.128/25 overlaps vlans[0] (192.168.0.0/16) (line 4)',
      'vlans[2].subnet: 192.168.20.128/25 overlaps vlans[1] (192.168.20.0/24) (line 4)',
    ],
  },
  {
    title: 'gateway outside the subnet (block style)',
    yaml: `vlans:
  - name: office
    id: 10
    subnet: 192.168.10.0/24
    gateway: 192.168.30.1
`,
    lines: ['vlans[0].gateway: 192.168.30.1 is outside 192.168.10.0/24 (line 5)'],
  },
  {
    title: 'gateway on the network or broadcast address; host bits; a subnet too small',
    yaml: `vlans:
  - {name: b, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.0}
  - {name: c, id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.255}
  - {name: d, id: 40, subnet: 192.168.40.1/24, gateway: 192.168.40.1}
  - {name: e, id: 50, subnet: 192.168.50.0/31, gateway: 192.168.50.1}
`,
    lines: [
      'vlans[0].gateway: 192.168.20.0 is the network address of 192.168.20.0/24 (line 2)',
      'vlans[1].gateway: 192.168.30.255 is the broadcast address of 192.168.30.0/24 (line 3)',
      'vlans[2].subnet: 192.168.40.1/24 has host bits set; did you mean 192.168.40.0/24? (line 4)',
      'vlans[3].subnet: 192.168.50.0/31 is too small for a gateway and hosts (use /30 or larger) (line 5)',
      'vlans[3].gateway: 192.168.50.1 is the broadcast address of 192.168.50.0/31 (line 5)',
    ],
  },
  {
    title: 'forwarding rules naming an unknown VLAN, or one VLAN twice',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
forwarding:
  rules:
    - {from: office, to: lab, action: accept}
    - {from: iot, to: uplink, action: drop}
    - {from: office, to: office, action: drop}
    - {from: uplink, to: uplink, action: drop}
`,
    lines: [
      'forwarding.rules[0].to: names no VLAN ("lab"); known: office, uplink (line 5)',
      'forwarding.rules[1].from: names no VLAN ("iot"); known: office, uplink (line 6)',
      'forwarding.rules[2].to: from and to are both office; traffic inside one VLAN does not pass the router (line 7)',
      'forwarding.rules[3].to: from and to are both the uplink (line 8)',
    ],
  },
  {
    title: 'addresses and prefixes outside every VLAN (forwarding rules and port forwards)',
    yaml: `vlans:
  - {name: a, id: 1, subnet: 10.0.0.0/24, gateway: 10.0.0.1}
forwarding:
  rules:
    - {from: 10.9.0.0/24, to: 10.0.0.5, action: drop}
    - {from: 10.0.0.0/16, to: 10.0.0.5/32, action: drop}
    - {from: 999.1.1.1, to: a, action: drop}
portForwards:
  - {port: 22, to: 10.1.1.1}
`,
    lines: [
      'forwarding.rules[0].from: 10.9.0.0/24 is outside every VLAN (line 5)',
      'forwarding.rules[1].from: 10.0.0.0/16 is wider than vlans[0] (a, 10.0.0.0/24); a rule names one VLAN, or an address or prefix inside one (line 6)',
      'forwarding.rules[2].from: "999.1.1.1" is not an address or prefix (line 7)',
      'portForwards[0].to: 10.1.1.1 is outside every VLAN (line 9)',
    ],
  },
  {
    // A mistyped key (subnett) left office without a subnet, and every address in it was then said to be "outside
    // every VLAN" too: a second, false problem beside the real one.
    title: 'an address is not said to be outside every VLAN while a VLAN\'s subnet is missing or invalid (it may be in that one)',
    yaml: `vlans:
  - {name: office, id: 10, subnett: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
  - guest
forwarding:
  rules:
    - {from: 192.168.10.7, to: lab, action: accept}
http:
  allowFrom: [192.168.10.0/28]
portForwards:
  - {port: 2222, to: 192.168.10.100, toPort: 22}
`,
    lines: [
      'vlans[0].subnet: is required (line 2)',
      'vlans[0].subnett: is not a known key (known: name, id, subnet, gateway, interface, masquerade) (line 2)',
      'vlans[2]: must be an object, not a string (line 4)',
    ],
  },
  {
    // `to: Office` was "must be a VLAN name, …": the user had written the VLAN's name, and was not told its capital.
    title: 'a rule naming a VLAN or the uplink with capitals says so, with the name in lowercase',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
forwarding:
  rules:
    - {from: lab, to: Office, action: accept}
    - {from: LAB-2, to: Uplink, action: drop}
`,
    lines: [
      'forwarding.rules[0].to: "Office" has capitals: VLAN names (and "uplink") are lowercase, as in "office" (line 6)',
      'forwarding.rules[1].from: "LAB-2" has capitals: VLAN names (and "uplink") are lowercase, as in "lab-2" (line 7)',
      'forwarding.rules[1].to: "Uplink" has capitals: VLAN names (and "uplink") are lowercase, as in "uplink" (line 7)',
    ],
  },
  {
    title: 'http.allowFrom names VLANs, or addresses and prefixes inside them',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
http:
  allowFrom: [office, 192.168.10.5, 192.168.10.0/28, guest, uplink, 10.0.0.1, "Mgmt"]
`,
    lines: [
      'http.allowFrom[6]: "Mgmt" has capitals: VLAN names (and "uplink") are lowercase, as in "mgmt" (line 4)',
      'http.allowFrom[3]: names no VLAN ("guest"); known: office (line 4)',
      'http.allowFrom[4]: the uplink side is always allowed; list VLANs, or addresses or prefixes inside them (line 4)',
      'http.allowFrom[5]: 10.0.0.1 is outside every VLAN (line 4)',
    ],
  },
  {
    title: 'snat without snatTo',
    yaml: `uplink:
  nat: snat
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
`,
    lines: ['uplink.snatTo: is required with nat: snat (line 2)'],
  },
  {
    title: 'snatTo without snat (nat defaults to masquerade)',
    yaml: `uplink:
  snatTo: 172.17.0.3
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
`,
    lines: ['uplink.snatTo: is only used with nat: snat (nat is masquerade) (line 2)'],
  },
  {
    title: 'snatTo with nat: none',
    yaml: `uplink:
  nat: none
  snatTo: 172.17.0.3
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
`,
    lines: ['uplink.snatTo: is only used with nat: snat (nat is none) (line 3)'],
  },
  {
    title: 'port lists: syntax, reversed ranges, out of range, ports without tcp/udp',
    yaml: `vlans:
  - {name: a, id: 1, subnet: 10.0.0.0/24, gateway: 10.0.0.1}
  - {name: b, id: 2, subnet: 10.0.1.0/24, gateway: 10.0.1.1}
forwarding:
  rules:
    - {from: a, to: b, proto: tcp, ports: "22,x", action: accept}
    - {from: a, to: b, proto: tcp, ports: "22, 80", action: accept}
    - {from: a, to: b, proto: tcp, ports: "8000-", action: accept}
    - {from: a, to: b, proto: tcp, ports: "100-10", action: accept}
    - {from: a, to: b, proto: tcp, ports: "1-65536", action: accept}
    - {from: a, to: b, proto: udp, ports: 70000, action: accept}
    - {from: a, to: b, proto: udp, ports: "0", action: accept}
    - {from: a, to: b, ports: 22, action: accept}
    - {from: a, to: b, proto: icmp, ports: "22", action: accept}
    - {from: a, to: b, proto: all, ports: "22", action: accept}
    - {from: a, to: b, proto: tcp, ports: "0-1024", action: accept}
`,
    lines: [
      'forwarding.rules[0].ports: "22,x" is not a port list like "22,8000-8100" (line 6)',
      'forwarding.rules[1].ports: "22, 80" is not a port list like "22,8000-8100" (line 7)',
      'forwarding.rules[2].ports: "8000-" is not a port list like "22,8000-8100" (line 8)',
      'forwarding.rules[3].ports: 100-10 is a range whose start is above its end (line 9)',
      'forwarding.rules[4].ports: 1-65536 is not a port from 1 to 65535 (line 10)',
      'forwarding.rules[5].ports: 70000 is not a port from 1 to 65535 (line 11)',
      'forwarding.rules[6].ports: 0 is not a port from 1 to 65535 (line 12)',
      'forwarding.rules[7].ports: needs proto: tcp or proto: udp (line 13)',
      'forwarding.rules[8].ports: needs proto: tcp or proto: udp (line 14)',
      'forwarding.rules[9].ports: needs proto: tcp or proto: udp (line 15)',
      // A range that starts below the lowest port: its start is checked as its end is.
      'forwarding.rules[10].ports: 0-1024 is not a port from 1 to 65535 (line 16)',
    ],
  },
  {
    title: 'a key that is not a word is quoted, and no character of it reaches the output raw (a newline would forge a problem line, ESC drive the terminal)',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
"x\\n  vlans[0].gateway: forged (line 2)\\n  y": 1
"\\e[2Jclear": 2
`,
    lines: [
      '["x\\n  vlans[0].gateway: forged (line 2)\\n  y"]: is not a known key (known: uplink, vlans, forwarding, portForwards, rules, reconcile, http) (line 3)',
      '["\\u001b[2Jclear"]: is not a known key (known: uplink, vlans, forwarding, portForwards, rules, reconcile, http) (line 4)',
    ],
  },
  {
    title: 'YAML merge keys (<<: *anchor) fill a mapping, as in Compose files; what is wrong in the result is still found',
    yaml: `vlans:
  - &office {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, masquerade: false}
  - <<: *office
    name: lab
    id: 20
    subnet: 192.168.20.0/24
`,
    lines: ['vlans[1].gateway: 192.168.10.1 is outside 192.168.20.0/24 (line 3)'],
  },
  {
    title: 'an unknown key whose value is a block below it is reported at the key\'s line, not the value\'s',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
portforwards:
  # ssh to the office host

  - {port: 2222, to: 192.168.10.5}
`,
    lines: ['portforwards: is not a known key (known: uplink, vlans, forwarding, portForwards, rules, reconcile, http) (line 3)'],
  },
  {
    title: 'a proto the schema refuses is said once, without a "needs proto: tcp" for its ports beside it',
    yaml: `vlans:
  - {name: a, id: 1, subnet: 10.0.0.0/24, gateway: 10.0.0.1}
  - {name: b, id: 2, subnet: 10.0.1.0/24, gateway: 10.0.1.1}
forwarding:
  rules:
    - {from: a, to: b, proto: TCP, ports: 22, action: accept}
`,
    lines: ['forwarding.rules[0].proto: must be one of tcp, udp, icmp, all, not "TCP" (line 6)'],
  },
  {
    title: 'an integer field given .inf or .nan gets one sentence',
    yaml: `vlans:
  - {name: a, id: .inf, subnet: 10.0.0.0/24, gateway: 10.0.0.1}
  - {name: b, id: .nan, subnet: 10.0.1.0/24, gateway: 10.0.1.1}
reconcile: {minIntervalMs: -.inf}
`,
    lines: [
      'vlans[0].id: must be an integer, not a float (line 2)',
      'vlans[1].id: must be a number, not .nan (not a number) (line 3)',
      'reconcile.minIntervalMs: must be an integer, not a float (line 4)',
    ],
  },
  {
    // zod 4's integers stop at 2^53 with a range (and a sentence) of their own: the field's range is said instead.
    title: 'an integer field given a whole number beyond 2^53 is told the field\'s range',
    yaml: `vlans:
  - {name: a, id: 1e300, subnet: 10.0.0.0/24, gateway: 10.0.0.1}
  - {name: b, id: -9007199254740993, subnet: 10.0.1.0/24, gateway: 10.0.1.1}
portForwards: [{port: 1e300, to: 10.0.0.5, toPort: 9007199254740993}]
reconcile: {minIntervalMs: 1e300}
`,
    lines: [
      'vlans[0].id: must be a VLAN id from 1 to 4094 (line 2)',
      'vlans[1].id: must be a VLAN id from 1 to 4094 (line 3)',
      'portForwards[0].port: must be a port from 1 to 65535 (line 4)',
      'portForwards[0].toPort: must be a port from 1 to 65535 (line 4)',
      'reconcile.minIntervalMs: must be a number of milliseconds from 0 to 3600000 (one hour) (line 5)',
    ],
  },
  {
    // js-yaml reads a numeral beyond a double's range as a string: "must be a number, not a string" said of 1e400.
    title: 'a number beyond what YAML holds is said as that number, not as a string',
    yaml: `vlans:
  - {name: a, id: 1e400, subnet: 10.0.0.0/24, gateway: 10.0.0.1}
portForwards: [{port: -1e999, to: 10.0.0.5}]
reconcile: {minIntervalMs: 1e400}
`,
    lines: [
      'vlans[0].id: must be a number, and 1e400 is beyond the range of one (YAML reads it as text) (line 2)',
      'portForwards[0].port: must be a number, and -1e999 is beyond the range of one (YAML reads it as text) (line 3)',
      'reconcile.minIntervalMs: must be a number, and 1e400 is beyond the range of one (YAML reads it as text) (line 4)',
    ],
  },
  {
    title: 'an optional section with nothing under it (its lines commented out) takes its defaults',
    yaml: `uplink:
vlans:
  - {name: a, id: 1, subnet: 10.0.0.0/24, gateway: 10.0.0.1}
forwarding:
  rules:
  #  - {from: a, to: uplink, action: drop}
portForwards:
rules:
reconcile:
http:
  allowFrom:
`,
    lines: [],
  },
  {
    title: 'an address with a leading zero says why it is refused',
    yaml: `uplink: {gateway: 172.17.000.1}
vlans:
  - {name: a, id: 1, subnet: 10.0.01.0/24, gateway: 10.0.1.1}
`,
    lines: [
      'uplink.gateway: "172.17.000.1" is not an IPv4 address (a number with a leading zero is octal to some tools; write it without the zero) (line 1)',
      'vlans[0].subnet: "10.0.01.0/24" is not an IPv4 prefix like 192.168.10.0/24 (a number with a leading zero is octal to some tools; write it without the zero) (line 3)',
    ],
  },
  {
    title: 'a key written three times: each repeat named at its own line; a repeat inside the first of two repeated keys at its line',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
uplink:
  nat: none
  nat: none
  nat: none
uplink:
  gateway: 172.17.0.1
`,
    lines: [
      'uplink.nat: is given twice in one mapping (first at line 4); give it once (line 5)',
      'uplink.nat: is given twice in one mapping (first at line 4); give it once (line 6)',
      'uplink: is given twice in one mapping (first at line 3); give it once (line 7)',
    ],
  },
  {
    title: 'a syntax error at the end of a file that ends with a line break is placed on its last line',
    yaml: `vlans: [
`,
    lines: ['line 1, column 9: deficient indentation'],
  },
  {
    title: 'an invisible direction override in a key is shown escaped (it makes a line read otherwise than it is)',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
"\u202Eabc": 1
`,
    lines: ['["\\u202eabc"]: is not a known key (known: uplink, vlans, forwarding, portForwards, rules, reconcile, http) (line 3)'],
  },
  {
    title: 'an interface given as {mac, name}: the keys known there, and how a name is written',
    yaml: `uplink: {interface: {name: eth0}}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, interface: {mac: "02:42:c0:a8:0a:02", name: eth1}}
`,
    lines: [
      'uplink.interface: must be an interface name or {mac: "…"} (line 1)',
      'vlans[0].interface.name: is not a known key (known: mac); a NIC is named as interface: eth1, and {mac: "…"} finds it by its MAC instead (line 3)',
    ],
  },
  {
    title: 'port numbers that are not integers (a float, .nan, .inf) get one sentence each; an unquoted list in { } is told to quote it',
    yaml: `vlans:
  - {name: a, id: 1, subnet: 10.0.0.0/24, gateway: 10.0.0.1}
  - {name: b, id: 2, subnet: 10.0.1.0/24, gateway: 10.0.1.1}
forwarding:
  rules:
    - {from: a, to: b, proto: tcp, ports: 22.5, action: accept}
    - {from: a, to: b, proto: tcp, ports: .nan, action: accept}
    - {from: a, to: b, proto: tcp, ports: .inf, action: accept}
    - {from: a, to: b, proto: tcp, ports: 443,8443, action: accept}
    - {from: a, to: b, proto: tcp, ports: "22",80-90, action: accept}
    - {from: a, to: b, proto: tcp, ports: 99999999999999999999999, action: accept}
portForwards:
  - {port: .nan, to: 10.0.0.5}
`,
    lines: [
      'forwarding.rules[0].ports: 22.5 is not a port from 1 to 65535 (line 6)',
      'forwarding.rules[1].ports: .nan is not a port from 1 to 65535 (line 7)',
      // As YAML writes them, not as JavaScript does ("Infinity", "1e+23").
      'forwarding.rules[2].ports: .inf is not a port from 1 to 65535 (line 8)',
      'forwarding.rules[3].8443: is not a known key (known: from, to, proto, ports, action); inside { } a port list must be quoted, as in ports: "443,8443" (line 9)',
      'forwarding.rules[4].80-90: is not a known key (known: from, to, proto, ports, action); inside { } a port list must be quoted, as in ports: "…,80-90" (line 10)',
      'forwarding.rules[5].ports: is a number far beyond the highest port, 65535 (line 11)',
      'portForwards[0].port: must be a port from 1 to 65535, or a range of ports as text like "6000-6010", not .nan (not a number) (line 13)',
    ],
  },
  {
    title: 'port forwards: ranges, protocols, duplicates (same protocol and port)',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
portForwards:
  - {proto: tcp, port: 2222, to: 192.168.10.100, toPort: 22}
  - {port: 2222, to: 192.168.10.101}
  - {proto: udp, port: 2222, to: 192.168.10.100}
  - {proto: sctp, port: 0, to: 192.168.10.7, toPort: 70000}
  - {port: "22", to: 192.168.10.8}
  - {port: "0", to: 192.168.10.8}
  - {port: "70000", to: 192.168.10.8}
  - {port: "123456", to: 192.168.10.8}
  - {port: "1e3", to: 192.168.10.8}
  - {port: "-22", to: 192.168.10.8}
`,
    lines: [
      'portForwards[1].port: tcp/2222 is already forwarded by portForwards[0] (line 5)',
      'portForwards[3].proto: must be one of tcp, udp, not "sctp" (line 7)',
      'portForwards[3].port: must be a port from 1 to 65535 (line 7)',
      'portForwards[3].toPort: must be a port from 1 to 65535 (line 7)',
      'portForwards[4].port: "22" is one port written as text: write it as a number, port: 22, or a range as "6000-6010" (line 8)',
      // Text is a range's form now: "must be a number, not a string" would no longer be true.
      'portForwards[5].port: "0" is not a port from 1 to 65535 (line 9)',
      'portForwards[6].port: "70000" is not a port from 1 to 65535 (line 10)',
      'portForwards[7].port: "123456" is not a port from 1 to 65535 (line 11)',
      'portForwards[8].port: "1e3" is not a port or a range of ports like "6000-6010" (line 12)',
      'portForwards[9].port: "-22" is not a port or a range of ports like "6000-6010" (line 13)',
    ],
  },
  {
    title: 'port forwards: a range of ports is text, "6000-6010", the lower port first, both from 1 to 65535',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
portForwards:
  - {proto: udp, port: "10000-10100", to: 192.168.10.100}
  - {port: "6010-6000", to: 192.168.10.100}
  - {port: "6000-6000", to: 192.168.10.100}
  - {port: "6000-70000", to: 192.168.10.100}
  - {port: "6000:6010", to: 192.168.10.100}
  - {port: "ssh", to: 192.168.10.100}
  - {port: "0-10", to: 192.168.10.100}
  - {port: true, to: 192.168.10.100}
  - {port: "65500-65536", to: 192.168.10.100}
`,
    lines: [
      'portForwards[1].port: "6010-6000" runs backwards: write the lower port first, as in "6000-6010" (line 5)',
      'portForwards[2].port: "6000-6000" is one port: write it as a number, port: 6000 (line 6)',
      'portForwards[3].port: "6000-70000": 70000 is not a port from 1 to 65535 (line 7)',
      'portForwards[4].port: "6000:6010" is not a port or a range of ports like "6000-6010"; a range is written with "-", as in "6000-6010" (line 8)',
      'portForwards[5].port: "ssh" is not a port or a range of ports like "6000-6010" (line 9)',
      'portForwards[6].port: "0-10": 0 is not a port from 1 to 65535 (line 10)',
      'portForwards[7].port: must be a port from 1 to 65535, or a range of ports as text like "6000-6010", not a boolean (line 11)',
      // One past the highest port: iptables would refuse --dport 65500:65536 at apply, after validate said nothing.
      'portForwards[8].port: "65500-65536": 65536 is not a port from 1 to 65535 (line 12)',
    ],
  },
  {
    title: 'a port, toPort or ports of the wrong type is told what it may be: a port forward\'s port also a range as text',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
forwarding:
  rules:
    - {from: office, to: lab, proto: tcp, ports: true, action: accept}
    - {from: office, to: lab, proto: tcp, ports: {a: 1}, action: accept}
    - {from: office, to: lab, proto: tcp, ports: ~, action: accept}
portForwards:
  - {port: [6000, 6010], to: 192.168.10.100}
  - {port: {from: 6000}, to: 192.168.10.100}
  - {port: ~, to: 192.168.10.100}
  - {port: 2222, to: 192.168.10.100, toPort: true}
  - {port: 2223, to: 192.168.10.100, toPort: "22"}
  - {port: 2224, to: 192.168.10.100, toPort: 22.5}
  - {port: 2225, to: 192.168.10.100, toPort: [22]}
`,
    lines: [
      'forwarding.rules[0].ports: must be a port or a list like "22,8000-8100", not a boolean (line 6)',
      'forwarding.rules[1].ports: must be a port or a list like "22,8000-8100", not an object (line 7)',
      'forwarding.rules[2].ports: must be a port or a list like "22,8000-8100", not null (an empty value) (line 8)',
      'portForwards[0].port: must be a port from 1 to 65535, or a range of ports as text like "6000-6010", not an array (line 10)',
      'portForwards[1].port: must be a port from 1 to 65535, or a range of ports as text like "6000-6010", not an object (line 11)',
      'portForwards[2].port: must be a port from 1 to 65535, or a range of ports as text like "6000-6010", not null (an empty value) (line 12)',
      'portForwards[3].toPort: must be a port, a number from 1 to 65535, not a boolean (line 13)',
      'portForwards[4].toPort: must be a port, a number from 1 to 65535, not a string (line 14)',
      'portForwards[5].toPort: must be a port, a number from 1 to 65535, not a float (line 15)',
      'portForwards[6].toPort: must be a port, a number from 1 to 65535, not an array (line 16)',
    ],
  },
  {
    title: 'port forwards: a range keeps its ports (no toPort); ranges and ports of one protocol may not overlap',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
portForwards:
  - {port: "6000-6010", to: 192.168.10.100}
  - {port: "7000-7010", to: 192.168.10.100, toPort: 7000}
  - {port: 6005, to: 192.168.10.101}
  - {port: "6010-6020", to: 192.168.10.101}
  - {proto: udp, port: "6000-6010", to: 192.168.10.101}
  - {port: 8000, to: 192.168.10.100}
  - {port: "7990-8100", to: 192.168.10.100}
  - {port: 6011, to: 192.168.10.100}
  - {port: "5000-5999", to: 192.168.10.100}
`,
    lines: [
      'portForwards[1].toPort: a range of ports is forwarded to the same ports; toPort cannot be given with port "7000-7010" (line 5)',
      'portForwards[2].port: tcp/6005 is already forwarded by portForwards[0] (tcp/6000-6010) (line 6)',
      'portForwards[3].port: tcp/6010-6020 overlaps portForwards[0] (tcp/6000-6010): port 6010 is forwarded there already (line 7)',
      'portForwards[6].port: tcp/7990-8100 overlaps portForwards[5] (tcp/8000): port 8000 is forwarded there already (line 10)',
      'portForwards[7].port: tcp/6011 is already forwarded by portForwards[3] (tcp/6010-6020) (line 11)',
    ],
  },
  {
    // A range that covers a whole block of 256 ports (768-1023) looks the block up at once: it must name the same
    // forward as a port-by-port look would, the first one listed, not the last one to take a port in the block.
    title: 'port forwards: a range over a whole block of ports names the first forward it overlaps, as a short range does',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
portForwards:
  - {port: 1000, to: 192.168.10.100}
  - {port: 800, to: 192.168.10.101}
  - {port: "700-1100", to: 192.168.10.102}
  - {port: "790-1010", to: 192.168.10.103}
`,
    lines: [
      'portForwards[2].port: tcp/700-1100 overlaps portForwards[0] (tcp/1000): port 1000 is forwarded there already (line 6)',
      'portForwards[3].port: tcp/790-1010 overlaps portForwards[0] (tcp/1000): port 1000 is forwarded there already (line 7)',
    ],
  },
  {
    title: 'values that try to break out of a rule line: newline, quote, leading dash, spaces',
    yaml: `uplink:
  interface: "eth0 -j ACCEPT"
vlans:
  - {name: "lab\\n-A FORWARD", id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, interface: "-eth1"}
  - {name: "my lab", id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1, interface: "eth\\"2"}
  - {name: "-lab", id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.1, interface: "eth 3"}
  - {name: iot, id: 40, subnet: 192.168.40.0/24, gateway: 192.168.40.1, interface: "eth4\\n"}
  - {name: 'o"k', id: 50, subnet: 192.168.50.0/24, gateway: 192.168.50.1, interface: {mac: "02:42:c0:a8:32:02 -j"}}
portForwards:
  - {port: 2222, to: "192.168.40.5\\n-j ACCEPT"}
rules:
  dir: "/etc/vlan-gateway/rules.d\\n-F"
`,
    lines: [
      'uplink.interface: is not an interface name: it holds whitespace, which the kernel refuses in one (line 2)',
      `vlans[0].name: ${NAME_MESSAGE} (line 4)`,
      'vlans[0].interface: is not an interface name: it starts with "-", which ip and iptables would read as an option (line 4)',
      `vlans[1].name: ${NAME_MESSAGE} (line 5)`,
      'vlans[1].interface: is not an interface name: it holds "\\""; a name here holds only ASCII letters, digits, "_", ".", "-" (line 5)',
      `vlans[2].name: ${NAME_MESSAGE} (line 6)`,
      'vlans[2].interface: is not an interface name: it holds whitespace, which the kernel refuses in one (line 6)',
      'vlans[3].interface: is not an interface name: it holds whitespace, which the kernel refuses in one (line 7)',
      `vlans[4].name: ${NAME_MESSAGE} (line 8)`,
      'vlans[4].interface.mac: is not a MAC address like 02:42:c0:a8:0a:02 (line 8)',
      'portForwards[0].to: "192.168.40.5\\n-j ACCEPT" is not an IPv4 address (line 10)',
      'rules.dir: must be a path on one line (line 12)',
    ],
  },
  {
    title: 'forwarding rules whose from/to try to carry an option',
    yaml: `vlans:
  - {name: iot, id: 40, subnet: 192.168.40.0/24, gateway: 192.168.40.1}
forwarding:
  rules:
    - {from: "iot -j ACCEPT", to: "--goto", action: accept}
    - {from: "iot\\n-A FORWARD", to: 'uplink"', action: accept}
`,
    lines: [
      'forwarding.rules[0].from: must be a VLAN name, "uplink", or an address or prefix inside a VLAN (line 5)',
      'forwarding.rules[0].to: must be a VLAN name, "uplink", or an address or prefix inside a VLAN (line 5)',
      'forwarding.rules[1].from: must be a VLAN name, "uplink", or an address or prefix inside a VLAN (line 6)',
      'forwarding.rules[1].to: must be a VLAN name, "uplink", or an address or prefix inside a VLAN (line 6)',
    ],
  },
  {
    // An invalid name is reported once, by the schema; the "known: …" list holds only valid names, so an injected
    // newline can neither split an error line nor be echoed.
    title: 'an error line never carries a newline or an invalid name it was given',
    yaml: `vlans:
  - {name: "lab\\n-A FORWARD", id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: iot, id: 40, subnet: 192.168.40.0/24, gateway: 192.168.40.1}
forwarding:
  rules:
    - {from: office, to: iot, action: accept}
`,
    lines: [
      `vlans[0].name: ${NAME_MESSAGE} (line 2)`,
      'forwarding.rules[0].from: names no VLAN ("office"); known: iot, uplink (line 6)',
    ],
  },
  {
    title: 'a value past 64 characters is echoed by its first 40 and its length, wherever a message echoes one (a key too)',
    yaml: `vlans:
  - {name: office, id: 10, subnet: ${'1'.repeat(10_000)}, gateway: "${'é'.repeat(65)}"}
forwarding:
  rules:
    - {from: ${'2'.repeat(3000)}, to: ${'x'.repeat(3000)}, proto: ${'t'.repeat(3000)}, ports: "${'3'.repeat(3000)}", action: accept}
    - {from: "a b ${'c'.repeat(100)}", to: "a b ${'c'.repeat(100)}", action: accept}
portForwards:
  - {port: ${'9'.repeat(3000)}, to: 192.168.10.5}
reconcile: {schedule: "${'1 '.repeat(3000)}"}
http: {listen: ${'h'.repeat(3000)}, allowFrom: [office]}
${'k'.repeat(65)}: 1
`,
    lines: [
      `vlans[0].subnet: "${'1'.repeat(40)}…" (10,000 characters) is not an IPv4 prefix like 192.168.10.0/24 (line 2)`,
      `vlans[0].gateway: "${'é'.repeat(40)}…" (65 characters) is not an IPv4 address (line 2)`,
      `forwarding.rules[0].proto: must be one of tcp, udp, icmp, all, not "${'t'.repeat(40)}…" (3,000 characters) (line 5)`,
      `forwarding.rules[0].from: "${'2'.repeat(40)}…" (3,000 characters) is not an address or prefix (line 5)`,
      `forwarding.rules[0].to: names no VLAN ("${'x'.repeat(40)}…" (3,000 characters)); known: office, uplink (line 5)`,
      `forwarding.rules[0].ports: ${'3'.repeat(40)}… (3,000 characters) is not a port from 1 to 65535 (line 5)`,
      'forwarding.rules[1].from: must be a VLAN name, "uplink", or an address or prefix inside a VLAN (line 6)',
      'forwarding.rules[1].to: must be a VLAN name, "uplink", or an address or prefix inside a VLAN (line 6)',
      `forwarding.rules[1].to: from and to are both a b ${'c'.repeat(36)}… (104 characters); traffic inside one VLAN does not pass the router (line 6)`,
      `portForwards[0].port: must be a number, and ${'9'.repeat(40)}… (3,000 characters) is beyond the range of one (YAML reads it as text) (line 8)`,
      `reconcile.schedule: "${'1 '.repeat(20)}…" (6,000 characters) is not a valid cron expression (5 fields, or 6 with seconds first, like "*/30 * * * * *") (line 9)`,
      `http.listen: "${'h'.repeat(40)}…" (3,000 characters) is not an address to listen on; ${LISTEN_FORMS} (line 10)`,
      `["${'k'.repeat(40)}…" (65 characters)]: is not a known key (known: uplink, vlans, forwarding, portForwards, rules, reconcile, http) (line 11)`,
    ],
  },
  {
    title: 'a port forward\'s long port range (leading zeros) and proto are echoed shortened',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
portForwards:
  - {port: "${'0'.repeat(100)}6000-6010", to: 192.168.10.5, toPort: 22}
  - {port: "${'0'.repeat(100)}5-5", to: 192.168.10.5}
  - {port: "${'0'.repeat(100)}7010-7000", to: 192.168.10.5}
  - {proto: ${'t'.repeat(100)}, port: 22, to: 192.168.10.5}
  - {proto: ${'t'.repeat(100)}, port: 22, to: 192.168.10.5}
`,
    lines: [
      `portForwards[0].toPort: a range of ports is forwarded to the same ports; toPort cannot be given with port "${'0'.repeat(40)}…" (109 characters) (line 4)`,
      `portForwards[1].port: "${'0'.repeat(40)}…" (103 characters) is one port: write it as a number, port: 5 (line 5)`,
      `portForwards[2].port: "${'0'.repeat(40)}…" (109 characters) runs backwards: write the lower port first, as in "7000-7010" (line 6)`,
      `portForwards[3].proto: must be one of tcp, udp, not "${'t'.repeat(40)}…" (100 characters) (line 7)`,
      `portForwards[4].proto: must be one of tcp, udp, not "${'t'.repeat(40)}…" (100 characters) (line 8)`,
    ],
  },
  {
    title: 'a long http.listen host is echoed shortened where a port forward takes its port',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
portForwards:
  - {port: 10123, to: 192.168.10.5}
http: {listen: "${'h'.repeat(100)}:10123"}
`,
    lines: [
      `portForwards[0].port: tcp/10123 is the gateway's own HTTP port (http.listen ${'h'.repeat(40)}… (106 characters)): `
        + 'Prometheus and health checks from the uplink side would reach the VLAN host instead; forward another port, or move http.listen (line 4)',
    ],
  },
  {
    // The endpoints' start looks the host up as a name: 999.1.1.1 validated, then every start failed ("not an
    // address"), and the resolver reads 192.168.010.1 as 192.168.8.1 and 10123 as 0.0.39.139.
    title: 'an http.listen host of digits and dots that is no IPv4 address (the resolver would fail it, or read another address)',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
http: {listen: "999.1.1.1:10123"}
`,
    lines: ['http.listen: "999.1.1.1:10123": 999.1.1.1 is not an IPv4 address (line 3)'],
  },
  {
    title: 'an http.listen host with a leading zero is no IPv4 address either (the resolver reads it as octal)',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
http: {listen: "192.168.010.1:10123"}
`,
    lines: [
      'http.listen: "192.168.010.1:10123": 192.168.010.1 is not an IPv4 address (a number with a leading zero is octal to the resolver; write it without the zero) (line 3)',
    ],
  },
  {
    title: 'an http.listen host that is one number',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
http: {listen: "10123:10123"}
`,
    lines: ['http.listen: "10123:10123": 10123 is not an IPv4 address (line 3)'],
  },
  {
    title: 'an http.listen host that is a name is taken (the resolver finds it)',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
http: {listen: "localhost:10123"}
`,
    lines: [],
  },
  {
    title: 'a value of 64 characters is echoed whole',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: "${'é'.repeat(64)}"}
`,
    lines: [`vlans[0].gateway: "${'é'.repeat(64)}" is not an IPv4 address (line 2)`],
  },
  {
    title: 'YAML syntax error, with its line',
    yaml: `vlans:
  - name: office
   id: 10
`,
    lines: ['line 3, column 4: bad indentation of a sequence entry'],
  },
  {
    // js-yaml reads `[::]` as a list and says "bad indentation" past it: the brackets were not named at all.
    title: 'a value that opens a YAML list or mapping and goes on past it is named, with the quotes that make it text',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
http:
  listen: [::]:9100   # every address
`,
    lines: ['line 4, column 15: bad indentation of a mapping entry (the value [::]:9100 starts with "[", which YAML reads as the start of a list: '
      + 'to mean the text, quote it, as in "[::]:9100")'],
  },
  {
    // Said whole, twice (as it is and quoted), however long: every other value said is shortened.
    title: 'a long value that opens a YAML list and goes on past it is shortened, and not written out again',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
http:
  listen: [::]:${'9'.repeat(70)}
`,
    lines: [`line 4, column 15: bad indentation of a mapping entry (the value [::]:${'9'.repeat(35)}… (75 characters) starts with "[", which YAML reads as the start of a list: `
      + 'to mean the text, quote it)'],
  },
  {
    // Said as "["::"]:9100", which is no YAML text: the quote inside ends it.
    title: 'a value past its list that holds a double quote is shown quoted as YAML takes it, in single quotes',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
http:
  listen: ["::"]:9100
`,
    lines: ['line 4, column 17: bad indentation of a mapping entry (the value ["::"]:9100 starts with "[", which YAML reads as the start of a list: '
      + "to mean the text, quote it, as in '[\"::\"]:9100')"],
  },
  {
    // The hint read the line before the fault too: a list that is one, ahead of an unrelated fault, was told to be quoted.
    title: 'a fault after a list that is one (a tab on the next line) says nothing of the list',
    yaml: `vlans:
  - name: office
    allowFrom: ["x]y"]
\tid: 10
`,
    lines: ['line 4, column 1: tab characters must not be used in indentation'],
  },
  {
    // The fault is the line's indentation, not its value: the list is one (a quoted "]" in it).
    title: 'a line indented wrongly whose value is a list says the indentation only',
    yaml: `vlans:
  - name: office
     allowFrom: ["x]y"]
`,
    lines: ['line 3, column 15: bad indentation of a mapping entry'],
  },
  {
    title: 'duplicate keys, with their line',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
vlans: []
`,
    // Reported with its path, and the rest still checked, the last use of the key counting (as JSON.parse does).
    lines: [
      'vlans: is given twice in one mapping (first at line 1); give it once (line 3)',
      'vlans: must list at least one VLAN (line 3)',
    ],
  },
  {
    title: 'a duplicate key written with quotes is named too',
    yaml: `vlans:
  - {name: office, "name": lab, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
`,
    lines: ['vlans[0].name: is given twice in one mapping (first at line 2); give it once (line 2)'],
  },
  {
    title: 'keys YAML reads as another value (~, 0x10, 1.50, !!str true, an empty key) are placed at their own line',
    yaml: `vlans:
  - name: office
    id: 10
    subnet: 192.168.10.0/24
    gateway: 192.168.10.1
    ~: 1
    0x10: 2
    1.50: 3
    !!str true: 4
uplink:
  nat: masquerade
  : 5
`,
    lines: [
      'vlans[0].null: is not a known key (known: name, id, subnet, gateway, interface, masquerade) (line 6)',
      'vlans[0].16: is not a known key (known: name, id, subnet, gateway, interface, masquerade) (line 7)',
      'vlans[0]["1.5"]: is not a known key (known: name, id, subnet, gateway, interface, masquerade) (line 8)',
      'vlans[0].true: is not a known key (known: name, id, subnet, gateway, interface, masquerade) (line 9)',
      'uplink.null: is not a known key (known: interface, gateway, nat, snatTo) (line 12)',
    ],
  },
  {
    title: 'keys that YAML reads as the same value (~ and null, 1 and "1") are a repeated key, named at their lines',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
uplink:
  ~: none
  null: none
  1: a
  "1": b
`,
    lines: [
      'uplink.null: is given twice in one mapping (first at line 4); give it once (line 5)',
      'uplink.null: is not a known key (known: interface, gateway, nat, snatTo) (line 5)',
      'uplink.1: is given twice in one mapping (first at line 6); give it once (line 7)',
      'uplink.1: is not a known key (known: interface, gateway, nat, snatTo) (line 7)',
    ],
  },
  {
    title: 'each key that is a list or a mapping at its own line, with a repeated key besides',
    yaml: `vlans:
  - name: office
    name: lab
    id: 10
    subnet: 192.168.10.0/24
    gateway: 192.168.10.1
    ? [a, b]
    : 1
uplink:
  {? {a: 1} : 2}
`,
    lines: [
      'vlans[0].name: is given twice in one mapping (first at line 2); give it once (line 3)',
      'line 7, column 5: a key that is a list or a mapping ("? [a, b]"); a config\'s keys are words',
      'line 10, column 4: a key that is a list or a mapping ("? [a, b]"); a config\'s keys are words',
    ],
  },
  {
    title: 'a repeated key before a syntax error: both said, each at its line (the parser reads no further than the error)',
    yaml: `vlans:
  - name: office
    name: lab
    id: 10
    subnet: 192.168.10.0/24
    gateway: 192.168.10.1
forwarding:
  rules:
    - {from: a, to: b
uplink:
  nat: none
  nat: none
`,
    lines: [
      'vlans[0].name: is given twice in one mapping (first at line 2); give it once (line 3)',
      'line 10, column 1: deficient indentation',
    ],
  },
  {
    title: 'repeated keys around an unknown alias: all said, each at its line',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
uplink:
  nat: none
  nat: none
forwarding: *rules
forwarding: {}
`,
    lines: [
      'uplink.nat: is given twice in one mapping (first at line 4); give it once (line 5)',
      'line 6, column 14: unidentified alias "rules"',
      'forwarding: is given twice in one mapping (first at line 6); give it once (line 7)',
    ],
  },
  {
    title: 'a port forward to the gateway itself, or to a subnet\'s network or broadcast address',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
portForwards:
  - {proto: tcp, port: 2222, to: 192.168.10.1, toPort: 22}
  - {proto: tcp, port: 2223, to: 192.168.10.0, toPort: 22}
  - {proto: udp, port: 2224, to: 192.168.10.255}
  - {proto: tcp, port: 2225, to: 192.168.10.2, toPort: 22}
`,
    lines: [
      'portForwards[0].to: 192.168.10.1 is the gateway\'s own address on office; a port forward goes to a host on a VLAN (line 4)',
      'portForwards[1].to: 192.168.10.0 is the network address of 192.168.10.0/24 (line 5)',
      'portForwards[2].to: 192.168.10.255 is the broadcast address of 192.168.10.0/24 (line 6)',
    ],
  },
  {
    // The DNAT takes the port on every address of the gateway that the uplink side reaches, the endpoints' too.
    title: 'a TCP port forward on the gateway\'s own HTTP port (the default one); UDP on it is fine',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
portForwards:
  - {proto: tcp, port: 10123, to: 192.168.10.5}
  - {proto: udp, port: 10123, to: 192.168.10.5}
`,
    lines: [
      'portForwards[0].port: tcp/10123 is the gateway\'s own HTTP port (the default http.listen, 0.0.0.0:10123): Prometheus and '
        + 'health checks from the uplink side would reach the VLAN host instead; forward another port, or move http.listen (line 4)',
    ],
  },
  {
    title: 'a TCP range of ports forwarded that holds the gateway\'s own HTTP port is refused as that port is; one beside it, or UDP, is fine',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
portForwards:
  - {proto: tcp, port: "10120-10123", to: 192.168.10.5}
  - {proto: udp, port: "10100-10200", to: 192.168.10.5}
  - {proto: tcp, port: "10124-10130", to: 192.168.10.6}
  - {proto: tcp, port: "10000-10119", to: 192.168.10.6}
`,
    lines: [
      'portForwards[0].port: tcp/10120-10123 holds tcp/10123, the gateway\'s own HTTP port (the default http.listen, 0.0.0.0:10123): Prometheus and '
        + 'health checks from the uplink side would reach the VLAN host instead; forward a range without it, or move http.listen (line 4)',
    ],
  },
  {
    title: 'http.listen moves the port a TCP forward must not take (10123 is then free)',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
http: {listen: "0.0.0.0:9100"}
portForwards:
  - {proto: tcp, port: 9100, to: 192.168.10.5}
  - {proto: tcp, port: 10123, to: 192.168.10.5}
`,
    lines: [
      'portForwards[0].port: tcp/9100 is the gateway\'s own HTTP port (http.listen 0.0.0.0:9100): Prometheus and '
        + 'health checks from the uplink side would reach the VLAN host instead; forward another port, or move http.listen (line 5)',
    ],
  },
  {
    title: 'http.listen on loopback: a forward of its port is fine',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
http: {listen: "127.0.0.1:10123"}
portForwards:
  - {proto: tcp, port: 10123, to: 192.168.10.5}
`,
    lines: [],
  },
  {
    // `run --listen` serves the endpoints elsewhere: the forward of 10123 is then fine, one of the flag's port is not.
    title: '`run --listen` moves the HTTP port over http.listen and its default',
    listen: '0.0.0.0:9100',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
http: {listen: "0.0.0.0:9200"}
portForwards:
  - {proto: tcp, port: 10123, to: 192.168.10.5}
  - {proto: tcp, port: 9200, to: 192.168.10.5}
  - {proto: tcp, port: 9100, to: 192.168.10.5}
`,
    lines: [
      'portForwards[2].port: tcp/9100 is the gateway\'s own HTTP port (--listen 0.0.0.0:9100): Prometheus and '
        + 'health checks from the uplink side would reach the VLAN host instead; forward another port, or move --listen (line 7)',
    ],
  },
  {
    title: 'a reconcile.schedule that looks like cron but is not one (minute 61)',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
reconcile: {schedule: "61 * * * *"}
`,
    lines: ['reconcile.schedule: "61 * * * *": in the minute field, 61 is out of its range, 0 to 59 (line 3)'],
  },
  {
    title: 'a reconcile.schedule with a step of 0',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
reconcile:
  schedule: "*/0 * * * * *"
`,
    lines: ['reconcile.schedule: "*/0 * * * * *": in the second field, */0 has a step of 0; a step is 1 or more (line 4)'],
  },
  // node-cron takes a range that runs backwards as wrapping round its field, and a step past its field as the field's
  // first value alone: each validated, and the drift check ran 57 minutes in the hour (5-1, nearly always a typo for
  // 1-5), every night hour, or once a minute instead of every 90 seconds. A day no month has validated as "not a
  // valid cron expression", which said nothing of why.
  // What a backwards range is said to be written as runs the same values as node-cron runs it: "as in MON-FRI" for
  // FRI-MON (and 1-5 for 5-1, 1-5/2 for 5-1/2) proposed other days and minutes.
  ...([
    ['5-1 * * * *', 'in the minute field, 5-1 runs backwards: a range goes from the lower value up; for 5 round to 1, write 5-59,0-1'],
    ['0 22-6 * * *', 'in the hour field, 22-6 runs backwards: a range goes from the lower value up; for 22 round to 6, write 22-23,0-6'],
    ['0 0 * * FRI-MON', 'in the day of week field, FRI-MON runs backwards: a range goes from the lower value up; for FRI round to MON, write FRI-SAT,SUN-MON'],
    ['5-1/2 * * * *', 'in the minute field, 5-1/2 runs backwards: a range goes from the lower value up; for 5 round to 1 every 2, write 5-59/2,1'],
    ['0 0 * NOV-FEB/2 *', 'in the month field, NOV-FEB/2 runs backwards: a range goes from the lower value up; for NOV round to FEB every 2, write NOV,JAN'],
    ['*/90 * * * * *', 'in the second field, */90 takes only 0: a step does not carry past the field\'s 0 to 59 into the next minute, so this is once a minute, not every 90 seconds'],
    ['0 0 * 13 *', 'in the month field, 13 is out of its range, 1 to 12'],
    ['0 0 0 * *', 'in the day of month field, 0 is out of its range, 1 to 31'],
    ['0/5 * * * *', 'in the minute field, 0/5: a step follows * or a range, as in */5 or 0-59/5'],
    ['0 0 * * 7/2', 'in the day of week field, 7/2: a step follows * or a range, as in */2'],
    ['0 0 31 2 *', 'day 31 of month 2 never comes, so the drift check would never run'],
    // A word was read by the name it starts with: junk as June, a range "running backwards" the user never wrote.
    ['0 0 * junk-MAR *', 'in the month field, junk is not a month: a month is 1 to 12 or its name, JAN to DEC or in full'],
    ['0 0 * * FRIDAYX-MON', 'in the day of week field, FRIDAYX is not a day of week: a day of week is 0 to 7 or its name, SUN to SAT or in full'],
    // node-cron replaces each name it finds in the field's text: this ran in December.
    ['0 0 * janfeb *', 'in the month field, janfeb is not a month: a month is 1 to 12 or its name, JAN to DEC or in full'],
    // And a name next to a number: 1jan ran in November (11), 0mon on Mondays (01), jan-1feb from January to November.
    ['0 0 1 1jan *', 'in the month field, 1jan is not a month: a month is 1 to 12 or its name, JAN to DEC or in full'],
    ['0 0 * * 0mon', 'in the day of week field, 0mon is not a day of week: a day of week is 0 to 7 or its name, SUN to SAT or in full'],
    ['0 0 * jan-1feb *', 'in the month field, 1feb is not a month: a month is 1 to 12 or its name, JAN to DEC or in full'],
  ] as const).map(([schedule, why]): Row => ({
    title: `a reconcile.schedule that node-cron takes otherwise than written, or never runs: ${schedule}`,
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
reconcile: {schedule: "${schedule}"}
`,
    lines: [`reconcile.schedule: "${schedule}": ${why} (line 3)`],
  })),
  // 7 is Sunday, as 0: a day-of-week range from it (7-1, Sunday and Monday) goes up from Sunday, and node-cron runs it
  // so. It was refused as running backwards, told to write 1-7 (every day) or 7-6,0-1, itself refused the same way.
  // A range that ends on Sunday written 0 (SAT-SUN, the weekend as people write it) ends at 7: it was refused as
  // running backwards, though node-cron runs it as Saturday and Sunday.
  ...(['0 0 * * 7-1', '0 0 * * 7-MON', '0 0 * * 7-1/2', '0 0 * * SAT-SUN', '0 0 * * 5-0', '0 0 * * FRI-SUN/2'] as const).map((schedule): Row => ({
    title: `a day-of-week range from Sunday as 7, or to Sunday as 0, is taken: ${schedule}`,
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
reconcile: {schedule: "${schedule}"}
`,
    lines: [],
  })),
  // The names node-cron takes, in three letters or in full, in any case, and the last Friday of the month by its name or number.
  ...(['0 0 * Jan-MARCH *', '0 0 * june *', '0 0 * * mon-Friday', '0 0 * * FRIL', '0 0 * * 5L'] as const).map((schedule): Row => ({
    title: `a reconcile.schedule with names is taken: ${schedule}`,
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
reconcile: {schedule: "${schedule}"}
`,
    lines: [],
  })),
  // Each of the first three validated, then failed every start ("not an address"); the others could never be an
  // address. Each names the value and says what is taken instead.
  ...([
    ['"*:9100"', `http.listen: "*:9100": * is not an IPv4 address or a host name; ${LISTEN_FORMS} (line 3)`],
    ['"[gateway]:9100"', `http.listen: "[gateway]:9100": [gateway] is not an IPv6 address; ${LISTEN_FORMS} (line 3)`],
    // Colons and hex digits are no IPv6 address: these validated, and failed every start.
    ['"[:]:9100"', `http.listen: "[:]:9100": [:] is not an IPv6 address; ${LISTEN_FORMS} (line 3)`],
    ['"[1::2::3]:9100"', `http.listen: "[1::2::3]:9100": [1::2::3] is not an IPv6 address; ${LISTEN_FORMS} (line 3)`],
    ['"0.0.0.0:70000"', 'http.listen: "0.0.0.0:70000": 70000 is not a port (the highest is 65535) (line 3)'],
    ['":::9100"', `http.listen: ":::9100" is not an address to listen on (an IPv6 address is written in brackets: [::1]:PORT); ${LISTEN_FORMS} (line 3)`],
    ['"http://0.0.0.0:9100"', `http.listen: "http://0.0.0.0:9100" is not an address to listen on (an address, not a URL: no scheme, no path); ${LISTEN_FORMS} (line 3)`],
    ['"0.0.0.0"', `http.listen: "0.0.0.0" is not an address to listen on; ${LISTEN_FORMS} (line 3)`],
    ['true', 'http.listen: must be an address to listen on, PORT or HOST:PORT, not a boolean (line 3)'],
  ] as const).map(([listen, line]): Row => ({
    title: `http.listen ${listen} is no address to listen on, and says what is`,
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
http: {listen: ${listen}}
`,
    lines: [line],
  })),
  {
    // The default route would point into a VLAN, and SNAT would give VLAN traffic a VLAN host's address.
    title: 'uplink.gateway and uplink.snatTo inside a VLAN (the gateway one equal to a VLAN\'s own gateway)',
    yaml: `uplink:
  gateway: 192.168.20.1
  nat: snat
  snatTo: 192.168.10.254
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
`,
    lines: [
      'uplink.gateway: 192.168.20.1 is inside vlans[1] (lab, 192.168.20.0/24); the uplink\'s next hop is on the uplink\'s network (line 2)',
      'uplink.snatTo: 192.168.10.254 is inside vlans[0] (office, 192.168.10.0/24); the SNAT address is one of the uplink\'s own (line 4)',
    ],
  },
  {
    title: 'uplink.gateway inside a VLAN whose name is invalid: the VLAN is named by its index only',
    yaml: `uplink: {gateway: 192.168.10.254}
vlans:
  - {name: Office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
`,
    lines: [
      'uplink.gateway: 192.168.10.254 is inside vlans[0] (192.168.10.0/24); the uplink\'s next hop is on the uplink\'s network (line 1)',
      `vlans[0].name: ${NAME_MESSAGE} (line 3)`,
    ],
  },
  ...([
    ['0.0.0.0', '255.255.255.255', 'the unspecified address', 'the limited broadcast address'],
    ['127.0.0.1', '224.0.0.5', 'in loopback (127.0.0.0/8) address space', 'in multicast (224.0.0.0/4) address space'],
    ['240.0.0.1', '0.1.2.3', 'in reserved (240.0.0.0/4) address space', 'in 0.0.0.0/8 ("this network") address space'],
  ] as const).map(([gateway, snatTo, gatewayKind, snatKind]): Row => ({
    title: `uplink.gateway ${gateway} and uplink.snatTo ${snatTo} are not unicast host addresses`,
    yaml: `uplink: {gateway: ${gateway}, nat: snat, snatTo: ${snatTo}}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
`,
    lines: [
      `uplink.gateway: ${gateway} is ${gatewayKind}, not a unicast host address (line 1)`,
      `uplink.snatTo: ${snatTo} is ${snatKind}, not a unicast host address (line 1)`,
    ],
  })),
  {
    title: 'snatTo is the uplink gateway (the next hop), and a multicast MAC no NIC can have',
    yaml: `uplink: {gateway: 203.0.113.1, nat: snat, snatTo: 203.0.113.1}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, interface: {mac: "03:00:00:00:00:10"}}
`,
    lines: [
      'uplink.snatTo: 203.0.113.1 is uplink.gateway, the next hop; snatTo is an address of the gateway\'s own uplink NIC (line 1)',
      'vlans[0].interface.mac: is a multicast MAC address (its first byte is odd); a NIC\'s MAC is unicast, like 02:42:c0:a8:0a:02 (line 3)',
    ],
  },
  {
    title: 'loopback, the kernel\'s "all" and "default", and the all-zero and broadcast MACs are no NIC a VLAN or the uplink can be on; nothing else said of them',
    yaml: `uplink: {interface: lo}
vlans:
  - {name: a, id: 1, subnet: 10.0.1.0/24, gateway: 10.0.1.1, interface: lo}
  - {name: b, id: 2, subnet: 10.0.2.0/24, gateway: 10.0.2.1, interface: all}
  - {name: c, id: 3, subnet: 10.0.3.0/24, gateway: 10.0.3.1, interface: default}
  - {name: d, id: 4, subnet: 10.0.4.0/24, gateway: 10.0.4.1, interface: {mac: "00:00:00:00:00:00"}}
  - {name: e, id: 5, subnet: 10.0.5.0/24, gateway: 10.0.5.1, interface: {mac: "FF:FF:FF:FF:FF:FF"}}
  - {name: f, id: 6, subnet: 10.0.6.0/24, gateway: 10.0.6.1, interface: {mac: "ff:ff:ff:ff:ff:ff"}}
  - {name: g, id: 7, subnet: 10.0.7.0/24, gateway: 10.0.7.1, interface: lo0}
`,
    lines: [
      'uplink.interface: is the loopback interface: it reaches no other host, so it cannot carry a VLAN or the uplink; name a NIC like eth1, or leave interface out (line 1)',
      'vlans[0].interface: is the loopback interface: it reaches no other host, so it cannot carry a VLAN or the uplink; name a NIC like eth1, or leave interface out (line 3)',
      'vlans[1].interface: is not a NIC: the kernel keeps "all" for the settings of every interface (/proc/sys/net/ipv4/conf/all), and names no NIC so (line 4)',
      'vlans[2].interface: is not a NIC: the kernel keeps "default" for the settings new interfaces start with (/proc/sys/net/ipv4/conf/default), and names no NIC so (line 5)',
      'vlans[3].interface.mac: is the all-zero MAC address, which no Ethernet NIC has (the kernel refuses it; loopback shows it); a NIC\'s MAC is like 02:42:c0:a8:0a:02 (line 6)',
      'vlans[4].interface.mac: is the broadcast MAC address (a frame to every host on the link), which no NIC has as its own; a NIC\'s MAC is unicast, like 02:42:c0:a8:0a:02 (line 7)',
      'vlans[5].interface.mac: is the broadcast MAC address (a frame to every host on the link), which no NIC has as its own; a NIC\'s MAC is unicast, like 02:42:c0:a8:0a:02 (line 8)',
    ],
  },
  {
    title: 'a VLAN subnet in loopback, multicast or reserved address space',
    yaml: `vlans:
  - {name: lo, id: 10, subnet: 127.10.0.0/24, gateway: 127.10.0.1}
  - {name: mc, id: 20, subnet: 239.1.2.0/24, gateway: 239.1.2.1}
  - {name: res, id: 30, subnet: 250.0.0.0/16, gateway: 250.0.0.1}
  - {name: zero, id: 40, subnet: 0.10.0.0/16, gateway: 0.10.0.1}
`,
    lines: [
      'vlans[0].subnet: 127.10.0.0/24 is in loopback (127.0.0.0/8) address space, which no host\'s address is in (line 2)',
      'vlans[1].subnet: 239.1.2.0/24 is in multicast (224.0.0.0/4) address space, which no host\'s address is in (line 3)',
      'vlans[2].subnet: 250.0.0.0/16 is in reserved (240.0.0.0/4) address space, which no host\'s address is in (line 4)',
      'vlans[3].subnet: 0.10.0.0/16 is in 0.0.0.0/8 ("this network") address space, which no host\'s address is in (line 5)',
    ],
  },
  {
    title: 'unicast uplink addresses outside every VLAN are fine (link-local, shared, a /8\'s last address)',
    yaml: `uplink: {gateway: 169.254.0.1, nat: snat, snatTo: 10.255.255.255}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: cgnat, id: 20, subnet: 100.64.0.0/24, gateway: 100.64.0.1}
`,
    lines: [],
  },
  {
    // A VLAN's subnet is a route on its NIC: one shorter than /8 would claim most of the Internet for one VLAN.
    title: 'a VLAN subnet shorter than /8, alone (0.0.0.0/0)',
    yaml: `vlans:
  - {name: all, id: 1, subnet: 0.0.0.0/0, gateway: 10.0.0.1}
`,
    lines: ['vlans[0].subnet: 0.0.0.0/0 is too large for a VLAN (use /8 or smaller) (line 2)'],
  },
  {
    title: 'a VLAN subnet shorter than /8 with host bits set; /8 itself is fine',
    yaml: `vlans:
  - {name: a, id: 1, subnet: 10.0.0.0/4, gateway: 10.0.0.1}
  - {name: b, id: 2, subnet: 172.0.0.0/7, gateway: 172.0.0.1}
  - {name: c, id: 3, subnet: 100.0.0.0/8, gateway: 100.0.0.1}
`,
    lines: [
      'vlans[0].subnet: 10.0.0.0/4 has host bits set; did you mean 0.0.0.0/4? (line 2)',
      'vlans[0].subnet: 10.0.0.0/4 is too large for a VLAN (use /8 or smaller) (line 2)',
      'vlans[1].subnet: 172.0.0.0/7 is too large for a VLAN (use /8 or smaller) (line 3)',
    ],
  },
  {
    // As with a VLAN subnet, a prefix is written the way iptables prints it back (otherwise drift never settles).
    title: 'prefixes with a leading zero in the length, or with host bits set (VLAN subnets, rules, http.allowFrom)',
    yaml: `vlans:
  - {name: a, id: 1, subnet: 10.0.0.0/08, gateway: 10.0.0.1}
  - {name: b, id: 2, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
forwarding:
  rules:
    - {from: 10.0.0.0/09, to: b, action: drop}
    - {from: 192.168.10.5/24, to: a, action: drop}
    - {from: a, to: 192.168.10.0/024, action: drop}
    - {from: 10.0.0.0/9, to: 192.168.10.4/30, action: accept}
http:
  allowFrom: [192.168.10.5/28, 10.0.0.7/08]
`,
    lines: [
      'vlans[0].subnet: 10.0.0.0/08 has a leading zero in its prefix length; did you mean 10.0.0.0/8? (line 2)',
      'forwarding.rules[0].from: 10.0.0.0/09 has a leading zero in its prefix length; did you mean 10.0.0.0/9? (line 6)',
      'forwarding.rules[1].from: 192.168.10.5/24 has host bits set; did you mean 192.168.10.0/24? (line 7)',
      'forwarding.rules[2].to: "192.168.10.0/024" is not an address or prefix (line 8)',
      'http.allowFrom[0]: 192.168.10.5/28 has host bits set; did you mean 192.168.10.0/28? (line 11)',
      'http.allowFrom[1]: 10.0.0.7/08 has a leading zero in its prefix length; did you mean 10.0.0.0/8? (line 11)',
    ],
  },
  {
    title: 'a forwarding rule whose from and to are in the same VLAN, by name, address or prefix',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
forwarding:
  rules:
    - {from: 192.168.10.0/24, to: office, action: drop}
    - {from: 192.168.10.5, to: 192.168.10.128/25, proto: tcp, ports: 22, action: accept}
    - {from: office, to: 192.168.10.7, action: drop}
    - {from: 192.168.10.5, to: lab, action: drop}
    - {from: uplink, to: 192.168.20.0/24, action: accept}
`,
    lines: [
      'forwarding.rules[0].to: from (192.168.10.0/24) and to (office) are both in office; traffic inside one VLAN does not pass the router, so the rule never matches (line 6)',
      'forwarding.rules[1].to: from (192.168.10.5) and to (192.168.10.128/25) are both in office; traffic inside one VLAN does not pass the router, so the rule never matches (line 7)',
      'forwarding.rules[2].to: from (office) and to (192.168.10.7) are both in office; traffic inside one VLAN does not pass the router, so the rule never matches (line 8)',
    ],
  },
  ...[-1, 3600001, 2147483648].map((value): Row => ({
    // setTimeout takes at most 2^31-1 ms and fires at once beyond it; an hour is already far longer than useful.
    title: `reconcile.minIntervalMs: ${value}`,
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
reconcile: {minIntervalMs: ${value}}
`,
    lines: ['reconcile.minIntervalMs: must be a number of milliseconds from 0 to 3600000 (one hour) (line 3)'],
  })),
  ...[0, 3600000].map((value): Row => ({
    title: `reconcile.minIntervalMs: ${value} is fine`,
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
reconcile: {minIntervalMs: ${value}}
`,
    lines: [],
  })),
  {
    title: 'an empty rules.dir gets one plain sentence',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
rules: {dir: ""}
`,
    lines: ['rules.dir: must be a path, not an empty string (line 3)'],
  },
  {
    // Linux refuses ':' and '/' in a name (dev_valid_name); "eth0:1" is an address label, not an interface.
    title: 'interface names with ":" or "/"',
    yaml: `uplink: {interface: "eth0:1"}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, interface: "eth1/0"}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1, interface: "vlan:20"}
  - {name: iot, id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.1, interface: "eth1.30@eth1"}
`,
    lines: [
      'uplink.interface: is written as an address label (NIC:label, the alias form of ifconfig), not an interface: the kernel refuses ":" in a name; the label\'s NIC is eth0 (line 1)',
      'vlans[0].interface: is not an interface name: it holds "/", which the kernel refuses in one (line 3)',
      'vlans[1].interface: is written as an address label (NIC:label, the alias form of ifconfig), not an interface: the kernel refuses ":" in a name; the label\'s NIC is vlan (line 4)',
      // Copied from `ip address` (eth1.30@eth1, eth1@if5): the name is before the "@", which no NIC carries.
      'vlans[2].interface: is how `ip` shows a NIC with its peer or parent after the "@"; the NIC is named eth1.30 (line 5)',
    ],
  },
  {
    // The kernel's rules (dev_valid_name: not "." or "..", at most 15 bytes, no "/", ":" or whitespace) and this
    // product's (no "@", "+" or other characters, no leading "-" or "."): each name is told the rule it breaks, and
    // a name before an "@" or ":" is not offered as the NIC when no VLAN can be on it.
    title: 'interface names: the rule each one breaks',
    yaml: `uplink: {interface: "lo@x"}
vlans:
  - {name: v1, id: 1, subnet: 10.0.1.0/24, gateway: 10.0.1.1, interface: "all@eth0"}
  - {name: v2, id: 2, subnet: 10.0.2.0/24, gateway: 10.0.2.1, interface: "lo:1"}
  - {name: v3, id: 3, subnet: 10.0.3.0/24, gateway: 10.0.3.1, interface: "."}
  - {name: v4, id: 4, subnet: 10.0.4.0/24, gateway: 10.0.4.1, interface: ".."}
  - {name: v5, id: 5, subnet: 10.0.5.0/24, gateway: 10.0.5.1, interface: "enp0s31f6abcdefg"}
  - {name: v6, id: 6, subnet: 10.0.6.0/24, gateway: 10.0.6.1, interface: "eth+"}
  - {name: v7, id: 7, subnet: 10.0.7.0/24, gateway: 10.0.7.1, interface: "eth#1"}
  - {name: v8, id: 8, subnet: 10.0.8.0/24, gateway: 10.0.8.1, interface: "ethé"}
  - {name: v9, id: 9, subnet: 10.0.9.0/24, gateway: 10.0.9.1, interface: ".eth1"}
  - {name: v10, id: 10, subnet: 10.0.10.0/24, gateway: 10.0.10.1, interface: ""}
  - {name: v11, id: 11, subnet: 10.0.11.0/24, gateway: 10.0.11.1, interface: "@eth1"}
  - {name: v12, id: 12, subnet: 10.0.12.0/24, gateway: 10.0.12.1, interface: "eth1@"}
`,
    lines: [
      'uplink.interface: is not an interface name: it holds "@" (`ip` shows a NIC with its peer or parent after one), and lo before it is the loopback interface: it reaches no other host, so it cannot carry a VLAN or the uplink; name a NIC like eth1, or leave interface out (line 1)',
      'vlans[0].interface: is not an interface name: it holds "@" (`ip` shows a NIC with its peer or parent after one), and all before it is not a NIC: the kernel keeps "all" for the settings of every interface (/proc/sys/net/ipv4/conf/all), and names no NIC so (line 3)',
      'vlans[1].interface: is written as an address label (NIC:label, the alias form of ifconfig), not an interface: the kernel refuses ":" in a name, and lo before it is the loopback interface: it reaches no other host, so it cannot carry a VLAN or the uplink; name a NIC like eth1, or leave interface out (line 4)',
      'vlans[2].interface: is not an interface name: the kernel refuses "." and ".." as names (line 5)',
      'vlans[3].interface: is not an interface name: the kernel refuses "." and ".." as names (line 6)',
      'vlans[4].interface: is not an interface name: it is 16 characters long, and the kernel allows 15 at most in a NIC\'s name (a longer altname cannot pin a NIC here: use its name or MAC) (line 7)',
      'vlans[5].interface: is not an interface name: it holds "+", which iptables reads as a wildcard at the end of a name; a name here holds only ASCII letters, digits, "_", ".", "-" (line 8)',
      'vlans[6].interface: is not an interface name: it holds "#"; a name here holds only ASCII letters, digits, "_", ".", "-" (line 9)',
      'vlans[7].interface: is not an interface name: it holds "é"; a name here holds only ASCII letters, digits, "_", ".", "-" (line 10)',
      'vlans[8].interface: is not an interface name: it starts with "."; a name here starts with a letter, a digit or "_" (line 11)',
      'vlans[9].interface: is empty: name a NIC like eth1, or leave interface out (line 12)',
      'vlans[10].interface: is not an interface name: it holds "@"; a name here holds only ASCII letters, digits, "_", ".", "-" (line 13)',
      'vlans[11].interface: is how `ip` shows a NIC with its peer or parent after the "@"; the NIC is named eth1 (line 14)',
    ],
  },
  {
    title: 'two YAML documents in one file',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
---
vlans: []
`,
    lines: ['(top level): the file holds 2 YAML documents (separated by "---"); a config is one document'],
  },
  {
    title: 'a tag the config has no use for, with its line',
    yaml: `vlans:
  - {name: office, id: !!binary AAo=, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
`,
    lines: ['line 2, column 24: unknown scalar tag !<tag:yaml.org,2002:binary>'],
  },
  {
    // YAML 1.2's core schema: yes/no/on/off and 0b… are strings (YAML 1.1 made them booleans and numbers), 0x… is a
    // number; an empty value is null, reported on the key's own line.
    title: 'YAML 1.2 scalars, and an empty value on its key\'s line',
    yaml: `vlans:
  - name: office
    id: 0xA
    subnet: 192.168.10.0/24
    gateway: 192.168.10.1
    masquerade: yes
  - name: lab
    id: 0b10100
    subnet: 192.168.20.0/24
    gateway:
`,
    lines: [
      'vlans[0].masquerade: must be a boolean, not a string (line 6)',
      'vlans[1].id: must be a number, not a string (line 8)',
      'vlans[1].gateway: must be a string, not null (an empty value) (line 10)',
    ],
  },
  {
    // Each alias is the anchored value again: a problem in it is placed at the alias that brought it in.
    title: 'anchors and aliases',
    yaml: `vlans:
  - &office {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - *office
`,
    lines: [
      'vlans[1].name: "office" is already used by vlans[0] (line 3)',
      'vlans[1].id: 10 is already used by vlans[0] (line 3)',
      'vlans[1].subnet: 192.168.10.0/24 overlaps vlans[0] (192.168.10.0/24) (line 3)',
    ],
  },
  {
    // Refused before validation walks it.
    title: 'too many aliases',
    yaml: ALIAS_BOMB,
    lines: ['line 52, column 13: more than 100 aliases (*name) in the file; a config needs far fewer'],
  },
  {
    // js-yaml's own words for these name its option (maxDepth) and its object model ("object-based map").
    title: 'nesting deeper than the parser allows, said without naming its option (maxDepth)',
    yaml: `vlans: ${'['.repeat(150)}${']'.repeat(150)}\n`,
    lines: ['line 1, column 107: more than 100 levels of nesting (lists and mappings inside one another); a config needs a few'],
  },
  {
    title: 'a key that is a list',
    yaml: '? [a, b]\n: 1\nvlans: []\n',
    lines: ['line 1, column 1: a key that is a list or a mapping ("? [a, b]"); a config\'s keys are words'],
  },
  {
    title: 'a merge key given a value, not a mapping',
    yaml: 'x: &office {name: office}\nvlans:\n  - {<<: [*office, 5], id: 10}\n',
    lines: ['line 3, column 6: a merge key (<<) takes a mapping or a list of mappings (like <<: *defaults), nothing else'],
  },
  {
    // js-yaml makes it an own key (no prototype is set), so it is reported like any other unknown key.
    title: 'a __proto__ key is an unknown key',
    yaml: `__proto__: {polluted: 1}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
`,
    lines: ['__proto__: is not a known key (known: uplink, vlans, forwarding, portForwards, rules, reconcile, http) (line 1)'],
  },
  {
    title: 'a file saved with a byte-order mark and CRLF line ends reads the same, lines included',
    yaml: '\uFEFFvlans:\r\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\r\n  - {name: lab, id: 5000, subnet: 192.168.20.0/24, gateway: 192.168.20.1}\r\n',
    lines: ['vlans[1].id: must be a VLAN id from 1 to 4094 (line 3)'],
  },
  {
    title: 'a file saved with lone CR line ends (an old Mac editor) has its lines counted',
    yaml: 'vlans:\r  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\r  - {name: lab, id: 0, subnet: 192.168.20.0/24, gateway: 192.168.20.1}\r',
    lines: ['vlans[1].id: must be a VLAN id from 1 to 4094 (line 3)'],
  },
  {
    title: 'empty documents before the config ("---" first) do not lose the lines',
    yaml: '---\n---\nvlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.30.1}\n',
    lines: ['vlans[0].gateway: 192.168.30.1 is outside 192.168.10.0/24 (line 4)'],
  },
  {
    title: 'an enum given a number or a boolean is told its words, not zod\'s type syntax',
    yaml: `uplink: {nat: 5, snatTo: 172.31.0.3}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
forwarding:
  default: false
  rules:
    - {from: lab, to: office, proto: 6, action: true}
`,
    lines: [
      'uplink.nat: must be one of masquerade, snat, none, not a number (line 1)',
      'forwarding.default: must be one of accept, drop, not a boolean (line 6)',
      'forwarding.rules[0].proto: must be one of tcp, udp, icmp, all, not a number (line 8)',
      'forwarding.rules[0].action: must be one of accept, drop, reject, not a boolean (line 8)',
    ],
  },
  {
    title: 'a value that is not what its key takes is never echoed into a message (a newline would forge a line of its own)',
    yaml: `uplink:
  nat: snat
  snatTo: ["172.31.0.3\\n  vlans[0].gateway: looks fine"]
  interface: {mac: "02:42:ac:11:00:03\\n  vlans[1].gateway: forged"}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, interface: {mac: "02:42:ac:11:00:03\\n  vlans[1].gateway: forged"}}
`,
    lines: [
      'uplink.snatTo: must be a string, not an array (line 3)',
      'uplink.interface.mac: is not a MAC address like 02:42:c0:a8:0a:02 (line 4)',
      'vlans[0].interface.mac: is not a MAC address like 02:42:c0:a8:0a:02 (line 6)',
    ],
  },
  {
    title: 'an empty snatTo is missing, not "uplink.gateway"',
    yaml: `uplink: {nat: snat, snatTo: }
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
`,
    lines: ['uplink.snatTo: must be a string, not null (an empty value) (line 1)'],
  },
  {
    title: 'a forwarding rule on the router\'s own address, or a subnet\'s network or broadcast address, never matches',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
forwarding:
  rules:
    - {from: office, to: 192.168.20.1, action: drop}
    - {from: 192.168.20.255, to: office, action: drop}
    - {from: office, to: 192.168.20.0, action: drop}
    - {from: office, to: 192.168.20.2, action: drop}
    - {from: 192.168.0.0/16, to: uplink, action: drop}
`,
    lines: [
      'forwarding.rules[0].to: 192.168.20.1 is the gateway\'s own address on lab; traffic to or from the router itself does not pass between VLANs, so the rule never matches (line 6)',
      'forwarding.rules[1].from: 192.168.20.255 is the broadcast address of 192.168.20.0/24; the router does not forward broadcasts, so the rule never matches (line 7)',
      'forwarding.rules[2].to: 192.168.20.0 is the network address of 192.168.20.0/24, not a host\'s, so the rule never matches (line 8)',
      'forwarding.rules[4].from: 192.168.0.0/16 is wider than vlans[0] (office, 192.168.10.0/24) and vlans[1] (lab, 192.168.20.0/24); a rule names one VLAN, or an address or prefix inside one (line 10)',
    ],
  },
  {
    // The same addresses as /32 prefixes were accepted, and made rules that never match.
    title: 'a forwarding rule on the router\'s own address, or a network or broadcast address, written as a /32 never matches either',
    yaml: `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
forwarding:
  rules:
    - {from: office, to: 192.168.20.1/32, action: drop}
    - {from: 192.168.20.255/32, to: office, action: drop}
    - {from: office, to: 192.168.20.0/32, action: drop}
    - {from: office, to: 192.168.20.2/32, action: drop}
`,
    lines: [
      'forwarding.rules[0].to: 192.168.20.1/32 is the gateway\'s own address on lab; traffic to or from the router itself does not pass between VLANs, so the rule never matches (line 6)',
      'forwarding.rules[1].from: 192.168.20.255/32 is the broadcast address of 192.168.20.0/24; the router does not forward broadcasts, so the rule never matches (line 7)',
      'forwarding.rules[2].to: 192.168.20.0/32 is the network address of 192.168.20.0/24, not a host\'s, so the rule never matches (line 8)',
    ],
  },
  // Both said "vlans: is required", as of a file that forgot its VLANs: the file is empty, and that is what is said.
  {
    title: 'an empty file',
    yaml: '',
    lines: ['x.yaml is empty: a config needs at least vlans'],
  },
  {
    title: 'a file of blank lines',
    yaml: '\n  \n\t\n',
    lines: ['x.yaml is empty: a config needs at least vlans'],
  },
  {
    title: 'a file with only comments',
    yaml: '# nothing here yet\n',
    lines: ['x.yaml is empty (only comments): a config needs at least vlans'],
  },
  {
    title: 'a file with every line commented out, and a document marker',
    yaml: '---\n# vlans:\n#   - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\n',
    lines: ['x.yaml is empty (only comments or document markers): a config needs at least vlans'],
  },
  {
    title: 'a file holding a bare null',
    yaml: '~\n',
    lines: ['x.yaml is empty (no settings): a config needs at least vlans'],
  },
  {
    title: 'all problems reported at once',
    yaml: `uplink:
  nat: snat
vlans:
  - name: office
    id: 10
    subnet: 192.168.10.0/24
    gateway: 192.168.30.1
  - name: office
    id: 5000
    subnet: 192.168.10.128/25
    gateway: 192.168.10.129
  - name: "bad name"
    id: 30
    subnet: 192.168.30.0/24
    gateway: 192.168.30.1
forwarding:
  rules:
    - {from: office, to: iot, proto: tcp, ports: "90-80", action: accept}
portForwards:
  - {port: 22, to: 10.0.0.1}
  - {port: 22, to: 192.168.30.9}
`,
    lines: [
      'uplink.snatTo: is required with nat: snat (line 2)',
      'vlans[0].gateway: 192.168.30.1 is outside 192.168.10.0/24 (line 7)',
      'vlans[1].name: "office" is already used by vlans[0] (line 8)',
      'vlans[1].id: must be a VLAN id from 1 to 4094 (line 9)',
      'vlans[1].subnet: 192.168.10.128/25 overlaps vlans[0] (192.168.10.0/24) (line 10)',
      `vlans[2].name: ${NAME_MESSAGE} (line 12)`,
      'forwarding.rules[0].to: names no VLAN ("iot"); known: office, uplink (line 18)',
      'forwarding.rules[0].ports: 90-80 is a range whose start is above its end (line 18)',
      'portForwards[0].to: 10.0.0.1 is outside every VLAN (line 20)',
      'portForwards[1].port: tcp/22 is already forwarded by portForwards[0] (line 21)',
    ],
  },
  {
    // 4,094 VLANs (every id) ran out of memory in `validate` after 5 minutes: the rules and counters per VLAN pair.
    title: 'more VLANs than one gateway routes, said at once, with the other problems',
    yaml: `vlans:\n${Array.from({ length: 513 }, (_, i) => `  - {name: v${i + 1}, id: ${i + 1}, subnet: 10.${i >> 8}.${i & 255}.0/24, gateway: 10.${i >> 8}.${i & 255}.1}`).join('\n')}
  - {name: v1, id: 600, subnet: 10.9.0.0/24, gateway: 10.9.0.1}
`,
    lines: [
      'vlans: lists more than 512 VLANs, the most one gateway routes: every pair of VLANs has its own counters (and, under '
        + 'default: drop or without ipset, its own rule), so they grow with the square of the VLAN count (512 VLANs are 261,632 pairs) (line 2)',
      'vlans[513].name: "v1" is already used by vlans[0] (line 515)',
    ],
  },
];

for (const row of rows) {
  const register = row.bug ? test.failing : test;
  register(`bad config: ${row.title}`, (t) => {
    if (row.bug) t.log(`known bug: ${row.bug}`);
    t.deepEqual(problemsOf(row.yaml, { listen: row.listen }), row.lines);
  });
}

// `0:9100` was refused ("0 is not an IPv4 address") though `run --listen 0:9100` served on 0.0.0.0, as the resolver
// reads 0, and a port alone was refused as text ("not HOST:PORT") and as `listen: 9100`, which YAML reads as a number
// ("must be a string, not a number"). Each form below has one meaning, taken as that address.
test('http.listen takes the forms a Docker or Prometheus user types, each as the one address it means', (t) => {
  const forms: Array<[string, { host: string; port: number }]> = [
    ['9100', { host: '0.0.0.0', port: 9100 }],
    ['"9100"', { host: '0.0.0.0', port: 9100 }],
    [':9100', { host: '0.0.0.0', port: 9100 }],
    ['0:9100', { host: '0.0.0.0', port: 9100 }],
    ['0.0.0.0:9100', { host: '0.0.0.0', port: 9100 }],
    ['"[::]:9100"', { host: '::', port: 9100 }],
    ['"[::1]:9100"', { host: '::1', port: 9100 }],
    ['"[fe80::1%eth0]:9100"', { host: 'fe80::1%eth0', port: 9100 }],
    ['"[::ffff:192.0.2.1]:9100"', { host: '::ffff:192.0.2.1', port: 9100 }],
    ['127.0.0.1:9100', { host: '127.0.0.1', port: 9100 }],
    ['localhost:9100', { host: 'localhost', port: 9100 }],
  ];
  for (const [yaml, address] of forms) {
    const config = parseConfigText(`vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\nhttp: {listen: ${yaml}}\n`, 'x.yaml');
    t.deepEqual(parseListenAddress(config.http.listen!), address, yaml);
  }
  // A port forward on a port alone's port takes it from the endpoints, as on any other form of every address.
  t.deepEqual(problemsOf('vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\nportForwards:\n  - {port: 9100, to: 192.168.10.5}\nhttp: {listen: 9100}\n'), [
    'portForwards[0].port: tcp/9100 is the gateway\'s own HTTP port (http.listen 9100): Prometheus and health checks from the uplink side would reach the VLAN host instead; forward another port, or move http.listen (line 4)',
  ]);
});

test('512 copies of one VLAN: each VLAN says the first three it overlaps and counts the rest, not a "Maximum call stack size exceeded"', (t) => {
  // Every pair was said, 130,816 lines here; the problems had been pushed as spread arguments, and one call takes fewer than that many.
  const yaml = `vlans:\n${Array.from({ length: 512 }, (_, i) => `  - {name: v${i}, id: ${i + 1}, subnet: 10.0.0.0/8, gateway: 10.0.0.1}`).join('\n')}\n`;
  const lines = problemsOf(yaml);
  t.is(lines.length, 1 + 2 + 3 + 508 * 4);
  t.is(lines[0], 'vlans[1].subnet: 10.0.0.0/8 overlaps vlans[0] (10.0.0.0/8) (line 3)');
  t.deepEqual(lines.slice(-4), [
    'vlans[511].subnet: 10.0.0.0/8 overlaps vlans[0] (10.0.0.0/8) (line 513)',
    'vlans[511].subnet: 10.0.0.0/8 overlaps vlans[1] (10.0.0.0/8) (line 513)',
    'vlans[511].subnet: 10.0.0.0/8 overlaps vlans[2] (10.0.0.0/8) (line 513)',
    'vlans[511].subnet: 10.0.0.0/8 overlaps 508 more of the VLANs listed before it (line 513)',
  ]);
});

test('5,000 copies of one VLAN (375 KB) are refused in a few lines each, in seconds: not 12.5 million problems and the process out of memory', (t) => {
  // Every overlapping pair was said: 12,497,500 problems, and `validate` ended after 2.5 minutes and 4.4 GB, out of memory.
  const vlan = '  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}';
  const started = performance.now();
  const lines = problemsOf(`vlans:\n${Array.from({ length: 5000 }, () => vlan).join('\n')}\n`);
  t.true(performance.now() - started < 10_000, `${Math.round(performance.now() - started)} ms`);
  t.is(lines.length, 1 + 4999 * 2 + 1 + 2 + 3 + 4996 * 4); // "lists more than 512", each copy's name and id, its overlaps
  t.deepEqual(lines.filter((l) => l.startsWith('vlans[4999].subnet')), [
    'vlans[4999].subnet: 192.168.10.0/24 overlaps vlans[0] (192.168.10.0/24) (line 5001)',
    'vlans[4999].subnet: 192.168.10.0/24 overlaps vlans[1] (192.168.10.0/24) (line 5001)',
    'vlans[4999].subnet: 192.168.10.0/24 overlaps vlans[2] (192.168.10.0/24) (line 5001)',
    'vlans[4999].subnet: 192.168.10.0/24 overlaps 4,996 more of the VLANs listed before it (line 5001)',
  ]);
});

test('overlaps are found between nested subnets of every size, each said on the later VLAN, in the order the VLANs come', (t) => {
  const vlans = [
    ['a', '10.1.2.0/24'], ['b', '10.0.0.0/8'], ['c', '10.1.0.0/16'], ['d', '10.1.2.0/24'], ['e', '10.1.2.128/25'], ['f', '10.2.0.0/16'], ['g', '10.1.2.128/26'],
  ];
  const yaml = `vlans:\n${vlans.map(([name, subnet], i) => `  - {name: ${name}, id: ${i + 1}, subnet: ${subnet}, gateway: ${subnet!.replace(/\.\d+\/.*/, '.')}${subnet!.includes('.128/') ? 129 : 1}}`).join('\n')}\n`;
  t.deepEqual(problemsOf(yaml), [
    'vlans[1].subnet: 10.0.0.0/8 overlaps vlans[0] (10.1.2.0/24) (line 3)',
    'vlans[2].subnet: 10.1.0.0/16 overlaps vlans[0] (10.1.2.0/24) (line 4)',
    'vlans[2].subnet: 10.1.0.0/16 overlaps vlans[1] (10.0.0.0/8) (line 4)',
    'vlans[3].subnet: 10.1.2.0/24 overlaps vlans[0] (10.1.2.0/24) (line 5)',
    'vlans[3].subnet: 10.1.2.0/24 overlaps vlans[1] (10.0.0.0/8) (line 5)',
    'vlans[3].subnet: 10.1.2.0/24 overlaps vlans[2] (10.1.0.0/16) (line 5)',
    'vlans[4].subnet: 10.1.2.128/25 overlaps vlans[0] (10.1.2.0/24) (line 6)',
    'vlans[4].subnet: 10.1.2.128/25 overlaps vlans[1] (10.0.0.0/8) (line 6)',
    'vlans[4].subnet: 10.1.2.128/25 overlaps vlans[2] (10.1.0.0/16) (line 6)',
    'vlans[4].subnet: 10.1.2.128/25 overlaps 1 more of the VLANs listed before it (line 6)',
    'vlans[5].subnet: 10.2.0.0/16 overlaps vlans[1] (10.0.0.0/8) (line 7)',
    'vlans[6].subnet: 10.1.2.128/26 overlaps vlans[0] (10.1.2.0/24) (line 8)',
    'vlans[6].subnet: 10.1.2.128/26 overlaps vlans[1] (10.0.0.0/8) (line 8)',
    'vlans[6].subnet: 10.1.2.128/26 overlaps vlans[2] (10.1.0.0/16) (line 8)',
    'vlans[6].subnet: 10.1.2.128/26 overlaps 2 more of the VLANs listed before it (line 8)',
  ]);
});

test('20,000 VLANs without an overlap (1.5 MB) are validated in seconds: no pair of VLANs is compared', (t) => {
  // Every pair was compared: 43 s here, for a file refused anyway (more than 512 VLANs). About 1.2 s now; the bound
  // is loose because a loaded machine (other test files on both cores) once took 11 s.
  const vlans = Array.from({ length: 20_000 }, (_, i) => `  - {name: v${i}, id: ${1 + (i % 4094)}, subnet: ${10 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}.0/24, gateway: ${10 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}.1}`);
  const started = performance.now();
  const lines = problemsOf(`vlans:\n${vlans.join('\n')}\n`);
  t.true(performance.now() - started < 25_000, `${Math.round(performance.now() - started)} ms`);
  t.false(lines.some((l) => l.includes('overlaps')));
});

test('60,000 port forwards of two ports each (every port of tcp and udp) are validated in time linear in their number, each compared with the ports taken so far', (t) => {
  // Each range was compared with every range before it: 20 to 45 s here, for a 3 MB file. Timed against a tenth of
  // the forwards in the same run, the best of three each, so a loaded machine does not decide it: linear is about 10×
  // (23× once in the whole suite, when the large size was timed once; over 25× once at a load average of 10, when the
  // best of two), the old way 38–100×.
  const forwards = (n: number) => Array.from({ length: n }, (_, i) => ({ proto: i % 2 ? 'udp' : 'tcp', port: `${1 + (i >> 1) * 2}-${2 + (i >> 1) * 2}`, to: `192.168.10.${10 + (i % 200)}` }));
  const input = (portForwards: unknown[]) => ({ vlans: [{ name: 'office', id: 10, subnet: '192.168.10.0/24', gateway: '192.168.10.1' }], http: { listen: '127.0.0.1:10123' }, portForwards });
  const timed = (value: unknown) => {
    const started = performance.now();
    const result = validateConfig(value);
    return { result, ms: performance.now() - started };
  };
  const tenth = Math.min(...[0, 1, 2].map(() => timed(input(forwards(6_000))).ms));
  const portForwards: unknown[] = forwards(60_000);
  portForwards.push({ proto: 'udp', port: '59990-60010', to: '192.168.10.5' }, { proto: 'tcp', port: 59999, to: '192.168.10.5' },
    { proto: 'tcp', port: 59999, to: '192.168.10.6' });
  const runs = [0, 1, 2].map(() => timed(input(portForwards)));
  const { result } = runs[0]!;
  const ms = Math.min(...runs.map((r) => r.ms));
  t.true(ms < 30 * tenth, `60,000 forwards: ${Math.round(ms)} ms, 6,000: ${Math.round(tenth)} ms`);
  t.deepEqual(result.ok ? [] : result.problems.map((p) => `${formatPath(p.path)}: ${p.message}`), [
    'portForwards[60000].port: udp/59990-60010 overlaps portForwards[59989] (udp/59989-59990): port 59990 is forwarded there already',
    'portForwards[60001].port: tcp/59999 is already forwarded by portForwards[59998] (tcp/59999-60000)',
    'portForwards[60002].port: tcp/59999 is already forwarded by portForwards[59998] (tcp/59999-60000)',
  ]);
});

test('512 VLANs and 10,000 rules by address (0.6 MB) validate', (t) => {
  // Its time is a benchmark's (`npm run bench:scale` prints it): each rule's from and to were once matched against
  // every VLAN several times over, 2.1 s here; under 0.5 s on a quiet machine since.
  const vlans = Array.from({ length: 512 }, (_, i) => `  - {name: v${i}, id: ${i + 1}, subnet: 10.${i >> 8}.${i % 256}.0/24, gateway: 10.${i >> 8}.${i % 256}.1}`);
  const rules = Array.from({ length: 10_000 }, (_, i) => `    - {from: 10.1.${i % 256}.5, to: 10.0.${i % 256}.0/25, action: drop}`);
  const yaml = `vlans:\n${vlans.join('\n')}\nforwarding:\n  rules:\n${rules.join('\n')}\n`;
  const config = parseConfigText(yaml, 'x.yaml');
  t.is(config.forwarding.rules.length, 10_000);
  t.is(config.vlans.length, 512);
});

test('the error names the file and counts the problems, one indented line each', (t) => {
  const error = t.throws(() => parseConfigText('uplink:\n  nat: snat\nvlans: []\n', 'gateway.yaml'), { instanceOf: ConfigError });
  t.is(error?.message, [
    'gateway.yaml: 2 problems:',
    '  uplink.snatTo: is required with nat: snat (line 2)',
    '  vlans: must list at least one VLAN (line 3)',
  ].join('\n'));
  t.is(error?.source, 'gateway.yaml');
  t.deepEqual(error?.problems.map((p) => p.path), [['uplink', 'snatTo'], ['vlans']]);
});

test('a port list given as a YAML list gets a sentence, not "Invalid input"', (t) => {
  // What matters is that the message says what a ports value may be, not zod's bare "Invalid input" for a union.
  const lines = problemsOf(`vlans:
  - {name: a, id: 1, subnet: 10.0.0.0/24, gateway: 10.0.0.1}
  - {name: b, id: 2, subnet: 10.0.1.0/24, gateway: 10.0.1.1}
forwarding:
  rules:
    - {from: a, to: b, proto: tcp, ports: [22, 80], action: accept}
`);
  t.is(lines.length, 1);
  t.regex(lines[0] ?? '', /^forwarding\.rules\[0\]\.ports: /);
  t.notRegex(lines[0] ?? '', /Invalid input/);
  t.deepEqual(lines, ['forwarding.rules[0].ports: must be a port or a list like "22,8000-8100", not an array (line 6)']);
});

test('two VLANs naming the same interface, or a VLAN naming the uplink\'s, are config errors', (t) => {
  // Without this check two VLANs on eth1 would both want a gateway address there, and a VLAN on the uplink's
  // interface would wait forever (matchVlans never gives a VLAN the uplink NIC).
  const lines = problemsOf(`uplink: {interface: eth0}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, interface: eth1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1, interface: eth1}
  - {name: iot, id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.1, interface: eth0}
`);
  t.true(lines.some((l) => l.startsWith('vlans[1].interface: ')), lines.join('\n'));
  t.true(lines.some((l) => l.startsWith('vlans[2].interface: ')), lines.join('\n'));
  t.deepEqual(lines, [
    'vlans[1].interface: eth1 is already the interface of vlans[0] (line 4)',
    'vlans[2].interface: eth0 is the uplink\'s interface (line 5)',
  ]);
});

test('the same interface by MAC (in any case) is the same interface, for the uplink and for VLANs', (t) => {
  const lines = problemsOf(`uplink: {interface: {mac: "02:42:AC:11:00:03"}}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, interface: {mac: "02:42:ac:11:00:03"}}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1, interface: {mac: "02:42:c0:a8:14:02"}}
  - {name: iot, id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.1, interface: {mac: "02:42:C0:A8:14:02"}}
  - {name: dmz, id: 40, subnet: 192.168.40.0/24, gateway: 192.168.40.1, interface: eth4}
`);
  t.deepEqual(lines, [
    'vlans[0].interface: 02:42:ac:11:00:03 is the uplink\'s interface (line 3)',
    'vlans[2].interface: 02:42:c0:a8:14:02 is already the interface of vlans[1] (line 5)',
  ]);
});

test('a config kept valid by its text (the plan cache) is checked again against the run\'s --listen', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-config-'));
  try {
    const path = join(dir, 'gateway.yaml');
    await writeFile(path, 'vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\nportForwards:\n  - {port: 9100, to: 192.168.10.5}\n');
    const kept = new Map<string, Config>();
    let hits = 0;
    const cache = { load: (key: string) => { const c = kept.get(key); if (c) hits++; return c; }, remember: (key: string, c: Config) => void kept.set(key, c) };
    await loadConfig(path, cache); // valid with the default port, and kept
    await loadConfig(path, cache, { listen: '0.0.0.0:9200' });
    t.is(hits, 1, 'another --listen finds the same config kept');
    const error = await t.throwsAsync(loadConfig(path, cache, { listen: '0.0.0.0:9100' }), { instanceOf: ConfigError });
    t.is(hits, 2);
    t.deepEqual(error?.lines, ['portForwards[0].port: tcp/9100 is the gateway\'s own HTTP port (--listen 0.0.0.0:9100): Prometheus and '
      + 'health checks from the uplink side would reach the VLAN host instead; forward another port, or move --listen (line 4)']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a missing config file is an error that names the path', async (t) => {
  const error = await t.throwsAsync(loadConfig('/nonexistent/vlan-gateway/gateway.yaml'), { instanceOf: ConfigError });
  t.deepEqual(error?.lines, ['cannot read /nonexistent/vlan-gateway/gateway.yaml: no such file']);
});

// The unreadable config a container meets: `-v ./gateway.yaml:/etc/vlan-gateway/gateway.yaml` with no such file on
// the host, where Docker makes a directory in its place.
test('a config path that is a directory is an error that names the path', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-config-'));
  try {
    const error = await t.throwsAsync(loadConfig(dir), { instanceOf: ConfigError });
    t.deepEqual(error?.lines, [`cannot read ${dir}: is a directory`]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a file saved as UTF-16 (a Windows editor\'s "Unicode") is named as such, not as a null byte in the YAML', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-config-'));
  try {
    const path = join(dir, 'gateway.yaml');
    await writeFile(path, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('vlans: []\n', 'utf16le')]));
    const error = await t.throwsAsync(loadConfig(path), { instanceOf: ConfigError });
    t.deepEqual(error?.lines, [`cannot read ${path}: the file is UTF-16 (its byte-order mark says so); save it as UTF-8`]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a device given as the config is refused at once, not read for ever (/dev/zero hung, then ran out of memory)', async (t) => {
  const error = await t.throwsAsync(loadConfig('/dev/zero'), { instanceOf: ConfigError });
  t.deepEqual(error?.lines, ['cannot read /dev/zero: it is a device, not a file']);
});

test('a config over 16 MiB is refused unread, and so is a pipe that brings more (--config <(yes)) instead of being read until memory runs out', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-config-'));
  try {
    // 64 MiB were allowed: a config of that size took 60 s and 2.3 GB to validate.
    const path = join(dir, 'gateway.yaml');
    await writeFile(path, `vlans: []\n${'#'.repeat(100)}\n`.repeat(170_000)); // 18 MiB
    const big = await t.throwsAsync(loadConfig(path), { instanceOf: ConfigError });
    t.deepEqual(big?.lines, [`cannot read ${path}: 18 MiB; a config is far smaller (at most 16 MiB)`]);
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const writer = spawn('sh', ['-c', `yes '# a comment, for ever' > ${fifo}`], { stdio: 'ignore' });
    t.teardown(() => void writer.kill());
    const endless = await t.throwsAsync(loadConfig(fifo), { instanceOf: ConfigError });
    t.deepEqual(endless?.lines, [`cannot read ${fifo}: more than 16 MiB; a config is far smaller (at most 16 MiB)`]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a relative rules.dir is relative to the config file, not to the working directory; an absolute one is kept', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-config-'));
  try {
    const vlan = 'vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\n';
    const write = async (name: string, rulesDir: string) => {
      await writeFile(join(dir, name), `${vlan}rules: {dir: ${JSON.stringify(rulesDir)}}\n`);
      return (await loadConfig(join(dir, name))).config.rules.dir;
    };
    t.is(await write('a.yaml', 'rules.d'), join(dir, 'rules.d'));
    t.is(await write('b.yaml', '../shared/rules.d'), join(dir, '..', 'shared', 'rules.d'));
    t.is(await write('c.yaml', '/etc/vlan-gateway/rules.d'), '/etc/vlan-gateway/rules.d');
    await writeFile(join(dir, 'd.yaml'), vlan);
    t.is((await loadConfig(join(dir, 'd.yaml'))).config.rules.dir, undefined, 'no rules.dir: the built-in templates only');
    // parseConfigText has no file to be relative to: it leaves the path as written.
    t.is(parseConfigText(`${vlan}rules: {dir: rules.d}\n`, 'x.yaml').rules.dir, 'rules.d');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a file that ends in "---" (an empty document after the config) is one config', (t) => {
  const vlan = 'vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\n';
  t.deepEqual(parseConfigText(`${vlan}---\n`, 'x.yaml'), parseConfigText(vlan, 'x.yaml'));
  t.deepEqual(parseConfigText(`---\n${vlan}---\n`, 'x.yaml'), parseConfigText(vlan, 'x.yaml'));
  t.deepEqual(parseConfigText(`---\n---\n${vlan}`, 'x.yaml'), parseConfigText(vlan, 'x.yaml'));
});

test('the shipped example parses, with every default applied', async (t) => {
  const text = await readFile(new URL('../../examples/lab.yaml', import.meta.url), 'utf8');
  t.deepEqual(parseConfigText(text, 'examples/lab.yaml'), {
    uplink: { interface: 'eth0', gateway: '203.0.113.1', nat: 'masquerade' },
    vlans: [
      { name: 'office', id: 10, subnet: '192.168.10.0/24', gateway: '192.168.10.1', masquerade: true },
      { name: 'lab', id: 20, subnet: '192.168.20.0/24', gateway: '192.168.20.1', masquerade: true },
    ],
    forwarding: { default: 'accept', rules: [] },
    portForwards: [{ proto: 'tcp', port: 2222, to: '192.168.10.100', toPort: 22 }],
    rules: {},
    reconcile: {},
    http: { allowFrom: [] },
  });
});

test('the smallest config: one VLAN, everything else defaulted', (t) => {
  t.deepEqual(parseConfigText('vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\n', 'x.yaml'), {
    uplink: { nat: 'masquerade' },
    vlans: [{ name: 'office', id: 10, subnet: '192.168.10.0/24', gateway: '192.168.10.1', masquerade: true }],
    forwarding: { default: 'accept', rules: [] },
    portForwards: [],
    rules: {},
    reconcile: {},
    http: { allowFrom: [] },
  });
});

test('the keys of the issue, all at once, are accepted', (t) => {
  const config = parseConfigText(`uplink:
  interface: {mac: "02:42:AC:11:00:03"}
  gateway: 172.17.0.1
  nat: snat
  snatTo: 172.17.0.3
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, interface: eth1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1, interface: {mac: "02:42:c0:a8:14:02"}}
  - {name: iot, id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.254, masquerade: false}
forwarding:
  default: drop
  rules:
    - {from: lab, to: office, proto: tcp, ports: "22,8000-8100", action: accept}
    - {from: lab, to: office, action: drop}
    - {from: iot, to: uplink, action: drop}
    - {from: 192.168.30.0/25, to: 192.168.10.5, proto: udp, ports: 53, action: accept}
portForwards:
  - {proto: tcp, port: 2222, to: 192.168.10.100, toPort: 22}
  - {proto: udp, port: 2222, to: 192.168.10.100}
rules:
  dir: /etc/vlan-gateway/rules.d
`, 'x.yaml');
  t.is(config.vlans.length, 3);
  t.is(config.forwarding.rules.length, 4);
  t.deepEqual(config.portForwards[1], { proto: 'udp', port: 2222, to: '192.168.10.100' });
});

test('counts in messages are grouped as en-US writes them, without ICU (groupDigits)', (t) => {
  for (const n of [0, 7, 999, 1000, 9999, 10_000, 65_536, 261_632, 1_048_576, 123_456_789, 2 ** 53 - 1, -1234, 1234.5]) {
    t.is(groupDigits(n), n.toLocaleString('en-US', { maximumFractionDigits: 20 }), String(n));
  }
});
