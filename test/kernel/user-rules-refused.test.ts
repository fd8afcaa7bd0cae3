/**
 * Several rules of rules.dir that iptables refuses, said in one run. `iptables-restore --test` stops at the first line
 * it refuses and names it alone: a user with three bad rules fixed them one `validate` (or `apply`) at a time. The
 * check now asks again without each refused rule (only once one is refused), up to REFUSALS_SAID of them.
 */
import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REFUSALS_SAID } from '../../src/apply/user-rules-check.js';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { addDockerDnsChains, cli, exampleDocument, fileNamespace, inNs, save, scratchDir, writeConfig } from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const ns = fileNamespace('refused');
const legacyNs = fileNamespace('refused-lg');

/** A config whose rules.dir holds `forward` as filter/forward.hbs and `postrouting` as nat/postrouting.hbs. */
async function withRules(name: string, forward: readonly string[], postrouting: readonly string[] = []): Promise<{ path: string; dir: string }> {
  const dir = join(await scratchDir(), `rules-${name}`);
  await mkdir(join(dir, 'filter'), { recursive: true });
  await writeFile(join(dir, 'filter', 'forward.hbs'), `${forward.join('\n')}\n`);
  if (postrouting.length > 0) {
    await mkdir(join(dir, 'nat'), { recursive: true });
    await writeFile(join(dir, 'nat', 'postrouting.hbs'), `${postrouting.join('\n')}\n`);
  }
  return { path: (await writeConfig(name, { ...(await exampleDocument()), rules: { dir } })).path, dir };
}

kernel(`validate, plan and apply name every rule iptables refuses, in both tables, in one run; nothing is written${NEEDS_ROOT}`, async (t) => {
  const { path, dir } = await withRules('three-refused',
    ['-m nosuchmatch -j ACCEPT', '-p tcp --dport 22 -j ACCEPT', '-p tcp --nosuchopt 1 -j ACCEPT'],
    ['-o eth0 -j SNAT --to-source 999.1.1.1']);
  const said = 'vlan-gateway: invalid rules (nothing was applied):\n'
    + `filter VGW-USER-FORWARD rule 1 (from ${dir}/filter/forward.hbs line 1): iptables refuses it: Couldn't load match \`nosuchmatch':No such file or directory\n`
    + `filter VGW-USER-FORWARD rule 3 (from ${dir}/filter/forward.hbs line 3): iptables refuses it: unknown option "--nosuchopt"\n`
    + `nat VGW-USER-POSTROUTING rule 1 (from ${dir}/nat/postrouting.hbs line 1): iptables refuses it: Bad IP address "999.1.1.1"`;
  const validated = await cli('validate', '--netns', ns, '--config', path);
  t.is(validated.code, 2, validated.stdout);
  t.is(validated.stderr, said);
  // plan said "N changes pending." (exit 0; 2 with --detailed-exitcode) for rules the apply then refused.
  const planned = await cli('plan', '--netns', ns, '--config', path);
  t.is(planned.stderr, said);
  t.is(planned.stdout, '');
  t.is(planned.code, 2);
  const detailed = await cli('plan', '--detailed-exitcode', '--netns', ns, '--config', path);
  t.is(detailed.stderr, said);
  t.is(detailed.code, 1, 'an error, not changes pending');
  const applied = await cli('apply', '--netns', ns, '--config', path);
  t.is(applied.code, 2, applied.stdout);
  t.is(applied.stderr, said);
  t.notRegex(await save(ns, 'nft'), /VGW-/, 'refused before the first write');
});

