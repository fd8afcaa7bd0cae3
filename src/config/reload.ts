/**
 * Reloads one at a time, the last write winning. A reload reads the file, validates it (with the templates'
 * render check: milliseconds to a second at scale) and hands it over; two reloads side by side could finish in the
 * wrong order, and a write that lands while one runs must not be lost. So a request while a round runs asks for
 * one more round after it, and a round that finds the file changed under it (its text after the round differs
 * from its text before) asks for one more too. Quiet only when a round saw the same text before and after.
 */
export function serialized(round: () => Promise<{ again: boolean }>): () => Promise<void> {
  let running: Promise<void> | undefined;
  let requested = false;
  return () => {
    requested = true;
    running ??= (async () => {
      try {
        while (requested) {
          requested = false;
          if ((await round()).again) requested = true;
        }
      } finally {
        running = undefined;
      }
    })();
    return running;
  };
}
