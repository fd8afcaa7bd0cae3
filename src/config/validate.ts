/**
 * Config validation: schema first (types, ranges, unknown keys, unsafe values), then the rules that span
 * fields. Every problem is collected; nothing stops at the first. The cross-field checks read the raw document
 * defensively, so a type error in one VLAN does not hide an overlap between two others. Pure.
 */
import * as z from 'zod/mini';
import { forwardingProblems } from './check-forwarding.js';
import { httpProblems } from './check-http.js';
import { interfaceProblems } from './check-interfaces.js';
import { portForwardProblems } from './check-port-forwards.js';
import { reconcileProblems } from './check-reconcile.js';
import { uplinkProblems } from './check-uplink.js';
import { overlapProblems, vlanProblems } from './check-vlans.js';
import { asArray, asString, isObject } from './cross-field.js';
import { DEFAULT_LISTEN, isLoopbackHost, listenText, parseListenAddress } from './listen.js';
import { configSchema, portRangeOf, type Config } from './schema.js';
import { article, quoted, shown, typeName, type PathSegment, type Problem } from './problems.js';
import { zones } from './zones.js';

export type ValidationResult = { ok: true; config: Config } | { ok: false; problems: Problem[] };

export interface ValidateOptions {
  /** `run --listen`: the HTTP address actually served, in place of http.listen (a port forward must not take it). */
  readonly listen?: string;
}

type ZodIssue = z.core.$ZodIssue;

/**
 * A type error in our words where the schema gives none: "must be a number" (fromZod adds what was given). Every
 * number in the schema is an integer (z.int()): 1.5 (expected "int") and .inf (a number, not finite) are "must be an
 * integer"; zod 3 said the same of both.
 */
const typeWords = (issue: z.core.$ZodRawIssue): string | undefined => {
  if (issue.code !== 'invalid_type') return undefined;
  const integer = issue.expected === 'int' || (issue.expected === 'number' && typeof issue.input === 'number' && !Number.isNaN(issue.input));
  return `must be ${article(integer ? 'integer' : issue.expected)}`;
};

export function validateConfig(input: unknown, options: ValidateOptions = {}): ValidationResult {
  const parsed = schemaParse(input);
  // Concatenated, never pushed as spread arguments: 512 copies of one VLAN are 130,816 overlapping pairs, beyond
  // the arguments one call takes ("Maximum call stack size exceeded").
  const problems = (parsed.success ? [] : firstPerValue(parsed.error.issues).flatMap((issue) => fromZod(issue, input)))
    .concat(crossFieldProblems(input, options));
  const unique = dedupe(problems);
  if (unique.length > 0 || !parsed.success) return { ok: false, problems: unique };
  return { ok: true, config: parsed.data };
}

/**
 * The schema as zod compiles it (z.compile): code generated for this schema, which parses a valid config in a fraction
 * of the time the schema's own parser takes, and hands any input it does not take to that parser, so every problem is
 * found and said as before. Made at the first validation that uses it, not when the module loads. (keysAt reads the
 * schema itself: the compiled one is a copy.)
 */
let compiledSchema: typeof configSchema | undefined;

/**
 * The list items (VLANs, forwarding rules, port forwards, clients) from which the compiled schema is used: making it
 * costs about 20 ms in a new process, which the schema's own parser, at about 10 µs an item there, spends only from a
 * few hundred items on (bench/load.ts: the lab's config 1 ms against 22, the bench's 1k config 41 against 30, its 10k
 * config 123 against 38). A small config, as a start of the lab, is checked as before.
 */
const COMPILED_FROM_ITEMS = 500;

const listItems = (input: unknown): number => {
  if (!isObject(input)) return 0;
  const section = (key: string) => (isObject(input[key]) ? input[key] : {});
  return asArray(input.vlans).length + asArray(section('forwarding').rules).length + asArray(input.portForwards).length
    + asArray(section('http').allowFrom).length;
};

/** The schema's check alone (validateConfig's first part; bench/load.ts times it apart, a test runs both parsers). */
export function schemaParse(input: unknown, compiled = listItems(input) >= COMPILED_FROM_ITEMS) {
  const schema = compiled ? (compiledSchema ??= z.compile(configSchema)) : configSchema;
  return schema.safeParse(input, { error: typeWords });
}

/**
 * A range check after another check on the same value (.inf is "not an integer", and also "not from 1 to 4094"):
 * one sentence per value is enough, the first.
 */
