/** The signals of `vlan-gateway run`: SIGTERM and SIGINT stop it, SIGHUP reloads its config. */

/**
 * What the launcher held while it loaded the CLI bundle. A global, under a registered symbol: the launcher
 * (dist/vlan-gateway.mjs) and the bundle (dist/cli.cjs) are built apart, each with its own copy of this module.
 */
const EARLY = Symbol.for('vlan-gateway.signals-held-while-loading');

interface EarlyHold {
  stop: NodeJS.Signals | undefined;
  hup: boolean;
  release(): void;
}

const early = () => globalThis as { [EARLY]?: EarlyHold };

/**
 * The launcher's first act: SIGTERM, SIGINT and SIGHUP are held while it loads the bundle, which takes a few hundred
 * milliseconds on a busy machine; until `run` installs its own handlers, the default action of either killed the
 * process (a SIGHUP sent as a restarted gateway starts: exit 129 instead of a reload). `run` takes them over
 * (holdSignals); every other command gets the default action of a held signal as soon as it knows it is not `run`
 * (releaseHeldSignals).
 */
export function holdSignalsWhileLoading(): void {
  if (early()[EARLY]) return;
  const onStop = (signal: NodeJS.Signals) => (hold.stop ??= signal);
  const onHup = () => (hold.hup = true);
  const hold: EarlyHold = {
    stop: undefined,
    hup: false,
    release: () => {
      process.off('SIGTERM', onStop);
      process.off('SIGINT', onStop);
      process.off('SIGHUP', onHup);
      delete early()[EARLY];
    },
  };
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onHup);
  early()[EARLY] = hold;
}

/** The launcher's hold, ended: what it held, or undefined when nothing holds (run from source, or taken already). */
function takeHeldWhileLoading(): { stop: NodeJS.Signals | undefined; hup: boolean } | undefined {
  const hold = early()[EARLY];
  if (!hold) return undefined;
  hold.release();
  return { stop: hold.stop, hup: hold.hup };
}

/**
 * A command other than `run`: the launcher's hold ends, and a signal it held gets its default action now, as it
 * would have had without the hold (a Ctrl-C while `plan` loads still ends it). A signal that arrived while the
 * bundle loaded reaches its listener only in a poll phase of the event loop, which may not come before the next
 * check phase (setImmediate) but comes before the one after: released before that, it would be lost, and the
 * command would run on.
 */
export async function releaseHeldSignals(): Promise<void> {
  if (!early()[EARLY]) return;
  for (let i = 0; i < 2; i++) await new Promise<void>((resolve) => setImmediate(resolve));
  const held = takeHeldWhileLoading();
  const signal = held?.stop ?? (held?.hup ? 'SIGHUP' : undefined);
  if (signal) process.kill(process.pid, signal);
}

/**
 * Signals that arrive before the supervisor's own handlers are installed, held instead of killing the process:
 * from here on, and those the launcher held while it loaded the bundle.
 */
export function holdSignals() {
  const held = {
    stop: undefined as NodeJS.Signals | undefined,
    hup: false,
    releaseHup: () => process.off('SIGHUP', onHup),
    release: () => {
      process.off('SIGTERM', onStop);
      process.off('SIGINT', onStop);
      process.off('SIGHUP', onHup);
    },
  };
  const onStop = (signal: NodeJS.Signals) => (held.stop ??= signal);
  const onHup = () => (held.hup = true);
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onHup);
  // Taken over once ours are installed: no moment without a handler.
  const loading = takeHeldWhileLoading();
  if (loading?.stop) held.stop ??= loading.stop;
  if (loading?.hup) held.hup = true;
  return held;
}

export type HeldSignals = ReturnType<typeof holdSignals>;

/** Calls `stop` on SIGTERM and SIGINT until the function it returns is called. */
export function onStopSignals(stop: (signal: NodeJS.Signals) => void): () => void {
  // `on`, not `once`: execa's signal-exit re-raises a signal when it finds itself the only listener left, which
  // a `once` listener removed before running would let happen. stop() is idempotent.
  const onSignal = (signal: NodeJS.Signals) => stop(signal);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return () => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  };
}
