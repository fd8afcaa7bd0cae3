/** `vlan-gateway status`: the running supervisor's /status, for a person (or raw with --json). */
import { get as httpGet, type IncomingMessage, type RequestOptions } from 'node:http';
import { get as httpsGet } from 'node:https';
import type { CommandModule } from 'yargs';
import { DEFAULT_PORT, listenProblem, parseListenAddress } from '../config/listen.js';
import { loadConfig, resolveConfigPath } from '../config/load.js';
import { shown } from '../config/problems.js';
import { out, type GlobalArgs } from './context.js';
import { FailureError, UsageError } from './errors.js';
import { InstanceLock } from './instance-lock.js';

interface StatusArgs extends GlobalArgs {
  url?: string;
  json?: boolean;
}

interface StatusDoc {
  version: string;
  config: { path: string; hash: string };
  backend: string | null;
  ready: boolean;
  healthy: boolean;
  unhealthyReason?: string;
  /** mac, foundBy and addresses are optional: a gateway older than these fields does not send them. */
  uplink: { interface: string | null; mac?: string | null; foundBy?: string; addresses?: string[]; note?: string };
  /** What lets traffic past the policy (optional: a gateway older than this field does not send it). */
  warnings?: string[];
  vlans: Array<{
    name: string; id: number; subnet: string; gateway: string; interface: string | null; addresses: string[]; state: string; note?: string;
    /** How its NIC is found (name, mac, subnet), and whether it holds the gateway address (optional: older gateways). */
    mac?: string | null; foundBy?: string; gatewayOnNic?: boolean | null;
    /** Another device answers ARP for the gateway address too (said in warnings as well). */
    conflict?: { mac: string; since: string };
  }>;
  lastReconcile: { time: string; trigger: string; result: string; durationMs: number; changes: string[]; error?: string } | null;
  /** The pass running now (optional: a gateway older than this field does not send it). */
  reconciling?: { trigger: string; since: string; waitingFor?: { command: string; since: string } } | null;
  driftRepairs: Record<string, number>;
  reload: { lastAt: string | null; lastResult: string | null; lastErrors: string[] };
}

/** A VLAN's addresses, or its note where it has none; a bound VLAN that is down says why after them (no carrier). */
const vlanDetail = (v: StatusDoc['vlans'][number]) => {
  const addresses = v.addresses.join(' ');
  return !addresses ? v.note ?? '' : v.state === 'down' && v.note ? `${addresses} (${v.note})` : addresses;
};

/** Whether the VLAN's NIC holds its gateway address: `-` while it waits (or from a gateway that does not say). */
const gatewayHeld = (v: StatusDoc['vlans'][number]) => (v.gatewayOnNic === true ? 'on NIC' : v.gatewayOnNic === false ? 'missing' : '-');

/** The uplink's NIC, its MAC, how it was found and its addresses; or its note alone while it waits (as plan prints it). */
function uplinkLine(u: StatusDoc['uplink']): string {
  if (!u.interface) return `uplink: ${u.note ?? 'waiting'}`;
  const found = u.foundBy === undefined ? [] : [`found by ${u.foundBy}`];
  const detail = [u.mac ? `${u.interface} ${u.mac}` : u.interface, ...found, ...(u.addresses?.length ? [u.addresses.join(' ')] : [])].join(', ');
  return `uplink: ${detail}${u.note ? ` (${u.note})` : ''}`;
}