function firstPerValue(issues: readonly ZodIssue[]): ZodIssue[] {
  const seen = new Set<string>();
  return issues.filter((issue) => {
    const key = issue.path.join('\u0000');
    const range = issue.code === 'too_small' || issue.code === 'too_big';
    if (range && seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function fromZod(issue: ZodIssue, input: unknown): Problem[] {
  const path = issue.path as PathSegment[];
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((key) => ({
        path: [...path, key], at: 'key' as const, message: `is not a known key${knownKeys(path)}${portListHint(key, path, input)}${interfaceHint(key, path)}`,
      }));
    case 'invalid_type': {
      const value = valueAt(input, path);
      if (value === undefined) return [{ path, message: 'is required' }];
      // js-yaml reads a numeral beyond a double's range (1e400, -1e999) as text: said as the number it looks like.
      if ((issue.expected === 'number' || issue.expected === 'int') && typeof value === 'string' && NUMERAL.test(value) && !Number.isFinite(Number(value.replace(/_/g, '')))) {
        return [{ path, message: `must be a number, and ${shown(value)} is beyond the range of one (YAML reads it as text)` }];
      }
      // 1.5 or .inf where an integer is wanted: a float.
      const float = issue.expected === 'int' || (issue.expected === 'number' && typeof value === 'number' && !Number.isNaN(value));
      // The schema's own words (a port: "must be a port, a number from 1 to 65535"), else typeWords'.
      return [{ path, message: `${issue.message}, not ${article(float ? 'float' : typeName(value))}` }];
    }
    case 'invalid_value': {
      // A word not in the list, or a number or a boolean (proto: 6), said as a wrong word is.
      const value = valueAt(input, path);
      if (value === undefined) return [{ path, message: 'is required' }];
      return [{ path, message: `must be one of ${issue.values.map((o) => String(o)).join(', ')}, not ${typeof value === 'string' ? quoted(value) : article(typeName(value))}` }];
    }
    case 'invalid_union':
      return [{ path, message: issue.message }];
    default:
      return [{ path, message: issue.message }];
  }
}

/** The keys allowed where an unknown one was found, to point at a typo. */
function knownKeys(path: readonly PathSegment[]): string {
  const keys = keysAt(path);
  return keys.length > 0 ? ` (known: ${keys.join(', ')})` : '';
}

/** The keys the schema allows at a path (none where it holds no mapping). */
function keysAt(path: readonly PathSegment[]): string[] {
  let schema: unknown = configSchema;
  for (const segment of path) {
    schema = unwrap(schema);
    if (schema instanceof z.ZodMiniObject) schema = (schema.def.shape as Record<string, unknown>)[String(segment)];
    else if (schema instanceof z.ZodMiniArray) schema = schema.def.element;
    else return [];
  }
  schema = unwrap(schema);
  return schema instanceof z.ZodMiniObject ? Object.keys(schema.def.shape) : [];
}

/**
 * `{from: a, to: b, ports: 22,80}`: in a flow mapping the comma ends the value, and 80 becomes a key of its own. A
 * key that is a port (or a range) where `ports` is a known key says how to write the list.
 */
/** `interface: {name: eth1}`: a NIC is named by the name alone; the mapping is for its MAC. */
function interfaceHint(key: string, path: readonly PathSegment[]): string {
  return key === 'name' && path[path.length - 1] === 'interface' ? '; a NIC is named as interface: eth1, and {mac: "…"} finds it by its MAC instead' : '';
}

function portListHint(key: string, path: readonly PathSegment[], input: unknown): string {
  if (!/^\d{1,5}(-\d{1,5})?$/.test(key) || !keysAt(path).includes('ports')) return '';
  const before = valueAt(input, path);
  const ports = isObject(before) && typeof before.ports === 'number' ? before.ports : '…'; // a number only: never echo text
  return `; inside { } a port list must be quoted, as in ports: "${ports},${key}"`;
}

/** The document's value at a path (undefined where it has none). */
const valueAt = (input: unknown, path: readonly PathSegment[]): unknown =>
  path.reduce<unknown>((node, segment) => (isObject(node) || Array.isArray(node) ? (node as Record<PathSegment, unknown>)[segment] : undefined), input);

/** A YAML 1.2 decimal numeral (what js-yaml would read as a number, were it in range). */
const NUMERAL = /^[-+]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][-+]?\d+)?$/;

/** The schema under the wrappers; of a union (interface: a name or {mac}), its mapping. */
function unwrap(schema: unknown): unknown {
  let s = schema;
  while (s instanceof z.ZodMiniDefault || s instanceof z.ZodMiniPrefault || s instanceof z.ZodMiniOptional || s instanceof z.ZodMiniPipe || s instanceof z.ZodMiniUnion) {
    if (s instanceof z.ZodMiniUnion) {
      s = (s.def.options as unknown[]).find((o) => unwrap(o) instanceof z.ZodMiniObject);
      continue;
    }
    s = s instanceof z.ZodMiniPipe ? s.def.out : s.def.innerType;
  }
  return s;
}

function dedupe(problems: Problem[]): Problem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = `${p.path.join('\u0000')}\u0001${p.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

// ---- cross-field rules, on the raw document: one check per section (check-*.ts) ----

/** The checks across fields alone (validateConfig runs them after the schema; bench/load.ts times them apart). */
export function crossFieldProblems(input: unknown, options: ValidateOptions = {}): Problem[] {
  if (!isObject(input)) return [];
  const { problems, vlans, names } = vlanProblems(input);
  const zoneChecks = zones(vlans, names);
  return problems
    .concat(interfaceProblems(input))
    .concat(overlapProblems(vlans))
    .concat(uplinkProblems(input, vlans))
    .concat(forwardingProblems(input, zoneChecks, portListProblem))
    .concat(reconcileProblems(input))
    .concat(httpProblems(input, zoneChecks))
    .concat(portForwardProblems(input, vlans))
    .concat(httpPortProblems(asArray(input.portForwards), listenText(isObject(input.http) ? input.http.listen : undefined), options));
}

/**
 * A TCP port forward on the HTTP endpoints' own port, or of a range of ports that holds it: the DNAT takes that port on every address of the gateway that
 * the uplink side reaches, so Prometheus and health checks would reach the VLAN host. The port is `run --listen`'s
 * where given, else http.listen's, else the default; on loopback nothing from outside reaches it. Apart from the
 * rest of validation because it depends on the flag as well as the file: a config kept valid by its text alone
 * (the plan cache) is checked again here against the flag of the run that loads it.
 */
export function httpPortProblems(portForwards: readonly unknown[], httpListen: string | undefined, options: ValidateOptions): Problem[] {
  const served = options.listen !== undefined ? { text: `--listen ${shown(options.listen)}`, move: '--listen' }
    : httpListen !== undefined ? { text: `http.listen ${shown(httpListen)}`, move: 'http.listen' }
    : { text: `the default http.listen, ${DEFAULT_LISTEN}`, move: 'http.listen' };
  const listen = parseListenAddress(options.listen ?? httpListen ?? DEFAULT_LISTEN);
  if (!listen || isLoopbackHost(listen.host)) return [];
  const problems: Problem[] = [];
  portForwards.forEach((raw, index) => {
    const range = isObject(raw) ? portRangeOf(raw.port) : undefined; // a range that holds the port takes it as well
    if (!isObject(raw) || !range || listen.port < range[0] || listen.port > range[1] || (asString(raw.proto) ?? 'tcp') !== 'tcp') return;
    const single = range[0] === range[1];
    problems.push({
      path: ['portForwards', index, 'port'],
      message: `${single ? `tcp/${listen.port} is` : `tcp/${range[0]}-${range[1]} holds tcp/${listen.port},`} the gateway's own HTTP port (${served.text}): `
        + `Prometheus and health checks from the uplink side would reach the VLAN host instead; forward ${single ? 'another port' : 'a range without it'}, or move ${served.move}`,
    });
  });
  return problems;
}

