/**
 * The configuration's shape. Every value that can reach an iptables rule line is constrained here so that it
 * cannot carry a newline, a quote, a space or a leading dash (an option). Cross-field rules (overlaps, gateways
 * inside subnets, references between sections) live in validate.ts. Pure.
 */
import * as z from 'zod/mini';
import { parseAddress, parseCidr } from '../net/ipv4.js';
import { listenText } from './listen.js';
import { article, groupDigits, quoted, typeName } from './problems.js';

/** 192.168.010.1: inet_aton (ping, and iptables in places) reads 010 as octal 8, so it is refused, saying why. */
const leadingZero = (s: string) => (/(^|\.)0\d/.test(s.split('/')[0] ?? '') ? ' (a number with a leading zero is octal to some tools; write it without the zero)' : '');

const ipv4 = z.string().check(z.refine((s) => parseAddress(s) !== undefined, {
  error: (issue) => `${quoted(issue.input as string)} is not an IPv4 address${leadingZero(issue.input as string)}`,
}));

const cidr = z.string().check(z.refine((s) => parseCidr(s) !== undefined, {
  error: (issue) => `${quoted(issue.input as string)} is not an IPv4 prefix like 192.168.10.0/24${leadingZero(issue.input as string)}`,
}));

/**
 * Interface names: 1–15 characters, no '/', ':' or whitespace (the kernel's dev_valid_name), never an option-looking
 * leading dash, and no '@': the kernel would take one, but `ip` shows a NIC as `eth1@if5` (its peer or parent after
 * the '@'), so a name with one is nearly always copied from there. ifnameProblem says which rule a name breaks.
 */
export const IFNAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;
export const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

/**
 * A name `ip` shows that no VLAN or uplink can be on, and why: the loopback reaches no other host, and "all" and
 * "default" are the kernel's own names under /proc/sys/net/ipv4/conf (it refuses them as a NIC's name).
 */
export function notANic(name: string): string | undefined {
  if (name === 'lo') return 'is the loopback interface: it reaches no other host, so it cannot carry a VLAN or the uplink; name a NIC like eth1, or leave interface out';
  if (name === 'all') return 'is not a NIC: the kernel keeps "all" for the settings of every interface (/proc/sys/net/ipv4/conf/all), and names no NIC so';
  if (name === 'default') return 'is not a NIC: the kernel keeps "default" for the settings new interfaces start with (/proc/sys/net/ipv4/conf/default), and names no NIC so';
  return undefined;
}

/** A well-formed MAC address that no NIC has, and why (the kernel refuses each as a NIC's address). */
export function notANicMac(mac: string): string | undefined {
  const bytes = mac.split(':').map((b) => parseInt(b, 16));
  if (bytes.every((b) => b === 0)) return 'is the all-zero MAC address, which no Ethernet NIC has (the kernel refuses it; loopback shows it); a NIC\'s MAC is like 02:42:c0:a8:0a:02';
  if (bytes.every((b) => b === 0xff)) return 'is the broadcast MAC address (a frame to every host on the link), which no NIC has as its own; a NIC\'s MAC is unicast, like 02:42:c0:a8:0a:02';
  // The first byte's low bit marks a group address: no NIC has one (the kernel refuses it).
  if ((bytes[0]! & 1) === 1) return 'is a multicast MAC address (its first byte is odd); a NIC\'s MAC is unicast, like 02:42:c0:a8:0a:02';
  return undefined;
}

/** The characters a name here may hold, beyond the kernel's own rules (iptables and `ip` read these names). */
const IFNAME_CHARS = 'a name here holds only ASCII letters, digits, "_", ".", "-"';

/**
 * What is wrong with an interface name, in the order a user meets it: a name copied with what `ip` shows after it
 * ("eth1.30@eth1", "eth0:1"), then what the kernel refuses in any name (dev_valid_name: "/", whitespace, ":", "."
 * and "..", more than IFNAMSIZ − 1 = 15 bytes), then what this product refuses besides (a leading "-" or ".", "@",
 * "+" and other characters). Undefined when the name is well-formed.
 */
