/**
 * What makes the supervisor reload, on a real file system (inotify): the ways users and tools change a config file
 * and its templates, each seen once (debounced), and the changes that are not ours, not seen. Plus the mount
 * table reading that tells a file mounted on its own.
 */
import test from 'ava';
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMountPoint, isReplacedMount, mountRoots } from '../../src/config/mounts.js';
import { ConfigWatch, linkTargets } from '../../src/config/watch.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
// Well under the product's 200 ms, for speed; not so short that a loaded machine splits one write (truncate, then data)
// into two reloads.
const DEBOUNCE = 120;

/** A config directory with gateway.yaml and rules.d/filter/forward.hbs, watched; counts the reloads it asks for. */
async function watched(t: { teardown(fn: () => Promise<void> | void): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-watch-'));
  const config = join(dir, 'gateway.yaml');
  const rules = join(dir, 'rules.d');
  await mkdir(join(rules, 'filter'), { recursive: true });
  await writeFile(config, 'vlans: []\n');
  await writeFile(join(rules, 'filter', 'forward.hbs'), '-j RETURN\n');
  let reloads = 0;
  const errors: string[] = [];
  const watch = new ConfigWatch(config, () => reloads++, { debounceMs: DEBOUNCE, onWatchError: (path) => errors.push(path) });
  watch.rearm(rules);
  t.teardown(async () => {
    watch.close();
    await rm(dir, { recursive: true, force: true });
  });
  /**
   * Runs `change` and returns how many reloads it asked for: it waits (up to 3 s, for a loaded machine) until
   * `expected` came, then a few debounce periods more, so that a second reload for the same change would be seen.
   */
  const after = async (change: () => Promise<unknown>, expected = 1) => {
    const before = reloads;
    await change();
    const deadline = Date.now() + 3000;
    while (reloads - before < expected && Date.now() < deadline) await sleep(10);
    await sleep(DEBOUNCE * 3);
    return reloads - before;
  };
  /** Waits until no reload has been asked for during a few debounce periods (events of a set-up settled). */
  const settle = async () => {
    for (let seen = -1; seen !== reloads;) {
      seen = reloads;
      await sleep(DEBOUNCE * 3);
    }
  };
  return { dir, config, rules, watch, after, settle, errors };
}

test('a write in place, a rename over the file (editors, sed -i) and a new file each ask for one reload', async (t) => {
  const w = await watched(t);
  t.is(await w.after(() => writeFile(w.config, 'vlans: [] # 1\n')), 1, 'write in place');
  t.is(await w.after(async () => {
    await writeFile(`${w.config}.tmp`, 'vlans: [] # 2\n');
    await rename(`${w.config}.tmp`, w.config);
  }), 1, 'rename over');
  w.watch.rearm(w.rules); // as the supervisor does after each reload: the file is a new inode now
  t.is(await w.after(() => writeFile(w.config, 'vlans: [] # 3\n')), 1, 'write in place into the renamed file');
  t.is(await w.after(() => rm(w.config)), 1, 'removed');
  t.is(await w.after(() => writeFile(w.config, 'vlans: []\n')), 1, 'created again');
  t.deepEqual(w.errors, []);
});

test('a Kubernetes ConfigMap update (the ..data symlink swapped) asks for a reload', async (t) => {
  const w = await watched(t);
  await rm(w.config);
  await mkdir(join(w.dir, '..2026_1'));
  await writeFile(join(w.dir, '..2026_1', 'gateway.yaml'), 'vlans: []\n');
  await symlink('..2026_1', join(w.dir, '..data'));
  await symlink('..data/gateway.yaml', w.config);
  await w.settle();
  w.watch.rearm(w.rules); // as after the reload those changes ask for: the file watch follows the symlink now
  const swap = async () => {
    await mkdir(join(w.dir, '..2026_2'));
    await writeFile(join(w.dir, '..2026_2', 'gateway.yaml'), 'vlans: [] # new\n');
    await symlink('..2026_2', join(w.dir, '..data_tmp'));
    await rename(join(w.dir, '..data_tmp'), join(w.dir, '..data'));
  };
  t.is(await w.after(swap), 1);
});

test('a template edited, replaced or added anywhere under rules.dir asks for a reload', async (t) => {
  const w = await watched(t);
  const forward = join(w.rules, 'filter', 'forward.hbs');
  t.is(await w.after(() => writeFile(forward, '-j ACCEPT\n')), 1, 'edited in place');
  t.is(await w.after(async () => {
    await writeFile(`${forward}.tmp`, '-j DROP\n');
    await rename(`${forward}.tmp`, forward);
  }), 1, 'replaced by a rename');
  t.is(await w.after(async () => {
    await mkdir(join(w.rules, 'nat'));
    await writeFile(join(w.rules, 'nat', 'postrouting.hbs'), '-j RETURN\n');
  }), 1, 'a new template in a new directory');
});

test('rules.dir removed and made again asks for a reload (its own watch died with it)', async (t) => {
  const w = await watched(t);
  t.is(await w.after(() => rm(w.rules, { recursive: true })), 1, 'removed');
  w.watch.rearm(w.rules); // as after that reload, which failed: the directory is missing, its parent is watched
  t.is(await w.after(async () => {
    await mkdir(join(w.rules, 'filter'), { recursive: true });
    await writeFile(join(w.rules, 'filter', 'forward.hbs'), '-j RETURN\n');
  }), 1, 'made again');
  w.watch.rearm(w.rules);
  t.is(await w.after(() => writeFile(join(w.rules, 'filter', 'forward.hbs'), '-j ACCEPT\n')), 1, 'and edited, once watched again');
  // Its parent's watch sees it made: the reload's error says it is missing, and no "needs a SIGHUP" warning does
  // (the supervisor said one, though the directory made again was applied without one).
  t.deepEqual(w.errors, [], 'rules.dir missing, its parent watched: no watch error');
});

test('other files beside the config do not; close() stops everything, a pending reload included', async (t) => {
  const w = await watched(t);
  t.is(await w.after(() => writeFile(join(w.dir, 'notes.txt'), 'hello\n'), 0), 0);
  t.is(await w.after(() => writeFile(join(w.dir, 'gateway.yaml.bak'), 'x\n'), 0), 0);
  const pending = w.after(async () => {
    await writeFile(w.config, 'vlans: [] # pending\n');
    await sleep(5);
    w.watch.close();
  }, 0);
  t.is(await pending, 0);
  t.is(await w.after(() => writeFile(w.config, 'vlans: [] # closed\n'), 0), 0);
});

test('a watch that cannot be set is reported, and the others still work', async (t) => {
  const w = await watched(t);
  // rules.dir and its parent both missing: nothing sees it made (a SIGHUP is needed), said once, as rules.dir's
  const missing = join(w.dir, 'no-such', 'rules.d');
  w.watch.rearm(missing);
  t.deepEqual(w.errors, [missing]);
  t.is(await w.after(() => writeFile(w.config, 'vlans: [] # still watched\n')), 1);
});

test('a watch that cannot be set is reported once, not at every rearm; again once it failed anew after being set', async (t) => {
  const w = await watched(t);
  const missing = join(w.dir, 'later', 'rules.d');
  for (let i = 0; i < 3; i++) w.watch.rearm(missing); // a reload rearms the watches
  t.deepEqual(w.errors, [missing]);
  await mkdir(missing, { recursive: true });
  w.watch.rearm(missing);
  await rm(join(w.dir, 'later'), { recursive: true });
  w.watch.rearm(missing);
  t.deepEqual(w.errors, [missing, missing]);
});

test('the config file removed (or a symlink to nothing) is no watch error: its directory sees it put back', async (t) => {
  const w = await watched(t);
  await rm(w.config);
  w.watch.rearm(w.rules); // the rejected reload rearms
  t.deepEqual(w.errors, []);
  t.is(await w.after(() => writeFile(w.config, 'vlans: [] # back\n')), 1);
  w.watch.rearm(w.rules);
  await w.settle();
  await rm(w.config);
  await symlink(join(w.dir, 'nowhere.yaml'), w.config);
  await w.settle();
  w.watch.rearm(w.rules);
  t.deepEqual(w.errors, []);
  const next = join(w.dir, 'gateway.next');
  await writeFile(next, 'vlans: [] # a file again\n');
  t.is(await w.after(() => rename(next, w.config)), 1);
});

// A config path that is a symlink to a file in another directory (a deploy tool's `current` link, a file kept beside
// other state) watched only the link's own directory: the target made or fixed there changed nothing in it, and the
// supervisor ran the old config until a SIGHUP.
test('a dangling symlink to a file elsewhere: the target made there asks for a reload', async (t) => {
  const w = await watched(t);
  const elsewhere = join(w.dir, 'elsewhere');
  await mkdir(elsewhere);
  await rm(w.config);
  await symlink(join(elsewhere, 'gateway.yaml'), w.config);
  await w.settle();
  w.watch.rearm(w.rules); // as the reload those changes asked for does (it failed: the file is missing)
  t.is(await w.after(() => writeFile(join(elsewhere, 'gateway.yaml'), 'vlans: [] # there\n')), 1, 'the target made');
  w.watch.rearm(w.rules);
  t.is(await w.after(async () => {
    await writeFile(join(elsewhere, 'gateway.next'), 'vlans: [] # replaced\n');
    await rename(join(elsewhere, 'gateway.next'), join(elsewhere, 'gateway.yaml'));
  }), 1, 'the target replaced by a rename there');
  w.watch.rearm(w.rules);
  t.is(await w.after(() => writeFile(join(elsewhere, 'notes.txt'), 'x\n'), 0), 0, 'another file beside the target');
  t.deepEqual(w.errors, []);
});

test('a symlink to a file in a directory not made yet, through a relative link and a second link: made, it asks for a reload', async (t) => {
  const w = await watched(t);
  await rm(w.config);
  // gateway.yaml -> current.yaml -> releases/2/gateway.yaml, releases/ missing.
  await symlink('current.yaml', w.config);
  await symlink(join('releases', '2', 'gateway.yaml'), join(w.dir, 'current.yaml'));
  await w.settle();
  w.watch.rearm(w.rules);
  t.is(await w.after(async () => {
    await mkdir(join(w.dir, 'releases', '2'), { recursive: true });
    await writeFile(join(w.dir, 'releases', '2', 'gateway.yaml'), 'vlans: [] # released\n');
  }), 1, 'the directories and the file made');
  w.watch.rearm(w.rules);
  t.is(await w.after(() => writeFile(join(w.dir, 'releases', '2', 'gateway.yaml'), 'vlans: [] # edited\n')), 1, 'then edited');
  t.deepEqual(w.errors, []);
});

// A relative link is read from the directory it really is in, as the kernel reads it: /etc/vgw a link to
// /opt/vgw/current/etc, gateway.yaml there a link to ../../sites/a.yaml, the file is /opt/vgw/sites/a.yaml, not
// /sites/a.yaml beside /etc. Read from the path as given, the wrong directory was watched.
test('a relative symlink inside a directory reached through a symlink: its target is where the kernel finds it', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'vgw-links-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await mkdir(join(root, 'opt', 'vgw', 'current', 'etc'), { recursive: true });
  await mkdir(join(root, 'etc'));
  await symlink(join(root, 'opt', 'vgw', 'current', 'etc'), join(root, 'etc', 'vgw'));
  await symlink(join('..', '..', 'sites', 'a.yaml'), join(root, 'opt', 'vgw', 'current', 'etc', 'gateway.yaml'));
  t.deepEqual(linkTargets(join(root, 'etc', 'vgw', 'gateway.yaml')), [join(root, 'opt', 'vgw', 'sites', 'a.yaml')]);
});

