/**
 * The file of UDP flows an apply has still to clear (src/cli/flows-left.ts). What it names, the next apply deletes
 * from conntrack as root: it is read only from a directory that root owns and nobody else can write to, reached
 * through directories and links nobody else can change. Another user's link in /tmp, or a directory of theirs on
 * the way, could swap root's directory for one holding clears of their choice between root's check and its read.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { chmod, chown, lchown, mkdir, mkdtemp, readdir, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FlowsLeft, removeAbandonedState, UnpolicedLeft } from '../../src/cli/flows-left.js';
import type { ConntrackClear } from '../../src/plan/types.js';

const asRoot = process.getuid?.() === 0 ? test.serial : test.serial.skip;
const NOBODY = 65534;
const CLEAR: ConntrackClear = { kind: 'conntrack-clear', ports: [51820, 51820], forward: 'added', local: ['192.168.10.1'] };

async function scratch(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-flows-left-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test.serial('clears written are read back, and the file goes once none are left', async (t) => {
  const dir = join(await scratch(t), 'state');
  const left = await FlowsLeft.of(undefined, dir);
  left.write([CLEAR, CLEAR]);
  t.deepEqual((await FlowsLeft.of(undefined, dir)).read(), [CLEAR]);
  left.write([]);
  t.deepEqual(await readdir(dir), []);
});

test.serial('the unpoliced clear read is removed once done, unless the file was written since, even with the same clear', async (t) => {
  const dir = join(await scratch(t), 'state');
  const unpoliced = { local: ['192.168.10.1', '203.0.113.2'] };
  (await UnpolicedLeft.of(undefined, dir)).write(unpoliced);
  const start = await UnpolicedLeft.of(undefined, dir); // the start's clear of what an earlier run left
  const read = start.read()!;
  t.deepEqual(read, unpoliced);
  (await UnpolicedLeft.of(undefined, dir)).write({ ...unpoliced }); // a pass beside it, about to write the same policy in
  start.remove(read);
  t.deepEqual((await UnpolicedLeft.of(undefined, dir)).read(), unpoliced, 'the pass\'s clear is still to do');
  const again = start.read()!;
  start.remove(again);
  t.deepEqual(await readdir(dir), [], 'what was read, and is still there, is removed once done');
});

asRoot('clears are not read through a link another user made in /tmp, nor written there', async (t) => {
  const shared = await scratch(t);
  await chmod(shared, 0o1777);
  const real = join(shared, 'real');
  (await FlowsLeft.of(undefined, real)).write([CLEAR]); // root's own, or any other directory of root's
  const link = join(shared, 'vgw-state');
  await symlink(real, link);
  await lchown(link, NOBODY, NOBODY);
  t.deepEqual((await FlowsLeft.of(undefined, link)).read(), []);
  const target = join(shared, 'target');
  await mkdir(target, { mode: 0o700 });
  const other = join(shared, 'other-link');
  await symlink(target, other);
  await lchown(other, NOBODY, NOBODY);
  (await FlowsLeft.of(undefined, other)).write([CLEAR]);
  t.deepEqual(await readdir(target), [], 'nothing written where the link leads');
  // root's own link is followed
  const own = join(shared, 'root-link');
  await symlink(real, own);
  t.deepEqual((await FlowsLeft.of(undefined, own)).read(), [CLEAR]);
});

asRoot('clears are not read from a directory inside one another user owns', async (t) => {
  const shared = await scratch(t);
  const theirs = join(shared, 'theirs');
  await mkdir(theirs);
  const state = join(theirs, 'state');
  (await FlowsLeft.of(undefined, state)).write([CLEAR]); // written while the parent was root's
  await chown(theirs, NOBODY, NOBODY); // now nobody could rename it away and put another in its place
  t.deepEqual((await FlowsLeft.of(undefined, state)).read(), []);
});

// An apply or a start killed between a write and its rename (kill -9, the OOM killer) left FILE.PID.tmp for ever.
test.serial('a temporary of these files whose writer is gone is removed; a live writer\'s, or another file\'s, stays', async (t) => {
  const dir = join(await scratch(t), 'state');
  (await FlowsLeft.of(undefined, dir)).write([CLEAR]); // the directory, made as the product makes it
  const gone = spawnSync('true').pid; // exited, and reaped
  const names = [
    `flows-4-4026531840.json.${gone}.tmp`,
    `unpoliced-4-4026531841.json.${gone}.tmp`,
    `unpoliced-4-4026531842.json.${process.pid}.tmp`, // this process's pid: a restarted container's, not a write of its own
    `unpoliced-4-4026531843.json.${process.ppid}.tmp`, // a live process's: it may be writing
    `notes.txt.${gone}.tmp`, // not one of ours
    `http-4026531846.url.${gone}.tmp`, // where a killed supervisor's endpoints listened (endpoints-file.ts)
  ];
  // Written before this process started, as a killed writer's are.
  const before = new Date(performance.timeOrigin - 5000);
  for (const name of names) {
    await writeFile(join(dir, name), '{');
    await utimes(join(dir, name), before, before);
  }
  // Being written now, in a state directory two containers share: by a writer of another PID namespace, whose pid is
  // no process here, or is this process's own (the gateway has the same pid in each container).
  const writing = [`flows-4-4026531844.json.${gone}.tmp`, `unpoliced-4-4026531845.json.${process.pid}.tmp`];
  for (const name of writing) await writeFile(join(dir, name), '{');
  removeAbandonedState(dir);
  t.deepEqual((await readdir(dir)).filter((f) => f.endsWith('.tmp')).sort(), [names[3], names[4], ...writing].sort());
});
