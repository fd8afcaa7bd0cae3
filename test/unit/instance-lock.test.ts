/**
 * Asking a lock's holder who it is: the locks are abstract unix sockets, which any local process may bind. One that
 * answers with an endless stream must not hold the asker (an apply, a supervisor starting) nor fill its memory.
 */
import test from 'ava';
import { createConnection, createServer } from 'node:net';
import { ASKER_MAX_MS, askHolder, holderPid, listen } from '../../src/cli/instance-lock.js';

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

// A local process that connects to a lock and never closes held a file descriptor of the gateway's for as long as it
// ran (one per connection), and the lock's release, which waits for every connection, held the stop for ever.
test('an asker that reads the answer and never closes is cut off after a short while, and the lock\'s release does not wait for it', async (t) => {
  const name = `\0vgw-unit-lock-linger-${process.pid}`;
  const server = (await listen(name, async () => '4242'))!;
  const asker = createConnection({ path: name, allowHalfOpen: true }); // reads the answer, never ends its side
  let answer = '';
  asker.on('data', (chunk) => (answer += String(chunk)));
  asker.on('error', () => undefined);
  await new Promise((resolve) => asker.once('connect', resolve));
  const connectedAt = performance.now();
  const open = () => new Promise<number>((resolve, reject) => server.getConnections((error, count) => (error ? reject(error) : resolve(count))));
  try {
    let cutAt: number | undefined;
    while (performance.now() - connectedAt < ASKER_MAX_MS + 3000) {
      if (answer !== '' && await open() === 0) {
        cutAt = performance.now();
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    t.is(answer, '4242\n');
    t.not(cutAt, undefined, `the asker's connection still held ${(ASKER_MAX_MS + 3000) / 1000} s on`);
    t.true(cutAt! - connectedAt >= ASKER_MAX_MS - 50, 'not before the asker had its time to read');
    const released = await Promise.race([new Promise<boolean>((resolve) => server.close(() => resolve(true))), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 1000))]);
    t.true(released, 'the release ended');
  } finally {
    asker.destroy();
    server.close();
  }
});

// A supervisor adds where its HTTP endpoints listen on a second line (`status` asks it); a holder that answers with its
// pid alone (one of an earlier version, or whose endpoints do not listen yet) is read as before. Anyone may bind the
// name: a second line that is no address is not taken.
test('a holder\'s second line is where its endpoints listen, taken only when it is an address', async (t) => {
  const answers: Array<[string, unknown]> = [
    ['4242\n127.0.0.1:9999\n', { pid: '4242', http: '127.0.0.1:9999' }],
    ['4242\n[fe80::1%vgw0]:9100\n', { pid: '4242', http: '[fe80::1%vgw0]:9100' }],
    ['4242\n', { pid: '4242' }],
    ['4242\nhttp://evil.example/\n', { pid: '4242' }],
    ['4242\n127.0.0.1:9999; rm -rf /\n', { pid: '4242' }],
    ['nope\n127.0.0.1:9999\n', { pid: '' }],
  ];
  for (const [i, [text, expected]] of answers.entries()) {
    const name = `\0vgw-unit-lock-http-${process.pid}-${i}`;
    const server = createServer((socket) => socket.end(text));
    await new Promise<void>((resolve) => server.listen(name, resolve));
    try {
      t.deepEqual(await askHolder(name), expected, JSON.stringify(text));
      t.is(await holderPid(name), (expected as { pid: string }).pid, 'the pid, as before');
    } finally {
      server.close();
    }
  }
});
