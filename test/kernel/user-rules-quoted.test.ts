/**
 * Quoted words in a rule of rules.dir, as iptables itself reads them (`iptables-restore --test` in `validate`): a
 * quoted value that starts with a dash (`--string "-g"`, `--log-prefix "-FW-"`) is the value of the option before it,
 * and iptables takes the rule; a quoted option beside the rule's own target is a second target or command, which
 * iptables refuses: validate says so, exit 2, naming the template. The planner's own checks (test/unit/render.test.ts)
 * leave both to iptables.
 */
import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { cli, exampleDocument, fileNamespace, scratchDir, writeConfig } from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const ns = fileNamespace('quoted');

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
