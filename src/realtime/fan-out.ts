/**
 * Fan-out: a consumer group that turns domain events into notifications in
 * users' feeds, by rules that name the recipients. It is at-least-once like
 * every group, and the feed store ignores a sourceId it already has, so a
 * redelivered event notifies nobody twice. Publishing groups concurrent events
 * into one store transaction (one fsync for many joins and all their
 * recipients).
 *
 * The same runner keeps the feeds tidy: it reports notifications not
 * acknowledged in time as `NotificationUndelivered` events in the log (the
 * hook for push or e-mail fallback; deterministic ids, so a report repeated
 * after a crash is stored once), and prunes what is older than retention.
 */
import { EventEmitter } from 'node:events';
import { InvalidInput } from '../errors.js';
import type { EventLog, RecordedEvent } from '../log/types.js';
import { nameBasedUuid } from '../log/ids.js';
import type { Binding } from '../subscription/routing.js';
import { subscribe } from '../subscription/index.js';
import type { ConsumerGroup, SubscribeOptions } from '../subscription/consumer-group.js';
import type { FeedStore, UndeliveredNotification } from './feed-store.js';
import { gatewayNodeOf } from './sharding.js';

/** What one event notifies, and to whom. */
export interface FanOutRoute {
  recipients: readonly string[];
  type: string;
  data: unknown;
}

export interface FanOutOptions {
  feed: FeedStore;
  /** Consumer group name. Default `sinho-notifications`. */
  group?: string;
  /** Which events can notify anyone. */
  bindings: Binding[];
  /** The rule: recipients and payload for an event, or undefined for none. May read read models. */
  route(event: RecordedEvent): FanOutRoute | undefined | Promise<FanOutRoute | undefined>;
  /** Gateway nodes the users are spread over (each gets an outbox row with only its users). Default 1. */
  nodes?: number;
  /** Which node owns a user. Default `gatewayNodeOf`. */
  nodeOf?: (userId: string, nodes: number) => number;
  /** Events routed in parallel (per-stream order is kept). Default 64. */
  concurrency?: number;
  /** Retry policy of the group (a route that throws, e.g. a read model not reachable). */
  retry?: SubscribeOptions['retry'];
  /** Wait for the group's lease as a hot standby instead of failing when another process holds it (see SubscribeOptions). */
  standby?: boolean;
  /** Notifications are kept this long, ms. Default 30 days. */
  retentionMs?: number;
  /** Outbox rows (the live path to gateways) are kept this long, ms. Default 10 minutes. */
  outboxRetentionMs?: number;
  /** How often retention is applied, ms. Default 60,000. */
  pruneIntervalMs?: number;
  /** A notification not acknowledged within this time is reported undelivered, ms; false: never. Default 60,000. */
  undeliveredAfterMs?: number | false;
  /** How often undelivered notifications are looked for, ms. Default 1,000. */
  undeliveredCheckMs?: number;
  /** The clock, epoch ms. Default Date.now. */
  now?: () => number;
}

export interface FanOutEventMap {
  'fanout:undelivered': [UndeliveredNotification[]];
  'fanout:pruned': [{ notifications: number }];
  'fanout:error': [{ error: Error }];
}

/** The stream a user's `NotificationUndelivered` reports go to. */
export const undeliveredStream = (userId: string): string => `notification-${userId}`;

/** Deterministic id of the report of one notification (so re-reporting stores nothing twice). */
export function undeliveredEventId(userId: string, cursor: number): string {
  return nameBasedUuid(`sinho:undelivered:${userId}:${cursor}`);
}

export class FanOut extends EventEmitter<FanOutEventMap> {
  private readonly timers: NodeJS.Timeout[] = [];
  private sweeping = false;
  private stopped = false;

  private constructor(
    readonly group: ConsumerGroup,
    private readonly log: EventLog,
    private readonly feed: FeedStore,
    private readonly options: FanOutOptions,
  ) {
    super();
  }

