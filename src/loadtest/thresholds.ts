/**
 * Thresholds (`p99 < 50ms`, `lost == 0`, `errors < 0.1%`) checked against a
 * run's summary; any failed threshold makes `sinho loadtest` exit with 1.
 */
import { THRESHOLD } from './scenario.js';
import type { RunSummary, ThresholdResult } from './summary.js';

export type { ThresholdResult };

/** The value a threshold's metric has in a summary (ms for latencies, % or count for errors). */
function valueOf(metric: string, unit: string | undefined, s: RunSummary): number {
  switch (metric) {
    case 'p50':
    case 'p90':
    case 'p95':
    case 'p99':
    case 'p999':
    case 'max':
    case 'mean':
      return s.latency[metric];
    case 'delivery.p50':
      return s.delivery.p50;
    case 'delivery.p99':
      return s.delivery.p99;
    case 'delivery.max':
      return s.delivery.max;
    case 'errors': {
      if (unit !== '%') return s.totals.errors;
      const actions = s.totals.ok + s.totals.errors;
      return actions === 0 ? 0 : (100 * s.totals.errors) / actions;
    }
    case 'lost':
      return s.lost;
    case 'duplicates':
    case 'outOfOrder':
    case 'late':
    case 'unexpected':
    case 'dropped':
    case 'lateSends':
      return s.totals[metric];
    case 'rate':
      return s.rate;
    default:
      throw new Error(`unknown threshold metric ${metric}`);
  }
}

export function checkThresholds(thresholds: readonly string[], summary: RunSummary): ThresholdResult[] {
  return thresholds.map((threshold) => {
    const m = THRESHOLD.exec(threshold)!;
    const [, metric, op, raw, unit] = m as unknown as [string, string, string, string, string | undefined];
    const limit = Number(raw) * (unit === 's' ? 1000 : 1);
    const actual = valueOf(metric, unit, summary);
    const passed = op === '<' ? actual < limit : op === '<=' ? actual <= limit : op === '>' ? actual > limit : op === '>=' ? actual >= limit : op === '==' ? actual === limit : actual !== limit;
    return { threshold, actual: Math.round(actual * 1000) / 1000, unit: unit === '%' ? '%' : metric.startsWith('p') || metric.startsWith('delivery') || metric === 'max' || metric === 'mean' ? 'ms' : '', passed };
  });
}