kernel(`past ${REFUSALS_SAID} refused rules, the check stops and says the rest were not checked${NEEDS_ROOT}`, async (t) => {
  const rules = Array.from({ length: REFUSALS_SAID + 3 }, (_, i) => `-p tcp --dport ${i + 1} -m nosuchmatch -j ACCEPT`);
  const { path, dir } = await withRules('many-refused', rules);
  const validated = await cli('validate', '--netns', ns, '--config', path);
  t.is(validated.code, 2, validated.stdout);
  const lines = validated.stderr.split('\n');
  t.deepEqual(lines.slice(1), [
    ...Array.from({ length: REFUSALS_SAID }, (_, i) => `filter VGW-USER-FORWARD rule ${i + 1} (from ${dir}/filter/forward.hbs line ${i + 1}): `
      + "iptables refuses it: Couldn't load match `nosuchmatch':No such file or directory"),
    `(iptables names one refused rule at a time: after ${REFUSALS_SAID}, the rules after the last were not checked)`,
  ]);
});

// What only the kernel refuses, when the table is committed (TCPMSS on a UDP rule), passes `--test`: the apply writes
// the tables and is refused. It said iptables' message for the first table (naming its lines by payload number) and
// nothing of the other table's, refused in the same stage: a user fixed one and met the next on the following run.
kernel(`apply names every rule the kernel refuses at commit, in both tables, in one run; everything is rolled back${NEEDS_ROOT}`, async (t) => {
  const { path, dir } = await withRules('kernel-refused',
    ['-p tcp --dport 22 -j ACCEPT', '-p udp --dport 7 -j TCPMSS --clamp-mss-to-pmtu', '-p tcp --dport 23 -j ACCEPT', '-p udp --dport 8 -j TCPMSS --set-mss 1400'],
    ['-p udp --dport 9 -j TCPMSS --clamp-mss-to-pmtu']);
  const validated = await cli('validate', '--netns', ns, '--config', path);
  t.is(validated.code, 0, `iptables' parser accepts them: ${validated.stderr}`);
  const applied = await cli('apply', '--netns', ns, '--config', path);
  t.is(applied.code, 1, applied.stdout);
  t.regex(applied.stderr, /^vlan-gateway: apply failed: applying the filter table failed: iptables-nft-restore failed/);
  t.true(applied.stderr.endsWith('\nthe rules of rules.dir the kernel refuses (its reasons are in dmesg):\n'
    + `filter VGW-USER-FORWARD rule 2 (from ${dir}/filter/forward.hbs line 2): the kernel refuses it (Invalid argument): -p udp --dport 7 -j TCPMSS --clamp-mss-to-pmtu\n`
    + `filter VGW-USER-FORWARD rule 4 (from ${dir}/filter/forward.hbs line 4): the kernel refuses it (Invalid argument): -p udp --dport 8 -j TCPMSS --set-mss 1400\n`
    + `nat VGW-USER-POSTROUTING rule 1 (from ${dir}/nat/postrouting.hbs line 1): the kernel refuses it (Invalid argument): -p udp --dport 9 -j TCPMSS --clamp-mss-to-pmtu\n`
    + '(the steps already done were rolled back)'), applied.stderr);
  t.notRegex(await save(ns, 'nft'), /VGW-/, 'both tables as they were');
  t.is(await inNs(ns, 'ipset', 'list', '-n'), '', 'the sets it made removed');
});

