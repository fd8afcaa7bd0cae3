/** Waiting in tests of in-process parts (the supervisor and its pieces, with the netfilter fake). */
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Polls `condition` every 2 ms until it holds; fails naming `what` after `timeoutMs`. The default is no bound the
 * test claims, only how long to wait for what must come: a supervisor file runs its 77 tests at once, beside a
 * kernel file, on 2 cores, and CI once took over 5 s for three failing passes 20, 40 and 80 ms apart. A test whose
 * claim is a time checks that time itself.
 */
export async function until(what: string, condition: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}
