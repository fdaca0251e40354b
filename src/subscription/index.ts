/**
 * Public entry points of consumer groups: `subscribe` runs a group in this
 * process; `consumerGroups` inspects and operates groups (the CLI's view),
 * routing to the running instance when the group runs in this process.
 */
import { randomUUID } from 'node:crypto';
import { InvalidInput, SinhoError } from '../errors.js';
import { storageOf } from '../log/stored-event-log.js';
import type { EventLog } from '../log/types.js';
import { ConsumerGroup, validateGroupName, type DeadLetter, type SubscribeOptions } from './consumer-group.js';
import { committedCheckpoint, PartitionedGroup, partitionGroupName, storeGroups } from './partitioned-group.js';
import type { DeferredRow, SubscriptionStorage } from './storage.js';

/** A running consumer group: one instance, or this node's share of a partitioned group. */
export type Subscription = ConsumerGroup | PartitionedGroup;

const running = new WeakMap<EventLog, Map<string, Subscription>>();

/**
 * Runs an operator change on groups that are not running anywhere, holding
 * all their leases meanwhile (all or none: a partitioned group is changed as
 * a whole).
 */
async function withLeases<T>(storage: SubscriptionStorage, groups: string[], work: (owner: string) => Promise<T>): Promise<T> {
  const owner = `admin-${randomUUID()}`;
  const held: string[] = [];
  try {
    for (const group of groups) {
      if (!(await storage.acquireLease(group, owner, 30_000))) {
        throw new SinhoError('GROUP_BUSY', `Consumer group "${group}" is running in another process; stop it (or call this there) first.`, { group });
      }
      held.push(group);
    }
    return await work(owner);
  } finally {
    for (const group of held) await storage.releaseLease(group, owner);
  }
}


/**
 * Starts a durable consumer group on `log` and resolves once it is delivering.
 * One instance of a group runs at a time (per log store); stop it with
 * `group.stop()`.
 */
export async function subscribe(log: EventLog, group: string, options: SubscribeOptions & { partitions: number }): Promise<PartitionedGroup>;
export async function subscribe(log: EventLog, group: string, options: SubscribeOptions): Promise<ConsumerGroup>;
export async function subscribe(log: EventLog, group: string, options: SubscribeOptions): Promise<Subscription> {
  const storage = storageOf(log);
  let groups = running.get(log);
  if (!groups) running.set(log, (groups = new Map()));
  if (groups.has(group)) throw new SinhoError('INVALID_ARGUMENT', `Consumer group "${group}" is already running in this process.`, { group });
  const instance: Subscription =
    options?.partitions === undefined
      ? new ConsumerGroup(log, storage.subscriptions, group, options)
      : new PartitionedGroup(log, storage.subscriptions, group, options as SubscribeOptions & { partitions: number });
  if (instance instanceof ConsumerGroup) {
    // An unpartitioned instance must not take over a partitioned group's name.
    const existing = await storage.subscriptions.getGroup(group);
    if (existing && existing.partitions > 0) {
      throw new SinhoError('INVALID_ARGUMENT', `Consumer group "${group}" is partitioned (${existing.partitions}); give partitions: ${existing.partitions}.`, { group, partitions: existing.partitions });
    }
  }
  groups.set(group, instance);
  instance.on('subscription:stopped', () => groups.delete(group));
  try {
    await instance.start();
  } catch (error) {
    groups.delete(group);
    throw error;
  }
  return instance;
}

export interface GroupInfo {
  name: string;
  /** The lowest committed checkpoint (of its partitions, for a partitioned group). */
  checkpoint: number;
  /** Positions between the checkpoint and the log's head. */
  lag: number;
  deadLetters: number;
  /** Events waiting for a retry or a delayed delivery. */
  pending: number;
  /** 0 when the group is not partitioned. */
  partitions: number;
  /** Whether it runs in this process. */
  running: boolean;
  createdAt: string;
}

export interface ConsumerGroupAdmin {
  list(): Promise<GroupInfo[]>;
  /** The group's committed checkpoint (the lowest of its partitions'), or undefined when there is no such group. */
  checkpoint(group: string): Promise<number | undefined>;
  deadLetters(group: string): Promise<DeadLetter[]>;
  /** Delivers a dead letter again, attempts starting over. */
  redeliver(group: string, position: number): Promise<void>;
  /** Delivers every dead letter of the group again. Returns how many. */
  redeliverAll(group: string): Promise<number>;
  discard(group: string, position: number): Promise<void>;
  /**
   * Replays from `position` (inclusive), or from the first event committed at
   * or after `{ at }`: pending retries are dropped, dead letters kept. The
   * group must not be running (on any node).
   */
  reset(group: string, from: number | { at: Date }): Promise<void>;
  delete(group: string): Promise<void>;
}

