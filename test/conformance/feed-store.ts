/**
 * Feed store conformance, run against every feed store adapter.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { FeedStore } from '../../src/realtime/index.js';

export type FeedStoreFactory = (options: { now: () => number }) => Promise<FeedStore> | FeedStore;

const clock = (start = Date.UTC(2026, 10, 1)) => {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
};

export function feedStoreConformance(name: string, open: FeedStoreFactory, options: { skip?: string } = {}): void {
  describe(`feed store conformance: ${name}`, { skip: options.skip }, () => {
    const use = async <T>(work: (feed: FeedStore, c: ReturnType<typeof clock>) => Promise<T>): Promise<T> => {
      const c = clock();
      const feed = await open({ now: c.now });
      try {
        return await work(feed, c);
      } finally {
        await feed.close();
      }
    };

    it('gives each recipient dense cursors from 1, in publish order, and reads them back', () =>
      use(async (feed) => {
        const r1 = await feed.publish([{ sourceId: 's1', type: 'Joined', data: { n: 1 }, recipients: ['a', 'b'] }]);
        const r2 = await feed.publish([
          { sourceId: 's2', type: 'Joined', data: { n: 2 }, recipients: ['a'] },
          { sourceId: 's3', type: 'Joined', data: { n: 3 }, recipients: ['a', 'c', 'a'] },
        ]);
        assert.deepEqual(r1[0]!.recipients, [{ userId: 'a', cursor: 1 }, { userId: 'b', cursor: 1 }]);
        assert.deepEqual(r2.map((r) => r.recipients), [[{ userId: 'a', cursor: 2 }], [{ userId: 'a', cursor: 3 }, { userId: 'c', cursor: 1 }]]);
        const a = await feed.read('a', 0, 10);
        assert.deepEqual(a.map((e) => [e.cursor, (e.data as { n: number }).n]), [[1, 1], [2, 2], [3, 3]]);
        assert.deepEqual((await feed.read('a', 1, 1)).map((e) => e.cursor), [2]);
        assert.deepEqual(await feed.read('nobody', 0, 10), []);
        assert.deepEqual(await feed.bounds('a'), { head: 3, oldest: 1, acked: 0 });
        assert.deepEqual(await feed.bounds('nobody'), { head: 0, oldest: 1, acked: 0 });
      }));

    it('concurrent publishes share commits and still number every feed densely', () =>
      use(async (feed) => {
        await Promise.all(Array.from({ length: 200 }, (_, i) => feed.publish([{ sourceId: `c${i}`, type: 'T', data: i, recipients: ['u', `v${i % 3}`] }])));
        const u = await feed.read('u', 0, 1000);
        assert.deepEqual(u.map((e) => e.cursor), Array.from({ length: 200 }, (_, i) => i + 1));
        assert.equal(new Set(u.map((e) => e.data)).size, 200);
      }));

    it('publishing a sourceId again stores nothing and gives no cursor', () =>
      use(async (feed) => {
        await feed.publish([{ sourceId: 'same', type: 'T', data: 1, recipients: ['a'] }]);
        const again = await feed.publish([{ sourceId: 'same', type: 'T', data: 1, recipients: ['a', 'b'] }]);
        assert.deepEqual(again, [{ sourceId: 'same', recipients: [] }]);
        assert.equal((await feed.bounds('a')).head, 1);
        assert.equal((await feed.bounds('b')).head, 0);
      }));

    it('writes one outbox row per owning node, holding only that node\'s recipients', () =>
      use(async (feed) => {
        const nodeOf = (u: string) => Number(u) % 3;
        await feed.publish([{ sourceId: 'x', type: 'T', data: 'x', recipients: ['1', '2', '4', '7'] }], { nodeOf });
        await feed.publish([{ sourceId: 'y', type: 'T', data: 'y', recipients: ['3'] }], { nodeOf });
        const n1 = await feed.readNode(1, 0, 10);
        assert.equal(n1.length, 1);
        assert.deepEqual(n1[0]!.recipients, [{ userId: '1', cursor: 1 }, { userId: '4', cursor: 1 }, { userId: '7', cursor: 1 }]);
        assert.deepEqual((await feed.readNode(2, 0, 10)).map((d) => d.recipients), [[{ userId: '2', cursor: 1 }]]);
        const n0 = await feed.readNode(0, 0, 10);
        assert.deepEqual(n0.map((d) => d.recipients), [[{ userId: '3', cursor: 1 }]]);
        const sent = JSON.parse(n0[0]!.json) as { type: string; data: unknown; at: unknown };
        assert.deepEqual([sent.type, sent.data, typeof sent.at], ['T', 'y', 'number']);
        assert.equal(await feed.nodeHead(0), n0[0]!.seq);
        assert.deepEqual(await feed.readNode(0, n0[0]!.seq, 10), []);
        assert.equal(await feed.nodeHead(5), 0);
      }));

    it('acknowledgements move forward only and never past the head', () =>
      use(async (feed) => {
        await feed.publish([1, 2, 3].map((i) => ({ sourceId: `a${i}`, type: 'T', data: i, recipients: ['a'] })));
        await feed.ack([{ userId: 'a', cursor: 2 }]);
        await feed.ack([{ userId: 'a', cursor: 1 }]);
        assert.equal((await feed.bounds('a')).acked, 2);
        await feed.ack([{ userId: 'a', cursor: 99 }, { userId: 'ghost', cursor: 5 }]);
        assert.equal((await feed.bounds('a')).acked, 3);
        assert.equal((await feed.bounds('ghost')).acked, 0);
      }));

    it('finds notifications not acknowledged in time, once each after markReported', () =>
      use(async (feed, c) => {
        await feed.publish([{ sourceId: 'old1', type: 'T', data: 1, recipients: ['a', 'b'] }]);
        c.advance(10_000);
        await feed.publish([{ sourceId: 'new1', type: 'T', data: 2, recipients: ['a'] }]);
        await feed.ack([{ userId: 'b', cursor: 1 }]);
        const due = await feed.findUndelivered(c.now() - 5_000, 100);
        assert.deepEqual(due.map((d) => [d.userId, d.cursor, d.sourceId]), [['a', 1, 'old1']]);
        assert.deepEqual(await feed.findUndelivered(c.now() - 5_000, 100), due, 'finding marks nothing');
        await feed.markReported(due);
        assert.deepEqual(await feed.findUndelivered(c.now() - 5_000, 100), []);
        c.advance(10_000);
        assert.deepEqual((await feed.findUndelivered(c.now() - 5_000, 100)).map((d) => [d.userId, d.cursor]), [['a', 2]]);
      }));

    it('retention deletes old notifications; bounds then show the oldest kept, and cursors continue', () =>
      use(async (feed, c) => {
        await feed.publish([{ sourceId: 'r1', type: 'T', data: 1, recipients: ['a'] }]);
        await feed.publish([{ sourceId: 'r2', type: 'T', data: 2, recipients: ['a'] }]);
        c.advance(1000);
        await feed.publish([{ sourceId: 'r3', type: 'T', data: 3, recipients: ['a'] }]);
        assert.equal(await feed.prune(c.now() - 500, c.now() - 500), 2);
        assert.deepEqual(await feed.bounds('a'), { head: 3, oldest: 3, acked: 0 });
        assert.deepEqual((await feed.read('a', 0, 10)).map((e) => e.cursor), [3]);
        assert.deepEqual(await feed.readNode(0, 0, 10), []);
        await feed.publish([{ sourceId: 'r4', type: 'T', data: 4, recipients: ['a'] }]);
        assert.deepEqual((await feed.read('a', 0, 10)).map((e) => e.cursor), [3, 4]);
        assert.equal(await feed.prune(c.now() + 1, c.now() + 1), 2);
        assert.deepEqual(await feed.bounds('a'), { head: 4, oldest: 5, acked: 0 });
      }));

    it('retention over many users and two nodes: each user keeps exactly the notifications young enough', () =>
      use(async (feed, c) => {
        // More users than one SQLite prune transaction takes, in a user order unlike the publish order.
        const users = Array.from({ length: 1200 }, (_, i) => `u${(i * 7919) % 1200}`);
        const nodeOf = (u: string) => Number(u.slice(1)) % 2;
        const halves = [users.filter((_, i) => i % 2 === 0), users.filter((_, i) => i % 2 === 1)];
        // Old: two to everybody, one to each half. Young: one to the first half, one to everybody.
        await feed.publish([{ sourceId: 'old1', type: 'T', data: 1, recipients: users }], { nodeOf });
        await feed.publish([{ sourceId: 'old2', type: 'T', data: 2, recipients: halves[0]! }], { nodeOf });
        await feed.publish([{ sourceId: 'old3', type: 'T', data: 3, recipients: halves[1]! }, { sourceId: 'old4', type: 'T', data: 4, recipients: users }], { nodeOf });
        c.advance(1000);
        await feed.publish([{ sourceId: 'new1', type: 'T', data: 5, recipients: halves[0]! }], { nodeOf });
        await feed.publish([{ sourceId: 'new2', type: 'T', data: 6, recipients: users }], { nodeOf });
        assert.equal(await feed.prune(c.now() - 500, c.now() - 500), 4);
        for (const [half, young] of [[halves[0]!, [5, 6]], [halves[1]!, [6]]] as const) {
          for (const user of half) {
            const read = await feed.read(user, 0, 10);
            assert.deepEqual(read.map((n) => n.data), young, user);
            assert.deepEqual(await feed.bounds(user), { head: 3 + young.length, oldest: 4, acked: 0 }, user);
          }
        }
        for (const node of [0, 1]) assert.deepEqual((await feed.readNode(node, 0, 10)).map((d) => (JSON.parse(d.json) as { data: unknown }).data), halves[0]!.some((u) => nodeOf(u) === node) ? [5, 6] : [6]);
        // The outbox alone can be kept shorter than the notifications.
        assert.equal(await feed.prune(c.now() - 500, c.now() + 1), 0);
        assert.deepEqual(await feed.readNode(0, 0, 10), []);
        assert.deepEqual((await feed.read(users[0]!, 0, 10)).map((n) => n.data), [5, 6]);
      }));

    it('presence: online until it expires, offline at once, across nodes', () =>
      use(async (feed, c) => {
        await feed.setOnline('n1', ['a', 'b'], c.now() + 1000);
        await feed.setOnline('n2', ['b'], c.now() + 5000);
        assert.deepEqual((await feed.online(['a', 'b', 'z'], c.now())).sort(), ['a', 'b']);
        await feed.setOffline('n1', ['b']);
        c.advance(2000);
        assert.deepEqual(await feed.online(['a', 'b'], c.now()), ['b']);
        c.advance(4000);
        assert.deepEqual(await feed.online(['a', 'b'], c.now()), []);
      }));

    it('calls watchers after its commits', () =>
      use(async (feed) => {
        let calls = 0;
        const stop = feed.watch(() => calls++);
        await feed.publish([{ sourceId: 'w', type: 'T', data: 1, recipients: ['a'] }]);
        assert.ok(calls >= 1);
        stop();
      }));
  });
}