const MOUNTINFO = [
  '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '65 22 254:0 /srv/gw/gateway.yaml /etc/vlan-gateway/gateway.yaml ro,relatime - ext4 /dev/vda rw',
  '66 22 254:0 /srv/my\\040gw/old.yaml//deleted /etc/with\\040space/g.yaml ro,relatime - ext4 /dev/vda rw',
  '',
].join('\n');

test('mountRoots reads each mount point\'s root from a mountinfo text, escapes undone', (t) => {
  t.deepEqual([...mountRoots(MOUNTINFO)], [
    ['/', '/'],
    ['/etc/vlan-gateway/gateway.yaml', '/srv/gw/gateway.yaml'],
    ['/etc/with space/g.yaml', '/srv/my gw/old.yaml//deleted'],
  ]);
});

test('isReplacedMount: only a mount whose source the kernel marks deleted', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-mnt-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const table = join(dir, 'mountinfo');
  await writeFile(table, MOUNTINFO);
  t.true(await isReplacedMount('/etc/with space/g.yaml', table));
  t.false(await isReplacedMount('/etc/vlan-gateway/gateway.yaml', table), 'mounted, its source still there');
  t.false(await isReplacedMount('/etc/hosts', table), 'not a mount point');
  t.true(await isMountPoint('/etc/vlan-gateway/gateway.yaml', table));
});

test('isMountPoint: this process\'s root is one, a file in a temporary directory is not', async (t) => {
  t.true(await isMountPoint('/'));
  const dir = await mkdtemp(join(tmpdir(), 'vgw-mnt-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'gateway.yaml'), '');
  t.false(await isMountPoint(join(dir, 'gateway.yaml')));
  t.false(await isMountPoint('/', join(dir, 'no-mountinfo')), 'an unreadable table: not known to be one');
});