export function consumerGroups(log: EventLog): ConsumerGroupAdmin {
  const storage = storageOf(log).subscriptions;
  const live = (group: string): Subscription | undefined => running.get(log)?.get(group);
  /** The store groups behind `group` (one, or its partitions); UNKNOWN_GROUP when there is none. */
  const known = async (group: string): Promise<string[]> => {
    validateGroupName(group);
    const row = await storage.getGroup(group);
    if (!row) throw new SinhoError('UNKNOWN_GROUP', `No consumer group named "${group}".`, { group });
    return storeGroups(group, row.partitions);
  };
  const deadRows = async (stores: string[]): Promise<{ store: string; row: DeferredRow }[]> =>
    (await Promise.all(stores.map(async (store) => (await storage.loadDeferred(store)).filter((r) => r.state === 'dead').map((row) => ({ store, row }))))).flat();
  const toLetter = (group: string, r: DeferredRow): DeadLetter => ({ group, position: r.position, eventId: r.eventId, key: r.key, attempts: r.attempts, errors: r.errors, updatedAt: r.updatedAt });
  const storedLetter = async (group: string, position: number): Promise<{ store: string; row: DeferredRow }> => {
    const found = (await deadRows(await known(group))).find((d) => d.row.position === position);
    if (!found) throw new InvalidInput('INVALID_ARGUMENT', `Group ${group} has no dead letter at position ${position}.`, { position });
    return found;
  };
  /** Whether a running instance here has this dead letter (a partitioned node holds only its partitions'). */
  const liveHas = (instance: Subscription | undefined, position: number): instance is Subscription => instance?.deadLetters().some((d) => d.position === position) ?? false;
  const admin: ConsumerGroupAdmin = {
    async list() {
      const head = await log.headPosition();
      const rows = await storage.listGroups();
      const byName = new Map(rows.map((r) => [r.name, r]));
      const out: GroupInfo[] = [];
      for (const g of rows) {
        if (g.name.includes('#')) continue; // a partition, reported with its group
        const stores = storeGroups(g.name, g.partitions);
        const instance = live(g.name);
        const deferred = (await Promise.all(stores.map((name) => storage.loadDeferred(name)))).flat();
        const checkpoint =
          instance instanceof ConsumerGroup ? instance.stats().checkpoint : Math.min(...stores.map((name) => byName.get(name)?.position ?? g.position));
        out.push({
          name: g.name,
          checkpoint,
          lag: Math.max(0, head - checkpoint),
          deadLetters: deferred.filter((r) => r.state === 'dead').length,
          pending: deferred.filter((r) => r.state !== 'dead').length,
          partitions: g.partitions,
          running: instance !== undefined,
          createdAt: g.createdAt,
        });
      }
      return out;
    },
    async checkpoint(group) {
      validateGroupName(group);
      return committedCheckpoint(storage, group);
    },
    async deadLetters(group) {
      const stores = await known(group);
      const instance = live(group);
      if (instance instanceof ConsumerGroup) return instance.deadLetters();
      // Partitions running here answer from memory, the others from the store.
      const local = new Set(instance instanceof PartitionedGroup ? instance.owned().map((p) => partitionGroupName(group, p)) : []);
      const stored = (await deadRows(stores.filter((s) => !local.has(s)))).map((d) => toLetter(group, d.row));
      return [...(instance?.deadLetters() ?? []), ...stored].sort((a, b) => a.position - b.position);
    },
    async redeliver(group, position) {
      await known(group);
      const instance = live(group);
      if (instance instanceof ConsumerGroup || liveHas(instance, position)) return instance!.redeliver(position);
      const { store, row } = await storedLetter(group, position);
      await withLeases(storage, [store], (owner) =>
        storage.commitGroup(
          store,
          {
            upserts: [{ ...row, state: row.kind === 'scheduled' ? 'scheduled' : 'retry', attempts: 0, dueAt: Date.now(), errors: [], updatedAt: new Date().toISOString() }],
            deletes: [],
            processed: [],
            statements: [],
          },
          owner,
        ),
      );
    },
    async redeliverAll(group) {
      const letters = await admin.deadLetters(group);
      for (const l of letters) await admin.redeliver(group, l.position);
      return letters.length;
    },
    async discard(group, position) {
      await known(group);
      const instance = live(group);
      if (instance instanceof ConsumerGroup || liveHas(instance, position)) return instance!.discard(position);
      const { store, row } = await storedLetter(group, position);
      await withLeases(storage, [store], (owner) => storage.commitGroup(store, { upserts: [], deletes: [{ position, kind: row.kind }], processed: [], statements: [] }, owner));
    },
    async reset(group, from) {
      const stores = await known(group);
      const position = typeof from === 'object' && from !== null && 'at' in from ? await log.positionAt(from.at) : from;
      if (!Number.isSafeInteger(position) || position < 1) throw new InvalidInput('INVALID_ARGUMENT', `reset needs a position >= 1, got ${JSON.stringify(position)}.`);
      if (live(group)) throw new SinhoError('INVALID_ARGUMENT', `Stop consumer group "${group}" before resetting it.`, { group });
      await withLeases(storage, stores, async () => {
        for (const store of stores) await storage.resetGroup(store, position - 1);
      });
    },
    async delete(group) {
      const stores = await known(group);
      if (live(group)) throw new SinhoError('INVALID_ARGUMENT', `Stop consumer group "${group}" before deleting it.`, { group });
      await withLeases(storage, stores, async () => {
        for (const store of stores) await storage.deleteGroup(store);
        if (!stores.includes(group)) await storage.deleteGroup(group);
      });
    },
  };
  return admin;
}

export { ConsumerGroup, PartitionedGroup };
