/**
 * `vlan-gateway run` in a namespace whose rules live in iptables-legacy (Docker's DNS chains there, as Docker on a
 * host set to iptables-legacy writes them). The other supervisor tests run on nft; here the same supervisor writes
 * legacy and nothing in nft, counts traffic and finds drift from iptables-legacy-save, and its writes and the check
 * of the user's rules wait for the xtables lock, which nft does not take. The gateway's lock file is one of this
 * test's (XTABLES_LOCKFILE), never the machine's.
 */
import test from 'ava';
import { cp, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dump as stringify, load as parse } from 'js-yaml';
import { XTABLES_WAIT_SECONDS } from '../../src/observe/read.js';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { exampleLab, GatewayProcess, inNs, pingUntilReply, REPO, runner, vgwLines, waitFor } from '../helpers/supervisor.js';
import { holdXtablesLock } from '../helpers/xtables-lock.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const setup = exampleLab(test, 'x', 'vgw-legacy-');
const { router } = setup;

let lockFile = '';
let template = '';
let gateway: GatewayProcess | undefined;

// The gateway's config: the example with a rules.dir of one template (the lab, built from the example, is the same).
test.before(async () => {
  if (!isRoot()) return;
  lockFile = join(setup.scratch, 'xtables.lock');
  template = join(setup.scratch, 'rules.d', 'filter', 'forward.hbs');
  await mkdir(join(setup.scratch, 'rules.d', 'filter'), { recursive: true });
  await writeFile(template, '-p udp --dport 9 -j DROP\n');
  const example = parse(await readFile(setup.configPath, 'utf8')) as Record<string, unknown>;
  await writeFile(setup.configPath, stringify({ ...example, rules: { dir: join(setup.scratch, 'rules.d') } }));
  await runner.run(['ip', 'netns', 'exec', router(), 'iptables-legacy-restore', '--noflush'],
    { input: await readFile(join(REPO, 'test', 'fixtures', 'kernel', 'docker-dns.rules'), 'utf8') });
  gateway = await GatewayProcess.start({
    bundle: setup.bundle.path, netns: router(), config: setup.configPath, statsIntervalMs: 300, env: { XTABLES_LOCKFILE: lockFile },
  });
  await gateway.waitReady();
  // /readyz turns 200 once forwarding is in place, before the start pass ends (its accounting members may still be
  // being written): /status shows the pass's backend once it has ended.
  await gateway.waitForLog('the start pass', (l) => l.trigger === 'start' && l.msg === 'reconciled: changes applied');
});

const vlan = (n: string) => setup.topology.vlans.find((v) => v.name === n)!;
const legacySave = async () => (await inNs(router(), 'iptables-legacy-save')).split('\n').filter((l) => !l.startsWith('#')).join('\n');

kernel(`in iptables-legacy: the rules go there and none to nft, traffic is counted from there, and a rule deleted there is put back${NEEDS_ROOT}`, async (t) => {
  t.is((await gateway!.status()).backend, 'legacy');
  const ours = vgwLines(await legacySave());
  t.true(ours.includes('-A FORWARD -m comment --comment "vgw:hook-fwd-was-0" -j VGW-FORWARD'), ours.join('\n'));
  t.deepEqual(vgwLines(await inNs(router(), 'iptables-nft-save')), [], 'nothing of ours in nft');

  await pingUntilReply(vlan('office').client.namespace, vlan('lab').client.address);
  await waitFor('office → lab counted', async () => (await gateway!.metric('vlan_gateway_forwarded_packets_total', { from: 'office', to: 'lab', action: 'accept' })) > 0, 5000, 100);

  const repairs = await gateway!.metric('vlan_gateway_drift_repairs_total', { kind: 'rules' });
  await inNs(router(), 'iptables-legacy', '-D', 'VGW-FROM-10', '1');
  await waitFor('the rule put back', async () => (await gateway!.metric('vlan_gateway_drift_repairs_total', { kind: 'rules' })) > repairs, 10_000, 100);
  t.deepEqual(vgwLines(await legacySave()), ours);
});

