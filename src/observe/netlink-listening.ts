/**
 * Whether the `ip monitor` child listens yet. Its process exists a moment before it has opened its rtnetlink
 * socket and joined the groups that carry link, address and route events (longer on a busy machine); a change in
 * between reaches nobody. A pass that read the namespace in that moment (the start pass, the catch-up pass after a
 * restart) and an event that came before the subscription both miss it, and only the drift schedule would see it:
 * a NIC `docker network connect` attached just then was left unrouted for up to the schedule's period.
 *
 * `ip monitor` says nothing when it subscribes, so /proc tells: the process holds a NETLINK_ROUTE socket (protocol
 * 0) with groups joined (`/proc/PID/net/netlink`, of the namespace the process is in; its sockets by inode from
 * `/proc/PID/fd`).
 */
import { readdir, readFile, readlink } from 'node:fs/promises';

/**
 * The inodes of the NETLINK_ROUTE sockets joined to event groups, from a `/proc/net/netlink` table (columns found
 * by their header: `sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode`); undefined when the table has not those
 * columns (a kernel that lays it out otherwise: then nothing can be told from it).
 */
export function routeListeners(table: string): Set<string> | undefined {
  const [header = '', ...rows] = table.split('\n');
  const columns = header.trim().split(/\s+/);
  const [eth, groups, inode] = ['Eth', 'Groups', 'Inode'].map((name) => columns.indexOf(name));
  if (eth === undefined || groups === undefined || inode === undefined || eth < 0 || groups < 0 || inode < 0) return undefined;
  const found = new Set<string>();
  for (const row of rows) {
    const f = row.trim().split(/\s+/);
    // Groups is a hex mask: any bit set is a subscription.
    if (f[eth] === '0' && /^[0-9a-f]+$/i.test(f[groups] ?? '') && /[1-9a-f]/i.test(f[groups]!) && f[inode]) found.add(f[inode]);
  }
  return found;
}

/**
 * Whether process `pid` listens to rtnetlink events: true, false (not yet, or it is gone), or undefined when /proc
 * cannot tell (no such table, a layout not known).
 */
export async function listensToRouteEvents(pid: number): Promise<boolean | undefined> {
  const table = await readFile(`/proc/${pid}/net/netlink`, 'utf8').catch(() => undefined);
  if (table === undefined) return (await readFile(`/proc/${pid}/stat`, 'utf8').then(() => true, () => false)) ? undefined : false;
  const listeners = routeListeners(table);
  if (listeners === undefined) return undefined;
  if (listeners.size === 0) return false;
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [])) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode !== undefined && listeners.has(inode)) return true;
  }
  return false;
}
