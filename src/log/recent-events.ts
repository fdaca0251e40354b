/**
 * The newest events this process has seen, kept as stored rows, so that
 * followers in the same process (consumer groups, projections, `follow`) do
 * not each ask the store for the same pages: rows this process committed,
 * and pages one follower read from the store near the head, answer the next
 * follower from memory. On SQLite a store read is a B-tree walk and a row copy
 * per event on the thread that also commits; on PostgreSQL it is a query.
 *
 * Safety rests on one rule: the rows held are every event that exists in one
 * range of positions, [coveredFrom, coveredTo], and a page is answered from
 * them only when that range covers every position the page could contain.
 * - A commit of this process adds positions p..q that nobody else can have
 *   (positions are unique and assigned under the store's write lock): it
 *   extends the range when p = coveredTo + 1, and otherwise (another process
 *   or connection committed in between, or batches finished out of order)
 *   replaces it.
 * - A page read from the store up to a head the reader has seen (`follow`'s
 *   windows; such positions are all committed, and on PostgreSQL the head is
 *   the gap-free visibility watermark) covers its window up to that head, or
 *   up to its last row when the page is full. It extends the range when it
 *   starts at coveredTo + 1, and replaces it only when it is newer: a follower
 *   far behind never evicts the head that the others read.
 *
 * Truncating a stream in this process empties the cache; a truncation by
 * another process is seen once its rows age out, which is what a reader that
 * read them just before the truncation would have seen anyway.
 */
import { categoryOf } from './validation.js';
import type { AllPageQuery, StoredEvent } from './storage.js';

export class RecentEvents {
  /** Every event that exists in [coveredFrom, coveredTo], in position order, from index `offset` on. */
  private rows: StoredEvent[] = [];
  private offset = 0;
  private coveredFrom = 0;
  private coveredTo = -1;
  /** Bumped by `clear`: a page read before a truncation must not come back after it. */
  private cleared = 0;

  /** @param capacity most events held; 0 turns the cache off. */
  constructor(private readonly capacity: number) {}

  get enabled(): boolean {
    return this.capacity > 0;
  }

  /** Give it to `addRead` with a page read from the store: what it was before the read began. */
  get generation(): number {
    return this.cleared;
  }

  /** Rows just committed by this process, in any order. */
  addCommitted(committed: StoredEvent[]): void {
    if (!this.enabled || committed.length === 0) return;
    committed.sort((a, b) => a.position - b.position);
    for (let i = 1; i < committed.length; i++) {
      if (committed[i]!.position !== committed[i - 1]!.position + 1) {
        // Positions of this commit unaccounted for: hold nothing rather than guess.
        this.clear();
        return;
      }
    }
    this.extend(committed[0]!.position, committed.at(-1)!.position, committed, true);
  }

  /**
   * A page a follower read from the store for `query` (only windows up to a seen head, unfiltered, count), given
   * the `generation` read before the store was asked.
   */
  addRead(query: AllPageQuery, page: StoredEvent[], generation: number): void {
    if (!this.enabled || generation !== this.cleared || query.toPosition === undefined || query.filter) return;
    const end = page.length >= query.limit ? page.at(-1)!.position : query.toPosition;
    if (end < query.fromPosition) return;
    this.extend(query.fromPosition, end, page, false);
  }

  private extend(from: number, to: number, rows: StoredEvent[], newest: boolean): void {
    if (from === this.coveredTo + 1 && this.coveredTo >= this.coveredFrom) {
      for (const row of rows) this.rows.push(row);
      this.coveredTo = to;
    } else if (newest || from > this.coveredTo) {
      this.rows = rows.slice();
      this.offset = 0;
      this.coveredFrom = from;
      this.coveredTo = to;
    } else {
      return; // older than what is held: keep the head
    }
    const held = this.rows.length - this.offset;
    if (held > this.capacity) {
      this.offset += held - this.capacity;
      this.coveredFrom = this.rows[this.offset - 1]!.position + 1;
    }
    if (this.offset > this.capacity) {
      this.rows = this.rows.slice(this.offset);
      this.offset = 0;
    }
  }

  clear(): void {
    this.cleared += 1;
    this.rows = [];
    this.offset = 0;
    this.coveredFrom = 0;
    this.coveredTo = -1;
  }

  /** The page the store would return, or undefined when the range held does not cover it. */
  page(q: AllPageQuery): StoredEvent[] | undefined {
    if (this.coveredTo < this.coveredFrom || q.limit <= 0) return undefined;
    if (q.fromPosition < this.coveredFrom || q.fromPosition > this.coveredTo) return undefined;
    const to = q.toPosition ?? Number.POSITIVE_INFINITY;
    const categories = q.filter?.categories;
    const types = q.filter?.types;
    const page: StoredEvent[] = [];
    for (let i = this.firstAtOrAfter(q.fromPosition); i < this.rows.length; i++) {
      const row = this.rows[i]!;
      if (row.position > to) return page;
      if ((!categories || categories.includes(categoryOf(row.stream))) && (!types || types.includes(row.type))) {
        page.push(row);
        if (page.length === q.limit) return page;
      }
    }
    // The rows ran out before the page was full: complete only if nothing can lie between coveredTo and `to`.
    return this.coveredTo >= to ? page : undefined;
  }

  /** The row at `position`, when it is held. */
  rowAt(position: number): StoredEvent | undefined {
    if (position < this.coveredFrom || position > this.coveredTo) return undefined;
    const row = this.rows[this.firstAtOrAfter(position)];
    return row?.position === position ? row : undefined;
  }

  /** Index of the first row at or after `position` (rows are in position order; positions may have holes). */
  private firstAtOrAfter(position: number): number {
    let low = this.offset;
    let high = this.rows.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (this.rows[mid]!.position < position) low = mid + 1;
      else high = mid;
    }
    return low;
  }
}
