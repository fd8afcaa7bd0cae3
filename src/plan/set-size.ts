/**
 * How big the gateway makes a set: the hash table it creates it with, and the most members (the kernel's default, as
 * it names none). Pure: the planner compares a set's header with it, the apply writes it in the create line.
 */

/**
 * The most buckets setHashsize gives a set for spreading its nets: each bucket pointer is kernel memory charged to the
 * container (2^16: about 1.2 MB; 2^20 was 10 MB a set, 113 MB at 512 VLANs). Past it, a fill may be rehashed.
 */
const MAX_SPREAD_BUCKETS = 2 ** 16;

/** The kernel's maxelem for a set created without one, as the gateway creates its sets. */
export const SET_MAXELEM = 65536;

/**
 * The maxelem a set of `count` members is made with, where the kernel's default is too few: the next power of two
 * (undefined: the default does). Only VGW-ROUTED can grow so large (a member per network routed behind a VLAN's host,
 * from the namespace's routes, not the config): made with the default, its 65,537th member was refused ("Hash is
 * full, cannot add more elements") and every apply failed.
 */
export function setMaxelem(count: number): number | undefined {
  if (count <= SET_MAXELEM) return undefined;
  let maxelem = SET_MAXELEM;
  while (maxelem < count) maxelem *= 2;
  return maxelem;
}

/**
 * The most members a bucket of a hash set may hold (the kernel's AHASH_MAX_TUNED). A hash:net,iface set hashes only
 * the net, and the kernel raises the set's bucket size (`bucketsize` in its header) as one net gathers members. Once
 * a net has held about this many, the bucket size is at the limit and stays there: from then on the kernel grows no
 * bucket of that set, and an add that needs one to grow fails with "Hash is full, cannot add more elements" (a
 * bucket emptied and started again holds two members), however few members the set holds. Checked on kernel 6.18
 * with ipset 7.17: 64 members of one net, all deleted, then a third member of another net is refused. Such a set
 * is made again (setRemake); a fresh one starts from the default bucket size.
 */
export const BUCKET_LIMIT = 64;

/**
 * The buckets of a set made for `members`: its hash table is sized for them up front (a power of two, at least one
 * bucket per member): grown from the default 1,024 buckets, a 4,656-member hash:net,iface set is rehashed several
 * times on the way, and the fill took about a third longer (measured).
 *
 * A hash:net,iface set hashes only the net, and the kernel widens a bucket to hold the most members that share one
 * (48 in an accounting set) and no further: two nets whose hashes land in one bucket overflow it, and the set is
 * rehashed into twice the buckets, again and again until they part. With 97 nets in 8,192 buckets that happened in
 * 7 of 16 fills (up to 131,072 buckets; the fill up to 82 against a median of 23 ms), in none of 16 with 65,536
 * (measured). Where nets share members, there are enough buckets that two of them rarely meet (4 × nets²: about 1
 * in 8), up to MAX_SPREAD_BUCKETS.
 */
export function setHashsize(type: string, members: readonly string[]): number {
  let wanted = members.length;
  // Up to 12 members fit in one bucket whatever their nets (the kernel's default width).
  if (type.startsWith('hash:net,') && members.length > 12) {
    const nets = new Set<string>();
    for (const m of members) nets.add(m.slice(0, m.indexOf(',')));
    if (nets.size < members.length) wanted = Math.max(wanted, Math.min(4 * nets.size * nets.size, MAX_SPREAD_BUCKETS));
  }
  let hashsize = 1024;
  while (hashsize < wanted) hashsize *= 2;
  return hashsize;
}

/**
 * The name a set is made again under before it is swapped in (see the set-update step's `remake`): ours (VGW-), so
 * one a killed apply left behind is removed by the next pass as a set no longer wanted.
 */
export const remakeName = (set: string) => `${set}-NEW`;
