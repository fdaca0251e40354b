/**
 * moim's Redis membership cache: projected from the log, read in chunks,
 * exact "members before this join", rebuilt by replay, and a fallback when
 * Redis does not answer.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
// moim is built on the published package: its log must come from there too.
import { openMemoryEventLog } from 'sinho/memory';
import { consumerGroups } from 'sinho';
import { MEMBERSHIP_CACHE_GROUP, startMembershipCache } from '../apps/moim/src/membership-cache.js';
import { REDIS_URL, redisSkipReason, exclusiveDuringSuite } from './support/services.js';
import { until } from './support/wait.js';

const skip = await redisSkipReason();

describe('moim membership cache on Redis', { skip, timeout: 240_000 }, () => {
  // Another file restarts the shared server: never at the same time as these tests.
  exclusiveDuringSuite('redis');

  it('follows joins and leaves, answers "members before a position" in chunks, and converges on replay', async () => {
    const log = openMemoryEventLog();
    const communityId = randomUUID();
    const stream = `community-${communityId}`;
    await log.append(stream, [{ type: 'CommunityCreated', data: { communityId, name: 'c', description: '', owner: 'owner' } }]);
    const joins = Array.from({ length: 2500 }, (_, i) => `m${i}`);
    for (let i = 0; i < joins.length; i += 500) {
      await log.append(stream, joins.slice(i, i + 500).map((memberId) => ({ type: 'MemberJoined', data: { communityId, memberId } })));
    }
    const left = await log.append(stream, [{ type: 'MemberLeft', data: { communityId, memberId: 'm7' } }]);
    const late = await log.append(stream, [{ type: 'MemberJoined', data: { communityId, memberId: 'late' } }]);
    let fallbackCalls = 0;
    // A generous read timeout: this test is about the answer, not its speed (CI runs other files meanwhile).
    const cache = await startMembershipCache(log, REDIS_URL, { chunkSize: 400, timeoutMs: 30_000, fallback: () => (fallbackCalls++, []) });
    try {
      const before = await cache.membersBefore(communityId, late.events[0]!.position);
      assert.equal(before.length, 1 + 2500 - 1, 'the owner and every joiner but the one who left');
      assert.ok(!before.includes('m7') && !before.includes('late') && before.includes('owner') && before.includes('m2499'));
      assert.equal(fallbackCalls, 0);
      // Replay from the beginning (a rebuild): the same set.
      await cache.group.stop();
      await consumerGroups(log).reset(MEMBERSHIP_CACHE_GROUP, 1);
    } finally {
      await cache.close();
    }
    const again = await startMembershipCache(log, REDIS_URL, { timeoutMs: 30_000, fallback: () => [] });
    try {
      const last = await log.append(stream, [{ type: 'MemberJoined', data: { communityId, memberId: 'last' } }]);
      await until(() => again.group.stats().lag === 0, 10_000, 'the replay');
      const replayed = await again.membersBefore(communityId, last.events[0]!.position);
      assert.equal(replayed.length, 2501);
      assert.ok(replayed.includes('late') && !replayed.includes('m7'));
      assert.ok(left.events[0]!.position > 0);
    } finally {
      await again.close();
      await log.close();
    }
  });

  it('falls back to the store when Redis does not answer', async () => {
    const log = openMemoryEventLog();
    const cache = await startMembershipCache(log, 'redis://127.0.0.1:1', { fallback: (c, p) => [`fallback:${c}:${p}`], timeoutMs: 200 });
    try {
      const started = Date.now();
      assert.deepEqual(await cache.membersBefore('x', 5), ['fallback:x:5']);
      assert.ok(Date.now() - started < 1000, 'no long wait');
      assert.equal(cache.fallbacks(), 1);
    } finally {
      await cache.close();
      await log.close();
    }
  });
});

describe('moim fan-out through a Redis restart', { skip, timeout: 240_000 }, () => {
  exclusiveDuringSuite('redis');

  it('rebuilds the lost cache and loses no notification: every member is told of every later join exactly once', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { execFileSync, execSync } = await import('node:child_process');
    const { startApi, startWorker, openFeed } = await import('../apps/moim/src/moim.js');
    const { moimClient } = await import('./support/moim.js');
    const dir = mkdtempSync(join(tmpdir(), 'moim-fanout-redis-'));
    // Sessions stay in SQLite here (a Redis restart without persistence logs everyone out; that is the sessions test's
    // subject): Redis holds only the membership cache that the fan-out reads.
    const api = await startApi({ dataDir: dir, sessionTtlMs: 3_600_000 }, { logger: false, loginAttemptsPerMinutePerAddress: 10_000 });
    const worker = await startWorker({ dataDir: dir, sessionTtlMs: 3_600_000, redisUrl: REDIS_URL });
    const feed = await openFeed({ dataDir: dir, sessionTtlMs: 3_600_000 });
    try {
      const { call, member } = moimClient(() => api.app, { emailPrefix: 'fr', settleTimeoutMs: 10_000 });
      const owner = await member();
      const community = (await call('POST', '/communities', owner.token, { name: 'restart' })).body.communityId as string;
      const joiners = [];
      for (let i = 0; i < 40; i++) joiners.push(await member());
      const failures: string[] = [];
      const join = async (m: { token: string }) => {
        const r = await call('POST', `/communities/${community}/members`, m.token);
        if (r.status !== 200) failures.push(`${r.status} ${JSON.stringify(r.body)}`);
      };
      for (const m of joiners.slice(0, 15)) await join(m);
      await until(() => worker.membershipCache!.group.stats().lag === 0, 10_000, 'the cache before the restart');
      // Restart Redis, as the machine starts it, while joins go on; it keeps nothing on disk, so the cache is lost.
      const joining = (async () => {
        for (const m of joiners.slice(15)) {
          await join(m);
          await new Promise((r) => setTimeout(r, 30));
        }
      })();
      try {
        execFileSync('redis-cli', ['-u', REDIS_URL, 'shutdown', 'nosave'], { stdio: 'ignore' });
        await new Promise((r) => setTimeout(r, 300));
      } finally {
        execSync('redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log', { stdio: 'ignore' });
      }
      await joining;
      assert.deepEqual(failures, [], 'no join failed');
      // Every member who joined before a join is told of it, once: the owner of all 40, the k-th joiner of the 40 - k after.
      const everyone = [owner, ...joiners];
      // On a timeout, say which feeds were short or long (missing notifications, or duplicates) and what the groups did.
      let counts: number[] = [];
      await until(
        async () => {
          counts = await Promise.all(everyone.map(async (m) => (await feed.read(m.id, 0, 1000)).length));
          return counts.every((n, i) => n === 40 - i);
        },
        30_000,
        'every notification in the feeds',
      ).catch((error: Error) => {
        const off = counts.flatMap((n, i) => (n === 40 - i ? [] : [`member ${i}: ${n} of ${40 - i}`]));
        const groups = JSON.stringify({
          readModels: worker.readModels.group.stats(),
          notifications: worker.notifications.group.stats(),
          membershipCache: worker.membershipCache?.group.stats(),
        });
        throw new Error(`${error.message}; ${off.length} feeds off (${off.slice(0, 8).join(', ')}); groups: ${groups}`);
      });
      for (const [i, m] of everyone.entries()) {
        const entries = await feed.read(m.id, 0, 1000);
        const joined = entries.map((e) => (e.data as { memberId: string }).memberId);
        assert.deepEqual(joined, joiners.slice(i).map((j) => j.id), `member ${i}: each later join once, in order`);
      }
      assert.equal(worker.membershipCache!.rebuilds(), 1, 'the lost cache was rebuilt once');
    } finally {
      await feed.close();
      await worker.close();
      await api.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
