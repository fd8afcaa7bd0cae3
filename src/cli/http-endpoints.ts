/**
 * The HTTP endpoints of `vlan-gateway run`: what they serve (read from the supervisor and the metrics), whom they
 * refuse, and where they listen.
 */
import type { AddressInfo } from 'node:net';
import { parseListen } from '../config/listen.js';
import type { Config } from '../config/schema.js';
import { contains, parseAddress, parseCidr } from '../net/ipv4.js';
import { accessCheck, routedBehind, type AccessCheck } from '../http/access.js';
import { hostPort, HttpServer, type Endpoints } from '../http/server.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import { statusDocument, type ReloadState } from '../reconcile/status.js';
import type { Supervisor, SupervisorView } from '../reconcile/supervisor.js';
import { FailureError } from './errors.js';
import type { InstanceLock } from './instance-lock.js';
import type { RunSettings } from './run-options.js';

/** /metrics, /healthz, /readyz and /status of a supervisor; its version is the one /status shows. */
export function endpoints(supervisor: Supervisor, reload: ReloadState, metrics: Metrics, version: string, log: Logger): HttpServer {
  const refusedSeries = refusedFromZero(() => supervisor.config.config, metrics);
  return new HttpServer({
    metrics: () => {
      refusedSeries();
      return metrics.text();
    },
    health: () => supervisor.health(),
    ready: () => supervisor.ready,
    status: () => statusDocument(supervisor, reload, version),
    ...refusals(() => supervisor.config.config, () => supervisor.view, metrics, log),
  });
}

/** How often the endpoints try again to listen on an address that no interface has yet. */
const LISTEN_RETRY_MS = 1000;

/**
 * Whether the endpoints wait for their address rather than fail: an address in a VLAN's subnet (its gateway address,
 * which the gateway adds itself, or Docker's on that NIC) is on an interface only once the VLAN's NIC is attached,
 * after the endpoints start in a new container. Not with --netns: they listen in the caller's namespace, where the
 * gateway adds nothing.
 */
export function waitsForAddress(listen: string, config: Config, netns: string | undefined): boolean {
  const address = parseAddress(parseListen(listen).host);
  return netns === undefined && address !== undefined
    && config.vlans.some((v) => { const subnet = parseCidr(v.subnet); return subnet !== undefined && contains(subnet, address); });
}

/**
 * Starts the endpoints where the settings say; when they cannot listen there, lets the lock go and says why. An
 * address in a VLAN's subnet that no interface has yet (waitsForAddress) does not stop the router: it routes, says
 * so, and the endpoints listen there once an interface has it (undefined until then).
 */
export async function serveEndpoints(http: HttpServer, settings: RunSettings, lock: InstanceLock, log: Logger, wait: boolean,
  onListening: () => void = () => undefined): Promise<AddressInfo | undefined> {
  const { listen } = settings;
  try {
    if (!wait) {
      const bound = await http.start(listen);
      onListening();
      return bound;
    }
    const address = await http.startWhenThere(listen, LISTEN_RETRY_MS,
      (bound) => {
        log.info({ listen: hostPort(bound) }, `the HTTP endpoints listen on ${listen} now`);
        onListening();
      },
      (error) => log.error({ listen, err: error }, `the HTTP endpoints cannot listen on ${listen} (${settings.listenFrom}) yet: ${why(error)}; trying again every ${LISTEN_RETRY_MS / 1000} s`));
    if (address !== undefined) {
      onListening();
    } else {
      log.warn({ listen }, `the HTTP endpoints cannot listen on ${listen} (${settings.listenFrom}) yet: no interface has that address; `
        + 'the gateway routes meanwhile, and they listen there once its VLAN\'s NIC has it');
    }
    return address;
  } catch (error) {
    await lock.release();
    throw new FailureError(`cannot serve the HTTP endpoints on ${listen} (${settings.listenFrom}): ${why(error)}`);
  }
}

function why(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'EADDRINUSE' ? 'the port is in use' : code === 'EADDRNOTAVAIL' ? 'no interface has that address'
    : code === 'ENOTFOUND' ? 'not an address' : code === 'EACCES' ? 'permission denied' : (error as Error).message;
}

/**
 * vlan_gateway_http_refused_total starts at 0 for each VLAN of the running config and for vlan="" (IPv6 clients), as the
 * other counters' known labels do: a series born at 1 by a VLAN's first refusal had no earlier sample, so
 * `increase(vlan_gateway_http_refused_total[5m]) > 0` did not fire for it (only for a second refusal). A VLAN that
 * leaves the config takes its series with it, as its traffic series go. Made again only when the config changes.
 */
function refusedFromZero(running: () => Config, metrics: Metrics): () => void {
  let synced: Config | undefined;
  let labelled = new Set<string>();
  return () => {
    const config = running();
    if (config === synced) return;
    synced = config;
    const vlans = new Set(['', ...config.vlans.map((v) => v.name)]);
    for (const vlan of labelled) if (!vlans.has(vlan)) metrics.httpRefused.remove({ vlan });
    for (const vlan of vlans) metrics.httpRefused.inc({ vlan }, 0);
    labelled = vlans;
    metrics.changed();
  };
}

/**
 * The HTTP endpoints' refusals (http/access.ts), checked against the running config (a reload that changes
 * http.allowFrom or the VLANs applies at once), counted per VLAN, and each logged at most once per client per
 * 30 s: a Prometheus on a VLAN scraping every 15 s, or hosts taking turns, cannot flood the log.
 */
function refusals(running: () => Config, view: () => SupervisorView | undefined, metrics: Metrics, log: Logger): Pick<Required<Endpoints>, 'refuse' | 'refuses'> {
  let access: { config: Config; check: AccessCheck } | undefined;
  // The gateway's own addresses and routes, as the last pass left its NICs: made again only when they change.
  let known: { view: SupervisorView | undefined; addresses: Set<string>; behind: (address: number) => string | undefined } = {
    view: undefined, addresses: new Set(), behind: () => undefined,
  };
  const current = () => {
    const now = view();
    if (known.view !== now) {
      const vlanOfNic = new Map((now?.vlans ?? []).flatMap((b) => (b.nic ? [[b.nic.name, b.vlan.name] as const] : [])));
      known = {
        view: now,
        addresses: new Set((now?.links ?? []).flatMap((l) => l.addresses.map((a) => a.address))),
        behind: routedBehind(now?.routes ?? [], vlanOfNic),
      };
    }
    return known;
  };
  const isOwn = (address: string) => current().addresses.has(address);
  const behind = (address: number) => current().behind(address);
  const check = (remote: string) => {
    const config = running();
    if (access?.config !== config) access = { config, check: accessCheck(config, isOwn, behind) };
    return access.check(remote);
  };
  const refusedAt = new Map<string, number>();
  const refuse = (remote: string) => {
    const refusal = check(remote);
    if (refusal === undefined) return undefined;
    metrics.httpRefused.inc({ vlan: refusal.vlan });
    metrics.changed();
    const last = refusedAt.get(remote);
    if (last === undefined || performance.now() - last >= 30_000) {
      if (refusedAt.size >= 1024) refusedAt.clear(); // a large VLAN's hosts
      refusedAt.set(remote, performance.now());
      log.warn({ remote, vlan: refusal.vlan }, `HTTP request refused: ${refusal.reason}`);
    }
    return refusal.reason;
  };
  return { refuse, refuses: (remote) => check(remote) !== undefined };
}