// A namespace whose rules are iptables-legacy's (Docker on a legacy host), with Docker's nat table alone: plan's check
// of a filter template ran iptables-legacy-restore --test, which made the legacy filter table as it read it (empty,
// hooked in). plan changes nothing: such a table's rules are parsed by iptables-nft, which makes nothing.
kernel(`plan on iptables-legacy makes no table that was not there, and still names a rule iptables refuses${NEEDS_ROOT}`, async (t) => {
  await addDockerDnsChains(legacyNs, 'legacy');
  const tables = async () => (await inNs(legacyNs, 'cat', '/proc/net/ip_tables_names')).split('\n').filter(Boolean).sort();
  t.deepEqual(await tables(), ['nat']);
  const { path, dir } = await withRules('legacy-plan', ['-p tcp --dport 22 -j ACCEPT', '-m nosuchmatch -j ACCEPT']);
  const planned = await cli('plan', '--netns', legacyNs, '--config', path);
  t.is(planned.stderr, 'vlan-gateway: invalid rules (nothing was applied):\n'
    + `filter VGW-USER-FORWARD rule 2 (from ${dir}/filter/forward.hbs line 2): iptables refuses it: Couldn't load match \`nosuchmatch':No such file or directory`);
  t.is(planned.code, 2);
  t.deepEqual(await tables(), ['nat'], 'no legacy filter table made');
  const good = await withRules('legacy-plan-good', ['-p tcp --dport 22 -j ACCEPT']);
  const accepted = await cli('plan', '--netns', legacyNs, '--config', good.path);
  t.is(accepted.code, 0, accepted.stderr);
  t.regex(accepted.stdout, /^backend: iptables-legacy/m);
  t.deepEqual(await tables(), ['nat'], 'no legacy filter table made');
});

// The README lets a rule of rules.dir match the gateway's own sets. In a namespace where they are not made yet (a
// container's start, after `down`), iptables' --test refused such a rule ("Set VGW-SUBNETS doesn't exist."): validate,
// plan and apply called the config invalid, though the apply makes the sets before it writes the tables.
kernel(`a rule of rules.dir that matches a set the gateway is about to make passes the check in a fresh namespace; a set nobody makes is refused${NEEDS_ROOT}`, async (t) => {
  t.is(await inNs(ns, 'ipset', 'list', '-n'), '', 'no set made yet');
  const { path } = await withRules('gateway-set', ['-m set --match-set VGW-SUBNETS src -p udp --dport 9 -j DROP']);
  const validated = await cli('validate', '--netns', ns, '--config', path);
  t.is(validated.code, 0, validated.stderr);
  const planned = await cli('plan', '--netns', ns, '--config', path);
  t.is(planned.code, 0, planned.stderr);
  t.regex(planned.stdout, /^ {8}\+ -m set --match-set VGW-SUBNETS src -p udp --dport 9 -j DROP$/m);
  const applied = await cli('apply', '--netns', ns, '--config', path);
  t.is(applied.code, 0, applied.stderr);
  t.regex(await save(ns, 'nft'), /^-A VGW-USER-FORWARD .*-m set --match-set VGW-SUBNETS src .*-j DROP$/m);
  const down = await cli('down', '--netns', ns, '--config', path);
  t.is(down.code, 0, down.stderr);
  t.is(await inNs(ns, 'ipset', 'list', '-n'), '', 'down removed the sets');

  // Rules matching the set, then one iptables refuses: the set's rules are left to the commit, the other still checked.
  const { path: many, dir: manyDir } = await withRules('gateway-set-many', [
    ...[7, 8, 9].map((port) => `-m set --match-set VGW-SUBNETS src -p udp --dport ${port} -j DROP`),
    '-m nosuchmatch -j DROP',
    '-p tcp -m set --match-set VGW-SUBNETS dst -j REJECT',
  ]);
  const rest = await cli('validate', '--netns', ns, '--config', many);
  t.is(rest.stderr, 'vlan-gateway: invalid rules (nothing was applied):\n'
    + `filter VGW-USER-FORWARD rule 4 (from ${manyDir}/filter/forward.hbs line 4): iptables refuses it: Couldn't load match \`nosuchmatch':No such file or directory`);
  t.is(rest.code, 2);

  const { path: typo, dir } = await withRules('gateway-set-typo', ['-m set --match-set VGW-SUBNETZ src -j DROP']);
  const refused = await cli('validate', '--netns', ns, '--config', typo);
  t.is(refused.stderr, 'vlan-gateway: invalid rules (nothing was applied):\n'
    + `filter VGW-USER-FORWARD rule 1 (from ${dir}/filter/forward.hbs line 1): iptables refuses it: Set VGW-SUBNETZ doesn't exist.`);
  t.is(refused.code, 2);
});
