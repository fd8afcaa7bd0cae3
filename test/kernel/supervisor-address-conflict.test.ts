/**
 * Another device on a VLAN holds the VLAN's gateway address (a physical router left on the VLAN, a mistyped config):
 * the office client of the lab holds 192.168.10.1 before the gateway starts. Linux does no IPv4 duplicate-address
 * detection, so the gateway adds it silently and both answer ARP. `vlan-gateway run` keeps the address (the config
 * says to take it) and reports the conflict: a warn log line naming the VLAN, NIC, address and the other MAC, a
 * warning in /status and `vlan-gateway status`, and `vlan_gateway_address_conflict` 1 with that MAC; the lab VLAN
 * reports none. Once the client lets the address go, the next probes (at the drift checks, here every second) clear
 * it. A supervisor restarted on a namespace that kept its addresses (none added by its first pass) probes them too.
 */
import test from 'ava';
import { execa } from 'execa';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { addressesOf, exampleLab, GatewayProcess, runner, series, waitFor, type LogLine } from '../helpers/supervisor.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const setup = exampleLab(test, 'a', 'vgw-conflict-');
const { office, lab, router } = setup;

let gateway: GatewayProcess | undefined;
let otherMac = '';

const GATEWAY = '192.168.10.1';

/** The other device: the office client, holding (or letting go) the office VLAN's gateway address. */
const otherHolds = (add: boolean) => runner.run(['ip', '-n', office().client.namespace, 'addr', add ? 'add' : 'del', `${GATEWAY}/24`, 'dev', office().client.interface]);

const start = async () => {
  gateway = await GatewayProcess.start({ bundle: setup.bundle.path, netns: router(), config: setup.configPath, schedule: '* * * * * *' });
  await gateway.waitReady();
};

test.before(async () => {
  if (!isRoot()) return;
  const link = JSON.parse((await runner.run(['ip', '-n', office().client.namespace, '-json', 'link', 'show', 'dev', office().client.interface])).stdout) as Array<{ address: string }>;
  otherMac = link[0]!.address;
  await otherHolds(true);
  await start();
});

const conflictSeries = async () => series(await gateway!.metrics(), 'vlan_gateway_address_conflict')
  .map((s) => ({ vlan: s.labels.vlan, interface: s.labels.interface, mac: s.labels.mac, value: s.value })).sort((a, b) => (a.vlan! < b.vlan! ? -1 : 1));

const warning = (since: string) => `vlan office: another device (${otherMac}) answers ARP for the gateway address ${GATEWAY} on `
  + `${office().routerInterface} too (an address conflict, seen since ${since}): the VLAN's hosts send to whichever answered them last; `
  + 'take the address off that device, or give the VLAN another gateway';

const conflictLine = (l: LogLine) => l.level === 40 && /^address conflict on vlan office:/.test(l.msg);

kernel(`a gateway address another device holds is taken and reported: log, /status, status, gauge with the other MAC; the other VLAN reports none${NEEDS_ROOT}`, async (t) => {
  const found = await waitFor('vlan_gateway_address_conflict for both VLANs', async () => {
    const now = await conflictSeries();
    return now.length === 2 && now.find((s) => s.vlan === 'lab') && now;
  }, 10_000, 100);
  t.deepEqual(found.value, [
    { vlan: 'lab', interface: lab().routerInterface, mac: '', value: 0 },
    { vlan: 'office', interface: office().routerInterface, mac: otherMac, value: 1 },
  ]);
  const line = await gateway!.waitForLog('the conflict logged', conflictLine, 1000);
  t.like(line, { vlan: 'office', interface: office().routerInterface, address: GATEWAY, mac: otherMac });
  t.is(line.msg, `address conflict on vlan office: another device (${otherMac}) answers ARP for the gateway address ${GATEWAY} on `
    + `${office().routerInterface} too; the VLAN's hosts send to whichever answered them last (the gateway keeps the address, as configured)`);
  t.is(gateway!.logs.filter(conflictLine).length, 1, 'said once');

  // Report-only: the gateway holds the address, as the config says.
  t.true((await addressesOf(router(), office().routerInterface)).includes(`${GATEWAY}/24`));
  const status = await gateway!.status();
  const conflict = status.vlans.find((v) => v.name === 'office')?.conflict;
  t.is(conflict?.mac, otherMac);
  t.deepEqual(status.warnings, [warning(conflict!.since)]);
  t.is(status.vlans.find((v) => v.name === 'lab')?.conflict, undefined);
  const printed = await execa(process.execPath, [setup.bundle.path, 'status', '--listen', `127.0.0.1:${gateway!.port}`]);
  t.true(printed.stdout.split('\n').includes(`warning: ${warning(conflict!.since)}`), printed.stdout);
});

kernel(`the conflict put right goes: gauge 0, no warning, and the log says it is over${NEEDS_ROOT}`, async (t) => {
  await otherHolds(false);
  const cleared = await waitFor('the office conflict cleared', async () => (await conflictSeries()).find((s) => s.vlan === 'office' && s.value === 0), 12_000, 100);
  t.log(`cleared ${Math.round(cleared.ms)} ms after the address was removed`);
  t.deepEqual(cleared.value, { vlan: 'office', interface: office().routerInterface, mac: '', value: 0 });
  t.deepEqual((await gateway!.status()).warnings, []);
  const over = await gateway!.waitForLog('the end of the conflict logged', (l) => /^address conflict on vlan office is over/.test(l.msg), 1000);
  t.like(over, { level: 30, vlan: 'office', interface: office().routerInterface, address: GATEWAY, mac: otherMac });
});

kernel(`a restarted supervisor probes the gateway addresses it finds in place (its first pass adds none)${NEEDS_ROOT}`, async (t) => {
  await otherHolds(true);
  t.is((await gateway!.stop()).code, 0);
  await start();
  // Its own line, not /status's lastReconcile: ready comes within the start pass (once it forwards), before the pass
  // has ended and is recorded there, and a scheduled pass (every second here) may be recorded over it.
  const first = await gateway!.waitForLog('the start pass', (l) => l.trigger === 'start' && /^reconciled/.test(l.msg), 5000);
  t.false(JSON.stringify(first.changes ?? []).includes(GATEWAY), 'the first pass added no gateway address');
  const found = await waitFor('the conflict found again', async () => (await conflictSeries()).find((s) => s.vlan === 'office' && s.value === 1), 5000, 100);
  t.is(found.value.mac, otherMac);
  await gateway!.waitForLog('the conflict logged', conflictLine, 1000);
});
