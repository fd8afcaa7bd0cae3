/** What to tell the operator when the kernel refuses: the flag that fixes it, not just the errno. */
const NO_PRIVILEGE = /Operation not permitted|Permission denied|you must be root|must be run as root/i;
const READ_ONLY = /Read-only file system/i;

export const NET_ADMIN_HINT = 'the gateway needs the NET_ADMIN capability: docker run --cap-add NET_ADMIN (Compose: cap_add: [NET_ADMIN])';

export function privilegeHint(stderr: string): string | undefined {
  return NO_PRIVILEGE.test(stderr) ? NET_ADMIN_HINT : undefined;
}

export function sysctlHint(key: string, value: string, stderr: string): string | undefined {
  if (READ_ONLY.test(stderr) || NO_PRIVILEGE.test(stderr)) {
    return `/proc/sys is read-only here (a container): start it with --sysctl ${key}=${value} (docker run) or sysctls: [${key}=${value}] (Compose)`;
  }
  return undefined;
}
