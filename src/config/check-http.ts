/** The HTTP endpoints: an address to listen on, and clients that are on a VLAN. Pure. */
import { asArray, asString, isObject, problemList, type Raw } from './cross-field.js';
import { parseAddress } from '../net/ipv4.js';
import { DEFAULT_LISTEN, parseListenAddress } from './listen.js';
import { quoted, type Problem } from './problems.js';
import type { Zones } from './zones.js';

export function httpProblems(input: Raw, { zoneProblem }: Zones): Problem[] {
  const { problems, add } = problemList();
  const http = isObject(input.http) ? input.http : {};
  const listenText = asString(http.listen);
  if (listenText !== undefined && /^\S+$/.test(listenText) && !parseListenAddress(listenText)) add(['http', 'listen'], `${quoted(listenText)} is not HOST:PORT with a port up to 65535, like ${JSON.stringify(DEFAULT_LISTEN)}`);
  // A host of digits and dots is an IPv4 address or nothing: the endpoints' start looks the host up as a name, and
  // 999.1.1.1 validated, then failed every start ("not an address"); 192.168.010.1 (inet_aton's octal) or 10123 (a
  // 32-bit number) would listen on another address than the one written.
  const host = listenText === undefined ? undefined : parseListenAddress(listenText)?.host;
  if (host !== undefined && /^[\d.]+$/.test(host) && parseAddress(host) === undefined) {
    const octal = /(^|\.)0\d/.test(host) ? ' (a number with a leading zero is octal to the resolver; write it without the zero)' : '';
    add(['http', 'listen'], `${quoted(listenText!)}: ${host} is not an IPv4 address${octal}`);
  }
  asArray(http.allowFrom).forEach((raw, index) => {
    const ref = asString(raw);
    if (ref === undefined) return;
    const problem = ref === 'uplink' ? 'the uplink side is always allowed; list VLANs, or addresses or prefixes inside them' : zoneProblem(ref, false);
    if (problem) add(['http', 'allowFrom', index], problem);
  });
  return problems;
}
