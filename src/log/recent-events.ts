/**
 * The events this process committed last, kept as stored rows, so that a
 * follower in the same process (a consumer group, a projection) reads what was
 * just appended without a round trip to the store: on SQLite that read was a
 * B-tree walk and a row copy per event on the thread that also commits.
 *
 * Safety rests on one rule: the rows held always cover a contiguous run of
 * positions, and a page is answered from them only when the run covers every
 * position the page could contain. Positions are unique and assigned under the
 * store's write lock, so a contiguous run of positions committed here has no
 * room for anybody else's event: whatever another process or connection
 * committed lies outside the run, and a page that reaches outside it is read
 * from the store as before. A commit that does not continue the run (another
 * writer committed in between, or batches finished out of order) starts a new
 * run.
 *
 * Followers only ask up to a head they have seen, so every position of a page
 * is committed; on PostgreSQL that head is the gap-free visibility watermark,
 * and the rows here are committed too, so the answer is the one the store
 * would give. Truncating a stream in this process empties the rows.
 */
import { categoryOf } from './validation.js';
import type { AllPageQuery, StoredEvent } from './storage.js';

export class RecentEvents {
  private rows: StoredEvent[] = [];
  /** Index of the oldest row still held (the array is trimmed in chunks, not on every commit). */
  private offset = 0;

  /** @param capacity most events held; 0 turns the cache off. */
  constructor(private readonly capacity: number) {}

  /** Rows just committed by this process, in any order. */
  add(committed: StoredEvent[]): void {
    if (this.capacity === 0 || committed.length === 0) return;
    committed.sort((a, b) => a.position - b.position);
    for (let i = 1; i < committed.length; i++) {
      if (committed[i]!.position !== committed[i - 1]!.position + 1) {
        // Not contiguous (rows of this commit unaccounted for): hold nothing rather than guess.
        this.clear();
        return;
      }
    }
    const last = this.rows.at(-1);
    if (!last || committed[0]!.position !== last.position + 1) this.clear();
    for (const row of committed) this.rows.push(row);
    const held = this.rows.length - this.offset;
    if (held > this.capacity) this.offset += held - this.capacity;
    if (this.offset > this.capacity) {
      this.rows = this.rows.slice(this.offset);
      this.offset = 0;
    }
  }

  clear(): void {
    this.rows = [];
    this.offset = 0;
  }

  /** The page the store would return, or undefined when the rows held do not cover it. */
  page(q: AllPageQuery): StoredEvent[] | undefined {
    const count = this.rows.length - this.offset;
    if (count === 0 || q.limit <= 0) return undefined;
    const first = this.rows[this.offset]!.position;
    const last = this.rows[this.rows.length - 1]!.position;
    if (q.fromPosition < first || q.fromPosition > last) return undefined;
    const to = q.toPosition ?? Number.POSITIVE_INFINITY;
    const categories = q.filter?.categories;
    const types = q.filter?.types;
    const page: StoredEvent[] = [];
    for (let i = this.offset + (q.fromPosition - first); i < this.rows.length; i++) {
      const row = this.rows[i]!;
      if (row.position > to) return page;
      if ((!categories || categories.includes(categoryOf(row.stream))) && (!types || types.includes(row.type))) {
        page.push(row);
        if (page.length === q.limit) return page;
      }
    }
    // The run ended before the page was full: complete only if nothing can lie between its end and `to`.
    return last >= to ? page : undefined;
  }
}
