/**
 * A consumer group split into leased partitions, so that several processes
 * (nodes) can share its work.
 *
 * - Every event's ordering key hashes to one of `partitions` partitions
 *   (`partitionOf`). Each partition is a consumer group of its own in the
 *   store, named `<group>#<index>`, with its own checkpoint, retry and
 *   dead-letter rows and its own lease; one engine (`ConsumerGroup`) runs it.
 *   A key never changes partition, so per-key order is the engine's order.
 * - Nodes find each other through a membership table: each heartbeats every
 *   third of `leaseMs`, and members silent for `leaseMs` are forgotten. With
 *   the live members sorted, node i of n wants partitions p with p % n == i.
 *   It stops (checkpoint, then lease release) the partitions it no longer
 *   wants and starts the ones it wants as soon as their lease is free, so a
 *   partition moves only after its old owner committed and let go, or after
 *   its lease expired (the old owner died or stalled).
 * - Fencing: every commit of an engine checks its lease in the same
 *   transaction, so a stalled node that lost a partition cannot commit over
 *   the new owner; its engine stops with GROUP_LEASE_LOST.
 * - Leases and membership are rows with expiry times from the store's clock:
 *   no session-level advisory lock, so this works through a connection pooler
 *   (PgBouncer in transaction mode) too.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { InvalidInput, SinhoError } from '../errors.js';
import type { EventLog } from '../log/types.js';
import { ConsumerGroup, validateGroupName, type DeadLetter, type GroupStats, type SubscribeOptions, type SubscriptionEventMap } from './consumer-group.js';
import { partitionOf } from './partitioning.js';
import type { SubscriptionStorage } from './storage.js';

/** The store name of partition `index` of `group` (`#` cannot appear in a group name, so it cannot collide). */
export function partitionGroupName(group: string, index: number): string {
  return `${group}#${index}`;
}

export const MAX_PARTITIONS = 1024;

/** The store groups that make up `group`: itself, or its partitions. */
export function storeGroups(group: string, partitions: number): string[] {
  return partitions === 0 ? [group] : Array.from({ length: partitions }, (_, p) => partitionGroupName(group, p));
}

/**
 * A group's checkpoint as committed in the store (whichever node runs it):
 * its own, or the lowest of its partitions'. Undefined when there is no such group.
 */
export async function committedCheckpoint(storage: SubscriptionStorage, group: string): Promise<number | undefined> {
  const row = await storage.getGroup(group);
  if (!row) return undefined;
  if (row.partitions === 0) return row.position;
  const parts = await Promise.all(storeGroups(group, row.partitions).map((name) => storage.getGroup(name)));
  return Math.min(...parts.map((r) => r?.position ?? 0));
}

export class PartitionedGroup extends EventEmitter<SubscriptionEventMap> {
  readonly name: string;
  readonly partitions: number;
  /** This node's identity in the group's membership. */
  readonly member = randomUUID();
  private readonly leaseMs: number;
  private readonly engines = new Map<number, ConsumerGroup>();
  private members: string[] = [];
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private closing = false;

  constructor(
    private readonly log: EventLog,
    private readonly storage: SubscriptionStorage,
    name: string,
    private readonly options: SubscribeOptions & { partitions: number },
  ) {
    super();
    this.name = validateGroupName(name);
    const { partitions } = options;
    if (!Number.isSafeInteger(partitions) || partitions < 1 || partitions > MAX_PARTITIONS) {
      throw new InvalidInput('INVALID_ARGUMENT', `partitions must be an integer from 1 to ${MAX_PARTITIONS}, got ${JSON.stringify(partitions)}.`, { option: 'partitions' });
    }
    this.partitions = partitions;
    this.leaseMs = options.leaseMs ?? 10_000;
    // Validates every other option now, with the same errors as an unpartitioned group.
    new ConsumerGroup(log, storage, partitionGroupName(this.name, 0), options, { index: 0, count: partitions, leaseOnce: true });
  }

