/**
 * The run's result: the generators' records merged exactly (counters summed,
 * HDR histograms added, never averaged), the monitor's samples on the same
 * timeline, the thresholds and the generator-health verdict. This is the
 * JSON summary `sinho loadtest --json` writes and the report is drawn from.
 */
import type { GeneratorResult, ErrorKind } from './load-run.js';
import type { GeneratorSample, HostSample, ProcessSample, TargetMetricsSample, RemoteSample } from './monitor.js';
import { addCounters, emptyCounters, Latency, type Counters, type LatencySummary } from './stats.js';
import type { LostDelivery } from './deliveries.js';

/** A threshold checked against a run. */
export interface ThresholdResult {
  threshold: string;
  actual: number;
  unit: string;
  passed: boolean;
}

/** One second of the merged run. */
export interface SecondSummary {
  t: number;
  counters: Counters;
  latency: LatencySummary;
  delivery: LatencySummary;
  connections: number;
  pending: number;
  inFlight: number;
  errorKinds: Record<string, number>;
}

/** One monitor sample, `t` seconds after the load started. */
export interface MonitorSample {
  t: number;
  host?: HostSample;
  target?: ProcessSample;
  targetMetrics?: TargetMetricsSample;
  /** The generator (the controller process; agents report theirs separately). */
  generator?: GeneratorSample;
  remote?: Record<string, RemoteSample | null>;
}

export interface RunSummary {
  scenario: string;
  startedAt: string;
  /** Generators (1 locally, the agents' count in distributed mode). */
  generators: number;
  setup: GeneratorResult['setup'];
  loadMs: number;
  drainMs: number;
  /** Completed actions per second over the load. */
  rate: number;
  totals: Counters;
  lost: number;
  lostSample: LostDelivery[];
  latency: LatencySummary;
  delivery: LatencySummary;
  errors: Record<string, ErrorKind>;
  reconnects: number;
  seconds: SecondSummary[];
  monitor: MonitorSample[];
  /** Per-agent generator samples (distributed mode). */
  agentHealth?: { agent: string; samples: GeneratorSample[] }[];
  thresholds: ThresholdResult[];
  /** False when the generator was the bottleneck: the figures then describe the generator, not the target. */
  valid: boolean;
  invalidReasons: string[];
  aborted?: string;
  /** Set when the run could not be done (target unreachable, setup failed, an agent failed); the rest is what was measured. */
  failure?: { code: string; message: string };
  /** Encoded merged histograms, for exact comparisons and merges later. */
  histograms: { latency: string; delivery: string };
}

/** Merges generators' results (same timeline: they started together). */
export function mergeResults(results: readonly GeneratorResult[]): Omit<RunSummary, 'scenario' | 'monitor' | 'thresholds' | 'valid' | 'invalidReasons'> {
  const totals = emptyCounters();
  const latency = new Latency();
  const delivery = new Latency();
  const errors: Record<string, ErrorKind> = {};
  const bySecond = new Map<number, { counters: Counters; latency: Latency; delivery: Latency; connections: number; pending: number; inFlight: number; errorKinds: Record<string, number> }>();
  const setup = { users: 0, groups: 0, subscriptions: 0, requests: 0, durationMs: 0 };
  let lost = 0;
  const lostSample: LostDelivery[] = [];
  let reconnects = 0;
  for (const r of results) {
    addCounters(totals, r.totals);
    latency.add(Latency.decode(r.latency));
    delivery.add(Latency.decode(r.delivery));
    for (const [kind, e] of Object.entries(r.errors)) {
      const k = (errors[kind] ??= { count: 0, example: e.example });
      k.count += e.count;
    }
    for (const sec of r.seconds) {
      let m = bySecond.get(sec.t);
      if (!m) bySecond.set(sec.t, (m = { counters: emptyCounters(), latency: new Latency(), delivery: new Latency(), connections: 0, pending: 0, inFlight: 0, errorKinds: {} }));
      addCounters(m.counters, sec.counters);
      m.latency.add(Latency.decode(sec.latency));
      m.delivery.add(Latency.decode(sec.delivery));
      m.connections += sec.connections;
      m.pending += sec.pending;
      m.inFlight += sec.inFlight;
      for (const [k, n] of Object.entries(sec.errorKinds)) m.errorKinds[k] = (m.errorKinds[k] ?? 0) + n;
    }
    setup.users += r.setup.users;
    setup.groups += r.setup.groups;
    setup.subscriptions += r.setup.subscriptions;
    setup.requests += r.setup.requests;
    setup.durationMs = Math.max(setup.durationMs, r.setup.durationMs);
    lost += r.lost.count;
    lostSample.push(...r.lost.sample.slice(0, Math.max(0, 20 - lostSample.length)));
    reconnects += r.reconnects;
  }
  const loadMs = Math.max(0, ...results.map((r) => r.loadMs));
  const aborted = results.find((r) => r.aborted)?.aborted;
  return {
    startedAt: new Date(Math.min(...results.map((r) => r.startedAt))).toISOString(),
    generators: results.length,
    setup,
    loadMs,
    drainMs: Math.max(0, ...results.map((r) => r.drainMs)),
    rate: loadMs > 0 ? Math.round((totals.ok / loadMs) * 1000 * 10) / 10 : 0,
    totals,
    lost,
    lostSample,
    latency: latency.summary(),
    delivery: delivery.summary(),
    errors,
    reconnects,
    seconds: [...bySecond.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([t, m]) => ({ t, counters: m.counters, latency: m.latency.summary(), delivery: m.delivery.summary(), connections: m.connections, pending: m.pending, inFlight: m.inFlight, errorKinds: m.errorKinds })),
    histograms: { latency: latency.encode(), delivery: delivery.encode() },
    ...(aborted ? { aborted } : {}),
  };
}

/**
 * Whether the generator held up: a generator that was itself saturated
 * (CPU near a full core, a stalled event loop, sends leaving late) measured
 * itself, not the target. The limits are deliberately simple and documented.
 * Short runs are not judged (under 10 samples, or under 100 sends): one
 * pause of a shared machine would decide them.
 */
export function generatorVerdict(samples: readonly { agent: string; samples: readonly GeneratorSample[] }[], totals: Counters): string[] {
  const reasons: string[] = [];
  for (const { agent, samples: list } of samples) {
    const n = list.length;
    if (n < 10) continue;
    const busy = list.filter((s) => s.cpuPercent >= 90).length;
    const stalled = list.filter((s) => s.eventLoopP99Ms >= 100).length;
    if (busy / n >= 0.2) reasons.push(`${agent}: CPU at or above 90% of a core in ${busy} of ${n} seconds`);
    if (stalled / n >= 0.2) reasons.push(`${agent}: event-loop delay p99 at or above 100 ms in ${stalled} of ${n} seconds`);
  }
  // 5%, not less: on a shared 2-core machine the OS scheduler alone makes about 1% of sends leave 10-40 ms late.
  if (totals.scheduled >= 100 && totals.lateSends / totals.scheduled > 0.05) reasons.push(`${totals.lateSends} of ${totals.scheduled} sends (${((100 * totals.lateSends) / totals.scheduled).toFixed(1)}%) left later than options.lateSend after their intended time`);
  return reasons;
}

/** `sinho loadtest`'s exit code: 0 passed; 1 a threshold failed; 2 the run could not be done or stopped early; 3 the generator was the bottleneck. */
export function exitCodeOf(s: RunSummary): number {
  if (s.failure || s.aborted) return 2;
  if (s.thresholds.some((r) => !r.passed)) return 1;
  if (!s.valid && s.invalidReasons.length > 0) return 3;
  return 0;
}
