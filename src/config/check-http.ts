/** The HTTP endpoints: an address to listen on, and clients that are on a VLAN. Pure. */
import { asArray, asString, isObject, problemList, type Raw } from './cross-field.js';
import { listenProblem, listenText } from './listen.js';
import { quoted, type Problem } from './problems.js';
import type { Zones } from './zones.js';

export function httpProblems(input: Raw, { zoneProblem }: Zones): Problem[] {
  const { problems, add } = problemList();
  const http = isObject(input.http) ? input.http : {};
  // One reading with run --listen's (listen.ts): a host of digits and dots is an IPv4 address or nothing (the
  // endpoints' start looks the host up as a name: 999.1.1.1 validated, then failed every start), `*` or another
  // character no name has is refused, and PORT, :PORT and 0:PORT are every IPv4 address.
  const text = listenText(http.listen);
  const problem = text !== undefined && /^\S+$/.test(text) ? listenProblem(text, quoted(text)) : undefined;
  if (problem) add(['http', 'listen'], problem);
  asArray(http.allowFrom).forEach((raw, index) => {
    const ref = asString(raw);
    if (ref === undefined) return;
    const problem = ref === 'uplink' ? 'the uplink side is always allowed; list VLANs, or addresses or prefixes inside them' : zoneProblem(ref, false);
    if (problem) add(['http', 'allowFrom', index], problem);
  });
  return problems;
}