  static async start(log: EventLog, options: FanOutOptions): Promise<FanOut> {
    if (!options?.feed || typeof options.route !== 'function') throw new InvalidInput('INVALID_ARGUMENT', 'runFanOut needs a feed store and a route function.');
    const nodes = options.nodes ?? 1;
    if (!Number.isSafeInteger(nodes) || nodes < 1) throw new InvalidInput('INVALID_ARGUMENT', `runFanOut option nodes must be an integer >= 1, got ${JSON.stringify(options.nodes)}.`);
    const nodeOf = options.nodeOf ?? gatewayNodeOf;
    const feed = options.feed;
    const group = await subscribe(log, options.group ?? 'sinho-notifications', {
      bindings: options.bindings,
      concurrency: options.concurrency ?? 64,
      retry: options.retry,
      standby: options.standby,
      handler: async (event) => {
        const route = await options.route(event);
        if (!route || route.recipients.length === 0) return;
        await feed.publish([{ sourceId: event.id, type: route.type, data: route.data, recipients: route.recipients }], { nodeOf: (userId) => nodeOf(userId, nodes) });
      },
    });
    const fanOut = new FanOut(group, log, feed, options);
    fanOut.schedule();
    return fanOut;
  }

  private schedule(): void {
    const o = this.options;
    if (o.undeliveredAfterMs !== false) {
      this.timers.push(setInterval(() => void this.reportUndelivered(), o.undeliveredCheckMs ?? 1000));
    }
    this.timers.push(setInterval(() => void this.prune(), o.pruneIntervalMs ?? 60_000));
    for (const timer of this.timers) timer.unref();
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  /** Reports notifications not acknowledged in time; returns how many. Runs on a timer; callable directly. */
  async reportUndelivered(): Promise<number> {
    if (this.sweeping || this.stopped || this.options.undeliveredAfterMs === false) return 0;
    this.sweeping = true;
    try {
      const due = await this.feed.findUndelivered(this.now() - (this.options.undeliveredAfterMs ?? 60_000), 1000);
      if (due.length === 0) return 0;
      const byUser = new Map<string, UndeliveredNotification[]>();
      for (const d of due) {
        let list = byUser.get(d.userId);
        if (!list) byUser.set(d.userId, (list = []));
        list.push(d);
      }
      await Promise.all(
        [...byUser].map(([userId, list]) =>
          this.log.append(
            undeliveredStream(userId),
            list.map((d) => ({
              id: undeliveredEventId(userId, d.cursor),
              type: 'NotificationUndelivered',
              data: { userId, cursor: d.cursor, sourceId: d.sourceId, notificationType: d.type, at: new Date(d.at).toISOString() },
            })),
          ),
        ),
      );
      await this.feed.markReported([...byUser].map(([userId, list]) => ({ userId, cursor: list.at(-1)!.cursor })));
      this.emit('fanout:undelivered', due);
      return due.length;
    } catch (error) {
      if (!this.stopped) this.emit('fanout:error', { error: error as Error });
      return 0;
    } finally {
      this.sweeping = false;
    }
  }

  /** Applies retention now; returns notifications deleted. */
  async prune(): Promise<number> {
    if (this.stopped) return 0;
    try {
      const now = this.now();
      const deleted = await this.feed.prune(now - (this.options.retentionMs ?? 30 * 24 * 3600 * 1000), now - (this.options.outboxRetentionMs ?? 10 * 60 * 1000));
      if (deleted > 0) this.emit('fanout:pruned', { notifications: deleted });
      return deleted;
    } catch (error) {
      if (!this.stopped) this.emit('fanout:error', { error: error as Error });
      return 0;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    await this.group.stop();
    while (this.sweeping) await new Promise((r) => setTimeout(r, 5));
  }
}

/** Starts fan-out (worker role): a consumer group from the log into the feed store. */
export function runFanOut(log: EventLog, options: FanOutOptions): Promise<FanOut> {
  return FanOut.start(log, options);
}