// A reload has iptables parse the user's rules first (`iptables-legacy-restore --test`), which waits for the
// xtables lock like every legacy restore. Held past that wait, the reload was rejected as invalid ("iptables
// refuses the rules of rules.dir: Can't lock …") and the edit never applied, even once the lock was free: the
// gateway went on with the old rules until the file changed again.
kernel(`a template edited while the xtables lock is held past the wait is not rejected: it applies once the lock is free${NEEDS_ROOT}`, async (t) => {
  const from = gateway!.logs.length;
  const held = await holdXtablesLock(lockFile, 60);
  try {
    await writeFile(template, '-p udp --dport 7 -j DROP\n');
    const outcome = await gateway!.waitForLog('the reload', (l) => l.msg === 'config reloaded' || /reload rejected/.test(l.msg),
      (XTABLES_WAIT_SECONDS + 10) * 1000, from);
    t.is(outcome.msg, 'config reloaded', JSON.stringify(outcome));
  } finally {
    await held.release();
  }
  await gateway!.waitForLog('the pass that writes the edit', (l) => l.trigger === 'reload' && l.msg === 'reconciled: changes applied',
    (XTABLES_WAIT_SECONDS + 10) * 1000, from);
  const user = vgwLines(await legacySave()).filter((l) => l.startsWith('-A VGW-USER-FORWARD '));
  t.is(user.length, 1, user.join('\n'));
  t.regex(user[0]!, /-p udp .*--dport 7 -j DROP$/);
  t.is((await gateway!.status()).reload.lastResult, 'success');
});

// iptables-legacy hands the kernel a table whole and names only its COMMIT: a rule of rules.dir the kernel refuses
// (TCPMSS on a UDP rule) cannot be named as iptables-nft names it. A reload that wrote nothing of the gateway's but
// that rule's chain and the jump into it is still refused after the fact, naming the chain as the likely one, and
// the config that last applied runs again, in legacy, with nothing of the refused chain left there or in nft.
kernel(`a reload whose rule of rules.dir the kernel refuses at COMMIT is refused after the fact, naming the likely chain, and the last config runs again${NEEDS_ROOT}`, async (t) => {
  const before = vgwLines(await legacySave());
  const failures = await gateway!.metric('vlan_gateway_config_reloads_total', { result: 'failure' });
  const from = gateway!.logs.length;
  const refusedTemplate = join(setup.scratch, 'rules.d', 'nat', 'postrouting.hbs');
  await mkdir(join(setup.scratch, 'rules.d', 'nat'), { recursive: true });
  await writeFile(refusedTemplate, '-p udp --dport 9 -j TCPMSS --set-mss 1000\n');
  try {
    const refusal = `the kernel refuses the nat table, likely for a rule of rules.dir (VGW-USER-POSTROUTING, from ${refusedTemplate})`;
    const failed = await gateway!.waitForLog('the refusal', (l) => l.level >= 50 && l.msg === `${refusal}; the config that last applied runs again`, 10_000, from);
    t.deepEqual(gateway!.logs.slice(from).filter((l) => l.level >= 50).map((l) => l.msg), [failed.msg], 'one error line for the refused pass');
    t.like(failed?.err as Record<string, unknown> | undefined, { type: 'ApplyError', rolledBack: true, userChain: 'VGW-USER-POSTROUTING' }, JSON.stringify(failed));
    t.regex(String((failed?.err as Record<string, unknown> | undefined)?.message), /^applying the nat table failed: iptables-legacy-restore failed \(exit 1\): iptables-restore: line \d+ failed\n(.*\n)*> +\d+ \| COMMIT\n(.*\n)*iptables-legacy refuses a table whole and names no rule; this round wrote rules of rules\.dir only \(VGW-USER-POSTROUTING from [^)]*\/rules\.d\/nat\/postrouting\.hbs\): one of them/);
    await gateway!.waitForLog('a pass with the config that last applied', (l) => l.trigger === 'reload' && /^reconciled: in sync/.test(l.msg), 10_000, from);
    const status = await gateway!.status();
    t.is(status.reload.lastResult, 'failure');
    t.is(status.reload.lastErrors[0], refusal);
    t.is(status.reload.lastErrors.at(-1), 'the config that last applied runs again');
    t.is(await gateway!.metric('vlan_gateway_config_reloads_total', { result: 'failure' }), failures + 1);
    t.deepEqual(vgwLines(await legacySave()), before, 'the legacy rules as they were: nothing of the refused chain');
    t.deepEqual(vgwLines(await inNs(router(), 'iptables-nft-save')), [], 'nothing of ours in nft');
  } finally {
    await rm(refusedTemplate, { force: true });
  }
  // Back to the templates that last applied: the running config, which a reload finds unchanged.
  await waitFor('the reload without it', async () => ((await gateway!.status()).reload.lastResult === 'success' ? true : undefined), 10_000, 100);
  t.deepEqual(vgwLines(await legacySave()), before);
});

