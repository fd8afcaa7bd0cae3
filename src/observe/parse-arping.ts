/**
 * What one duplicate-address probe (`arping -D -c 2 -w 3 -I NIC ADDR`, RFC 5227's probe: sender address 0.0.0.0,
 * so it changes nobody's ARP cache) says about an address. Pure. As iputils' arping (20221126) prints it, and
 * busybox's, which prints the same lines:
 *
 *   exit 0   "ARPING 192.168.10.1 from 0.0.0.0 eth2" … "Received 0 response(s)": nobody else answered
 *   exit 1   "Unicast reply from 192.168.10.1 [36:DF:F8:37:10:31]  0.540ms": someone did (it stops at the first)
 *   exit 2   an error: "Interface "eth2" is down" (on stdout), "arping: socket: Operation not permitted" (no NET_RAW),
 *            "arping: Device eth9 not available."
 *
 * Our own kernel does not answer our own probe (checked on a macvlan NIC holding the address). Exit 1 also comes
 * from `ip netns exec` when it cannot run arping (`exec of "arping" failed: Operation not permitted`), and from
 * busybox's errors: only a reply line with a MAC is taken for a conflict.
 */

/** What a probe's run gave: the exit code (null: killed, or it could not start) and its output. */
export interface ProbeRun {
  readonly exitCode: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** The program is not there (not installed). */
  readonly notFound?: boolean;
}

export type ProbeOutcome =
  /** Nobody else answers for the address. */
  | { readonly kind: 'free' }
  /** Another device answers for it: its MAC (lowercase, two digits a byte). */
  | { readonly kind: 'taken'; readonly mac: string }
  /**
   * Only a NIC of the gateway's own answered, with its MAC: that NIC is on the probed NIC's network and answers ARP
   * for an address it does not hold (Linux's default, arp_ignore=0). Whether another device would have answered too is
   * not known (arping stops at the first answer).
   */
  | { readonly kind: 'own'; readonly mac: string }
  /** Probes cannot work here at all (no arping, no raw socket): conflict detection is off; why, for the log. */
  | { readonly kind: 'unusable'; readonly reason: string }
  /**
   * This probe told nothing (the NIC down or gone, killed at a stop); the next one may. `nicAway`: because its NIC was
   * gone or down when it ran (Docker disconnected or replaced it meanwhile): the pass that follows says what became of
   * the NIC, and the probe has nothing of its own to say.
   */
  | { readonly kind: 'failed'; readonly reason: string; readonly nicAway?: true };

/** The MACs of the reply (or request) lines of arping's output whose sender is `address`, in order, normalized. */
export function arpingSenders(stdout: string, address: string): string[] {
  const macs: string[] = [];
  for (const m of stdout.matchAll(/^(?:Unicast|Broadcast) (?:reply|request) from (\S+) \[([0-9A-Fa-f]{1,2}(?::[0-9A-Fa-f]{1,2}){5})\]/gm)) {
    if (m[1] === address) macs.push(normalizeMac(m[2]!));
  }
  return macs;
}

/** `36:DF:F8:37:10:31`, or busybox's `2:42:ac:11:0:2`, as `02:42:ac:11:00:02`. */
export function normalizeMac(mac: string): string {
  return mac.split(':').map((b) => b.padStart(2, '0').toLowerCase()).join(':');
}

/**
 * The outcome of `arping -D … ADDR` run on a NIC of the gateway's, whose NICs have the MACs `ownMacs`. A reply from
 * one of them is not another device: Linux answers ARP for any of its addresses on any of its NICs, so another NIC
 * of the gateway's on the same network (a veth peer left in its namespace, two networks bridged together) answers
 * the probe with its own MAC.
 */
export function probeOutcome(run: ProbeRun, address: string, ownMacs?: string | Iterable<string>): ProbeOutcome {
  if (run.notFound) return { kind: 'unusable', reason: 'arping is not installed (iputils-arping)' };
  const own = new Set([...(typeof ownMacs === 'string' ? [ownMacs] : ownMacs ?? [])].map(normalizeMac));
  const senders = arpingSenders(run.stdout, address);
  const other = senders.find((mac) => !own.has(mac));
  if (run.exitCode === 1 && other !== undefined) return { kind: 'taken', mac: other };
  if (run.exitCode === 1 && senders.length > 0) return { kind: 'own', mac: senders[0]! };
  if (run.exitCode === 0) return { kind: 'free' };
  const said = `${run.stderr}\n${run.stdout}`.split('\n').map((l) => l.trim()).filter(Boolean);
  // Without NET_RAW: arping's raw socket is refused, or (an arping with file capabilities the container may not
  // have) the kernel refuses to run it at all.
  if (said.some((l) => /Operation not permitted|Permission denied|\bEPERM\b|\bEACCES\b/.test(l))) {
    return { kind: 'unusable', reason: `arping may not open a raw socket here (${said.find((l) => /not permitted|denied|EPERM|EACCES/.test(l))}): `
      + 'the gateway lacks the NET_RAW capability (Docker gives it by default; after --cap-drop ALL, add --cap-add NET_RAW)' };
  }
  if (said.some((l) => /invalid option|unrecognized option|illegal option|^usage:/i.test(l))) {
    return { kind: 'unusable', reason: `this arping does not take iputils' options (${said[0]}): install iputils-arping` };
  }
  // The NIC went, or went down, between the pass that found it and the probe: iputils says `Device eth9 not
  // available.` (gone), `Interface "eth2" is down` (on stdout), or `recvfrom: Network is down` (down or gone as it ran).
  const away = run.exitCode !== null && said.some((l) => /Device \S+ not available|Interface "[^"]*" is down|Network is down|No such device/.test(l));
  const why = run.exitCode === null ? `killed or not started: ${said[0] ?? 'no output'}` : `exit ${run.exitCode}: ${said.find((l) => !/^ARPING |^Sent |^Received /.test(l)) ?? 'no output'}`;
  return away ? { kind: 'failed', reason: why, nicAway: true } : { kind: 'failed', reason: why };
}
