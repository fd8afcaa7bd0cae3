/**
 * What the gateway keeps between runs (the plan cache; the clears left to do, in the state directory) is written to
 * FILE.PID.tmp and renamed over FILE. A run or an apply killed between the two (kill -9, the OOM killer, a container
 * stopped hard: seen with a SIGKILL injected at the rename) left the temporary there for ever; the plan cache's went
 * only at a flush more than a minute later. The next start, or apply, removes those whose writer is gone, and no
 * other: not one a live process may be writing.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { namespaceInode } from '../../src/cli/instance-lock.js';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { bareNamespace, GatewayProcess, REPO, scratchDir } from '../helpers/supervisor.js';
import { tearDownAlways } from '../helpers/teardown.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const { namespace, bundle } = bareNamespace(test, 'a');
const config = join(REPO, 'examples', 'lab.yaml');

let scratch: string | undefined;
tearDownAlways('remove the scratch directory', async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** A state directory and a plan cache holding what killed writers left, and a temporary a live process may be writing. */
async function leftBehind(): Promise<{ env: Record<string, string>; state: string; cache: string; live: string[] }> {
  scratch ??= await scratchDir('vgw-abandoned-');
  const dir = await mkdtemp(join(scratch, 'run-'));
  const state = join(dir, 'state');
  const cache = join(dir, 'plan-cache');
  await mkdir(state, { mode: 0o700 });
  await mkdir(cache, { mode: 0o700 });
  const inode = await namespaceInode(namespace);
  const gone = spawnSync('true').pid; // exited, and reaped
  const live = [`unpoliced-${inode}.json.${process.pid}.tmp`, `desired-writing.json.${process.pid}.tmp`];
  for (const name of [`unpoliced-${inode}.json.${gone}.tmp`, `flows-${inode}.json.${gone}.tmp`, live[0]!]) await writeFile(join(state, name), '{');
  for (const name of [`desired-killed.json.${gone}.tmp`, `config-killed.json.${gone}.tmp`, live[1]!]) await writeFile(join(cache, name), '{');
  return { env: { VLAN_GATEWAY_STATE_DIR: state, VLAN_GATEWAY_PLAN_CACHE: cache }, state, cache, live };
}

const temporaries = async (dir: string) => (await readdir(dir)).filter((f) => f.endsWith('.tmp')).sort();

kernel(`a start removes the temporaries of the state files and of the plan cache that killed writers left${NEEDS_ROOT}`, async (t) => {
  const { env, state, cache, live } = await leftBehind();
  const gateway = await GatewayProcess.start({ bundle: bundle().path, netns: namespace, config, env });
  try {
    await gateway.waitReady();
    await gateway.waitForLog('the plan cache written after the start pass', (l) => l.msg === 'plan cache after the start pass');
    t.deepEqual(await temporaries(state), [live[0]], 'only the live writer\'s is left in the state directory');
    t.deepEqual(await temporaries(cache), [live[1]], 'only the live writer\'s is left in the plan cache');
    t.is((await gateway.stop()).code, 0);
  } finally {
    gateway.killGroup();
    await gateway.exited;
  }
});

kernel(`an apply removes the temporaries of the state files that killed writers left${NEEDS_ROOT}`, async (t) => {
  const { env, state, live } = await leftBehind();
  const result = await execa(process.execPath, [bundle().path, 'apply', '--netns', namespace, '--config', config], { env, reject: false });
  t.is(result.exitCode, 0, result.stderr);
  t.deepEqual(await temporaries(state), [live[0]]);
});
