/**
 * moim's notification rule (worker role): when a member joins a community,
 * every other member gets a notification in their feed. Recipients come from
 * the membership read model, as it stood at the join: the rule waits until the
 * projection has passed the join's position, then takes the members who
 * joined before it (a member who joined later is not told about an earlier
 * join; one who left meanwhile is no longer a member and is not told).
 */
import type { EventLog, Projection } from 'sinho';
import { runFanOut, type FanOut, type FeedStore } from 'sinho/realtime';
import type { ReadModels } from './read-models.js';
import type { MembershipCache } from './membership-cache.js';

export const NOTIFICATIONS_GROUP = 'moim-notifications';

export interface MemberJoinedNotification {
  communityId: string;
  communityName: string;
  memberId: string;
}

export function startNotifications(
  log: EventLog,
  readModels: ReadModels,
  readModelProjection: Projection,
  feed: FeedStore,
  options: { gateways: number; undeliveredAfterMs?: number; membershipCache?: MembershipCache; standby?: boolean },
): Promise<FanOut> {
  // The SQLite read model, as it stood at the join (also the cache's fallback).
  const fromReadModel = async (communityId: string, position: number) => {
    // Waits for the projection's own commits (every 100 ms) rather than forcing more of them: notifications
    // are a little later, and the worker writes the read models' file less often (requests read it).
    await readModelProjection.group.waitForCheckpoint(position, 60_000, { flush: false });
    return readModels.membersBefore(communityId, position, readModelProjection.version);
  };
  return runFanOut(log, {
    feed,
    group: NOTIFICATIONS_GROUP,
    standby: options.standby,
    nodes: options.gateways,
    bindings: [{ kind: 'direct', key: 'community.MemberJoined' }],
    retry: { initialDelayMs: 200, maxDelayMs: 30_000, maxAttempts: 10 },
    undeliveredAfterMs: options.undeliveredAfterMs ?? 60_000,
    route: async (event) => {
      const { communityId, memberId } = event.data as { communityId: string; memberId: string };
      const members = options.membershipCache ? await options.membershipCache.membersBefore(communityId, event.position) : await fromReadModel(communityId, event.position);
      const recipients = members.filter((m) => m !== memberId);
      const community = await readModels.community(communityId);
      const data: MemberJoinedNotification = { communityId, communityName: community?.name ?? '', memberId };
      return { recipients, type: 'MemberJoined', data };
    },
  });
}
