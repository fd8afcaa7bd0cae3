/** A Clock that moves only when told: advance() is time passing (both clocks), step() the wall clock alone stepping. */
import type { Clock } from '../../src/clock.js';

export class FakeClock implements Clock {
  constructor(public wallMs = 1_000_000, public monotonicMs = 5_000) {}

  readonly wall = (): number => this.wallMs;
  readonly monotonic = (): number => this.monotonicMs;

  /** Time passes. */
  advance(ms: number): void {
    this.wallMs += ms;
    this.monotonicMs += ms;
  }

  /** The time of day is set forward (ms > 0) or back (ms < 0): `date -s`, an NTP step, a VM resumed. */
  step(ms: number): void {
    this.wallMs += ms;
  }
}
