/**
 * What a run measures: latency histograms (HDR, in microseconds, so that
 * histograms from several agents merge exactly), counters, and a per-second
 * timeline on the run's clock. Everything here serialises to JSON so an agent
 * can ship it to the controller and a report can be built from it.
 */
import hdr from 'hdr-histogram-js';

type Histogram = ReturnType<typeof hdr.build>;

const HIGHEST_US = 3_600_000_000; // one hour

export function newHistogram(): Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: HIGHEST_US, numberOfSignificantValueDigits: 3 });
}

/** Latency summary in milliseconds. */
export interface LatencySummary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  p999: number;
  max: number;
}

/** An HDR histogram of milliseconds, recorded in microseconds. */
export class Latency {
  readonly histogram: Histogram;
  constructor(histogram?: Histogram) {
    this.histogram = histogram ?? newHistogram();
  }
  record(ms: number): void {
    this.histogram.recordValue(Math.min(HIGHEST_US, Math.max(1, Math.round(ms * 1000))));
  }
  get count(): number {
    return this.histogram.totalCount;
  }
  add(other: Latency): void {
    this.histogram.add(other.histogram);
  }
  summary(): LatencySummary {
    const h = this.histogram;
    const ms = (us: number) => Math.round(us) / 1000;
    if (h.totalCount === 0) return { count: 0, mean: 0, p50: 0, p90: 0, p95: 0, p99: 0, p999: 0, max: 0 };
    return {
      count: h.totalCount,
      mean: ms(h.mean),
      p50: ms(h.getValueAtPercentile(50)),
      p90: ms(h.getValueAtPercentile(90)),
      p95: ms(h.getValueAtPercentile(95)),
      p99: ms(h.getValueAtPercentile(99)),
      p999: ms(h.getValueAtPercentile(99.9)),
      max: ms(h.maxValue),
    };
  }
  encode(): string {
    return hdr.encodeIntoCompressedBase64(this.histogram);
  }
  /** One percentile, in ms (cheaper than a whole summary). */
  percentile(p: number): number {
    return this.histogram.totalCount === 0 ? 0 : Math.round(this.histogram.getValueAtPercentile(p)) / 1000;
  }
  reset(): void {
    this.histogram.reset();
  }
  static decode(encoded: string): Latency {
    return new Latency(hdr.decodeFromCompressedBase64(encoded));
  }
}

/** Counters of one run (or one second of it). Every field sums across agents. */
export interface Counters {
  /** Arrivals the schedule asked for. */
  scheduled: number;
  /** Arrivals not sent: maxInFlight reached, or no free group. */
  dropped: number;
  /** Sends started later than `lateSend` after their intended time. */
  lateSends: number;
  /** Actions that completed with every expectation met. */
  ok: number;
  /** Actions that failed (status, network, timeout). */
  errors: number;
  /** HTTP requests made (setup and actions). */
  requests: number;
  /** Deliveries expected, received in time, late, and the rest. */
  expected: number;
  delivered: number;
  late: number;
  duplicates: number;
  outOfOrder: number;
  unexpected: number;
  /** Messages received on subscriptions (deliveries or not). */
  messages: number;
}

export const emptyCounters = (): Counters => ({ scheduled: 0, dropped: 0, lateSends: 0, ok: 0, errors: 0, requests: 0, expected: 0, delivered: 0, late: 0, duplicates: 0, outOfOrder: 0, unexpected: 0, messages: 0 });

export function addCounters(into: Counters, from: Counters): void {
  for (const key of Object.keys(into) as (keyof Counters)[]) into[key] += from[key];
}

/** One second of the run, as an agent records it. */
export interface SecondRecord {
  /** Seconds since the load started. */
  t: number;
  counters: Counters;
  /** Action latency and delivery latency of this second (encoded histograms). */
  latency: string;
  delivery: string;
  /** Open subscriptions at the end of this second. */
  connections: number;
  /** Deliveries expected and not yet received at the end of this second. */
  pending: number;
  /** Actions in flight at the end of this second. */
  inFlight: number;
  /** Error kinds counted this second. */
  errorKinds: Record<string, number>;
}

/**
 * Records the current second and rolls it into the timeline. The two
 * histograms are reused (reset, not rebuilt) and only the last second's p99
 * is computed here: this runs on the generator's event loop every second, and
 * a pause there would make sends leave late.
 */
export class Timeline {
  readonly seconds: SecondRecord[] = [];
  counters = emptyCounters();
  readonly latency = new Latency();
  readonly delivery = new Latency();
  errorKinds: Record<string, number> = {};
  /** The last rolled second's action latency p99, ms. */
  lastP99 = 0;
  /** Every rolled second's counters, summed. */
  readonly totals = emptyCounters();
  /** Every rolled second's histograms, added (so the whole run needs no decoding of the seconds). */
  readonly totalLatency = new Latency();
  readonly totalDelivery = new Latency();

  roll(t: number, gauges: { connections: number; pending: number; inFlight: number }): SecondRecord {
    const record: SecondRecord = { t, counters: this.counters, latency: this.latency.encode(), delivery: this.delivery.encode(), errorKinds: this.errorKinds, ...gauges };
    this.lastP99 = this.latency.percentile(99);
    addCounters(this.totals, this.counters);
    this.totalLatency.add(this.latency);
    this.totalDelivery.add(this.delivery);
    this.seconds.push(record);
    this.counters = emptyCounters();
    this.latency.reset();
    this.delivery.reset();
    this.errorKinds = {};
    return record;
  }
}
