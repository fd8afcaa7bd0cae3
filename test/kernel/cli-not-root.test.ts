/**
 * The CLI run by a user who is not root (a person on a host who forgot sudo), as that user: setpriv drops to
 * nobody (65534) for the one command. What fails must say that root is what is missing, not Docker's flags nor an
 * agent's exit code.
 */
import test from 'ava';
import { execa } from 'execa';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExecaRunner } from '../../src/exec/execa-runner.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { prepareBundle } from '../helpers/supervisor.js';
import { tearDownAlways } from '../helpers/teardown.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const runner = new ExecaRunner();
const namespace = `vgwtest-${uniqueLabName('r')}`;
/** An installed copy of the package that nobody can read (the checkout may be where nobody cannot: under /root). */
let installed: string | undefined;
const example = () => join(installed!, 'examples', 'lab.yaml');

/** vlan-gateway as nobody, as installed: the bundle, no tsx (whose cache nobody would leave in /tmp). */
const asNobody = (...argv: string[]) => execa('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups',
  process.execPath, join(installed!, 'dist', 'vlan-gateway.mjs'), ...argv], { env: { VLAN_GATEWAY_PLAN_CACHE: 'off' }, reject: false });

test.before(async () => {
  if (!isRoot()) return;
  await runner.run(['ip', 'netns', 'add', namespace]);
  const bundle = await prepareBundle();
  try {
    installed = await mkdtemp(join(tmpdir(), 'vgw-not-root-'));
    await chmod(installed, 0o755);
    // The bundle's rules/, examples/ and package.json are links into the checkout: copied here as files.
    await execa('cp', ['-RL', join(bundle.path, '..'), join(bundle.path, '..', '..', 'rules'), join(bundle.path, '..', '..', 'examples'),
      join(bundle.path, '..', '..', 'package.json'), installed]);
    await execa('chmod', ['-R', 'a+rX', installed]);
  } finally {
    await bundle.remove();
  }
});

tearDownAlways('remove the namespace and the installed copy', async () => {
  if (!isRoot()) return;
  await runner.run(['ip', 'netns', 'del', namespace], { allowFailure: true });
  if (installed) await rm(installed, { recursive: true, force: true });
});

// The hint was Docker's for a container without NET_ADMIN: "the gateway needs the NET_ADMIN capability: docker run
// --cap-add NET_ADMIN (Compose: cap_add: [NET_ADMIN])".
kernel(`plan, apply and down as a user who is not root: the kernel's refusal, and that root is needed${NEEDS_ROOT}`, async (t) => {
  for (const command of ['plan', 'apply', 'down']) {
    const result = await asNobody(command, '--netns', namespace, '--config', example());
    t.is(result.exitCode, 1, `${command}: ${result.stdout}`);
    t.regex(result.stderr, new RegExp(`^vlan-gateway: [^\\n]* exited 255: setting the network namespace "${namespace}" failed: Operation not permitted; `
      + 'vlan-gateway runs as uid 65534 here, and reading or changing a network namespace needs root: run it as root \\(sudo; in a container, without docker run --user or a Compose user: key\\)$'), command);
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
