/**
 * Batches concurrent `publish` calls into one store transaction (one fsync),
 * as the log's group commit does for appends: calls made in the same turn of
 * the event loop, and while a batch commits, join the next batch.
 */
import type { NewNotification } from './feed-store.js';

export type PublishResult = { sourceId: string; recipients: { userId: string; cursor: number }[] };

interface Item {
  notification: NewNotification;
  nodeOf?: (userId: string) => number;
}

interface Pending {
  items: Item[];
  resolve: (results: PublishResult[]) => void;
  reject: (error: unknown) => void;
}

export class PublishQueue {
  private queue: Pending[] = [];
  private running: Promise<void> | undefined;
  private scheduled = false;

  constructor(
    private readonly commit: (batch: Item[]) => PublishResult[] | Promise<PublishResult[]>,
    private readonly maxBatchNotifications = 1000,
  ) {}

  enqueue(notifications: readonly NewNotification[], nodeOf?: (userId: string) => number): Promise<PublishResult[]> {
    if (notifications.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      this.queue.push({ items: notifications.map((notification) => ({ notification, nodeOf })), resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.running) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.running = this.flush().finally(() => {
        this.running = undefined;
        if (this.queue.length > 0) this.schedule();
      });
    });
  }

  private async flush(): Promise<void> {
    const batch: Pending[] = [];
    let size = 0;
    while (this.queue.length > 0 && (batch.length === 0 || size + this.queue[0]!.items.length <= this.maxBatchNotifications)) {
      const next = this.queue.shift()!;
      size += next.items.length;
      batch.push(next);
    }
    try {
      const results = await this.commit(batch.flatMap((p) => p.items));
      let offset = 0;
      for (const p of batch) {
        p.resolve(results.slice(offset, offset + p.items.length));
        offset += p.items.length;
      }
    } catch (error) {
      for (const p of batch) p.reject(error);
    }
  }

  /** Resolves once everything queued so far is committed (or failed). */
  async drain(): Promise<void> {
    while (this.queue.length > 0 || this.running || this.scheduled) {
      await (this.running ?? new Promise((r) => setImmediate(r)));
    }
  }
}
