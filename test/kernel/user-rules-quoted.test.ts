/**
 * Quoted words in a rule of rules.dir, as iptables itself reads them (`iptables-restore --test` in `validate`): a
 * quoted value that starts with a dash (`--string "-g"`, `--log-prefix "-FW-"`) is the value of the option before it,
 * and iptables takes the rule; a quoted option beside the rule's own target is a second target or command, which
 * iptables refuses: validate says so, exit 2, naming the template. The planner's own checks (test/unit/render.test.ts)
 * leave both to iptables. A quoted value is applied as written (brackets, bars, runs of spaces), in both backends, and
 * a second apply finds it in sync.
 */
import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { addDockerDnsChains, cli, exampleDocument, fileNamespace, readState, runner, save, scratchDir, writeConfig } from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const ns = fileNamespace('quoted');
const applied = { nft: fileNamespace('quoted-nft'), legacy: fileNamespace('quoted-lg') };

/** A config whose rules.dir holds `rules` as filter/forward.hbs. */
async function withForwardRules(name: string, rules: readonly string[]): Promise<{ path: string; template: string }> {
  const dir = join(await scratchDir(), `rules-${name}`);
  await mkdir(join(dir, 'filter'), { recursive: true });
  const template = join(dir, 'filter', 'forward.hbs');
  await writeFile(template, `${rules.join('\n')}\n`);
  return { path: (await writeConfig(name, { ...(await exampleDocument()), rules: { dir } })).path, template };
}

kernel(`quoted values that start with a dash are valid rules, to iptables and to validate${NEEDS_ROOT}`, async (t) => {
  const { path } = await withForwardRules('dash-values', [
    '-p tcp -m string --algo bm --string "-g" -j DROP',
    '-m comment --comment "-x" -j ACCEPT',
    '-j LOG --log-prefix "-FW-"',
  ]);
  const validated = await cli('validate', '--netns', ns, '--config', path);
  t.is(validated.code, 0, validated.stderr);
  t.regex(validated.stdout, /: valid \(/);
});

kernel(`a quoted option beside the rule's target is refused by iptables: validate exits 2 naming the template${NEEDS_ROOT}`, async (t) => {
  const secondTarget = await withForwardRules('second-target', ['-j ACCEPT', '-p tcp --syn "-j" VGW-FORWARD -j ACCEPT']);
  const target = await cli('validate', '--netns', ns, '--config', secondTarget.path);
  t.is(target.code, 2, target.stdout);
  t.is(target.stderr, `vlan-gateway: invalid rules (nothing was applied):\nfilter VGW-USER-FORWARD rule 2 (from ${secondTarget.template} line 2): `
    + 'iptables refuses it: multiple -j flags not allowed');

  const command = await withForwardRules('quoted-command', ['-j ACCEPT', '-p tcp "-F" -j ACCEPT']);
  const flush = await cli('validate', '--netns', ns, '--config', command.path);
  t.is(flush.code, 2, flush.stdout);
  t.is(flush.stderr, `vlan-gateway: invalid rules (nothing was applied):\nfilter VGW-USER-FORWARD rule 2 (from ${command.template} line 2): `
    + 'iptables refuses it: Cannot use -F with -A');
});

// `--log-prefix "[FW DROP] "` was refused (no [ or ] in a rule), and `--log-prefix "a  b"` applied as "a b" (the whole
// line's spaces folded). iptables-save prints both back as written (an apostrophe escaped, \'); the rule's hash is of
// the line as rendered, so the next plan finds it in sync.
for (const backend of ['nft', 'legacy'] as const) {
  kernel(`quoted values are applied as written, brackets and runs of spaces kept, and a second apply changes nothing (${backend})${NEEDS_ROOT}`, async (t) => {
    const target = applied[backend];
    if (backend === 'legacy') await addDockerDnsChains(target, 'legacy'); // the gateway then writes iptables-legacy
    const { path } = await withForwardRules(`as-written-${backend}`, [
      '-j LOG --log-prefix "[FW DROP] "',
      '-m comment   --comment "from  office, it\'s [lab] |x|"  -j LOG --log-prefix "[FW  DROP]  "',
    ]);
    const first = await cli('apply', '--netns', target, '--config', path);
    t.is(first.code, 0, first.stderr);
    const userRules = async (counters: string[] = []) => (await save(target, backend, '-t', 'filter', ...counters)).split('\n')
      .filter((line) => line.includes('-A VGW-USER-FORWARD '));
    t.deepEqual((await userRules()).map((line) => line.replace(/vgw:[\w-]+/, 'vgw:HASH')), [
      '-A VGW-USER-FORWARD -m comment --comment "vgw:HASH" -j LOG --log-prefix "[FW DROP] "',
      '-A VGW-USER-FORWARD -m comment --comment "vgw:HASH" -m comment --comment "from  office, it\\\'s [lab] |x|" -j LOG --log-prefix "[FW  DROP]  "',
    ]);

    // Counters on the rules, put there by restoring them as iptables-save printed them: a rewrite would zero them.
    const counted = (await userRules(['-c'])).map((line) => line.replace(/^\[0:0\]/, '[7:700]'));
    await runner.run(['ip', 'netns', 'exec', target, `iptables-${backend}-restore`, '-c', '--noflush'],
      { input: ['*filter', ':VGW-USER-FORWARD - [0:0]', ...counted, 'COMMIT', ''].join('\n') });
    const before = await readState(target, true);
    t.regex(before[backend], /^\[7:700\] -A VGW-USER-FORWARD .*"\[FW {2}DROP\] {2}"$/m);

    const planned = await cli('plan', '--detailed-exitcode', '--netns', target, '--config', path);
    t.is(planned.code, 0, planned.stdout);
    t.regex(planned.stdout, /\nNo changes: the namespace is in sync\.$/);
    const again = await cli('apply', '--netns', target, '--config', path);
    t.is(again.code, 0, again.stderr);
    t.regex(again.stdout, /\nNo changes: the namespace is in sync\.$/);
    t.deepEqual(await readState(target, true), before, 'nothing rewritten: the rules and their counters as they were');
  });
}
