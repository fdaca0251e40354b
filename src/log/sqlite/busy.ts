/**
 * Waiting for another connection's write lock without stalling the process.
 *
 * SQLite's own busy handler sleeps inside the call, on the thread that made
 * it: with several processes on one file (moim's API, worker and gateways),
 * every request of a process stood still while another process committed.
 * And a write that SQLite refuses at once (SQLITE_BUSY without calling the
 * handler, which moim's worker met under load) failed outright. So the
 * connection keeps only a short handler (BUSY_HANDLER_MS, for momentary
 * contention), and longer waits are retried here with timers, for up to the
 * caller's budget; then the call fails with STORE_BUSY. A refused write
 * transaction changed nothing, so running it again is safe.
 */
import { SinhoError } from '../../errors.js';

/** SQLite's in-call busy handler on connections that retry here, ms. */
export const BUSY_HANDLER_MS = 10;

const isBusy = (error: unknown): boolean => {
  const code = (error as { code?: unknown })?.code;
  // Extended codes too (SQLITE_BUSY_SNAPSHOT: a read snapshot went stale before the write; retrying starts afresh).
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
};

export async function retryWhileBusy<T>(work: () => T | Promise<T>, budgetMs: number): Promise<T> {
  const deadline = Date.now() + budgetMs;
  let delay = 1;
  for (;;) {
    try {
      return await work();
    } catch (error) {
      if (!isBusy(error)) throw error;
      if (Date.now() >= deadline) {
        throw new SinhoError('STORE_BUSY', `The SQLite file stayed locked by another connection for ${budgetMs} ms (busyTimeoutMs); nothing was written.`, { budgetMs });
      }
    }
    await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(1, deadline - Date.now()))));
    delay = Math.min(delay * 2, 50);
  }
}

/** The same object with every method's call retried while busy (methods are async, or become so). */
export function retryingWhileBusy<T extends object>(target: T, budgetMs: number, skip: readonly (keyof T)[] = []): T {
  const wrapped = { ...target };
  for (const key of Object.keys(target) as (keyof T)[]) {
    const value = target[key];
    if (typeof value !== 'function' || skip.includes(key)) continue;
    wrapped[key] = ((...args: unknown[]) => retryWhileBusy(() => (value as (...a: unknown[]) => unknown).apply(target, args), budgetMs)) as T[keyof T];
  }
  return wrapped;
}
