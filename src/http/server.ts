/** /metrics, /healthz, /readyz and /status over node:http. Handlers only read what the supervisor recorded. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseListen } from '../config/listen.js';

export interface Endpoints {
  metrics(): Promise<string>;
  health(): { healthy: boolean; reason?: string };
  ready(): boolean;
  status(): unknown;
  /** Why a client may not use the endpoints (answered 403), or undefined (see http/access.ts). */
  refuse?(remoteAddress: string): string | undefined;
}

/** Far above what Prometheus, health checks and `status` open at once; far below the process's descriptor limit. */
export const MAX_CONNECTIONS = 512;

export class HttpServer {
  private server: Server | undefined;

  constructor(private readonly endpoints: Endpoints) {}

  async start(listen: string): Promise<AddressInfo> {
    const { host, port } = parseListen(listen);
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const send = (code: number, body: string, type = 'text/plain; charset=utf-8') => {
        res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
        res.end(body);
      };
      const refused = this.endpoints.refuse?.(req.socket.remoteAddress ?? '');
      if (refused !== undefined) return send(403, `forbidden: ${refused}\n`);
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
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return server.address() as AddressInfo;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}
