/**
 * Whether the config file is a mount of its own (`-v ./gateway.yaml:/etc/vlan-gateway/gateway.yaml`, a Compose
 * file volume, a Kubernetes subPath). Such a mount pins the file's inode: an edit on the host that writes a new
 * file and renames it over the old one (most editors, `sed -i`, `git checkout`) never reaches the container, which
 * keeps reading the old inode (its link count drops to 0; see loadConfig). Mounting the directory avoids it.
 */
import { readFile } from 'node:fs/promises';

/**
 * The mounts listed in a /proc/self/mountinfo text, by mount point: each one's root, the path of what is mounted
 * inside its file system (fields five and four, octal escapes undone). Where the last mount on a point wins. Pure.
 */
export function mountRoots(mountinfo: string): Map<string, string> {
  const unescape = (field: string) => field.replace(/\\([0-7]{3})/g, (_m, octal: string) => String.fromCharCode(parseInt(octal, 8)));
  const roots = new Map<string, string>();
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    if (fields.length > 4) roots.set(unescape(fields[4]!), unescape(fields[3]!));
  }
  return roots;
}

async function rootOf(path: string, mountinfoPath: string): Promise<string | undefined> {
  try {
    return mountRoots(await readFile(mountinfoPath, 'utf8')).get(path);
  } catch {
    return undefined;
  }
}

/** True when `path` (already resolved: no symlink in it) is a mount point here; false when that cannot be read. */
export async function isMountPoint(path: string, mountinfoPath = '/proc/self/mountinfo'): Promise<boolean> {
  return (await rootOf(path, mountinfoPath)) !== undefined;
}

/** True when `path` is a mount whose source was removed or renamed over since (the kernel marks it `//deleted`). */
export async function isReplacedMount(path: string, mountinfoPath = '/proc/self/mountinfo'): Promise<boolean> {
  return (await rootOf(path, mountinfoPath))?.endsWith('//deleted') ?? false;
}
