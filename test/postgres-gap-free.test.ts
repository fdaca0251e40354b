/**
 * Gap-free, commit-ordered reading on PostgreSQL (design invariant 2).
 *
 * The classic bug: positions come from a sequence at insert time but become
 * visible at commit, so a reader that remembers "the highest position seen"
 * skips an event whose transaction took an earlier position and committed
 * later. Here raw connections hold append transactions open, try to commit
 * them in reverse order and roll some back, while the log's own group
 * committer appends too and a reader in another pool follows. The reader must
 * see exactly the committed events, once, at contiguous positions.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { prepareAppends, DEFAULT_LOG_LIMITS } from '../src/log/validation.js';
import { appendInTransaction } from '../src/log/postgres/append.js';
import { openPostgresEventLog } from '../src/log/postgres/index.js';
import type { RecordedEvent } from '../src/index.js';
import { dropSchema, POSTGRES_URL, postgresSkipReason, randomName } from './support/services.js';

const skip = await postgresSkipReason();

describe('postgres: gap-free reading with out-of-order commits and rollbacks', { skip, timeout: 60_000 }, () => {
  it('a follower never skips an event and never sees a rolled-back one', async () => {
    const schema = randomName('gap');
    after(() => dropSchema(schema));
    const writer = await openPostgresEventLog({ connectionString: POSTGRES_URL, schema });
    const reader = await openPostgresEventLog({ connectionString: POSTGRES_URL, schema });
    const seen: RecordedEvent[] = [];
    const controller = new AbortController();
    const following = (async () => {
      for await (const e of reader.follow({ signal: controller.signal })) seen.push(e);
    })();

    const rounds = 5;
    const perRound = 6;
    const committed = new Set<string>();
    const rolledBack = new Set<string>();
    for (let round = 0; round < rounds; round++) {
      const clients = await Promise.all(Array.from({ length: perRound }, async () => {
        const c = new pg.Client({ connectionString: POSTGRES_URL });
        await c.connect();
        await c.query('BEGIN');
        return c;
      }));
      // Every transaction starts its append at once; each blocks on the head
      // row until it is its turn, so at any moment one holds its positions
      // uncommitted while others wait and the group committer queues behind.
      const appends = clients.map((c, i) => {
        const [prepared] = prepareAppends([{ stream: `gap-r${round}t${i}`, events: [{ type: 'T', data: { round, i } }, { type: 'T', data: { round, i, second: true } }] }], DEFAULT_LOG_LIMITS, () => 1);
        return appendInTransaction(c, schema, `sinho_log_${schema}`, [{ appends: [prepared!] }], 'durable').then((r) => ({ r, ids: prepared!.events.map((e) => e.id) }));
      });
      const background = Promise.all(Array.from({ length: 10 }, (_, k) => writer.append(`gap-bg${round}`, [{ type: 'B', data: { k } }])));
      // Ask them to finish in reverse order; odd ones roll back.
      const finishing = clients
        .map((c, i) => ({ c, i }))
        .reverse()
        .map(async ({ c, i }) => {
          const { ids } = await appends[i]!;
          await new Promise((r) => setTimeout(r, 5 + ((i * 7) % 11)));
          const rollback = i % 2 === 1;
          await c.query(rollback ? 'ROLLBACK' : 'COMMIT');
          for (const id of ids) (rollback ? rolledBack : committed).add(id);
        });
      await Promise.all(finishing);
      for (const r of await background) for (const e of r.events) committed.add(e.id);
      await Promise.all(clients.map((c) => c.end()));
    }

    const head = await writer.headPosition();
    // Let the follower catch up (a macrotask wait: its I/O must get a turn), bounded in time.
    const deadline = Date.now() + 20_000;
    while (seen.length < committed.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100));
    controller.abort();
    await writer.append('gap-wake', [{ type: 'W', data: null }]);
    await following;
    const upToHead = seen.filter((e) => e.position <= head);
    assert.deepEqual(upToHead.map((e) => e.position), Array.from({ length: head }, (_, i) => i + 1), 'contiguous positions, each once');
    assert.deepEqual(new Set(upToHead.map((e) => e.id)), committed, 'exactly the committed events');
    for (const e of upToHead) assert.ok(!rolledBack.has(e.id));
    assert.ok(rolledBack.size > 0 && committed.size > rolledBack.size);
    await writer.close();
    await reader.close();
  });
});

describe('postgres: several writer processes on one log', { skip, timeout: 60_000 }, () => {
  it('keeps revisions and positions unique and contiguous when two pools append to the same streams', async () => {
    const schema = randomName('multi');
    after(() => dropSchema(schema));
    const a = await openPostgresEventLog({ connectionString: POSTGRES_URL, schema });
    const b = await openPostgresEventLog({ connectionString: POSTGRES_URL, schema });
    const streams = ['multi-1', 'multi-2', 'multi-3'];
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) => (i % 2 ? a : b).append(streams[i % 3]!, [{ type: 'M', data: { i } }])),
    );
    assert.equal(results.length, 300);
    for (const s of streams) {
      const revisions: number[] = [];
      for await (const e of a.readStream(s)) revisions.push(e.revision);
      assert.deepEqual(revisions, revisions.map((_, i) => i));
    }
    const positions: number[] = [];
    for await (const e of b.readAll()) positions.push(e.position);
    assert.deepEqual(positions, positions.map((_, i) => i + 1));
    assert.equal(positions.length, 300);
    await a.close();
    await b.close();
  });
});
