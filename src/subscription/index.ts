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
import type { SubscriptionStorage } from './storage.js';

const running = new WeakMap<EventLog, Map<string, ConsumerGroup>>();

/** Runs an operator change on a group that is not running here, holding its lease meanwhile. */
async function withLease<T>(storage: SubscriptionStorage, group: string, work: (owner: string) => Promise<T>): Promise<T> {
  const owner = `admin-${randomUUID()}`;
  if (!(await storage.acquireLease(group, owner, 30_000))) {
    throw new SinhoError('GROUP_BUSY', `Consumer group "${group}" is running in another process; stop it (or call this there) first.`, { group });
  }
  try {
    return await work(owner);
  } finally {
    await storage.releaseLease(group, owner);
  }
}

/**
 * Starts a durable consumer group on `log` and resolves once it is delivering.
 * One instance of a group runs at a time (per log store); stop it with
 * `group.stop()`.
 */
export async function subscribe(log: EventLog, group: string, options: SubscribeOptions): Promise<ConsumerGroup> {
  const storage = storageOf(log);
  let groups = running.get(log);
  if (!groups) running.set(log, (groups = new Map()));
  if (groups.has(group)) throw new SinhoError('INVALID_ARGUMENT', `Consumer group "${group}" is already running in this process.`, { group });
  const instance = new ConsumerGroup(log, storage.subscriptions, group, options);
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
  checkpoint: number;
  /** Positions between the checkpoint and the log's head. */
  lag: number;
  deadLetters: number;
  /** Events waiting for a retry or a delayed delivery. */
  pending: number;
  running: boolean;
  createdAt: string;
}

export interface ConsumerGroupAdmin {
  list(): Promise<GroupInfo[]>;
  deadLetters(group: string): Promise<DeadLetter[]>;
  /** Delivers a dead letter again, attempts starting over. */
  redeliver(group: string, position: number): Promise<void>;
  /** Delivers every dead letter of the group again. Returns how many. */
  redeliverAll(group: string): Promise<number>;
  discard(group: string, position: number): Promise<void>;
  /**
   * Replays from `position` (inclusive), or from the first event committed at
   * or after `{ at }`: pending retries are dropped, dead letters kept. The
   * group must not be running.
   */
  reset(group: string, from: number | { at: Date }): Promise<void>;
  delete(group: string): Promise<void>;
}

export function consumerGroups(log: EventLog): ConsumerGroupAdmin {
  const storage = storageOf(log).subscriptions;
  const live = (group: string): ConsumerGroup | undefined => running.get(log)?.get(group);
  const known = async (group: string): Promise<void> => {
    validateGroupName(group);
    if (!(await storage.getGroup(group))) throw new SinhoError('UNKNOWN_GROUP', `No consumer group named "${group}".`, { group });
  };
  const stored = async (group: string): Promise<DeadLetter[]> =>
    (await storage.loadDeferred(group))
      .filter((r) => r.state === 'dead')
      .map((r) => ({ group, position: r.position, eventId: r.eventId, key: r.key, attempts: r.attempts, errors: r.errors, updatedAt: r.updatedAt }));
  const admin: ConsumerGroupAdmin = {
    async list() {
      const head = await log.headPosition();
      const out: GroupInfo[] = [];
      for (const g of await storage.listGroups()) {
        const rows = await storage.loadDeferred(g.name);
        const instance = live(g.name);
        const checkpoint = instance ? instance.stats().checkpoint : g.position;
        out.push({
          name: g.name,
          checkpoint,
          lag: Math.max(0, head - checkpoint),
          deadLetters: rows.filter((r) => r.state === 'dead').length,
          pending: rows.filter((r) => r.state !== 'dead').length,
          running: instance !== undefined,
          createdAt: g.createdAt,
        });
      }
      return out;
    },
    async deadLetters(group) {
      await known(group);
      return live(group)?.deadLetters() ?? stored(group);
    },
    async redeliver(group, position) {
      await known(group);
      const instance = live(group);
      if (instance) return instance.redeliver(position);
      const row = (await storage.loadDeferred(group)).find((r) => r.position === position && r.state === 'dead');
      if (!row) throw new InvalidInput('INVALID_ARGUMENT', `Group ${group} has no dead letter at position ${position}.`, { position });
      await withLease(storage, group, (owner) =>
        storage.commitGroup(
          group,
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
      if (instance) return instance.discard(position);
      const row = (await storage.loadDeferred(group)).find((r) => r.position === position && r.state === 'dead');
      if (!row) throw new InvalidInput('INVALID_ARGUMENT', `Group ${group} has no dead letter at position ${position}.`, { position });
      await withLease(storage, group, (owner) => storage.commitGroup(group, { upserts: [], deletes: [{ position, kind: row.kind }], processed: [], statements: [] }, owner));
    },
    async reset(group, from) {
      await known(group);
      const position = typeof from === 'object' && from !== null && 'at' in from ? await log.positionAt(from.at) : from;
      if (!Number.isSafeInteger(position) || position < 1) throw new InvalidInput('INVALID_ARGUMENT', `reset needs a position >= 1, got ${JSON.stringify(position)}.`);
      if (live(group)) throw new SinhoError('INVALID_ARGUMENT', `Stop consumer group "${group}" before resetting it.`, { group });
      await withLease(storage, group, () => storage.resetGroup(group, position - 1));
    },
    async delete(group) {
      await known(group);
      if (live(group)) throw new SinhoError('INVALID_ARGUMENT', `Stop consumer group "${group}" before deleting it.`, { group });
      await withLease(storage, group, () => storage.deleteGroup(group));
    },
  };
  return admin;
}

export { ConsumerGroup };
