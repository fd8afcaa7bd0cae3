/** The few facts we read from a rule body's text (target, interfaces, addresses). Pure, and hot: regexes, no splits. */
const cache = new Map<string, RegExp>();

/** The token after the first of `flags` in a body; flags are whole tokens. */
export function tokenAfter(body: string, flags: readonly string[]): string | undefined {
  const key = flags.join('|');
  let re = cache.get(key);
  if (!re) {
    re = new RegExp(`(?:^| )(?:${flags.map((f) => f.replace(/[-]/g, '\\-')).join('|')}) (\\S+)`);
    cache.set(key, re);
  }
  return re.exec(body)?.[1];
}

const TARGET = /(?:^| )(?:-j|--jump|-g|--goto) (\S+)/;
const OUT = /(?:^| )(?:-o|--out-interface) (\S+)/;

export const verdictOf = (body: string) => TARGET.exec(body)?.[1];
export const outInterfaceOf = (body: string) => OUT.exec(body)?.[1];
