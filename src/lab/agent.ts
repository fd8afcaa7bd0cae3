/**
 * The lab's traffic agent: a tiny node script (node built-ins only) that runs inside a namespace as
 * `ip netns exec NS node -e AGENT_SCRIPT …`. Passing the text with `-e` means no file path to find, so it works
 * the same from tsx and from a compiled dist/.
 *
 *   serve [ttl=SECONDS] tcp/ADDR:PORT udp/ADDR:PORT …   prints "ready" once every socket is bound; answers each
 *       TCP connection or UDP datagram with "peer <source it saw> local <address:port it was reached on>" and
 *       closes. Exits on SIGTERM/SIGINT, when stdin (if a pipe) closes, and after ttl seconds as a safety net.
 *   connect tcp|udp HOST PORT TIMEOUT_MS [LOCAL_ADDRESS]   prints the server's reply and exits 0; prints
 *       "timeout" or "error CODE" and exits 1. UDP uses a connected socket, so an ICMP refusal (port unreachable)
 *       is seen as "error ECONNREFUSED" rather than as a timeout.
 *   batch TIMEOUT_MS LIMIT PROTO/HOST:PORT[/LOCAL] …   the same probes, at most LIMIT in flight at once, from one
 *       process (one node start for a namespace's probes, not one each); prints "<index> <what connect prints>"
 *       per probe as it ends, then exits 0.
 *
 * The script is CommonJS (what `node -e` runs) and contains no backtick or "${" so it can live in this constant.
 */
const AGENT_SCRIPT = String.raw`'use strict';
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

// done(text, ok) is called exactly once: with the server's reply, "timeout" or "error CODE".
function probe(proto, host, port, timeoutMs, local, done) {
  let finished = false;
  const closers = [];
  const finish = (text, ok) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    for (const close of closers) { try { close(); } catch (e) {} }
    done(text, ok);
  };
  const timer = setTimeout(() => finish('timeout', false), Number(timeoutMs));
  const failed = (e) => finish('error ' + (e.code || e.message), false);
  if (proto === 'tcp') {
    const options = { host, port: Number(port) };
    if (local) options.localAddress = local;
    const s = net.connect(options);
    closers.push(() => s.destroy());
    let data = '';
    s.setEncoding('utf8');
    s.on('data', (d) => { data += d; });
    s.on('end', () => (data ? finish(data.trim(), true) : finish('error closed without a reply', false)));
    s.on('error', failed);
  } else {
    const s = dgram.createSocket('udp4');
    closers.push(() => s.close());
    s.on('error', failed);
    s.on('message', (m) => finish(String(m).trim(), true));
    const send = () => s.send('probe\n', (e) => { if (e) failed(e); });
    s.bind(local ? { address: local, port: 0 } : { port: 0 }, () => {
      s.connect(Number(port), host, (e) => {
        if (e) return failed(e);
        send();
        const again = setInterval(send, 400);
        closers.unshift(() => clearInterval(again));
      });
    });
  }
}

function connect(proto, host, port, timeoutMs, local) {
  probe(proto, host, port, timeoutMs, local, (text, ok) => { say(text); process.exit(ok ? 0 : 1); });
}

function batch(timeoutMs, limit, specs) {
  let next = 0;
  let running = 0;
  const start = () => {
    while (running < limit && next < specs.length) {
      const index = next++;
      const m = /^(tcp|udp)\/([0-9.]+):(\d+)(?:\/([0-9.]+))?$/.exec(specs[index]);
      if (!m) { say(index + ' error bad spec ' + specs[index]); continue; }
      running++;
      probe(m[1], m[2], m[3], timeoutMs, m[4], (text) => {
        say(index + ' ' + text.split('\n')[0]);
        running--;
        if (next >= specs.length && running === 0) process.exit(0);
        start();
      });
    }
    if (next >= specs.length && running === 0) process.exit(0);
  };
  start();
}

const [mode, ...args] = process.argv.slice(1);
if (mode === 'serve') serve(args);
else if (mode === 'connect') connect(args[0], args[1], args[2], args[3] || 1500, args[4]);
else if (mode === 'batch') batch(Number(args[0]) || 1500, Math.max(1, Number(args[1]) || 1), args.slice(2));
else { say('error usage: serve SPEC... | connect PROTO HOST PORT [TIMEOUT_MS] [LOCAL] | batch TIMEOUT_MS LIMIT SPEC...'); process.exit(2); }
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

export interface AgentProbe {
  readonly proto: Proto;
  readonly host: string;
  readonly port: number;
  /** Source address to bind. */
  readonly localAddress?: string;
}

/** argv for a batch of connection probes from one namespace, at most `limit` in flight. */
export function agentBatchArgv(probes: readonly AgentProbe[], timeoutMs: number, limit: number, node = process.execPath): string[] {
  const spec = (p: AgentProbe) => `${p.proto}/${p.host}:${p.port}${p.localAddress ? `/${p.localAddress}` : ''}`;
  return [node, '-e', AGENT_SCRIPT, 'batch', String(timeoutMs), String(limit), ...probes.map(spec)];
}

/** The batch's output: what each probe printed, by index (a probe that printed nothing is absent). */
export function parseBatchOutput(stdout: string): Map<number, string> {
  const results = new Map<number, string>();
  for (const line of stdout.split('\n')) {
    const m = /^(\d+) (.*)$/.exec(line);
    if (m) results.set(Number(m[1]), m[2]!.trim());
  }
  return results;
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