/** "22,8000-8100" or 22: each port 1–65535, ranges low-high with low ≤ high. */
function portListProblem(ports: unknown): string | undefined {
  if (typeof ports === 'number') {
    if (Number.isInteger(ports) && ports >= 1 && ports <= 65535) return undefined;
    // As YAML writes it: JavaScript's text of .inf is "Infinity", and of 99999999999999999999999 "1e+23".
    if (Math.abs(ports) >= 1e21 && Number.isFinite(ports)) return `is a number far beyond ${ports < 0 ? 'the lowest port, 1' : 'the highest port, 65535'}`;
    const shown = Number.isNaN(ports) ? '.nan' : ports === Infinity ? '.inf' : ports === -Infinity ? '-.inf' : String(ports);
    return `${shown} is not a port from 1 to 65535`;
  }
  if (typeof ports !== 'string') return undefined; // the schema reports the type
  if (!/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(ports)) return `${quoted(ports)} is not a port list like "22,8000-8100"`;
  for (const item of ports.split(',')) {
    const [low, high = low] = item.split('-').map(Number) as [number, number?];
    if (low < 1 || low > 65535 || high < 1 || high > 65535) return `${shown(item)} is not a port from 1 to 65535`;
    if (low > high) return `${shown(item)} is a range whose start is above its end`;
  }
  return undefined;
}

/** Expands a validated port list into [low, high] pairs. */
export function parsePorts(ports: string | number): Array<[number, number]> {
  if (typeof ports === 'number') return [[ports, ports]];
  return ports.split(',').map((item) => {
    const [low, high = low] = item.split('-').map(Number) as [number, number?];
    return [low, high];
  });
}
