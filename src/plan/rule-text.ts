/** The few facts we read from a rule body's text (target, interfaces, addresses): token lookups only. Pure. */
export function tokenAfter(body: string, flags: readonly string[]): string | undefined {
  const tokens = body.split(' ');
  const i = tokens.findIndex((t) => flags.includes(t));
  return i >= 0 ? tokens[i + 1] : undefined;
}

export const verdictOf = (body: string) => tokenAfter(body, ['-j', '--jump', '-g', '--goto']);
export const outInterfaceOf = (body: string) => tokenAfter(body, ['-o', '--out-interface']);
