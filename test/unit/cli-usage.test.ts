/**
 * The CLI's answers to bad input, in-process through main(): the message names the flag or file, there is no
 * stack trace, and the exit code says whose problem it is (2: the input; 1: a failure; `plan
 * --detailed-exitcode` keeps 2 for "changes pending", so every error is 1 there). None of these gets as far as
 * a command that reads or changes a namespace: where a check could be missed, the config path does not exist,
 * so a regression fails on the message instead of running anything. Serial: each row takes over process.stderr.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_CONFIG_PATH, loadConfig, resolveConfigPath, withConfigSource } from '../../src/config/load.js';
import { LISTEN_FORMS } from '../../src/config/listen.js';
import { ConfigError } from '../../src/config/problems.js';
import { loadTemplates } from '../../src/template/load.js';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { runMain } from '../helpers/main.js';
import { describeErrorLines } from '../../src/cli/errors.js';
import { loadChecked } from '../../src/cli/load-checked.js';

const NO_FILE = '/nonexistent/vlan-gateway-test.yaml';

const run = runMain;

const rows: Array<{ argv: string[]; code: number; stderr: string }> = [
  // An empty --netns used to mean "no namespace": the command acted on the caller's own network.
  { argv: ['plan', '--config', NO_FILE, '--netns'], code: 2, stderr: 'vlan-gateway: --netns needs a value\n' },
  { argv: ['plan', '--config', NO_FILE, '--netns='], code: 2, stderr: 'vlan-gateway: --netns needs a value\n' },
  { argv: ['apply', '--config', NO_FILE, '--netns', 'vgw-test-no-such-ns'], code: 2, stderr: 'vlan-gateway: --netns vgw-test-no-such-ns: no such network namespace (`ip netns list` shows the names)\n' },
  { argv: ['down', '--config', NO_FILE, '--netns', '../x'], code: 2, stderr: 'vlan-gateway: --netns ../x: no such network namespace (`ip netns list` shows the names)\n' },
  // status and lab used to take --netns and ignore it: status asked this namespace's loopback whatever was named.
  { argv: ['status', '--netns', 'vgw-test-no-such-ns'], code: 2, stderr: 'vlan-gateway: --netns vgw-test-no-such-ns: no such network namespace (`ip netns list` shows the names)\n' },
  { argv: ['lab', 'check', '--netns', 'vgw-test-no-such-ns'], code: 2, stderr: 'vlan-gateway: --netns: the lab makes its own namespaces (vgwlab-NAME-*); name the lab with --name\n' },
  { argv: ['plan', '--config', NO_FILE, '--netns', 'a', '--netns', 'b'], code: 2, stderr: 'vlan-gateway: --netns is given 2 times ("a", "b"); give it once\n' },
  { argv: ['validate', '--config', 'a.yaml', '--config', 'b.yaml'], code: 2, stderr: 'vlan-gateway: --config is given 2 times ("a.yaml", "b.yaml"); give it once\n' },
  { argv: ['validate', '--config'], code: 2, stderr: 'vlan-gateway: --config needs a value\n' },
  // A file that cannot be read is one line naming it once (it was "invalid config: F: 1 problem:" over "cannot read F: …").
  // Errors under --detailed-exitcode are 1, never 2 ("changes pending").
  { argv: ['validate', '--config', NO_FILE], code: 2, stderr: `vlan-gateway: invalid config: cannot read ${NO_FILE}: no such file\n` },
  { argv: ['plan', '--detailed-exitcode', '--config', NO_FILE], code: 1, stderr: `vlan-gateway: invalid config: cannot read ${NO_FILE}: no such file\n` },
  { argv: ['plan', '--detailed-exitcode', '--conifg', NO_FILE], code: 1, stderr: 'vlan-gateway: Unknown argument: conifg\nRun vlan-gateway --help for usage.\n' },
  { argv: ['plan', '--detailed-exitcode', '--netns', 'vgw-test-no-such-ns'], code: 1, stderr: 'vlan-gateway: --netns vgw-test-no-such-ns: no such network namespace (`ip netns list` shows the names)\n' },
  // A flag without a value read `--flag=VALUE` as false for any VALUE but "true": `plan --detailed-exitcode=1` exited 0
  // with changes pending, `plan --down=yes` showed what apply would change.
  { argv: ['plan', '--detailed-exitcode=1', '--config', NO_FILE], code: 1, stderr: 'vlan-gateway: --detailed-exitcode takes no value (given "1"): write --detailed-exitcode, or leave it out\n' },
  // (--netns of no namespace: plan --down goes on without a config; a regression stops at the namespace instead.)
  { argv: ['plan', '--down=yes', '--config', NO_FILE, '--netns', 'vgw-test-no-such-ns'], code: 2, stderr: 'vlan-gateway: --down takes no value (given "yes"): write --down, or leave it out\n' },
  { argv: ['run', '--config', NO_FILE, '--cleanup-on-exit=on'], code: 2, stderr: 'vlan-gateway: --cleanup-on-exit takes no value (given "on"): write --cleanup-on-exit, or leave it out\n' },
  { argv: ['status', '--json=', '--url', 'notaurl'], code: 2, stderr: 'vlan-gateway: --json takes no value (given ""): write --json, or leave it out\n' },
  // --detailed-exitcode=false is plan without it: an invalid config is exit 2 there.
  { argv: ['plan', '--detailed-exitcode=false', '--config', NO_FILE], code: 2, stderr: `vlan-gateway: invalid config: cannot read ${NO_FILE}: no such file\n` },
  // run's flags are checked before the config is read.
  { argv: ['run', '--config', NO_FILE, '--log-level', 'loud'], code: 2, stderr: 'vlan-gateway: log level "loud" (--log-level or $LOG_LEVEL): expected one of trace, debug, info, warn, error, fatal, silent\n' },
  { argv: ['run', '--config', NO_FILE, '--stats-interval', '-5'], code: 2, stderr: 'vlan-gateway: --stats-interval -5: expected a whole number of milliseconds from 100 to 3600000\n' },
  { argv: ['run', '--config', NO_FILE, '--min-interval', 'abc'], code: 2, stderr: 'vlan-gateway: --min-interval is not a number: expected a whole number of milliseconds from 0 to 3600000\n' },
  { argv: ['run', '--config', NO_FILE, '--health-timeout', '1e12'], code: 2, stderr: 'vlan-gateway: --health-timeout 1000000000000: expected a whole number of milliseconds from 1000 to 3600000\n' },
  // A number flag without its number used to run with the default (or, empty, with 0: --min-interval "" from an
  // unset variable in a Compose command turned coalescing off).
  { argv: ['run', '--config', NO_FILE, '--stats-interval'], code: 2, stderr: 'vlan-gateway: --stats-interval needs a value\n' },
  { argv: ['run', '--config', NO_FILE, '--health-timeout', '--log-level', 'info'], code: 2, stderr: 'vlan-gateway: --health-timeout needs a value\n' },
  { argv: ['run', '--config', NO_FILE, '--min-interval', ''], code: 2, stderr: 'vlan-gateway: --min-interval needs a value\n' },
  { argv: ['run', '--config', NO_FILE, '--min-interval='], code: 2, stderr: 'vlan-gateway: --min-interval needs a value\n' },
  { argv: ['run', '--config', NO_FILE, '--command-timeout', '2000', '--command-timeout', '3000'], code: 2, stderr: 'vlan-gateway: --command-timeout is given 2 times ("2000", "3000"); give it once\n' },
  // --listen reads as http.listen does (listen.ts): a port alone and 0:PORT are every IPv4 address, and get as far as the
  // config; `*` and a host of digits and dots that is no address were taken, and the start failed on them (exit 1,
  // "not an address"), with no word of what is taken.
  { argv: ['run', '--config', NO_FILE, '--listen', '10123'], code: 2, stderr: `vlan-gateway: invalid config: cannot read ${NO_FILE}: no such file\n` },
  { argv: ['run', '--config', NO_FILE, '--listen', '0:9100'], code: 2, stderr: `vlan-gateway: invalid config: cannot read ${NO_FILE}: no such file\n` },
  { argv: ['run', '--config', NO_FILE, '--listen', '*:9100'], code: 2, stderr: `vlan-gateway: --listen *:9100: * is not an IPv4 address or a host name; ${LISTEN_FORMS}\n` },
  { argv: ['run', '--config', NO_FILE, '--listen', '999.1.1.1:9100'], code: 2, stderr: 'vlan-gateway: --listen 999.1.1.1:9100: 999.1.1.1 is not an IPv4 address\n' },
  { argv: ['run', '--config', NO_FILE, '--listen', '[:]:9100'], code: 2, stderr: `vlan-gateway: --listen [:]:9100: [:] is not an IPv6 address; ${LISTEN_FORMS}\n` },
  { argv: ['run', '--config', NO_FILE, '--listen', '[::]9100'], code: 2, stderr: `vlan-gateway: --listen [::]9100 is not an address to listen on; ${LISTEN_FORMS}\n` },
  // --schedule is checked before the config is read, as reconcile.schedule is: a backwards range ran the drift check
  // 57 minutes in the hour.
  { argv: ['run', '--config', NO_FILE, '--schedule', '5-1 * * * *'], code: 2, stderr: 'vlan-gateway: --schedule "5-1 * * * *": in the minute field, 5-1 runs backwards: a range goes from the lower value up; for 5 round to 1, write 5-59,0-1\n' },
  { argv: ['run', '--config', NO_FILE, '--schedule', '0 0 * junk-MAR *'], code: 2, stderr: 'vlan-gateway: --schedule "0 0 * junk-MAR *": in the month field, junk is not a month: a month is 1 to 12 or its name, JAN to DEC or in full\n' },
  { argv: ['status', '--listen', 'bogus'], code: 2, stderr: `vlan-gateway: --listen bogus is not an address to listen on; ${LISTEN_FORMS}\n` },
  // A long value is shortened as run's --listen shows it, not echoed whole (a pasted config line, or worse).
  { argv: ['status', '--listen', `${'a'.repeat(100)}:x`], code: 2, stderr: `vlan-gateway: --listen ${'a'.repeat(40)}… (102 characters) is not an address to listen on; ${LISTEN_FORMS}\n` },
  { argv: ['status', '--listen', `${'a'.repeat(100)}:9100`, '--url', 'http://127.0.0.1:2'], code: 2, stderr: `vlan-gateway: --listen ${'a'.repeat(40)}… (105 characters) and --url http://127.0.0.1:2 both say where the gateway is: give one\n` },
  { argv: ['status', '--url', 'notaurl'], code: 2, stderr: 'vlan-gateway: --url notaurl: expected http://HOST:PORT\n' },
  { argv: ['status', '--url', `x${'a'.repeat(100)}`], code: 2, stderr: `vlan-gateway: --url x${'a'.repeat(39)}… (101 characters): expected http://HOST:PORT\n` },
  { argv: ['status', '--listen', '127.0.0.1:1', '--url', 'http://127.0.0.1:2'], code: 2, stderr: 'vlan-gateway: --listen 127.0.0.1:1 and --url http://127.0.0.1:2 both say where the gateway is: give one\n' },
  // A mistyped command was "Unknown argument: aply"; lab without its action "Not enough non-option arguments: got 0, need at least 1".
  { argv: ['aply', '--config', NO_FILE], code: 2, stderr: 'vlan-gateway: Unknown command: aply (the commands: validate, plan, apply, down, run, status, lab)\nRun vlan-gateway --help for usage.\n' },
  { argv: ['--config', NO_FILE, 'dwon'], code: 2, stderr: 'vlan-gateway: Unknown command: dwon (the commands: validate, plan, apply, down, run, status, lab)\nRun vlan-gateway --help for usage.\n' },
  { argv: ['lab', '--name', 'x'], code: 2, stderr: 'vlan-gateway: lab needs an action: demo, up, check or down\nRun vlan-gateway --help for usage.\n' },
  { argv: ['plan', '--config', NO_FILE, 'extra'], code: 2, stderr: 'vlan-gateway: Unknown argument: extra\nRun vlan-gateway --help for usage.\n' },
  { argv: ['lab', 'down', '--name', 'BAD'], code: 2, stderr: 'vlan-gateway: lab name "BAD" must be a lowercase letter, then up to 7 lowercase letters or digits\n' },
];

for (const row of rows) {
  test.serial(`vlan-gateway ${row.argv.join(' ')} → exit ${row.code}`, async (t) => {
    const result = await run(...row.argv);
    t.is(result.stderr, row.stderr);
    t.is(result.code, row.code);
    t.notRegex(result.stderr, /^\s+at /m, 'no stack trace');
  });
}

test.serial('status with nothing listening: a failure (exit 1) that says what to check, not a stack', async (t) => {
  // A port that was just free on loopback: nothing listens there.
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  const result = await run('status', '--url', `http://127.0.0.1:${port}`);
  t.is(result.stderr, `vlan-gateway: cannot reach the gateway at http://127.0.0.1:${port} (ECONNREFUSED); is \`vlan-gateway run\` running, and is that its --listen address?\n`);
  t.is(result.code, 1);
});

/** An HTTP server on HOST (port 0: one the kernel picks) that answers /status as a gateway would. */
async function fakeGateway(host: string, port = 0): Promise<{ port: number; close: () => Promise<void> }> {
  const doc = {
    version: '9.9.9-fake', config: { path: '/etc/vlan-gateway/gateway.yaml', hash: 'abc' }, backend: 'nft', ready: true, healthy: true,
    uplink: { interface: 'eth0' }, vlans: [], lastReconcile: null, driftRepairs: {}, reload: { lastAt: null, lastResult: null, lastErrors: [] },
  };
  const server = createHttpServer((req, res) => {
    res.writeHead(req.url === '/status' ? 200 : 404, { 'content-type': 'application/json' });
    res.end(JSON.stringify(doc));
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, resolve));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

// A gateway whose config moves its endpoints (http.listen) serves there, and `docker exec vlan-gateway vlan-gateway
// status` (the image sets $VLAN_GATEWAY_CONFIG) used to ask port 10123 anyway: "cannot reach the gateway".
test.serial('status asks where the config\'s http.listen says the gateway serves, and says so when nothing answers', async (t) => {
  const gateway = await fakeGateway('127.0.0.1');
  const dir = await mkdtemp(join(tmpdir(), 'vgw-status-'));
  try {
    const config = join(dir, 'gateway.yaml');
    await writeFile(config, `vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\nhttp: {listen: "0.0.0.0:${gateway.port}"}\n`);
    const result = await run('status', '--config', config);
    t.is(result.stderr, '');
    t.is(result.code, 0);
    t.regex(result.stdout, /^vlan-gateway 9\.9\.9-fake: ready, healthy\n/);
    await gateway.close();
    const refused = await run('status', '--config', config);
    t.is(refused.stderr, `vlan-gateway: cannot reach the gateway at http://127.0.0.1:${gateway.port} (ECONNREFUSED); is \`vlan-gateway run\` running, `
      + `and is that its address (http.listen 0.0.0.0:${gateway.port} in ${config}; give --listen or --url if it was started with another)?\n`);
    t.is(refused.code, 1);
  } finally {
    await gateway.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
});

// `run --listen 127.0.0.2:PORT` serves on that address alone; status --listen asked 127.0.0.1:PORT whatever the host.
test.serial('status --listen HOST:PORT asks HOST (loopback only for a wildcard address)', async (t) => {
  const gateway = await fakeGateway('127.0.0.2');
  try {
    const result = await run('status', '--listen', `127.0.0.2:${gateway.port}`);
    t.is(result.stderr, '');
    t.regex(result.stdout, /^vlan-gateway 9\.9\.9-fake: ready, healthy\n/);
  } finally {
    await gateway.close();
  }
});

// An IPv6 host with its zone (fe80::1%eth0: a link-local address names its NIC), which run --listen serves on: status
// put it in a URL, which holds no zone, and said "cannot reach the gateway at http://[…%…]:PORT (ERR_INVALID_URL)".
test.serial('status --listen [IPv6%ZONE]:PORT asks that address on that NIC', async (t) => {
  const gateway = await fakeGateway('::1');
  try {
    const result = await run('status', '--listen', `[::1%lo]:${gateway.port}`);
    t.is(result.stderr, '');
    t.regex(result.stdout, /^vlan-gateway 9\.9\.9-fake: ready, healthy\n/);
  } finally {
    await gateway.close();
  }
});

// fetch refuses the ports browsers block (10080, 6000, 6665-6669, ...) before connecting, and status used it: a
// gateway started with --listen 0.0.0.0:10080 served curl and Prometheus, but status said "(bad port)".
test.serial('status reaches a gateway on a port that browsers block (10080, 6000, 6665-6669)', async (t) => {
  let gateway: Awaited<ReturnType<typeof fakeGateway>> | undefined;
  for (const port of [10080, 6000, 6665, 6666, 6667, 6668, 6669]) {
    gateway = await fakeGateway('127.0.0.3', port).catch(() => undefined);
    if (gateway) break;
  }
  if (!gateway) return t.fail('none of the ports was free on 127.0.0.3');
  try {
    const result = await run('status', '--listen', `127.0.0.3:${gateway.port}`);
    t.is(result.stderr, '');
    t.is(result.code, 0);
    t.regex(result.stdout, /^vlan-gateway 9\.9\.9-fake: ready, healthy\n/);
  } finally {
    await gateway.close();
  }
});

// A config that cannot be read, with no --config given, said only "cannot read /etc/vlan-gateway/gateway.yaml: no such
// file": not where that path came from, nor how to give another (a forgotten $VLAN_GATEWAY_CONFIG looked made up).
test.serial('a config named by $VLAN_GATEWAY_CONFIG that cannot be read says so, and how to give another', async (t) => {
  const saved = process.env.VLAN_GATEWAY_CONFIG;
  process.env.VLAN_GATEWAY_CONFIG = NO_FILE;
  try {
    for (const command of [['validate'], ['plan', '--detailed-exitcode'], ['run']]) {
      const result = await run(...command);
      t.is(result.stderr, `vlan-gateway: invalid config: cannot read ${NO_FILE}: no such file (named by $VLAN_GATEWAY_CONFIG; give another with --config FILE)\n`, command.join(' '));
      t.is(result.code, command.includes('--detailed-exitcode') ? 1 : 2);
    }
    const given = await run('validate', '--config', NO_FILE);
    t.is(given.stderr, `vlan-gateway: invalid config: cannot read ${NO_FILE}: no such file\n`, '--config: the user named it');
  } finally {
    if (saved === undefined) delete process.env.VLAN_GATEWAY_CONFIG;
    else process.env.VLAN_GATEWAY_CONFIG = saved;
  }
});

test('the default config path that cannot be read says it is the default, and how to give the config', async (t) => {
  const error = await loadConfig(NO_FILE).catch((e: unknown) => e);
  const told = withConfigSource(error, undefined, {});
  t.true(told instanceof ConfigError);
  t.deepEqual((told as ConfigError).lines, [`cannot read ${NO_FILE}: no such file (the default path; give the config with --config FILE or $VLAN_GATEWAY_CONFIG)`]);
  t.is(withConfigSource(error, NO_FILE, {}), error, 'given with --config: as it was');
  const invalid = await loadConfig(fileURLToPath(new URL('../../package.json', import.meta.url))).catch((e: unknown) => e);
  t.is(withConfigSource(invalid, undefined, {}), invalid, 'a file read but invalid: as it was');
});

// `--url http://HOST:PORT/` asked HOST:PORT/status, but a refusal was reported as "http://HOST:PORT//status answered".
test.serial('status --url with a trailing slash names the URL it asked when the gateway refuses it', async (t) => {
  const server = createHttpServer((req, res) => {
    res.writeHead(req.url === '/status' ? 403 : 404, { 'content-type': 'text/plain' });
    res.end('forbidden\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const result = await run('status', '--url', `http://127.0.0.1:${port}/`);
    t.is(result.stderr, `vlan-gateway: http://127.0.0.1:${port}/status answered 403 Forbidden (http.allowFrom does not let this client in)\n`);
    t.is(result.code, 1);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

test('an empty $VLAN_GATEWAY_CONFIG (a shell\'s `VAR=`) is unset, not a file named ""', (t) => {
  t.is(resolveConfigPath(undefined, { VLAN_GATEWAY_CONFIG: '' }), DEFAULT_CONFIG_PATH);
  t.is(resolveConfigPath(undefined, { VLAN_GATEWAY_CONFIG: '/x.yaml' }), '/x.yaml');
  t.is(resolveConfigPath('/y.yaml', { VLAN_GATEWAY_CONFIG: '/x.yaml' }), '/y.yaml');
});

test('a rules.dir entry that cannot be read as a template is a config error naming the config and the entry', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    await mkdir(join(dir, 'filter', 'forward.hbs'), { recursive: true });
    const error = await t.throwsAsync(loadTemplates(dir, 'gateway.yaml'), { instanceOf: ConfigError });
    t.deepEqual(error?.lines, [`rules.dir: cannot read ${join(dir, 'filter', 'forward.hbs')} (is a directory)`]);
    t.regex(error?.message ?? '', /^gateway\.yaml: 1 problem:/);
    await rm(join(dir, 'filter'), { recursive: true });
    await writeFile(join(dir, 'filter'), '');
    const notDir = await t.throwsAsync(loadTemplates(join(dir, 'filter'), 'gateway.yaml'), { instanceOf: ConfigError });
    t.deepEqual(notDir?.lines, [`rules.dir: cannot read ${join(dir, 'filter')} (not a directory)`]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// An empty file (0 bytes, or every line commented out) was reported as `vlans: is required`, naming no file. Said
// under "invalid config: F: 1 problem:" it named the file twice, over two lines: it is one line.
test.serial('an empty config file is said to be empty, with its path, exit 2', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-empty-'));
  try {
    const config = join(dir, 'gateway.yaml');
    await writeFile(config, '');
    const empty = await runMain('validate', '--config', config);
    t.is(empty.stderr, `vlan-gateway: invalid config: ${config} is empty: a config needs at least vlans\n`);
    t.is(empty.code, 2);
    await writeFile(config, '# vlans:\n#   - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\n\n');
    const comments = await runMain('apply', '--config', config);
    t.is(comments.stderr, `vlan-gateway: invalid config: ${config} is empty (only comments): a config needs at least vlans\n`);
    t.is(comments.code, 2);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test.serial('every problem in one run: a rules.dir that cannot be read is listed with the file\'s other problems, each with its line', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    const config = join(dir, 'gateway.yaml');
    const missing = join(dir, 'rules.d');
    await writeFile(config, 'vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.30.1}\nrules:\n  dir: rules.d\n');
    const both = await runMain('validate', '--config', config);
    t.is(both.code, 2);
    t.is(both.stderr, `vlan-gateway: invalid config: ${config}: 2 problems:\n`
      + '  vlans[0].gateway: 192.168.30.1 is outside 192.168.10.0/24 (line 2)\n'
      + `  rules.dir: cannot read ${missing} (no such directory) (line 4)\n`);
    // Alone, it is said the same way: with its line.
    await writeFile(config, 'vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\nrules:\n  dir: rules.d\n');
    const alone = await runMain('validate', '--config', config);
    t.is(alone.code, 2);
    t.is(alone.stderr, `vlan-gateway: invalid config: ${config}: 1 problem:\n  rules.dir: cannot read ${missing} (no such directory) (line 4)\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test.serial('validate says every broken template of rules.dir in one run, exit 2', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    const config = join(dir, 'gateway.yaml');
    await mkdir(join(dir, 'rules.d', 'filter'), { recursive: true });
    await mkdir(join(dir, 'rules.d', 'nat'));
    await writeFile(join(dir, 'rules.d', 'filter', 'forward.hbs'), '-j ACCEPT\nhello\n-p tcp -F -j ACCEPT\n');
    await writeFile(join(dir, 'rules.d', 'nat', 'postrouting.hbs'), '{{nosuch}}\n');
    await writeFile(config, 'vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\nrules:\n  dir: rules.d\n');
    const result = await runMain('validate', '--config', config);
    t.is(result.code, 2);
    const rules = join(dir, 'rules.d');
    t.is(result.stderr, 'vlan-gateway: invalid rule templates (nothing was applied):\n'
      + `${rules}/filter/forward.hbs line 2: "hello" is not a rule body (it must start with an option such as -s or -j)\n`
      + `${rules}/filter/forward.hbs line 3: "-p tcp -F -j ACCEPT" uses -F: templates write rule bodies, the planner writes commands\n`
      + `${rules}/nat/postrouting.hbs: "nosuch" is not defined (template line 1, column 3)\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// With a valid config, a file of rules.dir that is no template (or cannot be read) was said alone: the other
// templates' syntax and render errors came in the next run, one problem fixed a run. Now all of them come at once, as
// problems of rules.dir; a reload (loadChecked) logs the same lines, an apply (plan) says them too.
test.serial('validate says a file that is no template, one that cannot be read, and what rendering the others finds, in one run', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    const config = join(dir, 'gateway.yaml');
    const rules = join(dir, 'rules.d');
    await mkdir(join(rules, 'filter'), { recursive: true });
    await mkdir(join(rules, 'nat', 'prerouting.hbs'), { recursive: true });
    await writeFile(join(rules, 'filter', 'input.hbs'), '-j ACCEPT\n');
    await writeFile(join(rules, 'filter', 'forward.hbs'), '-j ACCEPT\nhello\n');
    await writeFile(join(rules, 'nat', 'postrouting.hbs'), '{{#each vlans}}\n-s {{subnet}} -j RETURN\n{{/if}}\n');
    await writeFile(config, 'vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\nrules:\n  dir: rules.d\n');
    const expected = [
      `rules.dir: ${rules}/filter/input.hbs is not a known template; use filter/forward.hbs, nat/prerouting.hbs, nat/postrouting.hbs `
      + '(they fill VGW-USER-FORWARD, VGW-USER-PREROUTING, VGW-USER-POSTROUTING) (line 4)',
      `rules.dir: cannot read ${rules}/nat/prerouting.hbs (is a directory) (line 4)`,
      `rules.dir: ${rules}/filter/forward.hbs line 2: "hello" is not a rule body (it must start with an option such as -s or -j) (line 4)`,
      `rules.dir: ${rules}/nat/postrouting.hbs: syntax error on template line 3: "{{/if}}" closes {{#each}}, opened on template line 1; close it with {{/each}} (line 4)`,
    ];
    for (const command of ['validate', 'plan']) {
      const result = await runMain(command, '--config', config);
      t.is(result.code, 2, command);
      t.is(result.stderr, `vlan-gateway: invalid config: ${config}: 4 problems:\n${expected.map((l) => `  ${l}\n`).join('')}`, command);
    }
    const reload = await t.throwsAsync(loadChecked(config, undefined), { instanceOf: ConfigError });
    t.deepEqual(describeErrorLines(reload), expected.map((l) => `invalid config: ${config}: ${l}`));
    // What renders with every NIC present, and not before Docker attaches them, is said as validate says it.
    await rm(join(rules, 'nat'), { recursive: true });
    await writeFile(join(rules, 'filter', 'forward.hbs'), '-i {{vlans.[0].nic}} -j ACCEPT\n');
    const detached = await runMain('validate', '--config', config);
    t.is(detached.stderr, `vlan-gateway: invalid config: ${config}: 2 problems:\n  ${expected[0]!}\n`
      + `  rules.dir: ${rules}/filter/forward.hbs: vlans.0 is not a value templates have (vlans: an index) (rendered as at a start before Docker `
      + 'attaches the NICs: no VLAN has its NIC yet, and uplink.nic has no value; put a rule that needs it inside {{#if uplink.nic}}) (line 4)\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// A config with problems of its own and a broken template said the config's problems alone; the template's came in
// the run after the config was fixed. What needs no config to be found (a file that is no template, a syntax error)
// now comes in the same run, and the rest is said to be left unchecked. A reload logs the same lines.
test.serial('validate says a broken template\'s syntax and a file that is no template with the config\'s own problems, and that the rest waits for a valid config', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-rules-'));
  try {
    const config = join(dir, 'gateway.yaml');
    const rules = join(dir, 'rules.d');
    await mkdir(join(rules, 'filter'), { recursive: true });
    await mkdir(join(rules, 'nat'));
    await writeFile(join(rules, 'filter', 'forward.hbs'), '{{#each vlans}}\n-i {{nic}} -p tcp --dport 25 -j REJECT\n{{/if}}\n');
    await writeFile(join(rules, 'nat', 'postrouting.hbs'), '-A FOO -j ACCEPT\n');
    await writeFile(join(rules, 'filter', 'input.hbs'), '-j ACCEPT\n');
    await writeFile(config, 'vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.30.1}\nrules:\n  dir: rules.d\n');
    const both = await runMain('validate', '--config', config);
    t.is(both.code, 2);
    t.is(both.stderr, `vlan-gateway: invalid config: ${config}: 3 problems:\n`
      + '  vlans[0].gateway: 192.168.30.1 is outside 192.168.10.0/24 (line 2)\n'
      + `  rules.dir: ${rules}/filter/input.hbs is not a known template; use filter/forward.hbs, nat/prerouting.hbs, nat/postrouting.hbs `
      + '(they fill VGW-USER-FORWARD, VGW-USER-PREROUTING, VGW-USER-POSTROUTING) (line 4)\n'
      + `  rules.dir: ${rules}/filter/forward.hbs: syntax error on template line 3: "{{/if}}" closes {{#each}}, opened on template line 1; close it with {{/each}} (line 4)\n`
      + '  (1 template of rules.dir was parsed, not rendered: its rules are checked once the config is valid)\n');
    // A reload logs one line per problem, the note with the last (not as an error of its own).
    const reload = await t.throwsAsync(loadConfig(config), { instanceOf: ConfigError });
    t.deepEqual(describeErrorLines(reload), [
      `invalid config: ${config}: vlans[0].gateway: 192.168.30.1 is outside 192.168.10.0/24 (line 2)`,
      `invalid config: ${config}: rules.dir: ${rules}/filter/input.hbs is not a known template; use filter/forward.hbs, nat/prerouting.hbs, `
      + 'nat/postrouting.hbs (they fill VGW-USER-FORWARD, VGW-USER-PREROUTING, VGW-USER-POSTROUTING) (line 4)',
      `invalid config: ${config}: rules.dir: ${rules}/filter/forward.hbs: syntax error on template line 3: "{{/if}}" closes {{#each}}, opened on template line 1; close it with {{/each}} (line 4) `
      + '(1 template of rules.dir was parsed, not rendered: its rules are checked once the config is valid)',
    ]);
    // Templates without a problem their syntax shows: the config's problems, and what was left unchecked.
    await rm(join(rules, 'filter', 'input.hbs'));
    await writeFile(join(rules, 'filter', 'forward.hbs'), '{{#each vlans}}\n-i {{nic}} -p tcp --dport 25 -j REJECT\n{{/each}}\n');
    const config1 = await runMain('validate', '--config', config);
    t.is(config1.stderr, `vlan-gateway: invalid config: ${config}: 1 problem:\n`
      + '  vlans[0].gateway: 192.168.30.1 is outside 192.168.10.0/24 (line 2)\n'
      + '  (2 templates of rules.dir were parsed, not rendered: their rules are checked once the config is valid)\n');
    // The config fixed: the templates rendered and checked, as before.
    await writeFile(config, 'vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}\nrules:\n  dir: rules.d\n');
    const fixed = await runMain('validate', '--config', config);
    t.is(fixed.code, 2);
    t.is(fixed.stderr, `vlan-gateway: invalid rule template: ${rules}/nat/postrouting.hbs line 1: "-A FOO -j ACCEPT" uses -A: `
      + 'templates write rule bodies, the planner writes commands\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// status and lab refuse --netns (status asks the supervisor over HTTP; the lab makes its own namespaces): their help
// does not offer it, while the commands that act in a namespace do.
// (yargs ends the process after --help: each runs as a child.)
test('--help offers --netns where it is taken (for status, as the namespace whose supervisor says where it listens), and not for lab, which refuses it', async (t) => {
  const main = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
  const help = async (command: string) => (await execa(process.execPath, ['--import=tsx', main, command, '--help'], { env: { VLAN_GATEWAY_PLAN_CACHE: 'off' } })).stdout;
  const [plan, status, lab] = await Promise.all(['plan', 'status', 'lab'].map(help));
  t.regex(plan!, /--netns/);
  t.regex(status!, /--netns +the network namespace a `run --netns NAME` manages: it says where\s+it listens/);
  t.notRegex(lab!, /--netns/);
});

// A write to a stdout that cannot take it fails as an 'error' event after the fact; unhandled, it ended the process
// with a stack trace wherever it was (`lab up | head -c 10` left the lab built and its config not applied).
test('a stdout whose reader is gone (| head, | grep -q) ends the output quietly, the command finishing as it would', async (t) => {
  const main = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
  const config = fileURLToPath(new URL('../../examples/lab.yaml', import.meta.url));
  const child = execa(process.execPath, ['--import=tsx', main, 'validate', '--config', config], { env: { VLAN_GATEWAY_PLAN_CACHE: 'off' }, reject: false, stdout: 'pipe' });
  child.stdout!.destroy(); // the reader gone before the first line: every write fails with EPIPE
  const result = await child;
  t.is(result.stderr, '');
  t.is(result.exitCode, 0);
});

test('a stdout that cannot be written (a full disk) is said in one line, exit 1', async (t) => {
  const main = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
  const config = fileURLToPath(new URL('../../examples/lab.yaml', import.meta.url));
  const full = await open('/dev/full', 'w'); // the child's own stdout (execa's `file` option would write it from here)
  try {
    const child = spawn(process.execPath, ['--import=tsx', main, 'validate', '--config', config], {
      env: { ...process.env, VLAN_GATEWAY_PLAN_CACHE: 'off' }, stdio: ['ignore', full.fd, 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += String(chunk)));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    t.is(stderr, 'vlan-gateway: cannot write the output to stdout: ENOSPC (no space left on the device)\n');
    t.is(code, 1);
  } finally {
    await full.close();
  }
});
