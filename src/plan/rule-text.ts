/**
 * The few facts we read from a rule body's text (target, interfaces, addresses). Pure, and hot (10,000 rules a
 * plan): indexOf scans, no regexes or splits. A flag is a whole token: at the start or after a space, and
 * followed by a space; the token after the leftmost of the flags is returned, as a regex alternation would.
 */
export function tokenAfter(body: string, flags: readonly string[]): string | undefined {
  let best = -1;
  let bestLength = 0;
  // Inside a quoted string (`--comment "x -j ACCEPT"`) a flag is text, not a flag: only bodies with a quote pay.
  const quoted = body.indexOf('"') === -1 ? undefined : quotedAt(body);
  for (const flag of flags) {
    const needle = spaced(flag);
    let at = body.indexOf(needle);
    while (at > 0 && (body.charCodeAt(at - 1) !== 32 || quoted?.(at))) at = body.indexOf(needle, at + 1);
    if (at !== -1 && (best === -1 || at < best)) {
      best = at;
      bestLength = needle.length;
    }
  }
  if (best === -1) return undefined;
  const start = best + bestLength;
  const end = body.indexOf(' ', start);
  const token = end === -1 ? body.slice(start) : body.slice(start, end);
  return token === '' ? undefined : token;
}

/** Whether a position of `body` is inside a double-quoted string (a backslash escapes the character after it). */
function quotedAt(body: string): (at: number) => boolean {
  const inside: Array<[number, number]> = [];
  let open = -1;
  for (let i = 0; i < body.length; i++) {
    const c = body.charCodeAt(i);
    if (c === 92 /* \\ */) i++;
    else if (c === 34 /* " */) {
      if (open === -1) open = i;
      else {
        inside.push([open, i]);
        open = -1;
      }
    }
  }
  if (open !== -1) inside.push([open, body.length]);
  return (at) => inside.some(([from, to]) => at > from && at < to);
}

const withSpace = new Map<string, string>();
const spaced = (flag: string) => withSpace.get(flag) ?? withSpace.set(flag, `${flag} `).get(flag)!;

const TARGET_FLAGS = ['-j', '--jump', '-g', '--goto'];
const OUT_FLAGS = ['-o', '--out-interface'];
const IN_FLAGS = ['-i', '--in-interface'];

export const verdictOf = (body: string) => tokenAfter(body, TARGET_FLAGS);
export const outInterfaceOf = (body: string) => tokenAfter(body, OUT_FLAGS);
export const inInterfaceOf = (body: string) => tokenAfter(body, IN_FLAGS);
