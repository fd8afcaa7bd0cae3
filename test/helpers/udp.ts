/**
 * UDP datagrams between a lab's namespaces, from fixed ports (as a WireGuard or SIP peer sends), for the tests of
 * the conntrack clears: one datagram sent, or a listener that hands a test what it heard (and, `echo`, answers it,
 * which makes the flow an established one); or a responder that answers each datagram with the address it came from,
 * and a datagram sent that waits for its answer (which tells a flow forwarded, NATed or not, from one dropped).
 */
import { execa } from 'execa';
import type { Child, CommandRunner } from '../../src/exec/runner.js';
import { waitFor } from './supervisor.js';

const UDP_SCRIPT = String.raw`const [mode, address, port, host, hostPort, text] = process.argv.slice(1);
const s = require('node:dgram').createSocket('udp4');
s.bind(Number(port), address, () => {
  if (mode === 'send') s.send(text, Number(hostPort), host, () => setTimeout(() => process.exit(0), 300));
  else if (mode === 'ask') {
    s.on('message', (m) => { console.log(String(m)); process.exit(0); });
    s.send(text, Number(hostPort), host);
    setTimeout(() => { console.log('none'); process.exit(0); }, 700);
  } else if (mode === 'respond') {
    s.on('message', (m, from) => s.send(from.address + ' ' + String(m), from.port, from.address));
    console.log('ready');
  } else {
    s.on('message', (m, from) => { console.log(String(m)); if (mode === 'echo') s.send(m, from.port, from.address); });
    console.log('ready');
  }
});`;

export interface Endpoint {
  readonly namespace: string;
  readonly address: string;
  readonly port: number;
}

/** One datagram `text` from `from` to `to` (its address and port; its namespace is not used). */
export async function sendUdp(runner: CommandRunner, from: Endpoint, to: Omit<Endpoint, 'namespace'>, text: string): Promise<void> {
  await runner.run(['ip', 'netns', 'exec', from.namespace, process.execPath, '-e', UDP_SCRIPT, 'send', from.address, String(from.port),
    to.address, String(to.port), text]);
}

/** Listens at `at` while `body` runs, handing it what arrived so far (`echo`: and answers each datagram). */
export async function listeningUdp(at: Endpoint, body: (received: string[]) => Promise<void>, mode: 'listen' | 'echo' = 'listen'): Promise<void> {
  const listener = execa('ip', ['netns', 'exec', at.namespace, process.execPath, '-e', UDP_SCRIPT, mode, at.address, String(at.port)],
    { reject: false, timeout: 60_000 });
  const received: string[] = [];
  try {
    await new Promise<void>((resolve) => listener.stdout!.on('data', (chunk: Buffer) => {
      for (const line of String(chunk).split('\n').filter(Boolean)) {
        if (line === 'ready') resolve();
        else received.push(line);
      }
    }));
    await body(received);
  } finally {
    listener.kill('SIGTERM');
    await listener;
  }
}

/**
 * Resolves once `received` (a listeningUdp's) holds a datagram, or after 3 s without one, for the assertion after it
 * to say what was heard. The listener prints a datagram as it comes: a fixed wait stood here, which a busy machine
 * could outlast (the datagram heard, not yet read from the listener's output).
 */
export async function heard(received: readonly string[]): Promise<void> {
  await waitFor('a datagram heard', async () => (received.length > 0 ? true : undefined), 3000, 10).catch(() => undefined);
}

/** A responder at `at` (it prints "ready" once bound): answers each datagram with "SOURCE-ADDRESS TEXT". */
export function udpResponder(runner: CommandRunner, at: Endpoint): Child {
  return runner.start(['ip', 'netns', 'exec', at.namespace, process.execPath, '-e', UDP_SCRIPT, 'respond', at.address, String(at.port)]);
}

/** `text` from `from` to `to`: the answer (a responder's "SOURCE-ADDRESS TEXT"), or "none" when none came in 700 ms. */
export async function askUdp(runner: CommandRunner, from: Endpoint, to: Omit<Endpoint, 'namespace'>, text: string): Promise<string> {
  const result = await runner.run(['ip', 'netns', 'exec', from.namespace, process.execPath, '-e', UDP_SCRIPT, 'ask', from.address, String(from.port),
    to.address, String(to.port), text]);
  return result.stdout.trim();
}
