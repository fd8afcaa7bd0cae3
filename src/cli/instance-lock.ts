/**
 * One supervisor per network namespace. Two `run`s on one namespace each repair the other's "drift": with
 * different configs they rewrite each other's rules for ever, with the same one they race. The lock is a listening
 * socket in Linux's abstract socket namespace named after the target namespace's inode: the kernel frees it when
 * the process dies, however it dies, so there is no stale lock file to clean up. It answers with its holder's pid.
 *
 * Abstract sockets belong to the network namespace of the process that binds them: a supervisor inside the
 * container and one outside with --netns would not see each other; two of either kind do.
 */
import { stat } from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import { FailureError } from './errors.js';

/** The inode of the namespace `run` manages: the named one (ip netns), else this process's own. */
async function namespaceInode(netns: string | undefined): Promise<string> {
  const path = netns === undefined ? '/proc/self/ns/net' : `/run/netns/${netns}`;
  const s = await stat(path);
  return `${s.dev}-${s.ino}`;
}

/** Asks the holder of a lock for its pid ('' if it does not say within a second). */
function holderPid(name: string): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const socket = createConnection({ path: name });
    const done = () => {
      socket.destroy();
      resolve(/^\d+$/.test(text.trim()) ? text.trim() : '');
    };
    socket.setTimeout(1000, done);
    socket.on('data', (chunk) => (text += String(chunk)));
    socket.on('end', done);
    socket.on('error', done);
  });
}

export class InstanceLock {
  private constructor(private readonly server: Server) {}

  /** Takes the namespace's lock, or throws FailureError naming the pid of the supervisor that holds it. */
  static async take(netns: string | undefined): Promise<InstanceLock> {
    const name = `\0vlan-gateway-run-${await namespaceInode(netns)}`;
    const server = createServer((socket) => socket.end(`${process.pid}\n`));
    server.unref(); // the lock does not keep the process alive
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ path: name }, () => resolve());
      });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
      const pid = await holderPid(name);
      const where = netns === undefined ? 'this network namespace' : `network namespace ${netns}`;
      throw new FailureError(`another vlan-gateway run${pid ? ` (pid ${pid})` : ''} already manages ${where}: two would undo each other's changes; stop it first`);
    }
    return new InstanceLock(server);
  }

  release(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