  /** Joins the group and takes this node's share of the partitions (as far as they are free). */
  async start(): Promise<void> {
    const row = await this.storage.ensureGroup(this.name, 0, this.partitions);
    if (row.partitions !== this.partitions) {
      throw new SinhoError(
        'INVALID_ARGUMENT',
        row.partitions === 0
          ? `Consumer group "${this.name}" exists unpartitioned; delete it (or use another name) to run it partitioned.`
          : `Consumer group "${this.name}" has ${row.partitions} partitions, not ${this.partitions}; every node must use the same count.`,
        { group: this.name, partitions: row.partitions },
      );
    }
    // Every partition starts at the same position, whichever node creates it.
    const start = this.options.startFrom ?? 'beginning';
    const initial = start === 'beginning' ? 0 : start === 'end' ? await this.log.headPosition() : Math.max(0, start.position - 1);
    for (let p = 0; p < this.partitions; p++) await this.storage.ensureGroup(partitionGroupName(this.name, p), initial);
    try {
      await this.rebalance(true);
    } catch (error) {
      await this.stop({ timeoutMs: 0 });
      throw error;
    }
    this.timer = setInterval(() => void this.rebalance(), Math.max(10, Math.floor(this.leaseMs / 3)));
  }

  /** The partitions this node runs now. */
  owned(): number[] {
    return [...this.engines.keys()].sort((a, b) => a - b);
  }

  /** One beat: heartbeat, then stop what this node no longer wants and start what it wants. */
  private rebalance(first = false): Promise<void> {
    if (this.ticking || this.closing) return this.ticking ?? Promise.resolve();
    this.ticking = (async () => {
      try {
        this.members = await this.storage.heartbeat(this.name, this.member, this.leaseMs);
        const index = this.members.indexOf(this.member);
        const n = this.members.length;
        const wanted = new Set<number>();
        for (let p = 0; p < this.partitions; p++) if (p % n === index) wanted.add(p);
        let changed = false;
        for (const [p, engine] of this.engines) {
          if (wanted.has(p) || this.closing) continue;
          this.engines.delete(p);
          await engine.stop();
          changed = true;
        }
        for (const p of wanted) {
          if (this.engines.has(p) || this.closing) continue;
          if (await this.startPartition(p)) changed = true;
        }
        if (changed) this.emit('subscription:rebalance', { group: this.name, member: this.member, members: n, partitions: this.owned() });
      } catch (error) {
        // At start the caller hears of it. Later, the store is unreachable or
        // failing: keep what runs (its leases fence it) and try again on the next beat.
        if (first) throw error;
        this.emit('subscription:error', { group: this.name, error: error as Error });
      } finally {
        this.ticking = undefined;
      }
    })();
    return this.ticking;
  }

  private async startPartition(p: number): Promise<boolean> {
    const engine = new ConsumerGroup(this.log, this.storage, partitionGroupName(this.name, p), this.options, { index: p, count: this.partitions, leaseOnce: true });
    engine.on('subscription:handled', (e) => this.emit('subscription:handled', e));
    engine.on('subscription:retry', (e) => this.emit('subscription:retry', e));
    engine.on('subscription:dead-letter', (e) => this.emit('subscription:dead-letter', e));
    engine.on('subscription:checkpoint', (e) => this.emit('subscription:checkpoint', e));
    engine.on('subscription:error', (e) => this.emit('subscription:error', e));
    // An engine that lost its lease or failed stops itself; forget it so the next beat can start it again.
    engine.on('subscription:stopped', () => {
      if (this.engines.get(p) === engine) this.engines.delete(p);
    });
    try {
      await engine.start();
    } catch (error) {
      // Its old owner has not let go yet: the next beat tries again.
      if ((error as SinhoError).code === 'GROUP_BUSY') return false;
      throw error;
    }
    if (this.closing) {
      await engine.stop();
      return false;
    }
    this.engines.set(p, engine);
    return true;
  }

