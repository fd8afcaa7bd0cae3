/** The signals of `vlan-gateway run`: SIGTERM and SIGINT stop it, SIGHUP reloads its config. */

/** Signals that arrive before the supervisor's own handlers are installed, held instead of killing the process. */
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
