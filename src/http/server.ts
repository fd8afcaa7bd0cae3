/** /metrics, /healthz, /readyz and /status over node:http. Handlers only read what the supervisor recorded. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { parseListen } from '../config/listen.js';

export interface Endpoints {
  metrics(): Promise<string>;
  health(): { healthy: boolean; reason?: string };
  ready(): boolean;
  status(): unknown;
  /** Why a client may not use the endpoints (answered 403), or undefined (see http/access.ts). */
  refuse?(remoteAddress: string): string | undefined;
  /** Whether refuse would refuse the client, without counting or logging it (asked once per connection). */
  refuses?(remoteAddress: string): boolean;
}

/** Far above what Prometheus, health checks and `status` open at once; far below the process's descriptor limit. */
export const MAX_CONNECTIONS = 512;
/**
 * Of those, how many clients the endpoints refuse may hold open at once; another is closed as it connects. A host
 * on a VLAN is refused only once its headers are in, and a slow one (or 512 of them) would otherwise hold every
 * connection for as long as the header timeout lets it, again and again: Prometheus and the health check shut out.
 */
const MAX_REFUSED_CONNECTIONS = 32;
/** How often node:http enforces the timeouts below (its default, 30 s, held a connection up to 40 s, not 10). */
const TIMEOUT_CHECK_MS = 1000;

export class HttpServer {
  private server: Server | undefined;
  /** The next attempt of startWhenThere, and whether stop has ended them. */
  private retry: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly endpoints: Endpoints) {}

  async start(listen: string): Promise<AddressInfo> {
    const { host, port } = parseListen(listen);
    const server = createServer({ connectionsCheckingInterval: TIMEOUT_CHECK_MS }, (req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const send = (code: number, body: string, type = 'text/plain; charset=utf-8') => {
        res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
        res.end(body);
      };
      const refused = this.endpoints.refuse?.(req.socket.remoteAddress ?? '');
      if (refused !== undefined) {
        res.setHeader('connection', 'close'); // one answer per connection: it holds one of the few places refused clients have
        return send(403, `forbidden: ${refused}\n`);
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('allow', 'GET, HEAD');
        return send(405, 'method not allowed\n');
      }
      switch (path) {
        case '/metrics':
          this.endpoints.metrics().then(
            (text) => send(200, text, 'text/plain; version=0.0.4; charset=utf-8'),
            (error: unknown) => send(500, `${String(error)}\n`),
          );
          return;
        case '/healthz': {
          const h = this.endpoints.health();
          return send(h.healthy ? 200 : 503, h.healthy ? 'ok\n' : `unhealthy: ${h.reason}\n`);
        }
        case '/readyz':
          return this.endpoints.ready() ? send(200, 'ready\n') : send(503, 'not ready: the desired state is not applied yet\n');
        case '/status':
          return send(200, `${JSON.stringify(this.endpoints.status(), null, 2)}\n`, 'application/json');
        default:
          return send(404, 'not found; try /metrics, /healthz, /readyz, /status\n');
      }
    });
    server.keepAliveTimeout = 5000;
    // A management port, not a web server: a scrape or a health check sends its few headers at once. Short
    // timeouts and a cap on open connections keep a slow or flooding client (one the access check refuses too:
    // it runs once the headers are in) from holding the process's file descriptors, which the reconciles need.
    server.headersTimeout = 10_000;
    server.requestTimeout = 15_000;
    server.maxConnections = MAX_CONNECTIONS;
    let refusedOpen = 0;
    server.on('connection', (socket: Socket) => {
      if (!this.endpoints.refuses?.(socket.remoteAddress ?? '')) return;
      if (refusedOpen >= MAX_REFUSED_CONNECTIONS) {
        socket.destroy();
        return;
      }
      refusedOpen++;
      socket.once('close', () => refusedOpen--);
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return server.address() as AddressInfo;
  }

  /**
   * start, except that an address no interface has yet (EADDRNOTAVAIL: a VLAN's gateway address, which the gateway
   * adds itself once its NIC is attached) is not an error: it resolves undefined and tries again every `everyMs`
   * until it listens (then `onBound`); stop ends the attempts. A later attempt's other error is passed to `onError`
   * (once per kind) and tried again too; the first attempt's rejects, as start's does.
   */
  async startWhenThere(listen: string, everyMs: number, onBound: (address: AddressInfo) => void, onError: (error: Error) => void): Promise<AddressInfo | undefined> {
    try {
      return await this.start(listen);
    } catch (error) {
      this.server = undefined;
      if ((error as NodeJS.ErrnoException).code !== 'EADDRNOTAVAIL') throw error;
    }
    const told = new Set<string>(['EADDRNOTAVAIL']);
    const attempt = () => {
      this.retry = setTimeout(() => {
        this.retry = undefined;
        this.start(listen).then(
          (address) => (this.stopped ? void this.stop() : onBound(address)),
          (error: NodeJS.ErrnoException) => {
            this.server = undefined;
            if (this.stopped) return;
            const code = error.code ?? error.message;
            if (!told.has(code)) {
              told.add(code);
              onError(error);
            }
            attempt();
          },
        );
      }, everyMs);
    };
    attempt();
    return undefined;
  }

  /** Where it listens now, as `HOST:PORT` (`[IPv6]:PORT`); undefined while it does not (not yet, or stopped). */
  listening(): string | undefined {
    const address = this.server?.listening ? this.server.address() : null;
    return address === null || typeof address === 'string' || address === undefined ? undefined : hostPort(address);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    this.retry = undefined;
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}

/** A bound address as `--listen` writes one: `HOST:PORT`, an IPv6 host in brackets (`[::1]:9100`, not `::1:9100`). */
export const hostPort = (address: AddressInfo): string =>
  (address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`);
