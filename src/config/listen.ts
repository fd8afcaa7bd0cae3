/** The HTTP endpoints' address (`http.listen`, `--listen`): HOST:PORT, IPv6 hosts in brackets. Pure. */
export const DEFAULT_PORT = 10123;
export const DEFAULT_LISTEN = `0.0.0.0:${DEFAULT_PORT}`;

/**
 * HOST:PORT (an empty host is every address; port 0 is one the kernel picks, as tests use), or undefined when it is
 * not one or the port is out of range.
 */
export function parseListenAddress(listen: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : -1;
  return m && port <= 65535 ? { host: m[1] ?? (m[2] || '0.0.0.0'), port } : undefined;
}

export function parseListen(listen: string): { host: string; port: number } {
  const parsed = parseListenAddress(listen);
  if (!parsed) throw new Error(`--listen ${listen}: expected HOST:PORT with a port up to 65535, e.g. ${DEFAULT_LISTEN}`);
  return parsed;
}

/** Loopback only: nothing arriving on another NIC (a port forward's DNAT, say) reaches it. */
export const isLoopbackHost = (host: string): boolean => /^127\./.test(host) || host === 'localhost' || host === '::1';