// One reload that changes both gateway.yaml (a port forward added) and a template whose rule the kernel refuses at
// COMMIT (TCPMSS on a UDP rule, in nat's POSTROUTING): iptables-legacy names no rule, and the round wrote rules of
// both, so no chain of rules.dir could be guessed. The reload was reported a success, and every pass failed, with
// backoff, for ever, holding up every later change (the previous rules stayed). It is refused as the kernel refused
// it, saying either may be the one, and the config that last applied runs again; the port forward alone then applies.
kernel(`a reload that changes gateway.yaml and a template, refused at iptables-legacy's COMMIT, reverts to the config that last applied${NEEDS_ROOT}`, async (t) => {
  const before = vgwLines(await legacySave());
  const failures = await gateway!.metric('vlan_gateway_config_reloads_total', { result: 'failure' });
  const original = await readFile(setup.configPath, 'utf8');
  // One write of gateway.yaml: another rules.dir (the running templates, and the refused one) and a port forward.
  const rulesDir = join(setup.scratch, 'rules2.d');
  await cp(join(setup.scratch, 'rules.d'), rulesDir, { recursive: true });
  const refusedTemplate = join(rulesDir, 'nat', 'postrouting.hbs');
  await mkdir(join(rulesDir, 'nat'), { recursive: true });
  await writeFile(refusedTemplate, '-p udp --dport 9 -j TCPMSS --clamp-mss-to-pmtu\n');
  const config = parse(original) as { portForwards: unknown[] };
  const edited = stringify({ ...config, rules: { dir: rulesDir }, portForwards: [...config.portForwards, { proto: 'tcp', port: 8080, to: '192.168.20.100', toPort: 80 }] });
  const write = async (text: string) => {
    await writeFile(`${setup.configPath}.new`, text);
    await rename(`${setup.configPath}.new`, setup.configPath);
  };
  const from = gateway!.logs.length;
  await write(edited);
  try {
    const refusal = 'the kernel refuses the nat table, for a rule of rules.dir (VGW-USER-POSTROUTING) or one the gateway renders from the config: '
      + 'iptables-legacy names no rule, and this config changes both';
    const failed = await gateway!.waitForLog('the refusal', (l) => l.level >= 50 && l.msg === `${refusal}; the config that last applied runs again`, 15_000, from);
    t.deepEqual(gateway!.logs.slice(from).filter((l) => l.level >= 50).map((l) => l.msg), [failed.msg], 'one error line for the refused pass');
    t.like(failed?.err as Record<string, unknown> | undefined, { type: 'ApplyError', rolledBack: true, failedLine: 'COMMIT', userChain: undefined }, JSON.stringify(failed));
    t.regex(String((failed?.err as Record<string, unknown> | undefined)?.message), /^applying the nat table failed: iptables-legacy-restore failed \(exit 1\): iptables-restore: line \d+ failed\n(.*\n)*> +\d+ \| COMMIT\n(.*\n)*iptables-legacy refuses a table whole and names no rule; this round wrote rules of rules\.dir \(VGW-USER-POSTROUTING from [^)]*\/rules2\.d\/nat\/postrouting\.hbs\) and the gateway's own: either may be the one/);
    await gateway!.waitForLog('a pass with the config that last applied', (l) => l.trigger === 'reload' && /^reconciled: in sync/.test(l.msg), 10_000, from);
    const status = await gateway!.status();
    t.is(status.reload.lastResult, 'failure');
    t.is(status.reload.lastErrors[0], refusal);
    t.is(status.reload.lastErrors.at(-1), 'the config that last applied runs again');
    t.is(await gateway!.metric('vlan_gateway_config_reloads_total', { result: 'failure' }), failures + 1);
    t.deepEqual(vgwLines(await legacySave()), before, 'the legacy rules as they were: no port forward, nothing of the refused chain');
    t.deepEqual(vgwLines(await inNs(router(), 'iptables-nft-save')), [], 'nothing of ours in nft');

    // The template taken out, the same gateway.yaml again: the port forward applies.
    await rm(refusedTemplate);
    const fixed = gateway!.logs.length;
    await write(edited);
    await gateway!.waitForLog('the port forward applied', (l) => l.trigger === 'reload' && l.msg === 'reconciled: changes applied', 15_000, fixed);
    const ours = vgwLines(await legacySave());
    t.true(ours.some((l) => /--dport 8080 .*-j DNAT --to-destination 192\.168\.20\.100:80$/.test(l)), ours.join('\n'));
    t.false(ours.some((l) => l.includes('TCPMSS')), ours.join('\n'));
    t.is((await gateway!.status()).reload.lastResult, 'success');
  } finally {
    await write(original);
  }
  await waitFor('the config as it was', async () => (JSON.stringify(vgwLines(await legacySave())) === JSON.stringify(before) ? true : undefined), 15_000, 100);
});
