/** describeErrorLines: a rejected reload's errors, one line per problem, each standing alone (the log, /status). */
import test from 'ava';
import { describeErrorLines, describeErrorLinesOf } from '../../src/cli/errors.js';
import { ConfigError } from '../../src/config/problems.js';
import { PlanError } from '../../src/plan/check.js';
import { TemplateError } from '../../src/template/render.js';

const DETACHED = '(rendered as at a start before Docker attaches the NICs: no VLAN has its NIC yet, and uplink.nic has no value; '
  + 'put a rule that needs it inside {{#if uplink.nic}})';

// Logged each as `reload rejected, keeping the running config: <line>`: "(rendered as at a start …)" and "(and 3 more
// lines refused)" were errors of their own, saying of nothing what went wrong.
test('a note in parentheses goes with the problems before it, not as a line of its own', (t) => {
  const refused = 'nat VGW-USER-POSTROUTING rule 1 (from /rules/nat/postrouting.hbs): iptables refuses it: Bad argument `-j\'';
  t.deepEqual(describeErrorLines(new PlanError([{ text: refused, file: '/rules/nat/postrouting.hbs' }, { text: DETACHED }])), [`${refused} ${DETACHED}`]);

  const error = new TemplateError('/rules/filter/forward.hbs', '"-o" has no -j target', { rendered: 2 },
    [{ file: '/rules/filter/forward.hbs', detail: '"-i" has no -j target', line: { rendered: 5, template: 7 } }], 3, DETACHED);
  t.deepEqual(describeErrorLines(error), [
    '/rules/filter/forward.hbs, rendered line 2: "-o" has no -j target',
    `/rules/filter/forward.hbs line 7: "-i" has no -j target (and 3 more lines refused) ${DETACHED}`,
  ]);
  // One problem: its line, with the kind of error said.
  t.deepEqual(describeErrorLines(new TemplateError('/rules/filter/forward.hbs', '"-o" has no -j target', { rendered: 2 })),
    ['invalid rule template: /rules/filter/forward.hbs, rendered line 2: "-o" has no -j target']);
});

// A problem's line naming another file whose path starts with the config's (its rules.dir `gateway.yaml.d`) was taken
// for one naming the config, and logged without it: `reload rejected, …: invalid config: rules.dir: cannot read …`,
// with no word of which file says so.
test('a config problem is prefixed with its file unless the line names that file itself, as a whole', (t) => {
  const source = '/etc/vlan-gateway/gateway.yaml';
  const lines = (...text: string[]) => describeErrorLines(new ConfigError(source, text.map((message) => ({ path: [], message })), text));
  t.deepEqual(lines(
    'rules.dir: cannot read /etc/vlan-gateway/gateway.yaml.d (no such directory) (line 7)',
    'rules.dir: cannot read /srv/etc/vlan-gateway/gateway.yaml (not a directory) (line 7)',
  ), [
    'invalid config: /etc/vlan-gateway/gateway.yaml: rules.dir: cannot read /etc/vlan-gateway/gateway.yaml.d (no such directory) (line 7)',
    'invalid config: /etc/vlan-gateway/gateway.yaml: rules.dir: cannot read /srv/etc/vlan-gateway/gateway.yaml (not a directory) (line 7)',
  ]);
  t.deepEqual(lines('cannot read /etc/vlan-gateway/gateway.yaml: no such file', '/etc/vlan-gateway/gateway.yaml: the file is empty'), [
    'invalid config: cannot read /etc/vlan-gateway/gateway.yaml: no such file',
    'invalid config: /etc/vlan-gateway/gateway.yaml: the file is empty',
  ]);
  // A relative path, as --config gateway.yaml gives it.
  t.deepEqual(describeErrorLines(new ConfigError('gateway.yaml', [{ path: [], message: 'x' }], ['rules.dir: cannot read /root/gateway.yaml.d (no such directory) (line 3)'])),
    ['invalid config: gateway.yaml: rules.dir: cannot read /root/gateway.yaml.d (no such directory) (line 3)']);
});

// A rejected reload's log line carries the file it is about as `path` (cli/reload.ts): the line's template where the
// fault is in one, which every line of a TemplateError, and a PlanError's for a rule of rules.dir, is; none (the config
// file) otherwise. A note keeps the file of the problem it is said with.
test('each line carries the template it is about, where it is about one', (t) => {
  const forward = '/rules/filter/forward.hbs';
  const postrouting = '/rules/nat/postrouting.hbs';
  t.deepEqual(describeErrorLinesOf(new TemplateError(forward, '"-o" has no -j target', { rendered: 2 })),
    [{ text: `invalid rule template: ${forward}, rendered line 2: "-o" has no -j target`, file: forward }]);
  t.deepEqual(describeErrorLinesOf(new TemplateError(forward, 'x', { rendered: 2 }, [{ file: postrouting, detail: 'y' }], 0, DETACHED)), [
    { text: `${forward}, rendered line 2: x`, file: forward },
    { text: `${postrouting}: y ${DETACHED}`, file: postrouting },
  ]);
  t.deepEqual(describeErrorLinesOf(new PlanError([
    { text: `nat VGW-USER-POSTROUTING rule 1 (from ${postrouting}): iptables refuses it: Bad argument`, file: postrouting },
    { text: 'iptables refuses the rules of rules.dir: Bad argument' },
  ])), [
    { text: `nat VGW-USER-POSTROUTING rule 1 (from ${postrouting}): iptables refuses it: Bad argument`, file: postrouting },
    { text: 'iptables refuses the rules of rules.dir: Bad argument' },
  ]);
  const source = '/etc/vlan-gateway/gateway.yaml';
  t.deepEqual(describeErrorLinesOf(new ConfigError(source, [
    { path: ['vlans'], message: 'is required' },
    { path: ['rules', 'dir'], message: `${forward}: Parse error on line 1`, file: forward },
  ])), [
    { text: `invalid config: ${source}: vlans: is required` },
    { text: `invalid config: ${source}: rules.dir: ${forward}: Parse error on line 1`, file: forward },
  ]);
});
