/**
 * The lab's traffic agent: a tiny node script (node built-ins only) that runs inside a namespace as
 * `ip netns exec NS node -e AGENT_SCRIPT …`. Passing the text with `-e` means no file path to find, so it works
 * the same from tsx and from a compiled dist/.
 *
 *   serve [ttl=SECONDS] tcp/ADDR:PORT udp/ADDR:PORT …   prints "ready" once every socket is bound; answers each
 *       TCP connection or UDP datagram with "peer <source it saw> local <address:port it was reached on>" and
 *       closes. Exits on SIGTERM/SIGINT, when stdin (if a pipe) closes, and after ttl seconds as a safety net.
 *   connect tcp|udp HOST PORT TIMEOUT_MS [LOCAL_ADDRESS]   prints the server's reply and exits 0; prints
 *       "timeout" or "error CODE" and exits 1.
 *
 * The script is CommonJS (what `node -e` runs) and contains no backtick or "${" so it can live in this constant.
 */
export const AGENT_SCRIPT = String.raw`'use strict';
const net = require('node:net');
const dgram = require('node:dgram');
const fs = require('node:fs');
const say = (line) => process.stdout.write(line + '\n');
const v4 = (a) => String(a).replace(/^::ffff:/, '');
const reply = (peer, local) => 'peer ' + v4(peer) + ' local ' + local + '\n';

function serve(specs) {
  let ttl = 120;
  let pending = 0;
  const closers = [];
  const stop = (code) => { for (const close of closers) { try { close(); } catch (e) {} } process.exit(code); };
  const fail = (spec, e) => { say('error ' + spec + ' ' + (e.code || e.message)); stop(1); };
  const ready = () => { if (--pending === 0) say('ready'); };
  for (const spec of specs) {
    if (spec.startsWith('ttl=')) { ttl = Number(spec.slice(4)); continue; }
    const m = /^(tcp|udp)\/([0-9.]+):(\d+)$/.exec(spec);
    if (!m) { say('error bad spec ' + spec); process.exit(2); }
    const proto = m[1], host = m[2], port = Number(m[3]);
    pending++;
    if (proto === 'tcp') {
      const server = net.createServer((s) => {
        s.on('error', () => {});
        s.end(reply(s.remoteAddress, v4(s.localAddress) + ':' + s.localPort));
      });
      server.on('error', (e) => fail(spec, e));
      server.listen({ host, port }, ready);
      closers.push(() => server.close());
    } else {
      const socket = dgram.createSocket('udp4');
      socket.on('error', (e) => fail(spec, e));
      socket.on('message', (_m, r) => socket.send(reply(r.address, host + ':' + port), r.port, r.address));
      socket.bind(port, host, ready);
      closers.push(() => socket.close());
    }
  }
  if (pending === 0) { say('error nothing to serve'); process.exit(2); }
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));
  setTimeout(() => stop(0), ttl * 1000).unref();
  let pipe = false;
  try { const st = fs.fstatSync(0); pipe = st.isFIFO() || st.isSocket(); } catch (e) {}
  if (pipe) {
    process.stdin.on('end', () => stop(0));
    process.stdin.on('error', () => stop(0));
    process.stdin.resume();
  }
}

function connect(proto, host, port, timeoutMs, local) {
  setTimeout(() => { say('timeout'); process.exit(1); }, Number(timeoutMs));
  const failed = (e) => { say('error ' + (e.code || e.message)); process.exit(1); };
  if (proto === 'tcp') {
    const options = { host, port: Number(port) };
    if (local) options.localAddress = local;
    const s = net.connect(options);
    let data = '';
    s.setEncoding('utf8');
    s.on('data', (d) => { data += d; });
    s.on('end', () => { if (data) { process.stdout.write(data); process.exit(0); } say('error closed without a reply'); process.exit(1); });
    s.on('error', failed);
  } else {
    const s = dgram.createSocket('udp4');
    s.on('error', failed);
    s.on('message', (m) => { process.stdout.write(String(m)); process.exit(0); });
    const send = () => s.send('probe\n', Number(port), host);
    s.bind(local ? { address: local, port: 0 } : { port: 0 }, () => { send(); setInterval(send, 400).unref(); });
  }
}

const [mode, ...args] = process.argv.slice(1);
if (mode === 'serve') serve(args);
else if (mode === 'connect') connect(args[0], args[1], args[2], args[3] || 1500, args[4]);
else { say('error usage: serve SPEC... | connect PROTO HOST PORT [TIMEOUT_MS] [LOCAL]'); process.exit(2); }
`;

export type Proto = 'tcp' | 'udp';

export interface AgentSocket {
  readonly proto: Proto;
  /** The address to bind; 0.0.0.0 for every address of the namespace. */
  readonly address: string;
  readonly port: number;
}

/** argv for a serving agent (run it inside a namespace with `inNamespace(runner, ns).start(…)`). */
export function agentServeArgv(sockets: readonly AgentSocket[], ttlSeconds: number, node = process.execPath): string[] {
  return [node, '-e', AGENT_SCRIPT, 'serve', `ttl=${Math.ceil(ttlSeconds)}`, ...sockets.map((s) => `${s.proto}/${s.address}:${s.port}`)];
}

/** argv for one connection probe. */
export function agentConnectArgv(proto: Proto, host: string, port: number, timeoutMs: number, localAddress?: string, node = process.execPath): string[] {
  return [node, '-e', AGENT_SCRIPT, 'connect', proto, host, String(port), String(timeoutMs), ...(localAddress ? [localAddress] : [])];
}

export interface AgentReply {
  /** The source address the server saw (after any NAT). */
  readonly peer: string;
  /** The address:port the server was reached on (after any DNAT). */
  readonly local: string;
}

export function parseAgentReply(text: string): AgentReply | undefined {
  const m = /^peer (\S+) local (\S+)$/m.exec(text);
  return m ? { peer: m[1]!, local: m[2]! } : undefined;
}
