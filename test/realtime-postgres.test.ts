/**
 * The PostgreSQL feed store: the conformance suite, concurrent publishers
 * from separate pools (as on separate machines), and gateways on two
 * "machines" sharing it.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { openPostgresFeedStore } from '../src/log/postgres/index.js';
import { Gateway, type FeedStore } from '../src/realtime/index.js';
import { feedStoreConformance } from './conformance/feed-store.js';
import { dropSchema, POSTGRES_URL, postgresSkipReason, randomName } from './support/services.js';
import { rawClient } from './support/realtime.js';
import { until } from './support/wait.js';

const skip = await postgresSkipReason();
const schemas: string[] = [];
after(async () => {
  if (!skip) for (const s of schemas) await dropSchema(s);
});
const open = (schema: string, now?: () => number) => openPostgresFeedStore({ connectionString: POSTGRES_URL, schema, poolSize: 4, ...(now ? { now } : {}) });
const fresh = () => {
  const schema = randomName('feed');
  schemas.push(schema);
  return schema;
};

feedStoreConformance('postgres', ({ now }) => open(fresh(), now), { skip });

describe('postgres feed store under concurrency', { skip }, () => {
  it('concurrent publishers on separate pools: dense cursors, and a following reader never skips an outbox row', async () => {
    const schema = fresh();
    const writers = [await open(schema), await open(schema), await open(schema)];
    const reader = await open(schema);
    const seen: number[] = [];
    let following = true;
    const follow = (async () => {
      let last = 0;
      while (following || last < (await reader.nodeHead(0))) {
        for (const d of await reader.readNode(0, last, 100)) {
          seen.push(d.seq);
          last = d.seq;
        }
      }
    })();
    await Promise.all(
      writers.map((w, k) =>
        Promise.all(Array.from({ length: 60 }, (_, i) => w.publish([{ sourceId: `w${k}-${i}`, type: 'T', data: { k, i }, recipients: ['a', 'b', `only-${k}`] }], { nodeOf: () => 0 }))),
      ),
    );
    following = false;
    await follow;
    assert.deepEqual(seen, Array.from({ length: 180 }, (_, i) => i + 1), 'the outbox is read in sequence, with nothing skipped');
    const a = await reader.read('a', 0, 1000);
    assert.deepEqual(a.map((e) => e.cursor), Array.from({ length: 180 }, (_, i) => i + 1));
    assert.equal((await reader.bounds('only-1')).head, 60);
    for (const w of writers) await w.close();
    await reader.close();
  });

  it('gateways on two machines share the store: each delivers its own users, and a resume reads what the other wrote', async () => {
    const schema = fresh();
    const stores: FeedStore[] = [await open(schema), await open(schema), await open(schema)];
    const [fanOut, store0, store1] = stores as [FeedStore, FeedStore, FeedStore];
    const auth = async (token: string) => ({ userId: token });
    const g0 = await Gateway.start({ feed: store0, node: 0, nodes: 2, authenticate: auth });
    const g1 = await Gateway.start({ feed: store1, node: 1, nodes: 2, authenticate: auth });
    const c2 = await rawClient(g0.url);
    c2.send({ type: 'hello', token: '2' });
    const c3 = await rawClient(g1.url);
    c3.send({ type: 'hello', token: '3' });
    await c2.waitFor((f) => f.type === 'welcome');
    await c3.waitFor((f) => f.type === 'welcome');
    for (let i = 0; i < 20; i++) await fanOut.publish([{ sourceId: `j${i}`, type: 'MemberJoined', data: { i }, recipients: ['2', '3', '5'] }], { nodeOf: (u) => Number(u) % 2 });
    await until(() => c2.cursors().length === 20 && c3.cursors().length === 20, 10_000, 'both nodes delivered');
    assert.deepEqual(c2.cursors(), Array.from({ length: 20 }, (_, i) => i + 1));
    assert.deepEqual(c3.cursors(), Array.from({ length: 20 }, (_, i) => i + 1));
    assert.equal(g0.stats().delivered, 20);
    assert.equal(g1.stats().delivered, 20);
    const c5 = await rawClient(g1.url);
    c5.send({ type: 'hello', token: '5', cursor: 15 });
    await until(() => c5.cursors().length === 5, 10_000, 'resume');
    assert.deepEqual(c5.cursors(), [16, 17, 18, 19, 20]);
    for (const c of [c2, c3, c5]) c.ws.close();
    await g0.close();
    await g1.close();
    for (const s of stores) await s.close();
  });
});
