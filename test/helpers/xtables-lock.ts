/** The xtables lock (iptables-legacy's), held by a process of the test's own, on a lock file of the test's own. */
import { execa } from 'execa';
import { waitFor } from './supervisor.js';

/**
 * `flock FILE sleep N` holding a lock file of this test's own: iptables reads its lock's path from
 * XTABLES_LOCKFILE, so the machine's /run/xtables.lock is never held. Resolves once the lock is taken; `release`
 * frees it at once.
 */
export async function holdXtablesLock(file: string, seconds: number): Promise<{ release: () => Promise<void> }> {
  // Its own process group: `sleep` inherits the locked descriptor, so releasing means killing both.
  const holder = execa('flock', [file, 'sleep', String(seconds)], { reject: false, detached: true });
  const release = async () => {
    try {
      process.kill(-holder.pid!, 'SIGKILL');
    } catch {
      // already gone (the sleep ended)
    }
    await holder;
  };
  try {
    await waitFor('the lock to be held', async () => {
      const probe = await execa('flock', ['--nonblock', file, 'true'], { reject: false });
      return probe.exitCode !== 0 ? true : undefined;
    }, 3000);
  } catch (error) {
    await release();
    throw error;
  }
  return { release };
}
