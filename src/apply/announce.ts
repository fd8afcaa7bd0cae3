/** The `arping -U` of each gateway address an apply added, a few at a time, after the apply has returned. */
import type { CommandRunner } from '../exec/runner.js';
import type { Step } from '../plan/types.js';
import { tell, type ApplyObserver } from './observer.js';

/**
 * After a gateway address is added, one unsolicited ARP (`arping -U`) tells the VLAN's hosts where it lives now:
 * a host that tried the gateway before the address existed otherwise waits for its own ARP retry (about 1 s),
 * and one that knew another MAC for it (a replaced container) keeps the stale entry until it expires. Best
 * effort and not awaited: no arping, or no NET_RAW, only means hosts find the gateway by themselves. Once each has
 * gone out, the observer is told (the supervisor then probes for another holder of the address: reconcile/conflicts.ts).
 */
export function announce(runner: CommandRunner, steps: readonly Step[], observer: ApplyObserver): void {
  const queue = steps.filter((s): s is Extract<Step, { kind: 'address-add' }> => s.kind === 'address-add');
  // After the pass has returned, and a few at a time: 100 VLANs must not mean 100 spawns before /readyz.
  const next = (): void => {
    const step = queue.shift();
    if (!step) return;
    const done = () => {
      tell(() => observer.announced?.(step));
      next();
    };
    try {
      const child = runner.start(['arping', '-q', '-U', '-c', '1', '-I', step.nic, step.address], { detached: true });
      child.exited.then(done, done);
    } catch {
      // not startable here: nothing to announce with (what follows the announce goes on)
      done();
    }
  };
  // The first few one per turn of the event loop, as each child's exit starts the next: a spawn holds the thread
  // for a few milliseconds (more on a busy machine), and eight in one go kept a scrape waiting 40-100 ms.
  let started = 0;
  const open = (): void => {
    if (started++ >= ANNOUNCE_CONCURRENCY || queue.length === 0) return;
    next();
    setImmediate(open);
  };
  setImmediate(open);
}

const ANNOUNCE_CONCURRENCY = 8;
