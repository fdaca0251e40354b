import { InvalidInput } from '../errors.js';

/**
 * When a failed delivery is tried again:
 * - `{ delaysMs: [5000, 5000, 5000] }`: an explicit list, one delay per retry
 *   (the last one repeats if `maxAttempts` asks for more);
 * - `{ initialDelayMs, multiplier, maxDelayMs, jitter }`: exponential backoff
 *   with a cap and ± jitter (a fraction of the delay).
 * `maxAttempts` counts deliveries, the first included: 1 means never retry.
 */
export type RetryPolicy =
  | { delaysMs: readonly number[]; maxAttempts?: number }
  | { initialDelayMs?: number; multiplier?: number; maxDelayMs?: number; jitter?: number; maxAttempts?: number };

export interface ResolvedRetry {
  maxAttempts: number;
  /** Delay before delivery number `attempt + 1`, after `attempt` failures. */
  delayAfter(attempt: number): number;
}

const DEFAULTS = { initialDelayMs: 1000, multiplier: 2, maxDelayMs: 60_000, jitter: 0.2, maxAttempts: 5 };

function nonNegative(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new InvalidInput('INVALID_ARGUMENT', `retry.${name} must be a non-negative number, got ${JSON.stringify(value)}.`, { option: `retry.${name}` });
  }
  return value;
}

export function resolveRetry(policy: RetryPolicy | undefined, random: () => number = Math.random): ResolvedRetry {
  const p = (policy ?? {}) as Record<string, unknown>;
  if (typeof p !== 'object' || p === null) throw new InvalidInput('INVALID_ARGUMENT', 'retry must be an object.');
  const maxAttempts = p.maxAttempts ?? DEFAULTS.maxAttempts;
  if (!Number.isSafeInteger(maxAttempts) || (maxAttempts as number) < 1) {
    throw new InvalidInput('INVALID_ARGUMENT', `retry.maxAttempts must be an integer >= 1, got ${JSON.stringify(maxAttempts)}.`, { option: 'retry.maxAttempts' });
  }
  if (p.delaysMs !== undefined) {
    if (!Array.isArray(p.delaysMs) || p.delaysMs.length === 0) throw new InvalidInput('INVALID_ARGUMENT', 'retry.delaysMs must be a non-empty array of delays in ms.');
    const delays = p.delaysMs.map((d, i) => nonNegative(d, `delaysMs[${i}]`));
    return { maxAttempts: maxAttempts as number, delayAfter: (attempt) => delays[Math.min(attempt, delays.length) - 1] ?? delays[0]! };
  }
  const initial = nonNegative(p.initialDelayMs ?? DEFAULTS.initialDelayMs, 'initialDelayMs');
  const multiplier = nonNegative(p.multiplier ?? DEFAULTS.multiplier, 'multiplier');
  const cap = nonNegative(p.maxDelayMs ?? DEFAULTS.maxDelayMs, 'maxDelayMs');
  const jitter = nonNegative(p.jitter ?? DEFAULTS.jitter, 'jitter');
  if (jitter > 1) throw new InvalidInput('INVALID_ARGUMENT', 'retry.jitter must be between 0 and 1.');
  return {
    maxAttempts: maxAttempts as number,
    delayAfter(attempt) {
      const base = Math.min(cap, initial * multiplier ** Math.max(0, attempt - 1));
      return Math.max(0, Math.round(base * (1 + jitter * (2 * random() - 1))));
    },
  };
}