function ifnameProblem(name: string): string | undefined {
  if (IFNAME.test(name)) return undefined;
  if (name === '') return 'is empty: name a NIC like eth1, or leave interface out';
  const what = 'is not an interface name';
  // The NIC the part before an "@" or ":" names, if it is one: the likely meaning of what was copied.
  const before = /^([^@:]+)[@:]/.exec(name)?.[1];
  const nic = before !== undefined && IFNAME.test(before) ? before : undefined;
  const which = (nic: string) => {
    const why = notANic(nic);
    return why ? `, and ${nic} before it ${why}` : `; the label's NIC is ${nic}`;
  };
  if (nic !== undefined && name[nic.length] === '@' && !/\s/.test(name)) {
    const why = notANic(nic);
    return why ? `${what}: it holds "@" (\`ip\` shows a NIC with its peer or parent after one), and ${nic} before it ${why}`
      : `is how \`ip\` shows a NIC with its peer or parent after the "@"; the NIC is named ${nic}`;
  }
  if (name.includes('/')) return `${what}: it holds "/", which the kernel refuses in one`;
  if (/\s/.test(name)) return `${what}: it holds whitespace, which the kernel refuses in one`;
  if (name.includes(':')) {
    return nic !== undefined && name[nic.length] === ':'
      ? `is written as an address label (NIC:label, the alias form of ifconfig), not an interface: the kernel refuses ":" in a name${which(nic)}`
      : `${what}: it holds ":", which the kernel refuses in one`;
  }
  if (name === '.' || name === '..') return `${what}: the kernel refuses "." and ".." as names`;
  const odd = Array.from(name).find((c) => !/[A-Za-z0-9_.-]/.test(c));
  if (odd === '+') return `${what}: it holds "+", which iptables reads as a wildcard at the end of a name; ${IFNAME_CHARS}`;
  if (odd !== undefined) return `${what}: it holds ${JSON.stringify(odd)}; ${IFNAME_CHARS}`;
  if (name.startsWith('-')) return `${what}: it starts with "-", which ip and iptables would read as an option`;
  if (name.startsWith('.')) return `${what}: it starts with "."; a name here starts with a letter, a digit or "_"`;
  // An altname may be up to 127 characters, but one longer than a name can be is not taken here: name such a NIC by its
  // own name or its MAC.
  return `${what}: it is ${name.length} characters long, and the kernel allows 15 at most in a NIC's name (a longer altname cannot pin a NIC here: use its name or MAC)`;
}

const ifname = z.string().check(z.superRefine((name, ctx) => {
  const why = notANic(name) ?? ifnameProblem(name);
  if (why) ctx.addIssue({ code: 'custom', message: why });
}));

const interfaceRef = z.union([
  ifname,
  z.strictObject({
    mac: z.string().check(z.regex(MAC, { message: 'is not a MAC address like 02:42:c0:a8:0a:02' }), z.superRefine((mac, ctx) => {
      const why = MAC.test(mac) ? notANicMac(mac) : undefined;
      if (why) ctx.addIssue({ code: 'custom', message: why });
    })),
  }),
], { error: 'must be an interface name or {mac: "…"}' });

export const VLAN_NAME = /^[a-z][a-z0-9-]{0,11}$/;
const vlanName = z.string().check(z.regex(VLAN_NAME, {
  message: 'must start with a lowercase letter, then lowercase letters, digits or "-", at most 12 characters',
}));

/** What a zone reference may look like at all (validate.ts then checks that it names something). */
export const ZONE_REF = /^[a-z0-9][a-z0-9./-]*$/;
/**
 * A reference that is well-formed but for its capitals (`to: Office`), said as such: "must be a VLAN name" alone did
 * not tell a user who had written the VLAN's name what was wrong with it. Only such a one is echoed (its characters
 * are those of a reference); anything else malformed may carry a newline or an option, and is not.
 */
const refMessage = (must: string) => (issue: { input?: unknown }) => {
  const ref = issue.input;
  return typeof ref === 'string' && /[A-Z]/.test(ref) && ZONE_REF.test(ref.toLowerCase())
    ? `${quoted(ref)} has capitals: VLAN names (and "uplink") are lowercase, as in ${quoted(ref.toLowerCase())}`
    : must;
};
/** A zone reference in a forwarding rule: a VLAN name, "uplink", or an address / prefix inside a VLAN. */
const zoneRef = z.string().check(z.regex(ZONE_REF, {
  error: refMessage('must be a VLAN name, "uplink", or an address or prefix inside a VLAN'),
}));
/** A client allowed to use the HTTP endpoints: a VLAN, or an address or prefix inside one. */
const clientRef = z.string().check(z.regex(ZONE_REF, { error: refMessage('must be a VLAN name, or an address or prefix inside a VLAN') }));

/**
 * The most VLANs one gateway takes. Each ordered pair of VLANs gets its own accounting member (and, without ipset or
 * under default: drop, its own rule), so the state grows with the square of the count: a full apply of 512 VLANs (265,218 set members) took 12 s
 * here, of 600 36 s, and a `validate` of 4,094 ran out of memory after 5 minutes (BENCHMARKS.md, How many VLANs).
 */
export const MAX_VLANS = 512;

/** What a type error of a port says is accepted (validate.ts adds what was given: ", not a string"). */
const PORT_TYPE = 'must be a port, a number from 1 to 65535';

