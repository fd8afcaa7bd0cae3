/**
 * Whether the config file is a mount of its own (`-v ./gateway.yaml:/etc/vlan-gateway/gateway.yaml`, a Compose
 * file volume, a Kubernetes subPath). Such a mount pins the file's inode: an edit on the host that writes a new
 * file and renames it over the old one (most editors, `sed -i`, `git checkout`) never reaches the container, which
 * keeps reading the old inode (its link count drops to 0; see loadConfig). Mounting the directory avoids it.
 */
import { readFile } from 'node:fs/promises';

/** Mount points listed in a /proc/self/mountinfo text (the fifth field, its octal escapes undone). Pure. */
export function mountPoints(mountinfo: string): Set<string> {
  const points = new Set<string>();
  for (const line of mountinfo.split('\n')) {
    const field = line.split(' ')[4];
    if (field) points.add(field.replace(/\\([0-7]{3})/g, (_m, octal: string) => String.fromCharCode(parseInt(octal, 8))));
  }
  return points;
}

/** True when `path` (already resolved: no symlink in it) is a mount point here; false when that cannot be read. */
export async function isMountPoint(path: string, mountinfoPath = '/proc/self/mountinfo'): Promise<boolean> {
  try {
    return mountPoints(await readFile(mountinfoPath, 'utf8')).has(path);
  } catch {
    return false;
  }
}
