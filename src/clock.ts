/**
 * Time, read two ways. The wall clock (Date.now()) is the time of day, and it steps: an NTP step on a host that does
 * not slew, `date -s`, a VM resumed from suspend. A router must not care: every interval, deadline, age, backoff and
 * rate limit is measured on the monotonic clock (performance.now(), which only goes forward, at the rate of real
 * time), and the wall clock gives only the times shown to people (/status, log fields, metrics' timestamps).
 * Components take a Clock, so that tests can step one and advance the other.
 */
export interface Clock {
  /** The time of day, ms since the epoch: for times shown, never for measuring. */
  wall(): number;
  /** Milliseconds since an arbitrary start, never going back: for every interval and deadline. */
  monotonic(): number;
}

export const systemClock: Clock = { wall: () => Date.now(), monotonic: () => performance.now() };
