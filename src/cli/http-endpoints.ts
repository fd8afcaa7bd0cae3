/**
 * The HTTP endpoints of `vlan-gateway run`: what they serve (read from the supervisor and the metrics), whom they
 * refuse, and where they listen.
 */
import type { AddressInfo } from 'node:net';
import type { Config } from '../config/schema.js';
import { accessCheck, routedBehind, type AccessCheck } from '../http/access.js';
import { HttpServer, type Endpoints } from '../http/server.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import { statusDocument, type ReloadState } from '../reconcile/status.js';
import type { Supervisor, SupervisorView } from '../reconcile/supervisor.js';
import { FailureError } from './errors.js';
import type { InstanceLock } from './instance-lock.js';
import type { RunSettings } from './run-options.js';

/** /metrics, /healthz, /readyz and /status of a supervisor; its version is the one /status shows. */
export function endpoints(supervisor: Supervisor, reload: ReloadState, metrics: Metrics, version: string, log: Logger): HttpServer {
  return new HttpServer({
    metrics: () => metrics.text(),
    health: () => supervisor.health(),
    ready: () => supervisor.ready,
    status: () => statusDocument(supervisor, reload, version),
    ...refusals(() => supervisor.config.config, () => supervisor.view, metrics, log),
  });
}

/** Starts the endpoints where the settings say; when they cannot listen there, lets the lock go and says why. */
export async function serveEndpoints(http: HttpServer, settings: RunSettings, lock: InstanceLock): Promise<AddressInfo> {
  const { listen } = settings;
  try {
    return await http.start(listen);
  } catch (error) {
    await lock.release();
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'EADDRINUSE' ? 'the port is in use' : code === 'EADDRNOTAVAIL' ? 'no interface has that address'
      : code === 'ENOTFOUND' ? 'not an address' : code === 'EACCES' ? 'permission denied' : (error as Error).message;
    throw new FailureError(`cannot serve the HTTP endpoints on ${listen} (${settings.listenFrom}): ${why}`);
  }
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
    if (last === undefined || Date.now() - last >= 30_000) {
      if (refusedAt.size >= 1024) refusedAt.clear(); // a large VLAN's hosts
      refusedAt.set(remote, Date.now());
      log.warn({ remote, vlan: refusal.vlan }, `HTTP request refused: ${refusal.reason}`);
    }
    return refusal.reason;
  };
  return { refuse, refuses: (remote) => check(remote) !== undefined };
}
