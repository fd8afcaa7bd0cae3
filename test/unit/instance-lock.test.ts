/**
 * Asking a lock's holder who it is: the locks are abstract unix sockets, which any local process may bind. One that
 * answers with an endless stream must not hold the asker (an apply, a supervisor starting) nor fill its memory.
 */
import test from 'ava';
import { createServer } from 'node:net';
import { holderPid } from '../../src/cli/instance-lock.js';

test('a holder that streams instead of answering with its pid is read no further: no pid, at once', async (t) => {
  const name = `\0vgw-unit-lock-${process.pid}`;
  let written = 0;
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    const chunk = Buffer.alloc(64 * 1024, '7');
    const pump = () => {
      while (!socket.destroyed && socket.write(chunk)) written += chunk.length;
      if (!socket.destroyed) socket.once('drain', pump);
    };
    pump();
  });
  await new Promise<void>((resolve) => server.listen(name, resolve));
  try {
    // Idle timeouts never fire on a stream: without a cap the ask would go on for as long as the holder writes.
    const answer = await Promise.race([holderPid(name), new Promise<string>((resolve) => setTimeout(() => resolve('still reading after 5 s'), 5000))]);
    t.is(answer, '', 'a holder that does not say its pid');
    t.true(written < 64 * 1024 * 1024, `${written} bytes written before the asker went`);
  } finally {
    server.close();
  }
});

test('a holder that answers with its pid is read: the pid', async (t) => {
  const name = `\0vgw-unit-lock-pid-${process.pid}`;
  const server = createServer((socket) => socket.end('4242\n'));
  await new Promise<void>((resolve) => server.listen(name, resolve));
  try {
    t.is(await holderPid(name), '4242');
    t.is(await holderPid(`\0vgw-unit-lock-none-${process.pid}`), undefined, 'nobody holds it');
  } finally {
    server.close();
  }
});