export function formatStatus(s: StatusDoc): string {
  const lines = [
    `vlan-gateway ${s.version}: ${s.ready ? 'ready' : 'not ready'}, ${s.healthy ? 'healthy' : `UNHEALTHY (${s.unhealthyReason})`}`,
    `config ${s.config.path} (hash ${s.config.hash}), iptables backend ${s.backend ?? 'unknown'}`,
    // A waiting uplink's note says it waits and why ("waiting for eth0"), as plan prints it.
    uplinkLine(s.uplink),
    ...(s.warnings ?? []).map((w) => `warning: ${w}`),
    '',
    'VLAN          ID    SUBNET              NIC       STATE    MAC                FOUND BY  GATEWAY  ADDRESSES',
    ...s.vlans.map((v) => `${v.name.padEnd(12)}  ${String(v.id).padEnd(4)}  ${v.subnet.padEnd(18)}  ${(v.interface ?? '-').padEnd(8)}  ${v.state.padEnd(7)}  `
      + `${(v.mac ?? '-').padEnd(17)}  ${(v.foundBy ?? '-').padEnd(8)}  ${gatewayHeld(v).padEnd(7)}  ${vlanDetail(v)}`),
    '',
  ];
  const r = s.lastReconcile;
  lines.push(r ? `last reconcile: ${r.time} (${r.trigger}) ${r.result} in ${r.durationMs} ms${r.error ? `: ${r.error}` : ''}` : 'last reconcile: none yet');
  for (const change of r?.changes ?? []) lines.push(`  ${change}`);
  if (s.reconciling) {
    const waited = s.reconciling.waitingFor;
    lines.push(`reconciling: a ${s.reconciling.trigger} pass, since ${s.reconciling.since}${waited ? `, waiting for ${waited.command} since ${waited.since}` : ''}`);
  }
  const drift = Object.entries(s.driftRepairs).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`);
  lines.push(`drift repaired: ${drift.length > 0 ? drift.join(', ') : 'none'}`);
  if (s.reload.lastResult) lines.push(`last reload: ${s.reload.lastAt} ${s.reload.lastResult}`);
  for (const e of s.reload.lastErrors) lines.push(`  ${e}`);
  return lines.join('\n');
}

/**
 * Where a supervisor started with this listen address answers this machine: the address itself, or loopback where
 * it listens on every address.
 */
function statusBase(listen: string): string | undefined {
  const parsed = parseListenAddress(listen);
  if (!parsed) return undefined;
  const host = parsed.host === '0.0.0.0' || parsed.host === '::' ? '127.0.0.1' : parsed.host.includes(':') ? `[${parsed.host}]` : parsed.host;
  return `http://${host}:${parsed.port}`;
}

/**
 * The config's http.listen, which a supervisor started without --listen serves on (the image's `run`), or
 * undefined: not set, or no config to read here (status is also run away from the gateway's files).
 */
async function configListen(config: string | undefined): Promise<{ listen: string; path: string } | undefined> {
  const path = resolveConfigPath(config);
  try {
    const listen = (await loadConfig(path)).config.http.listen;
    return listen === undefined ? undefined : { listen, path };
  } catch {
    return undefined;
  }
}

/** Where the supervisor of this network namespace says its endpoints listen, if one runs and they do. */
async function runningListen(): Promise<{ listen: string; pid: string } | undefined> {
  const answer = await InstanceLock.ask(undefined).catch(() => undefined);
  return answer?.http === undefined ? undefined : { listen: answer.http, pid: answer.pid };
}

/**
 * Where the `run --netns NAME` of namespace `netns` says its endpoints listen (they listen in this namespace, the
 * supervisor's own); an error that says why when none runs from here, or its endpoints do not listen yet.
 */
async function managerListen(netns: string): Promise<{ listen: string; pid: string }> {
  const answer = await InstanceLock.ask(netns);
  if (answer === undefined) {
    throw new FailureError(`no \`vlan-gateway run --netns ${netns}\` runs beside this command (one started inside the namespace answers `
      + `\`ip netns exec ${netns} vlan-gateway status\`)`);
  }
  const pid = answer.pid === '' ? '' : ` (pid ${answer.pid})`;
  if (answer.http === undefined) throw new FailureError(`vlan-gateway run${pid} manages network namespace ${netns}, but its HTTP endpoints do not listen yet`);
  return { listen: answer.http, pid: answer.pid };
}

