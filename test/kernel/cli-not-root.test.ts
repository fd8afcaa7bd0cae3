/**
 * The CLI run by a user who is not root (a person on a host who forgot sudo), as that user: setpriv drops to
 * nobody (65534) for the one command. What fails must say that root is what is missing, not Docker's flags nor an
 * agent's exit code.
 */
import test from 'ava';
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';
import { ExecaRunner } from '../../src/exec/execa-runner.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { tearDownAlways } from '../helpers/teardown.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const runner = new ExecaRunner();
const main = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const example = fileURLToPath(new URL('../../examples/lab.yaml', import.meta.url));
const namespace = `vgwtest-${uniqueLabName('r')}`;

/** vlan-gateway as nobody, from this checkout (world-readable, as a clone is). */
const asNobody = (...argv: string[]) => execa('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, '--import=tsx', main, ...argv], {
  env: { VLAN_GATEWAY_PLAN_CACHE: 'off' }, reject: false,
});

test.before(async () => {
  if (isRoot()) await runner.run(['ip', 'netns', 'add', namespace]);
});

tearDownAlways('remove the namespace', async () => {
  if (isRoot()) await runner.run(['ip', 'netns', 'del', namespace], { allowFailure: true });
});

// The hint was Docker's for a container without NET_ADMIN: "the gateway needs the NET_ADMIN capability: docker run
// --cap-add NET_ADMIN (Compose: cap_add: [NET_ADMIN])".
kernel(`plan, apply and down as a user who is not root: the kernel's refusal, and that root is needed${NEEDS_ROOT}`, async (t) => {
  for (const command of ['plan', 'apply', 'down']) {
    const result = await asNobody(command, '--netns', namespace, '--config', example);
    t.is(result.exitCode, 1, `${command}: ${result.stdout}`);
    t.regex(result.stderr, new RegExp(`^vlan-gateway: [^\\n]* exited 255: setting the network namespace "${namespace}" failed: Operation not permitted; `
      + 'vlan-gateway runs as uid 65534 here, and reading or changing a network namespace needs root: run it as root \\(sudo\\)$'), command);
  }
});

// `lab check` said "agent in vgwlab-NAME-c20 exited (255) before it was ready: no output"; `lab down` listed a
// "Permission denied" per namespace; `lab up` printed "building lab …" and then Docker's --cap-add.
kernel(`every lab command as a user who is not root says that it needs root, exit 1${NEEDS_ROOT}`, async (t) => {
  for (const action of ['up', 'check', 'down', 'demo']) {
    const result = await asNobody('lab', action, '--name', uniqueLabName('n'));
    t.is(result.stdout, '', action);
    t.is(result.stderr, 'vlan-gateway: lab needs root: it makes network namespaces and runs commands in them (vlan-gateway runs as uid 65534 here); run it as root (sudo)', action);
    t.is(result.exitCode, 1, action);
  }
  // A name the lab refuses is still said first: it is wrong whoever runs it.
  const badName = await asNobody('lab', 'down', '--name', 'BAD');
  t.is(badName.exitCode, 2);
  t.is(badName.stderr, 'vlan-gateway: lab name "BAD" must be a lowercase letter, then up to 7 lowercase letters or digits');
});
