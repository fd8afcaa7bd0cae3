import { accessSync, constants, readFileSync } from 'node:fs';
import { shownCommand } from '../exec/runner.js';
/** What to tell the operator when the kernel refuses: the flag that fixes it, not just the errno. */
const NO_PRIVILEGE = /Operation not permitted|Permission denied|you must be root|must be run as root/i;
const READ_ONLY = /Read-only file system/i;

export const NET_ADMIN_HINT = 'the gateway needs the NET_ADMIN capability: docker run --cap-add NET_ADMIN (Compose: cap_add: [NET_ADMIN])';

/**
 * iptables' set match (`-m set`, in VGW-SOURCES and VGW-FORWARD) asks the kernel about a set through a raw socket,
 * which takes NET_RAW: Docker grants it by default, but not under `--cap-drop ALL --cap-add NET_ADMIN`. Without
 * it every restore and save of a rule with a set fails with iptables' own words only ("Can't open socket to
 * ipset."), pass after pass.
 */
const NO_RAW_SOCKET = /Can't open socket to ipset/;
export const NET_RAW_HINT = 'the gateway needs the NET_RAW capability (iptables asks the kernel about its ipsets through a raw socket): '
  + 'Docker grants it by default; after --cap-drop ALL, add --cap-add NET_RAW (Compose: cap_add: [NET_ADMIN, NET_RAW])';

/**
 * What NET_ADMIN_HINT says instead where the process is not root at all (a person on a host who forgot sudo): Docker's
 * flag is not the way out there, and said that, it sent them looking for a container.
 */
const notRootHint = (uid: number) => `vlan-gateway runs as uid ${uid} here, and reading or changing a network namespace needs root: run it as root (sudo; in a container, without docker run --user or a Compose user: key)`;

/** `message` with NET_ADMIN_HINT said as notRootHint where this process is not root. */
export function forThisUser(message: string, uid = process.geteuid?.()): string {
  return uid === undefined || uid === 0 ? message : message.replaceAll(NET_ADMIN_HINT, notRootHint(uid));
}

/**
 * One of a backend's save and restore on the PATH without the other (both are normally links to xtables-*-multi, of
 * one package): said with what to install. Without its save the gateway cannot tell which backend the namespace's rules
 * are in (taken as absent, the other was written to); without its restore it reads them and cannot write them.
 */
export function halfInstalled(backend: 'nft' | 'legacy', missing: 'save' | 'restore'): string {
  const tool = (which: 'save' | 'restore') => `iptables-${backend}-${which}`;
  const there = missing === 'save' ? 'restore' : 'save';
  const cannot = missing === 'save'
    ? `read the iptables-${backend} rule set, so it cannot tell which backend the namespace's rules are in, and changes nothing`
    : `write the iptables-${backend} rule set`;
  return `${tool(missing)} is not installed, though ${tool(there)} is (both are normally links to xtables-${backend}-multi, of one package): `
    + `the gateway cannot ${cannot}. Install iptables again (Alpine: apk fix ${backend === 'nft' ? 'iptables' : 'iptables-legacy'}; Debian: apt-get install --reinstall iptables), `
    + `or put ${tool(missing)} back on the PATH`;
}

export function privilegeHint(stderr: string): string | undefined {
  if (NO_PRIVILEGE.test(stderr)) return NET_ADMIN_HINT;
  return NO_RAW_SOCKET.test(stderr) ? NET_RAW_HINT : undefined;
}

/**
 * iptables-legacy opens its lock file before any write, a `--test` included, and stops when it cannot: under
 * `docker run --read-only` (a volume on /run/vlan-gateway alone) /run is read-only, and every restore failed with
 * "Fatal: can't open lock file /run/xtables.lock: Read-only file system", pass after pass. (iptables-nft takes no
 * lock.)
 */
export const XTABLES_LOCK_FILE_HINT = 'iptables-legacy takes its lock in /run/xtables.lock (or $XTABLES_LOCKFILE), which must be writable: '
  + 'with docker run --read-only, add --tmpfs /run (Compose: tmpfs: [/run])';

export function lockFileHint(stderr: string): string | undefined {
  return /can't open lock file/.test(stderr) ? XTABLES_LOCK_FILE_HINT : undefined;
}

export function sysctlHint(key: string, value: string, stderr: string): string | undefined {
  if (READ_ONLY.test(stderr) || NO_PRIVILEGE.test(stderr)) {
    return `/proc/sys is read-only here (a container): start it with --sysctl ${key}=${value} (docker run) or sysctls: [${key}=${value}] (Compose)`;
  }
  return undefined;
}

/**
 * A set of ours that the kernel will not destroy because a rule still refers to it. The planner refuses before
 * writing when that rule is in the tables it read (InUseError); one it cannot see is in the other iptables
 * backend, or in a table the gateway does not write.
 */
export function setInUseAdvice(set: string, backend: 'nft' | 'legacy', prefix?: readonly string[]): string {
  const other = backend === 'nft' ? 'legacy' : 'nft';
  return `a rule outside the gateway's chains still refers to it: in iptables-${other} (${shownCommand(prefix, `iptables-${other}-save`)} | grep -w ${set}), `
    + `or in a table the gateway does not write (${shownCommand(prefix, `iptables-${backend}-save -t mangle`)}, -t raw); delete that rule and run again`;
}

export function setInUseHint(set: string, backend: 'nft' | 'legacy', stderr: string, prefix?: readonly string[]): string | undefined {
  return /in use by a kernel component/.test(stderr) ? setInUseAdvice(set, backend, prefix) : undefined;
}

const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';

/** net.ipv4.ip_forward of this process's namespace, and whether /proc/sys is mounted read-only (a container's). */
function forwardingHere(): { value: string; readOnly: boolean } | undefined {
  try {
    const value = readFileSync(IP_FORWARD, 'utf8').trim();
    try {
      accessSync(IP_FORWARD, constants.W_OK);
      return { value, readOnly: false };
    } catch (error) {
      return { value, readOnly: (error as NodeJS.ErrnoException).code === 'EROFS' };
    }
  } catch {
    return undefined;
  }
}

/**
 * A start without NET_ADMIN fails on its first read, before the sysctl is tried: where ip_forward is off under a
 * read-only /proc/sys (a container started without --sysctl too), the message names that flag as well, so that
 * one re-creation of the container fixes both.
 */
export function withForwardingHint(message: string, here = forwardingHere()): string {
  if (!message.includes(NET_ADMIN_HINT) || message.includes('--sysctl ')) return message;
  if (here === undefined || here.value !== '0' || !here.readOnly) return message;
  return `${message}; and net.ipv4.ip_forward is 0 in a read-only /proc/sys: add --sysctl net.ipv4.ip_forward=1 too (Compose: sysctls: [net.ipv4.ip_forward=1])`;
}
