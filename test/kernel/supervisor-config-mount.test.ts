/**
 * A config file mounted on its own, as `-v ./gateway.yaml:/etc/vlan-gateway/gateway.yaml` or a Compose file volume
 * mounts it: the gateway runs in a private mount namespace in which its config path is a bind mount of a file
 * elsewhere (the "host" file). Such a mount pins the file's inode. A write on the host in place reaches the
 * gateway (the watch on the file itself fires: the directory it watches is not the host's) and is applied; a
 * rename over the host file (an editor, `sed -i`) cannot reach it, and the reload says so instead of applying
 * the old text again. The machine's own mounts are never touched: the mounts live and die with the process.
 */
import test from 'ava';
import { execa } from 'execa';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dump as stringify, load as parse } from 'js-yaml';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { chainLines, exampleLab, GatewayProcess, iptablesSave, sleep } from '../helpers/supervisor.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const setup = exampleLab(test, 'f', 'vgw-mount-');
const { router } = setup;

/** The host's file: the scratch copy of the example, mounted on its own at `mountedAt`. */
const hostFile = () => setup.configPath;
const mountedAt = () => join(setup.scratch, 'etc', 'gateway.yaml');
let example: Record<string, unknown> = {};
let gateway: GatewayProcess | undefined;

test.before(async () => {
  if (!isRoot()) return;
  example = parse(await readFile(hostFile(), 'utf8')) as Record<string, unknown>;
  await execa('mkdir', ['-p', join(setup.scratch, 'etc')]);
  await writeFile(mountedAt(), ''); // the mount point; what the gateway reads is the host file mounted over it
  gateway = await GatewayProcess.start({ bundle: setup.bundle.path, netns: router(), config: mountedAt(), mountConfigFrom: hostFile(), statsIntervalMs: 300 });
  await gateway.waitReady();
});

const withDrop = (port: number) => stringify({ ...example, forwarding: { default: 'accept', rules: [{ from: 'lab', to: 'office', proto: 'tcp', ports: port, action: 'drop' }] } });
const dropsPort = (save: string, port: number) => save.split('\n').some((l) => l.includes('VGW-') && new RegExp(`-p tcp .*--dports? ${port}\\b.*-j DROP`).test(l));

kernel(`the start warns that the config file is mounted on its own${NEEDS_ROOT}`, async (t) => {
  const warned = await gateway!.waitForLog('the warning', (l) => l.level === 40 && /mounted on its own/.test(l.msg), 5000);
  t.log(warned.msg);
  t.regex(warned.msg, /mount the directory that holds it instead/);
});

kernel(`a write in place on the host is picked up by the watch on the file and applied${NEEDS_ROOT}`, async (t) => {
  const from = gateway!.logs.length;
  await writeFile(hostFile(), withDrop(80)); // same inode: what `echo > file` or an editor writing in place does
  const reloaded = await gateway!.waitForLog('the reload', (l) => l.msg === 'config reloaded', 5000, from);
  t.is(reloaded.why, `${mountedAt()} changed`);
  await gateway!.waitForLog('the reload pass', (l) => l.trigger === 'reload' && l.msg === 'reconciled: changes applied', 5000, from);
  t.true(dropsPort(await iptablesSave(router()), 80), 'the new drop rule is applied');
  t.is((await gateway!.status()).reload.lastResult, 'success');
});

kernel(`a rename over the host file is reported as unreachable, and the running config and rules stay${NEEDS_ROOT}`, async (t) => {
  const before = await iptablesSave(router());
  const hashBefore = (await gateway!.status()).config.hash;
  const from = gateway!.logs.length;
  const next = `${hostFile()}.new`;
  await writeFile(next, withDrop(81));
  await rename(next, hostFile()); // what `sed -i` and most editors do: a new file renamed over the old one
  // The reload logs each line of the error on its own: this is the line with the reason.
  const rejected = await gateway!.waitForLog('the rejected reload', (l) => l.level >= 50 && /reload rejected.*replaced after it was mounted on its own/.test(l.msg), 5000, from);
  t.log(rejected.msg);
  t.is(rejected.why, 'file changed', 'the watch on the file fires when its last link goes');
  t.regex(rejected.msg, /mount the directory that holds the file instead of the file/);
  await sleep(500);
  const status = await gateway!.status();
  t.is(status.reload.lastResult, 'failure');
  t.is(await gateway!.metric('vlan_gateway_config_last_reload_successful'), 0);
  t.is(status.config.hash, hashBefore, 'the running config is kept');
  t.is(await iptablesSave(router()), before, 'the rules are untouched');
  t.false(dropsPort(before, 81));

  // SIGHUP says the same: the old text is never applied as if it were the edit.
  const hup = gateway!.logs.length;
  gateway!.signal('SIGHUP');
  await gateway!.waitForLog('the rejected SIGHUP reload', (l) => l.level >= 50 && l.why === 'SIGHUP' && /reload rejected.*replaced after it was mounted on its own/.test(l.msg), 5000, hup);
  t.deepEqual((await gateway!.status()).reload.lastErrors.filter((e) => /replaced after it was mounted on its own/.test(e)).length, 1, '/status shows why');
  t.true(chainLines(await iptablesSave(router()), 'VGW-FORWARD').length > 0, 'our chains are still there');
});

kernel(`a one-shot command reading such a file exits 2 and says why${NEEDS_ROOT}`, async (t) => {
  // The same situation for `docker exec … vlan-gateway plan`: a private mount namespace, a file mounted on its own,
  // the host file replaced, then the command reads the mount.
  const host = join(setup.scratch, 'host-one-shot.yaml');
  const mounted = join(setup.scratch, 'etc', 'one-shot.yaml');
  await writeFile(host, stringify(example));
  await writeFile(mounted, '');
  const script = 'mount --bind "$1" "$2" && printf "x: 1\\n" > "$1.new" && mv "$1.new" "$1" && exec "$3" "$4" validate --config "$2"';
  const r = await execa('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', host, mounted, process.execPath, setup.bundle.path], { reject: false });
  t.is(r.exitCode, 2, `${r.stdout}\n${r.stderr}`);
  t.regex(r.stderr, new RegExp(`cannot read ${mounted.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: the file was replaced after it was mounted on its own`));
  t.log(r.stderr.trim());
});
