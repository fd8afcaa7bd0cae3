/**
 * Two models of the forwarding policy side by side: `lab check`'s expectations (src/lab/expect.ts) and the
 * differential test's oracle, written from the README alone (test/helpers/forwarding-oracle.ts). On seeded random
 * configs (test/helpers/random-policy.ts), for every pair of the lab's hosts, ping and every probed port over TCP
 * and UDP, and every port of the gateway a forward may take: the same verdict (a block said the same way: dropped or
 * refused), and for what passes to the uplink the same source. A disagreement is a mistake in one of them (or a README that says two things).
 */
import test from 'ava';
import { parseConfigText } from '../../src/config/load.js';
import { expectedUplinkNat, expectedVerdict } from '../../src/lab/index.js';
import { expectedStop, forwardTaking } from '../../src/lab/expect.js';
import { forwardFor, oracleVerdict, vlanOf, type OracleGateway, type OracleHost, type Proto } from '../helpers/forwarding-oracle.js';
import { prng } from '../helpers/prng.js';
import { FORWARD_PORTS, generateConfig, POOL, PORTS, SNAT_TO } from '../helpers/random-policy.js';

const UPLINK_ADDRESS = '203.0.113.2';
const GATEWAY: OracleGateway = { uplinkAddresses: [UPLINK_ADDRESS, SNAT_TO], ownAddresses: [] };
const HOSTS: OracleHost[] = [{ address: '198.51.100.10', uplinkSide: true }, ...POOL.flatMap((v) => v.hosts.map((address) => ({ address, uplinkSide: false })))];
const WANTS: Array<[Proto, number | undefined]> = [['icmp', undefined], ...PORTS.map((p): [Proto, number] => ['tcp', p]), ...PORTS.map((p): [Proto, number] => ['udp', p])];

test('the oracle and lab check\'s expectations agree on 100 seeded random configs', (t) => {
  const random = prng(4242);
  let compared = 0;
  const differences: string[] = [];
  for (let n = 0; n < 100; n++) {
    const raw = generateConfig(random);
    const config = parseConfigText(JSON.stringify(raw), `random config ${n}`);
    const differ = (what: string) => differences.length < 20 && differences.push(`config ${n} ${JSON.stringify(raw)}: ${what}`);
    for (const from of HOSTS) {
      for (const to of HOSTS) {
        const fromZone = from.uplinkSide ? 'uplink' : vlanOf(raw, from.address)?.name;
        const toZone = to.uplinkSide ? 'uplink' : vlanOf(raw, to.address)?.name;
        // expect.ts has no word for a NIC the config leaves out; inside one zone nothing crosses the gateway.
        if (fromZone === undefined || toZone === undefined || fromZone === toZone) continue;
        for (const [proto, port] of WANTS) {
          compared++;
          const oracle = oracleVerdict(raw, GATEWAY, from, to, proto, port);
          const lab = expectedVerdict(config, fromZone, toZone, proto, port, to.address, from.address);
          const stop = expectedStop(config, fromZone, toZone, proto, port, to.address, from.address);
          const probe = `${from.address} → ${to.address} ${proto}${port === undefined ? '' : `/${port}`}`;
          const oracleStop = { pass: undefined, drop: 'dropped', reject: 'refused', blocked: stop }[oracle.verdict];
          if ((oracle.verdict === 'pass') !== (lab === 'pass')) differ(`${probe}: oracle ${oracle.verdict} (${oracle.why}), expect.ts ${lab}`);
          else if (oracleStop !== stop) differ(`${probe}: oracle ${oracle.verdict} (${oracle.why}), expect.ts ${stop ?? 'pass'}`);
          else if (oracle.verdict === 'pass' && proto !== 'icmp' && toZone === 'uplink') {
            const nat = expectedUplinkNat(config, fromZone);
            const seenAs = nat === 'masquerade' ? UPLINK_ADDRESS : nat === 'snat' ? config.uplink.snatTo : from.address;
            if (seenAs !== oracle.peer) differ(`${probe}: oracle seen as ${oracle.peer}, expect.ts as ${seenAs}`);
          }
        }
      }
    }
    for (const proto of ['tcp', 'udp'] as const) {
      for (const port of [...FORWARD_PORTS, 6004, 6009, 6013]) {
        compared++;
        const oracle = forwardFor(raw, proto, port);
        const lab = forwardTaking(config, proto, port);
        if (oracle?.forward.to !== lab?.to) differ(`${proto}/${port} on the uplink: oracle forwards to ${oracle?.forward.to ?? 'nothing'}, expect.ts to ${lab?.to ?? 'nothing'}`);
      }
    }
  }
  t.deepEqual(differences, []);
  t.true(compared > 100_000, `${compared} probes compared`);
});