export const statusCommand: CommandModule<GlobalArgs, StatusArgs> = {
  command: 'status',
  describe: 'Show what the running gateway is doing (reads its /status)',
  builder: (y) => y
    .option('url', { type: 'string', describe: `the gateway's HTTP address (default: --listen's, else where the supervisor of this network namespace says it listens, else the config's http.listen, else http://127.0.0.1:${DEFAULT_PORT})` })
    .option('listen', { type: 'string', describe: 'the --listen address the gateway was started with' })
    .option('netns', { type: 'string', describe: 'the network namespace a `run --netns NAME` manages: it says where it listens' })
    .option('json', { type: 'boolean', describe: 'print the raw JSON' }),
  handler: async (args) => {
    const listen = (args as { listen?: string }).listen;
    // Both used to be taken, --url silently winning: a status of another gateway than the --listen one named.
    if (listen !== undefined && args.url !== undefined) throw new UsageError(`--listen ${shown(listen)} and --url ${shown(args.url)} both say where the gateway is: give one`);
    const given = listen !== undefined ? `--listen ${shown(listen)}` : args.url !== undefined ? `--url ${shown(args.url)}` : undefined;
    if (args.netns !== undefined && given !== undefined) {
      throw new UsageError(`--netns ${args.netns} and ${given} both say where the gateway is: give one (--netns: the supervisor of that namespace says where it listens)`);
    }
    const fromListen = listen === undefined ? undefined : statusBase(listen);
    if (listen !== undefined && fromListen === undefined) throw new UsageError(listenProblem(listen, `--listen ${shown(listen)}`)!);
    if (args.url !== undefined && !/^https?:\/\/[^/\s]+/.test(args.url)) throw new UsageError(`--url ${shown(args.url)}: expected http://HOST:PORT`);
    // Neither given: the supervisor of this namespace says where it listens (a `run --listen` is in no file read
    // here), else the config's http.listen, else the default.
    const told = args.netns !== undefined ? await managerListen(args.netns) : args.url === undefined && listen === undefined ? await runningListen() : undefined;
    const fromConfig = args.url === undefined && listen === undefined && told === undefined ? await configListen(args.config) : undefined;
    // Without a trailing slash: `--url http://HOST:PORT/` asks, and is named as, http://HOST:PORT/status.
    const base = (args.url ?? fromListen ?? (told && statusBase(told.listen)) ?? (fromConfig && statusBase(fromConfig.listen))
      ?? `http://127.0.0.1:${DEFAULT_PORT}`).replace(/\/$/, '');
    const whose = told ? `where vlan-gateway run (pid ${told.pid}) ${args.netns === undefined ? 'in this namespace' : `of network namespace ${args.netns}`} said it listens`
      : fromConfig ? `its address (http.listen ${fromConfig.listen} in ${fromConfig.path}; give --listen or --url if it was started with another)` : 'its --listen address';
    // A zoned IPv6 host (fe80::1%eth0, which a gateway may listen on) no URL can hold: asked by its parts.
    const asked = args.url === undefined ? parseListenAddress(listen ?? told?.listen ?? fromConfig?.listen ?? '') : undefined;
    const target: string | RequestOptions = asked?.host.includes('%') ? { host: asked.host, port: asked.port, path: '/status' } : `${base}/status`;
    let response: { status: number; statusText: string; body: string };
    try {
      response = await getText(target, 3000);
    } catch (error) {
      const why = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
      throw new FailureError(`cannot reach the gateway at ${base} (${why}); is \`vlan-gateway run\` running, and is that ${whose}?`);
    }
    if (response.status < 200 || response.status > 299) throw new FailureError(`${base}/status answered ${response.status} ${response.statusText}${response.status === 403 ? ' (http.allowFrom does not let this client in)' : ''}`);
    let doc: StatusDoc;
    try {
      doc = JSON.parse(response.body) as StatusDoc;
    } catch {
      throw new FailureError(`${base}/status did not answer with the gateway's JSON; is that vlan-gateway's address?`);
    }
    out(args.json ? JSON.stringify(doc, null, 2) : formatStatus(doc));
  },
};

/**
 * One GET, its status and body. node:http rather than fetch: fetch refuses the ports browsers block (6000, 6665–6669,
 * 10080 and others: "bad port") without a connection, and a gateway may listen on any of them.
 */
function getText(url: string | RequestOptions, timeoutMs: number): Promise<{ status: number; statusText: string; body: string }> {
  return new Promise((resolve, reject) => {
    const done = (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    };
    const request = typeof url === 'string' && url.startsWith('https:') ? httpsGet(url, done) : httpGet(url, done);
    const timer = setTimeout(() => request.destroy(new Error(`no answer in ${timeoutMs / 1000} s`)), timeoutMs);
    request.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}