  /** This node's view: its partitions' counters summed, the lowest checkpoint among them. */
  stats(): GroupStats & { partitions: number[]; members: number } {
    const all = [...this.engines.values()].map((e) => e.stats());
    const sum = (pick: (s: GroupStats) => number) => all.reduce((n, s) => n + pick(s), 0);
    return {
      group: this.name,
      checkpoint: all.length === 0 ? 0 : Math.min(...all.map((s) => s.checkpoint)),
      lag: all.length === 0 ? 0 : Math.max(...all.map((s) => s.lag)),
      inFlight: sum((s) => s.inFlight),
      retrying: sum((s) => s.retrying),
      waiting: sum((s) => s.waiting),
      deadLetters: sum((s) => s.deadLetters),
      handled: sum((s) => s.handled),
      handledPerSecond: sum((s) => s.handledPerSecond),
      partitions: this.owned(),
      members: this.members.length,
    };
  }

  /** Commits every local partition's pending changes. */
  async flush(): Promise<void> {
    await Promise.all([...this.engines.values()].map((e) => e.flush()));
  }

  /** Resolves when every partition (on whichever node) has committed a checkpoint at or past `position`; `flush: false` as on ConsumerGroup. */
  async waitForCheckpoint(position: number, timeoutMs = 30_000, options: { flush?: boolean } = {}): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (options.flush !== false) await this.flush();
      const lowest = (await committedCheckpoint(this.storage, this.name)) ?? 0;
      if (lowest >= position) return;
      if (this.closing) throw new SinhoError('INVALID_ARGUMENT', `Group ${this.name} stopped before reaching position ${position}.`);
      if (Date.now() > deadline) throw new SinhoError('INVALID_ARGUMENT', `Group ${this.name} did not reach position ${position} within ${timeoutMs} ms (at ${lowest}).`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Dead letters of the partitions this node runs. */
  deadLetters(): DeadLetter[] {
    return [...this.engines.values()].flatMap((e) => e.deadLetters()).map((d) => ({ ...d, group: this.name })).sort((a, b) => a.position - b.position);
  }

  private engineWithDeadLetter(position: number): ConsumerGroup {
    for (const engine of this.engines.values()) if (engine.deadLetters().some((d) => d.position === position)) return engine;
    throw new InvalidInput('INVALID_ARGUMENT', `No partition of group ${this.name} running on this node has a dead letter at position ${position}.`, { position });
  }

  redeliver(position: number): Promise<void> {
    return this.engineWithDeadLetter(position).redeliver(position);
  }

  discard(position: number): Promise<void> {
    return this.engineWithDeadLetter(position).discard(position);
  }

  /** Schedules a delayed delivery; the event's partition must run on this node. */
  async schedule(eventId: string, when: { delayMs: number } | { at: Date }): Promise<void> {
    const [event] = await this.log.readEvents([eventId]);
    if (!event) throw new InvalidInput('INVALID_ARGUMENT', `No event with id ${eventId}.`, { eventId });
    const p = partitionOf((this.options.orderingKey ?? ((e) => e.stream))(event), this.partitions);
    const engine = this.engines.get(p);
    if (!engine) throw new SinhoError('GROUP_BUSY', `Partition ${p} of group ${this.name}, which holds event ${eventId}, runs on another node; schedule it there.`, { group: this.name, partition: p });
    return engine.schedule(eventId, when);
  }

  /** Leaves the group: stops every local partition gracefully (checkpoint, lease release), then the membership. */
  async stop(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.timer) clearInterval(this.timer);
    await this.ticking;
    await Promise.all([...this.engines.values()].map((e) => e.stop(options)));
    this.engines.clear();
    await this.storage.leave(this.name, this.member).catch(() => {});
    this.emit('subscription:stopped', { group: this.name });
  }
}
