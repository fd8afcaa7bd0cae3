/**
 * Where the supervisor's HTTP endpoints listen, kept for the image's health check (image/healthcheck.sh). The check
 * is sh and wget, no Node (README, "Resources"), and had no way to learn a `run --listen` or a config's http.listen:
 * a container started with either was `unhealthy` unless VLAN_GATEWAY_HEALTHZ_URL said the same again.
 *
 * One file per network namespace, `http-<inode>.url` in the state directory (containers may share it on a volume;
 * the check names its own namespace by `readlink /proc/self/ns/net`), holding the /healthz URL, written whole (a
 * temporary renamed) once the endpoints listen and removed when they stop. Only by a supervisor that runs in the
 * namespace it manages (no --netns: as in the image); best effort, as the other state files.
 */
import { renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stateDir } from './flows-left.js';
import { privateDir } from './private-dir.js';
import { temporaryOf } from './temporaries.js';

/** The name of this process's network namespace's file (the inode `readlink /proc/self/ns/net` shows as net:[N]). */
export function endpointsFileName(): string | undefined {
  try {
    return `http-${statSync('/proc/self/ns/net').ino}.url`;
  } catch {
    return undefined;
  }
}

/**
 * The /healthz URL a client in the namespace reaches endpoints bound at `listening` (`HOST:PORT`, `[IPv6]:PORT`) by:
 * the wildcard addresses by loopback; undefined for a zoned IPv6 address, which no URL wget takes can hold.
 */
export function healthzUrl(listening: string): string | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listening);
  if (!m) return undefined;
  const host = m[1] ?? m[2]!;
  if (host.includes('%')) return undefined;
  const reached = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${reached.includes(':') ? `[${reached}]` : reached}:${m[3]}/healthz`;
}

export class EndpointsFile {
  constructor(private readonly dir = stateDir(), private readonly name = endpointsFileName()) {}

  /** Says the endpoints listen at `listening` (best effort: a read-only or foreign directory keeps no file). */
  write(listening: string): void {
    const url = healthzUrl(listening);
    if (url === undefined) return this.remove();
    const file = this.file(true);
    if (file === undefined) return;
    const temporary = temporaryOf(file);
    try {
      writeFileSync(temporary, `${url}\n`, { mode: 0o600 });
      renameSync(temporary, file);
    } catch {
      rmSync(temporary, { force: true });
    }
  }

  /** Removes the namespace's file: the endpoints stopped (one supervisor per namespace: no other's file). */
  remove(): void {
    const file = this.file(false);
    if (file !== undefined) rmSync(file, { force: true });
  }

  /** The file in the directory as resolved, when it and the way to it are ours alone (private-dir.ts). */
  private file(create: boolean): string | undefined {
    if (this.name === undefined) return undefined;
    try {
      const dir = privateDir(this.dir, { create }).path;
      return dir === undefined ? undefined : join(dir, this.name);
    } catch {
      return undefined;
    }
  }
}
