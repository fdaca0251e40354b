/**
 * Group commit: many concurrent appends share one transaction and one fsync.
 *
 * State machine: callers `enqueue` requests; when no batch is committing, a
 * batch is cut with `setImmediate`, which lets every append issued in the same
 * turn of the event loop join it. While one is committing, the next batch
 * gathers every append issued meanwhile, and is cut early (up to
 * `maxInFlight` batches) only once a full batch is waiting (see mayCut);
 * a store that commits on a thread of its own (`pipelineCommits`) gets the
 * next batch at once instead, the queue split over the free slots. A
 * batch is a FIFO prefix of the queue with one durability, up to
 * `maxBatchEvents` events; the adapter
 * commits it as one transaction and each caller is settled with its own
 * outcome. When a batch finishes, the next one is cut from whatever queued
 * meanwhile. Positions stay in commit order because every adapter assigns them
 * under its write lock (SQLite's, or PostgreSQL's head row).
 *
 * With a group-commit delay (a PostgreSQL option, off by default; see lingers), a batch that is not full is cut
 * that much later while appends keep arriving on their own.
 *
 * Per-call atomicity and expected-revision checks are unaffected: the adapter
 * plans each request separately inside the shared transaction (see plan.ts).
 * If the transaction itself fails (disk full, connection lost), every request
 * of that batch is rejected with that error and none of them is written.
 */
import type { AppendRequest, CommitResult, LogStorage, RequestOutcome } from './storage.js';
import type { Durability } from './types.js';

interface Pending {
  request: AppendRequest;
  events: number;
  durability: 'durable' | 'relaxed';
  resolve: (value: { outcome: RequestOutcome; durability: Durability; head: number }) => void;
  reject: (error: unknown) => void;
}

/** Requests that must have arrived during the previous batch's delay and commit before the delay applies again (PostgreSQL's `commit_siblings` default). */
const LINGER_SIBLINGS = 5;

export class GroupCommitter {
  private readonly queue: Pending[] = [];
  /** Events in `queue`. */
  private queuedEvents = 0;
  private inFlight = 0;
  private scheduled = false;
  /** Requests that arrived on their own since the last cut, and in the batch cut last (see lingers). */
  private arrivedOnTheirOwn = 0;
  private arrivedOnTheirOwnInLastBatch = 0;
  /** Set while the callers of a batch just committed are being settled, until the next turn of the event loop. */
  private settling = false;
  /** Set while a batch is held back by the group-commit delay. */
  private lingerTimer: NodeJS.Timeout | undefined;
  private idle: Promise<void> = Promise.resolve();
  private markIdle: () => void = () => {};

  /**
   * @param maxInFlight batches committing at once. 1 for SQLite writing on the
   *   calling thread (its commit is synchronous anyway); 2 for SQLite's writer
   *   thread (see pipelined); 2 for PostgreSQL, so that under full load the next
   *   batch is sent and waiting on the head lock while the previous one flushes.
   */
  constructor(
    private readonly storage: LogStorage,
    private readonly maxBatchEvents: number,
    private readonly maxInFlight: number,
    /** Called once a batch committed, before its callers are settled (readers in this process may then look at it). */
    private readonly onCommitted: (result: CommitResult, requests: readonly AppendRequest[]) => void,
    /** See {@link lingers}; 0 cuts every batch as soon as the store is free. */
    private readonly delayMs = 0,
  ) {}

  enqueue(request: AppendRequest, durability: 'durable' | 'relaxed'): Promise<{ outcome: RequestOutcome; durability: Durability; head: number }> {
    const events = request.appends.reduce((n, a) => n + a.events.length, 0);
    return new Promise((resolve, reject) => {
      if (this.inFlight === 0 && this.queue.length === 0) this.idle = new Promise((r) => (this.markIdle = r));
      this.queue.push({ request, events, durability, resolve, reject });
      this.queuedEvents += events;
      // An append issued while callers are handed their results may be one of them appending again (a closed
      // loop, which waiting would only slow down); any other came on its own.
      if (!this.settling) this.arrivedOnTheirOwn += 1;
      if (this.lingerTimer !== undefined && this.queuedEvents >= this.maxBatchEvents) {
        // A full batch gains nothing by waiting.
        clearTimeout(this.lingerTimer);
        this.lingerTimer = undefined;
        this.scheduled = false;
      }
      this.schedule();
    });
  }

