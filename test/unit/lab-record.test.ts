/**
 * The lab's record of the config `lab up` applied (src/lab/record.ts): written, read back, and anything that is
 * not a record it wrote (missing, cut short, a relative path) read as none, so `lab check` falls back to the
 * example instead of failing on it.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readLabRecord, removeLabRecord, textDigest, writeLabRecord } from '../../src/lab/record.js';

test('a record is written, read back and removed with its directory', async (t) => {
  const parent = await mkdtemp(join(tmpdir(), 'vgw-lab-record-'));
  const dir = join(parent, 'vgwlab');
  try {
    t.is(await readLabRecord('demo', dir), undefined);
    const record = { config: '/etc/mine.yaml', digest: textDigest('uplink: {}\n') };
    await writeLabRecord('demo', record, dir);
    t.deepEqual(await readLabRecord('demo', dir), record);
    t.is(await readLabRecord('other', dir), undefined);
    await removeLabRecord('demo', dir);
    t.false(existsSync(dir), 'the directory goes with the last record');
    await removeLabRecord('demo', dir);
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});

test('a record that is not one we wrote is none', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-lab-record-'));
  try {
    for (const text of ['{"config": "/etc/mine.yaml", "dig', '{"config": "mine.yaml", "digest": "x"}', '[]', '']) {
      await writeFile(join(dir, 'demo.json'), text);
      t.is(await readLabRecord('demo', dir), undefined, text);
    }
    await t.throwsAsync(readLabRecord('../x', dir), { message: /lab name/ });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// Another lab's down removes the directory once it holds no record: between a write's mkdir and its writeFile the
// directory could be gone, and lab up failed with ENOENT after building the lab.
test('a record is written while other labs remove theirs (and with them the directory)', async (t) => {
  const parent = await mkdtemp(join(tmpdir(), 'vgw-lab-record-'));
  const dir = join(parent, 'vgwlab');
  const record = { config: '/etc/mine.yaml', digest: textDigest('x') };
  try {
    for (let i = 0; i < 300; i++) {
      await Promise.all([writeLabRecord('mine', record, dir), removeLabRecord('other', dir), removeLabRecord('other', dir)]);
      t.deepEqual(await readLabRecord('mine', dir), record);
      await removeLabRecord('mine', dir);
    }
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});