/**
 * An integer from `min` to `max`, `range` said of any other; a type error (text, 1.5, .inf) in `type`'s words, else
 * validate.ts's. zod's integers stop at 2^53 on their own: one beyond (id: 1e300) is out of the range too.
 */
const integer = (min: number, max: number, range: string, type?: string) => z.int({
  error: (issue) => (issue.code !== 'invalid_type' ? range : issue.input === undefined ? undefined : type),
}).check(z.gte(min, range), z.lte(max, range));

const port = integer(1, 65535, 'must be a port from 1 to 65535', PORT_TYPE);

const vlan = z.strictObject({
  name: vlanName,
  id: integer(1, 4094, 'must be a VLAN id from 1 to 4094'),
  subnet: cidr,
  gateway: ipv4,
  interface: z.optional(interfaceRef),
  masquerade: z._default(z.boolean(), true),
});

const forwardingRule = z.strictObject({
  from: zoneRef,
  to: zoneRef,
  proto: z.optional(z.enum(['tcp', 'udp', 'icmp', 'all'])),
  // Any number here (a float, .nan, .inf, which z.number() refuses): the cross-field check says in one sentence that
  // it is not a port.
  ports: z.optional(z.custom<string | number>((value) => typeof value === 'string' || typeof value === 'number', {
    error: (issue) => `must be a port or a list like "22,8000-8100", not ${article(typeName(issue.input))}`,
  })),
  action: z.enum(['accept', 'drop', 'reject']),
});

/** A range of ports a forward takes, "6000-6010": the low port first, both from 1 to 65535. */
const PORT_RANGE = /^(\d+)-(\d+)$/;
/** A YAML decimal numeral (js-yaml leaves one beyond a double's range as text: `port` then says so). */
const NUMERAL_TEXT = /^[-+]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][-+]?\d+)?$/;

/** Why a port range is refused (undefined: it is one). */
function portRangeProblem(text: string): string | undefined {
  const range = PORT_RANGE.exec(text);
  if (!range) {
    const colon = /^\d+:\d+$/.test(text) ? `; a range is written with "-", as in "${text.replace(':', '-')}"` : '';
    return `${quoted(text)} is not a port or a range of ports like "6000-6010"${colon}`;
  }
  const [low, high] = [Number(range[1]), Number(range[2])];
  for (const end of [low, high]) if (end < 1 || end > 65535) return `${quoted(text)}: ${end} is not a port from 1 to 65535`;
  if (low === high) return `${quoted(text)} is one port: write it as a number, port: ${low}`;
  if (low > high) return `${quoted(text)} runs backwards: write the lower port first, as in "${high}-${low}"`;
  return undefined;
}

/**
 * A port forward's `port`: one port (a number, checked as `port` is, with the same sentences) or a range of ports
 * as text, "6000-6010". Digits alone as text ("22") are one port written as text: said so. A numeral too large for
 * a number is `port`'s to report (js-yaml leaves -1e999 as text: "beyond the range of one"); any other is no port.
 */
const forwardedPort = z.custom<number | string>().check(z.superRefine((value, ctx) => {
  if (typeof value === 'string' && !NUMERAL_TEXT.test(value)) {
    const problem = portRangeProblem(value);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
    return;
  }
  // A few digits (not 3,000 of them: those are `port`'s "beyond the range of one").
  if (typeof value === 'string' && /^\d{1,5}$/.test(value)) {
    const n = Number(value);
    ctx.addIssue({ code: 'custom', message: n >= 1 && n <= 65535
      ? `${JSON.stringify(value)} is one port written as text: write it as a number, port: ${value}, or a range as "6000-6010"`
      : `${JSON.stringify(value)} is not a port from 1 to 65535` });
    return;
  }
  // Any other numeral as text that a number holds ("123456", "1e3", "-22") is text that is no port either.
  if (typeof value === 'string' && Number.isFinite(Number(value.replace(/_/g, '')))) {
    ctx.addIssue({ code: 'custom', message: /^\d+$/.test(value) ? `${quoted(value)} is not a port from 1 to 65535` : `${quoted(value)} is not a port or a range of ports like "6000-6010"` });
    return;
  }
  // Neither a number nor text (true, a list, a mapping, an empty value, .nan): both forms it may take are said.
  if (value !== undefined && typeof value !== 'string' && (typeof value !== 'number' || Number.isNaN(value))) {
    ctx.addIssue({ code: 'invalid_type', expected: 'number',
      message: 'must be a port from 1 to 65535, or a range of ports as text like "6000-6010"' });
    return;
  }
  const parsed = port.safeParse(value);
  if (!parsed.success) for (const issue of parsed.error.issues) ctx.addIssue({ ...issue });
}));