  /** Resolves once every queued append has been settled. */
  whenIdle(): Promise<void> {
    return this.inFlight === 0 && this.queue.length === 0 ? Promise.resolve() : this.idle;
  }

  /**
   * While a batch is committing, the next one is cut only when a full batch is queued. Below that, waiting for the
   * commit lets the next batch take everything that arrives meanwhile, in one lock acquisition instead of several
   * small ones queued behind each other (each paying its own flush). When the queue is that long the next batch
   * cannot grow by waiting, and it is sent at once to wait on the lock, so the store never idles between batches.
   */
  private mayCut(): boolean {
    if (this.pipelined) return this.inFlight < this.maxInFlight;
    return this.inFlight === 0 || (this.inFlight < this.maxInFlight && this.queuedEvents >= this.maxBatchEvents);
  }

  /**
   * A store that commits on a thread of its own (`pipelineCommits`) gets the next batch while it commits one, and
   * what is queued is split evenly over the free slots: callers that wait for their appends (a closed loop) all
   * come back with one result, and sent as one batch they would leave one thread idle while the other works, turn
   * about, for good; split, one half is settled and sends its next appends while the other half commits.
   */
  private get pipelined(): boolean {
    return this.storage.pipelineCommits === true;
  }

  /**
   * The group-commit delay (PostgreSQL's `commit_delay` with `commit_siblings`, Kafka's `linger.ms`): the next batch
   * is held back `delayMs` so that it carries more events, because at a steady high rate the cost of a commit is
   * mostly per batch (the round trip, the statement, the WAL flush, the followers' wake-up), not per event. It only
   * applies when appends keep arriving by themselves, which is when waiting gathers more: at least
   * {@link LINGER_SIBLINGS} requests arrived on their own since the last cut, or in the batch before. "On their own"
   * means not while the callers of a committed batch were being settled, so a lone writer waiting on its own appends,
   * or several doing so in a closed loop, never trigger it; and a full batch is never held back. Counting only the
   * arrivals during a commit or a hold, as it first did, lost the stream as soon as commits got shorter than the gaps
   * between its bursts (on a faster host, 43-53 commits instead of 14 in the test of a steady stream).
   */
  private lingers(): boolean {
    const steady = Math.max(this.arrivedOnTheirOwn, this.arrivedOnTheirOwnInLastBatch) >= LINGER_SIBLINGS;
    return this.delayMs > 0 && this.inFlight === 0 && steady && this.queuedEvents < this.maxBatchEvents;
  }

  private schedule(): void {
    if (this.scheduled || this.queue.length === 0 || !this.mayCut()) return;
    this.scheduled = true;
    const cut = (): void => {
      this.scheduled = false;
      this.lingerTimer = undefined;
      this.arrivedOnTheirOwnInLastBatch = this.arrivedOnTheirOwn;
      this.arrivedOnTheirOwn = 0;
      while (this.queue.length > 0 && this.mayCut()) void this.commit(this.takeBatch());
    };
    if (this.lingers()) this.lingerTimer = setTimeout(cut, this.delayMs);
    else setImmediate(cut);
  }

  private takeBatch(): Pending[] {
    const limit = this.pipelined ? Math.min(this.maxBatchEvents, Math.ceil(this.queuedEvents / (this.maxInFlight - this.inFlight))) : this.maxBatchEvents;
    const first = this.queue[0]!;
    let count = 0;
    let events = 0;
    while (count < this.queue.length) {
      const next = this.queue[count]!;
      if (next.durability !== first.durability) break;
      if (count > 0 && events + next.events > limit) break;
      events += next.events;
      count += 1;
    }
    this.queuedEvents -= events;
    return this.queue.splice(0, count);
  }

  private async commit(batch: Pending[]): Promise<void> {
    this.inFlight += 1;
    try {
      const requests = batch.map((p) => p.request);
      const result = await this.storage.commit(requests, batch[0]!.durability);
      this.onCommitted(result, requests);
      if (!this.settling) {
        this.settling = true;
        setImmediate(() => (this.settling = false));
      }
      batch.forEach((p, i) => p.resolve({ outcome: result.outcomes[i]!, durability: result.durability, head: result.head }));
    } catch (error) {
      for (const p of batch) p.reject(error);
    } finally {
      this.inFlight -= 1;
      if (this.queue.length > 0) this.schedule();
      else if (this.inFlight === 0) this.markIdle();
    }
  }
}
