/**
 * An in-process cache of aggregate states, so that a hot aggregate is not
 * folded from its snapshot and events on every command: `handleCommand`
 * decides on a cached state without reading the stream, and the expected
 * revision on append guards against every other writer (on a conflict, or
 * before returning a refusal, it catches up with the events appended since).
 * States must be treated as immutable (deciders' `evolve` returns new
 * objects; `decide` must not modify the state it is given).
 */
export interface CachedState {
  state: unknown;
  revision: number;
}

export class AggregateStateCache {
  private readonly entries = new Map<string, CachedState>();

  /** @param maxEntries least recently used states are dropped beyond this. Default 10,000. */
  constructor(readonly maxEntries = 10_000) {
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new RangeError('maxEntries must be an integer >= 1');
  }

  get(key: string): CachedState | undefined {
    const entry = this.entries.get(key);
    if (entry) {
      // Refresh its place in the LRU order.
      this.entries.delete(key);
      this.entries.set(key, entry);
    }
    return entry;
  }

  set(key: string, entry: CachedState): void {
    const current = this.entries.get(key);
    // Never move a state backwards (two commands on one stream finishing out of order).
    if (current && current.revision > entry.revision) return;
    this.entries.delete(key);
    this.entries.set(key, entry);
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  get size(): number {
    return this.entries.size;
  }
}
