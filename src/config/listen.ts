/**
 * The HTTP endpoints' address (`http.listen`, `run --listen`, `status --listen`): what is taken, and why anything else
 * is refused. One reading for all of them, so that the file and the flags never differ. Pure.
 */
import { isIPv6 } from 'node:net';
import { parseAddress } from '../net/ipv4.js';
import { shown } from './problems.js';

export const DEFAULT_PORT = 10123;
export const DEFAULT_LISTEN = `0.0.0.0:${DEFAULT_PORT}`;

/** What is taken, as every refusal of a form lists it. */
export const LISTEN_FORMS = 'accepted: PORT or :PORT (every IPv4 address, as 0.0.0.0:PORT), HOST:PORT with an IPv4 address or a name '
  + '(127.0.0.1:PORT or localhost:PORT: this machine only), or [IPv6]:PORT ([::]:PORT: every address)';

/** A name the resolver may look up: letters, digits, "_", "-" and "." (Docker's container names hold "_"). */
const HOST_NAME = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;

type ListenReading = { ok: true; host: string; port: number } | { ok: false; why: string };

/**
 * An address to listen on: PORT, :PORT, HOST:PORT or [IPv6]:PORT (port 0: one the kernel picks, as tests use). The
 * host of `PORT`, `:PORT` and `0:PORT` is every IPv4 address, 0.0.0.0 (`0` is how the resolver reads 0.0.0.0, and
 * what `ssh -L 0:…` and the like mean by it). Refused, with why (a sentence to follow the value): a form with no
 * such meaning, a port past 65535, and a host that no start could listen on (a name with other characters, `*`;
 * digits and dots that are no IPv4 address, which the resolver would fail, or read as another address: 999.1.1.1,
 * 192.168.010.1 in octal, 10123 as one 32-bit number).
 */
function readListen(listen: string): ListenReading {
  const m = /^(?:(?:\[([^\]]*)\]|([^:[\]]*)):)?(\d+)$/.exec(listen);
  if (!m) {
    const note = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(listen) ? ' (an address, not a URL: no scheme, no path)'
      : !listen.includes('[') && (listen.match(/:/g) ?? []).length > 1 ? ' (an IPv6 address is written in brackets: [::1]:PORT)' : '';
    return { ok: false, why: `is not an address to listen on${note}; ${LISTEN_FORMS}` };
  }
  const port = Number(m[3]);
  if (m[3]!.length > 5 || port > 65535) return { ok: false, why: `: ${m[3]!.length > 5 ? `${m[3]!.slice(0, 5)}…` : port} is not a port (the highest is 65535)` };
  if (m[1] !== undefined) {
    // An IPv6 address as node reads one, a zone after "%" allowed (fe80::1%eth0): not any colons and hex digits ([:]).
    return isIPv6(m[1]) ? { ok: true, host: m[1], port } : { ok: false, why: `: [${shown(m[1])}] is not an IPv6 address; ${LISTEN_FORMS}` };
  }
  const host = m[2] ?? '';
  if (host === '' || host === '0') return { ok: true, host: '0.0.0.0', port };
  if (/^[\d.]+$/.test(host)) {
    if (parseAddress(host) !== undefined) return { ok: true, host, port };
    const octal = /(^|\.)0\d/.test(host) ? ' (a number with a leading zero is octal to the resolver; write it without the zero)' : '';
    return { ok: false, why: `: ${shown(host)} is not an IPv4 address${octal}` };
  }
  if (!HOST_NAME.test(host)) return { ok: false, why: `: ${shown(host)} is not an IPv4 address or a host name; ${LISTEN_FORMS}` };
  return { ok: true, host, port };
}

/** The host and port to listen on, or undefined where readListen refuses the text. */
export function parseListenAddress(listen: string): { host: string; port: number } | undefined {
  const read = readListen(listen);
  return read.ok ? { host: read.host, port: read.port } : undefined;
}

/**
 * Why the text is no address to listen on, after the value as the message shows it (`"*:9100"` in a config
 * problem, `--listen *:9100` for a flag), or undefined where it is one.
 */
export function listenProblem(listen: string, value: string): string | undefined {
  const read = readListen(listen);
  return read.ok ? undefined : `${value}${read.why.startsWith(':') ? '' : ' '}${read.why}`;
}

export function parseListen(listen: string): { host: string; port: number } {
  const read = readListen(listen);
  if (!read.ok) throw new Error(listenProblem(listen, `--listen ${shown(listen)}`));
  return { host: read.host, port: read.port };
}

/**
 * http.listen as the file has it: text, or a port written as a number (`listen: 9100` is a YAML integer). Anything
 * else is the schema's to report.
 */
export function listenText(raw: unknown): string | undefined {
  return typeof raw === 'string' ? raw : typeof raw === 'number' && Number.isSafeInteger(raw) && raw >= 0 ? String(raw) : undefined;
}

/** Loopback only: nothing arriving on another NIC (a port forward's DNAT, say) reaches it. */
export const isLoopbackHost = (host: string): boolean => /^127\./.test(host) || host === 'localhost' || host === '::1';