/**
 * The first and last port a forward's `port` takes (the same for one port), or undefined where it is not a valid
 * one: the cross-field checks read the raw document.
 */
export function portRangeOf(value: unknown): [number, number] | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 1 && value <= 65535 ? [value, value] : undefined;
  if (typeof value !== 'string' || portRangeProblem(value) !== undefined) return undefined;
  const range = PORT_RANGE.exec(value)!;
  return [Number(range[1]), Number(range[2])];
}

/** The first and last port a validated forward's `port` takes: the same for one port. */
export function forwardedRange(value: number | string): [number, number] {
  return portRangeOf(value) ?? [Number.NaN, Number.NaN];
}

const portForward = z.strictObject({
  proto: z._default(z.enum(['tcp', 'udp']), 'tcp'),
  port: forwardedPort,
  to: ipv4,
  toPort: z.optional(port),
});

/** Paths reach argv and file APIs only, but still: one line, no NUL. */
const path = z.string().check(z.minLength(1, 'must be a path, not an empty string'), z.regex(/^[^\n\r\0]*$/, { message: 'must be a path on one line' }));

/** The most a timer may wait: an hour is far more than any use of it, and well below setTimeout's 2^31-1 ms. */
export const MAX_INTERVAL_MS = 3_600_000;
const INTERVAL_MESSAGE = `must be a number of milliseconds from 0 to ${MAX_INTERVAL_MS} (one hour)`;

/**
 * An optional section written with nothing under it (`forwarding:` with its lines commented out) is YAML's null:
 * taken as absent, so its defaults apply, rather than refused as "not an object". A section's defaults are
 * z.prefault(section, {}), which parses {}: z._default(section, {}) would give {} as it is, without the defaults of
 * the keys inside (nat: masquerade, default: accept, …).
 */
const orEmpty = <T extends z.ZodMiniType>(schema: T) =>
  // optional: a section may be left out (undefined then reaches `schema`, which gives the defaults).
  z.pipe(z.optional(z.transform((value: unknown): unknown => (value === null ? undefined : value))), schema);

export const configSchema = z.strictObject({
  uplink: orEmpty(z.prefault(z.strictObject({
    interface: z.optional(interfaceRef),
    gateway: z.optional(ipv4),
    nat: z._default(z.enum(['masquerade', 'snat', 'none']), 'masquerade'),
    snatTo: z.optional(ipv4),
  }), {})),
  vlans: z.array(vlan).check(z.minLength(1, 'must list at least one VLAN'), z.maxLength(MAX_VLANS, {
    message: `lists more than ${MAX_VLANS} VLANs, the most one gateway routes: every pair of VLANs has its own counters `
      + `(and, under default: drop or without ipset, its own rule), so they grow with the square of the VLAN count `
      + `(${MAX_VLANS} VLANs are ${groupDigits(MAX_VLANS * (MAX_VLANS - 1))} pairs)`,
  })),
  forwarding: orEmpty(z.prefault(z.strictObject({
    default: z._default(z.enum(['accept', 'drop']), 'accept'),
    rules: orEmpty(z._default(z.array(forwardingRule), [])),
  }), {})),
  portForwards: orEmpty(z._default(z.array(portForward), [])),
  rules: orEmpty(z.prefault(z.strictObject({ dir: z.optional(path) }), {})),
  reconcile: orEmpty(z.prefault(z.strictObject({
    schedule: z.optional(z.string().check(z.regex(/^[0-9*/,\- A-Za-z?]+$/, { message: 'must be a cron expression' }))),
    minIntervalMs: z.optional(integer(0, MAX_INTERVAL_MS, INTERVAL_MESSAGE)),
  }), {})),
  http: orEmpty(z.prefault(z.strictObject({
    // A port alone may be written as a number (`listen: 9100`, which YAML reads as one): taken as its text.
    listen: z.optional(z.pipe(z.transform((value: unknown): unknown => listenText(value) ?? value),
      z.string({ error: (issue) => (issue.input === undefined ? undefined : 'must be an address to listen on, PORT or HOST:PORT') })
        .check(z.regex(/^[^\s\n]+$/, { message: 'must be PORT or HOST:PORT, without spaces' })))),
    // Who on the VLANs may use the endpoints (VLAN names, or addresses / prefixes inside a VLAN): by default
    // nobody there, as a router's management answers its own side only (the uplink, and the gateway itself).
    allowFrom: orEmpty(z._default(z.array(clientRef), [])),
  }), {})),
});

export type Config = z.infer<typeof configSchema>;
export type Vlan = Config['vlans'][number];
export type ForwardingRule = Config['forwarding']['rules'][number];
export type PortForward = Config['portForwards'][number];
export type InterfaceRef = NonNullable<Vlan['interface']>;
