/** The HTTP endpoints: an address to listen on, and clients that are on a VLAN. Pure. */
import { asArray, asString, isObject, problemList, type Raw } from './cross-field.js';
import { DEFAULT_LISTEN, parseListenAddress } from './listen.js';
import { quoted, type Problem } from './problems.js';
import type { Zones } from './zones.js';

export function httpProblems(input: Raw, { zoneProblem }: Zones): Problem[] {
  const { problems, add } = problemList();
  const http = isObject(input.http) ? input.http : {};
  const listenText = asString(http.listen);
  if (listenText !== undefined && /^\S+$/.test(listenText) && !parseListenAddress(listenText)) add(['http', 'listen'], `${quoted(listenText)} is not HOST:PORT with a port up to 65535, like ${JSON.stringify(DEFAULT_LISTEN)}`);
  asArray(http.allowFrom).forEach((raw, index) => {
    const ref = asString(raw);
    if (ref === undefined) return;
    const problem = ref === 'uplink' ? 'the uplink side is always allowed; list VLANs, or addresses or prefixes inside them' : zoneProblem(ref, false);
    if (problem) add(['http', 'allowFrom', index], problem);
  });
  return problems;
}
