/**
 * Group commit: many concurrent appends share one transaction and one fsync.
 *
 * State machine: callers `enqueue` requests; if no commit is running, one is
 * scheduled with `setImmediate`, which lets every append issued in the same
 * turn of the event loop (and, while a commit is in flight, every append
 * issued meanwhile) join the next batch. The committer takes a FIFO prefix of
 * the queue with the same durability, up to `maxBatchEvents` events, hands it
 * to the adapter as one transaction, settles each caller with its own outcome,
 * and loops until the queue is empty. One commit at a time per log: that keeps
 * positions in commit order inside the process and bounds the work per fsync.
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

export class GroupCommitter {
  private readonly queue: Pending[] = [];
  private running = false;
  private idle: Promise<void> = Promise.resolve();
  private markIdle: () => void = () => {};

  constructor(
    private readonly storage: LogStorage,
    private readonly maxBatchEvents: number,
    private readonly onCommitted: (head: number) => void,
  ) {}

  enqueue(request: AppendRequest, durability: 'durable' | 'relaxed'): Promise<{ outcome: RequestOutcome; durability: Durability; head: number }> {
    const events = request.appends.reduce((n, a) => n + a.events.length, 0);
    return new Promise((resolve, reject) => {
      this.queue.push({ request, events, durability, resolve, reject });
      if (!this.running) {
        this.running = true;
        this.idle = new Promise((r) => (this.markIdle = r));
        setImmediate(() => void this.drain());
      }
    });
  }

  /** Resolves once every queued append has been settled. */
  whenIdle(): Promise<void> {
    return this.running ? this.idle : Promise.resolve();
  }

  private takeBatch(): Pending[] {
    const first = this.queue[0]!;
    let count = 0;
    let events = 0;
    while (count < this.queue.length) {
      const next = this.queue[count]!;
      if (next.durability !== first.durability) break;
      if (count > 0 && events + next.events > this.maxBatchEvents) break;
      events += next.events;
      count += 1;
    }
    return this.queue.splice(0, count);
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.takeBatch();
        let result: CommitResult;
        try {
          result = await this.storage.commit(
            batch.map((p) => p.request),
            batch[0]!.durability,
          );
        } catch (error) {
          for (const p of batch) p.reject(error);
          continue;
        }
        this.onCommitted(result.head);
        batch.forEach((p, i) => p.resolve({ outcome: result.outcomes[i]!, durability: result.durability, head: result.head }));
      }
    } finally {
      this.running = false;
      this.markIdle();
    }
  }
}
