/**
 * What a lab was built from: `lab up` records the config file it applied (its absolute path and a digest of its
 * text) so that a later `lab check` without --config checks that config's policy, not the example's. A lab built
 * from a config of one's own used to be checked against the example and show false mismatches.
 *
 * One small JSON file per lab under /run (tmpfs: gone at reboot, as the namespaces are), removed with the lab by
 * `labDown`. A missing, unreadable or malformed record is treated as none: the lab then falls back to the
 * example, as before records existed.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertLabName } from './topology.js';

const DEFAULT_LAB_RECORD_DIR = '/run/vgwlab';

export interface LabRecord {
  /** The config file `lab up` applied, as an absolute path. */
  readonly config: string;
  /** sha256 of its text then, to say when it was edited since. */
  readonly digest: string;
}

export const textDigest = (text: string): string => createHash('sha256').update(text).digest('hex');

const recordPath = (dir: string, name: string) => {
  assertLabName(name);
  return join(dir, `${name}.json`);
};

export async function writeLabRecord(name: string, record: LabRecord, dir = DEFAULT_LAB_RECORD_DIR): Promise<void> {
  // Another lab's down removes the directory once it is empty (removeLabRecord): between the mkdir and the write
  // it may be gone again, so the pair is tried once more.
  for (let attempt = 0; ; attempt++) {
    await mkdir(dir, { recursive: true, mode: 0o755 });
    try {
      await writeFile(recordPath(dir, name), `${JSON.stringify(record)}\n`, { mode: 0o644 });
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 5) throw error;
    }
  }
}

export async function readLabRecord(name: string, dir = DEFAULT_LAB_RECORD_DIR): Promise<LabRecord | undefined> {
  const path = recordPath(dir, name);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const value = JSON.parse(text) as Partial<LabRecord>;
    if (typeof value.config === 'string' && value.config.startsWith('/') && typeof value.digest === 'string') {
      return { config: value.config, digest: value.digest };
    }
  } catch {
    // A record cut short is no record.
  }
  return undefined;
}

/** Removes the lab's record, and the directory once no lab has one. */
export async function removeLabRecord(name: string, dir = DEFAULT_LAB_RECORD_DIR): Promise<void> {
  await rm(recordPath(dir, name), { force: true });
  await rmdir(dir).catch(() => undefined);
}
