/**
 * The membership cache in Redis, for notification fan-out across machines.
 * A consumer group projects the community events of the log into one sorted
 * set per community (`moim:members:<communityId>`, member -> the log position
 * of the join), so the cache cannot drift from the log and is rebuilt by
 * replaying it (reset the group). The projection is at-least-once; its
 * writes are idempotent (ZADD NX, ZREM) and applied in each community's
 * order, so a replay converges to the same sets.
 *
 * Reads come in chunks (ZRANGE BYSCORE with LIMIT), never one huge blocking
 * command; when Redis does not answer, the caller's fallback (the SQLite read
 * model) answers instead.
 *
 * A Redis that restarted without its data (or was flushed) would leave the
 * group's checkpoint ahead of an empty cache, and fan-out would tell nobody.
 * So the cache keeps a marker key beside the sets. After every (re)connection,
 * and before the cache answers any read, the marker is checked: missing means
 * the sets are gone, and the group is rewound to the beginning and replays the
 * log into Redis. Reads use the fallback until the check passed, and then wait
 * for the replay to pass each join as usual.
 */
import type { Redis } from 'ioredis';
import { consumerGroups, subscribe, type ConsumerGroup, type EventLog } from 'sinho';
import { closeRedis, redisRetryStrategy } from './redis.js';

export const MEMBERSHIP_CACHE_GROUP = 'moim-membership-cache';
const key = (communityId: string) => `moim:members:${communityId}`;
/** Present while the sets in this Redis are complete up to the group's checkpoint. */
const MARKER = 'moim:members:intact';

export interface MembershipCache {
  /** The projecting group (a new one after a rebuild). */
  readonly group: ConsumerGroup;
  /** Rebuilds after Redis lost the sets (restart without persistence, flush). */
  rebuilds(): number;
  /** Members of a community who joined before log position `position`, once the cache has passed it; the fallback when Redis fails. */
  membersBefore(communityId: string, position: number): Promise<string[]>;
  /** Reads that Redis could not answer and the fallback did. */
  fallbacks(): number;
  close(): Promise<void>;
}

export interface MembershipCacheOptions {
  /** Members read per Redis command. Default 1,000. */
  chunkSize?: number;
  /** Answers when Redis cannot (the SQLite read model). */
  fallback: (communityId: string, position: number) => Promise<string[]> | string[];
  /** How long a read waits for the cache (caught up, and answering) before falling back, ms. Default 500. */
  timeoutMs?: number;
  /** Wait for each group's lease as a hot standby of another worker (PostgreSQL deployments). */
  standby?: boolean;
}

export async function startMembershipCache(log: EventLog, redisUrl: string, options: MembershipCacheOptions): Promise<MembershipCache> {
  const { Redis } = await import('ioredis');
  // The projection waits through a Redis restart; reads fail fast instead (they have a fallback).
  const writer: Redis = new Redis(redisUrl, { maxRetriesPerRequest: null, retryStrategy: redisRetryStrategy });
  const reader: Redis = new Redis(redisUrl, { maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: redisRetryStrategy });
  writer.on('error', () => {});
  reader.on('error', () => {});
  // Give the reader a moment to connect; if Redis is down at start-up, reads use the fallback until it is back.
  if (reader.status !== 'ready') {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 2000);
      reader.once('ready', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  const chunk = options.chunkSize ?? 1000;
  let fallbacks = 0;
  let rebuilds = 0;
  const subscribeGroup = () =>
    subscribe(log, MEMBERSHIP_CACHE_GROUP, {
      standby: options.standby,
      bindings: [
        { kind: 'direct', key: 'community.CommunityCreated' },
        { kind: 'direct', key: 'community.MemberJoined' },
        { kind: 'direct', key: 'community.MemberLeft' },
      ],
      concurrency: 64,
      handler: async (event) => {
        const d = event.data as { communityId: string; memberId?: string; owner?: string };
        if (event.type === 'MemberLeft') await writer.zrem(key(d.communityId), d.memberId!);
        else await writer.zadd(key(d.communityId), 'NX', event.position, event.type === 'CommunityCreated' ? d.owner! : d.memberId!);
      },
    });

  /** Rewinds the group when the marker is missing but the group has projected something: the sets are gone. */
  const rewindIfLost = async (): Promise<void> => {
    if ((await writer.exists(MARKER)) === 1) return;
    const checkpoint = (await consumerGroups(log).checkpoint(MEMBERSHIP_CACHE_GROUP)) ?? 0;
    if (checkpoint > 0) {
      await consumerGroups(log).reset(MEMBERSHIP_CACHE_GROUP, 1);
      rebuilds++;
    }
    await writer.set(MARKER, String(Date.now()));
  };

  // Before the group runs: a store whose cache was lost starts from the beginning. With Redis down at
  // start-up the group starts anyway (its writes wait) and the check runs when Redis is back.
  const readyAtStart = writer.status === 'ready' || (await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 2000);
    writer.once('ready', () => (clearTimeout(timer), resolve(true)));
  }));
  if (readyAtStart) await rewindIfLost();
  let group = await subscribeGroup();
  let intact = readyAtStart;
  let checking: Promise<void> | undefined;
  const recheck = () => {
    intact = false;
    checking ??= (async () => {
      try {
        if ((await writer.exists(MARKER)) === 0) {
          // The group runs here: stop it (its lease is released), rewind, run it again.
          await group.stop();
          await rewindIfLost();
          group = await subscribeGroup();
        }
        intact = true;
      } catch {
        // Redis went away again: the next 'ready' checks again.
      } finally {
        checking = undefined;
      }
    })();
  };
  writer.on('close', () => (intact = false));
  reader.on('close', () => (intact = false));
  // Every later 'ready' is a reconnection (or the first connection, when Redis was down at start-up).
  writer.on('ready', recheck);
  if (!readyAtStart && writer.status === 'ready') recheck();

  const readChunked = async (communityId: string, position: number): Promise<string[]> => {
    const members: string[] = [];
    for (let offset = 0; ; offset += chunk) {
      const page = await reader.zrangebyscore(key(communityId), '-inf', `(${position}`, 'LIMIT', offset, chunk);
      members.push(...page);
      if (page.length < chunk) return members;
    }
  };

  return {
    get group() {
      return group;
    },
    rebuilds: () => rebuilds,
    membersBefore: async (communityId, position) => {
      const timeoutMs = options.timeoutMs ?? 500;
      let timer: NodeJS.Timeout | undefined;
      try {
        // Redis down: no waiting at all. Redis up: the cache must have passed the join, then answer in time.
        if (reader.status !== 'ready') throw new Error('Redis is not connected');
        if (!intact) throw new Error('the cache is being checked after a reconnection');
        return await Promise.race([
          group.waitForCheckpoint(position, timeoutMs, { flush: false }).then(() => readChunked(communityId, position)),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('Redis did not answer in time')), timeoutMs);
          }),
        ]);
      } catch {
        fallbacks += 1;
        return options.fallback(communityId, position);
      } finally {
        clearTimeout(timer);
      }
    },
    fallbacks: () => fallbacks,
    close: async () => {
      await checking;
      await group.stop();
      await closeRedis(writer, reader);
    },
  };
}
