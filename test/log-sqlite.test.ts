import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { openSqliteEventLog } from '../src/log/sqlite/index.js';
import { collect, eventLogConformance } from './conformance/event-log.js';
import { MIGRATIONS } from '../src/log/sqlite/schema.js';
import { aggregateConformance } from './conformance/aggregate.js';
import { followsThroughAnotherWriter } from './support/logs.js';
import { subscriptionConformance, type ProjectionFixture } from './conformance/subscription.js';
import Database from 'better-sqlite3';
import type { EventLog } from '../src/index.js';
import { consumerGroups, subscribe } from '../src/index.js';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import type { Worker } from 'node:worker_threads';
import { WrongExpectedRevision } from '../src/errors.js';
import type { CommitResult } from '../src/log/storage.js';
import { decodeBatch, decodeResult, encodeBatch, encodeResult, WriterThread } from '../src/log/sqlite/writer.js';
import { sleep } from './support/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'sinho-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const paths = new WeakMap<EventLog, string>();
const factory = async (options?: object) => {
  const path = join(dir, `log-${n++}.sqlite`);
  const log = openSqliteEventLog({ ...options, path });
  paths.set(log, path);
  return log;
};
const withDb = <T>(log: EventLog, work: (db: Database.Database) => T): T => {
  const db = new Database(paths.get(log)!);
  try {
    return work(db);
  } finally {
    db.close();
  }
};
const projection: ProjectionFixture = {
  createTable: async (log) => {
    const table = `counts_${n++}`;
    withDb(log, (db) => db.exec(`CREATE TABLE ${table} (key TEXT PRIMARY KEY, n INTEGER NOT NULL)`));
    return table;
  },
  increment: (table, key) => ({ sql: `INSERT INTO ${table} (key, n) VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET n = n + 1`, params: [key] }),
  read: async (log, table) => withDb(log, (db) => new Map((db.prepare(`SELECT key, n FROM ${table}`).all() as { key: string; n: number }[]).map((r) => [r.key, r.n]))),
};

eventLogConformance('sqlite', factory, 'durable');
aggregateConformance('sqlite', factory);
subscriptionConformance('sqlite', factory, projection, async (log) => openSqliteEventLog({ path: paths.get(log)!, externalCommitCheckMs: 20 }));

describe('sqlite: two connections writing one file', () => {
  it('a follower of one sees the events of both, in order and without a hole', async () => {
    const path = join(dir, `log-${n++}.sqlite`);
    const mine = openSqliteEventLog({ path, externalCommitCheckMs: 10, readPageSize: 16 });
    const other = openSqliteEventLog({ path, externalCommitCheckMs: 10, readPageSize: 16 });
    const reader = openSqliteEventLog({ path, externalCommitCheckMs: 10, readPageSize: 16 });
    try {
      await followsThroughAnotherWriter(mine, other, reader);
    } finally {
      await mine.close();
      await other.close();
      await reader.close();
    }
  });
});

describe('sqlite: two connections on one file', () => {
  it('wakes a follower on one connection when another connection commits, and keeps positions unique', async () => {
    const path = join(dir, 'shared.sqlite');
    const a = openSqliteEventLog({ path });
    const b = openSqliteEventLog({ path, externalCommitCheckMs: 20 });
    try {
      const controller = new AbortController();
      const seen: number[] = [];
      const following = (async () => {
        for await (const e of b.follow({ signal: controller.signal })) {
          seen.push(e.position);
          if (seen.length === 20) controller.abort();
        }
      })();
      for (let i = 0; i < 10; i++) {
        await a.append('shared-1', [{ type: 'A', data: { i } }]);
        await b.append('shared-1', [{ type: 'B', data: { i } }]);
      }
      await following;
      assert.deepEqual(seen, Array.from({ length: 20 }, (_, i) => i + 1));
      assert.equal(await a.streamRevision('shared-1'), 19);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('sqlite: another connection holding the write lock', () => {
  it('waits for it with timers (the process keeps running), then fails with STORE_BUSY past busyTimeoutMs, writing nothing', async () => {
    const path = join(dir, `busy-${n++}.sqlite`);
    const log = openSqliteEventLog({ path, busyTimeoutMs: 5000 });
    const other = new Database(path);
    try {
      await log.append('busy-1', [{ type: 'Seeded', data: {} }]);
      // Another connection (as another process would) takes the write lock for 300 ms.
      other.exec('BEGIN IMMEDIATE');
      let ticks = 0;
      const ticker = setInterval(() => ticks++, 5);
      const started = Date.now();
      const appended = log.append('busy-1', [{ type: 'Waited', data: {} }]);
      await new Promise((r) => setTimeout(r, 300));
      other.exec('COMMIT');
      const result = await appended;
      clearInterval(ticker);
      assert.ok(Date.now() - started >= 250, 'the append waited for the lock');
      assert.equal(result.revision, 1);
      // SQLite's own busy handler would have slept inside the call: no timer would have run meanwhile.
      assert.ok(ticks >= 10, `the event loop kept running while waiting (${ticks} ticks of 5 ms)`);

      const impatient = openSqliteEventLog({ path, busyTimeoutMs: 100 });
      try {
        other.exec('BEGIN IMMEDIATE');
        await assert.rejects(impatient.append('busy-1', [{ type: 'Refused', data: {} }]), (e: Error & { code?: string }) => e.code === 'STORE_BUSY');
        other.exec('COMMIT');
        assert.equal(await impatient.headPosition(), 2, 'nothing was written');
        await impatient.append('busy-1', [{ type: 'Later', data: {} }], { expectedRevision: 1 });
      } finally {
        await impatient.close();
      }
      assert.throws(() => openSqliteEventLog({ path, busyTimeoutMs: -1 }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT');
    } finally {
      if (other.inTransaction) other.exec('ROLLBACK');
      other.close();
      await log.close();
    }
  });
});

describe('sqlite: one instance per consumer group', () => {
  it('refuses a second instance on the same store while the first holds the lease, and lets one in after it stops', async () => {
    const path = join(dir, 'lease.sqlite');
    const a = openSqliteEventLog({ path });
    const b = openSqliteEventLog({ path });
    try {
      const first = await subscribe(a, 'leased', { handler: () => {}, leaseMs: 200 });
      const started = Date.now();
      await assert.rejects(() => subscribe(b, 'leased', { handler: () => {}, leaseMs: 200 }), { code: 'GROUP_BUSY' });
      assert.ok(Date.now() - started >= 380, 'it waited for the lease to expire before giving up');
      await assert.rejects(() => consumerGroups(b).reset('leased', 1), { code: 'GROUP_BUSY' });
      await first.stop();
      const second = await subscribe(b, 'leased', { handler: () => {}, leaseMs: 200 });
      await second.stop();
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('sqlite: fencing', () => {
  it('stops an instance whose lease was taken over, and its commits write nothing', async () => {
    const path = join(dir, 'fence.sqlite');
    const log = openSqliteEventLog({ path });
    try {
      await log.append('fence-1', [{ type: 'A', data: {} }]);
      const group = await subscribe(log, 'fenced', { handler: () => {}, leaseMs: 300 });
      await group.waitForCheckpoint(1);
      const errors: string[] = [];
      const details: unknown[] = [];
      group.on('subscription:error', ({ error }) => {
        errors.push((error as { code?: string }).code ?? error.message);
        details.push((error as { details?: unknown }).details);
      });
      const stopped = new Promise<void>((r) => group.once('subscription:stopped', () => r()));
      // Another instance takes the group over (as if this one had stalled past its lease).
      const db = new Database(path);
      db.prepare("UPDATE sinho_groups SET owner = 'other-instance', lease_until = ? WHERE name = 'fenced'").run(Date.now() + 60_000);
      const before = db.prepare("SELECT position FROM sinho_groups WHERE name = 'fenced'").get() as { position: number };
      await log.append('fence-1', [{ type: 'B', data: {} }]);
      await stopped;
      assert.deepEqual(errors, ['GROUP_LEASE_LOST']);
      // It says how long ago it renewed: here recently, since the takeover was forced, not a stall past the lease.
      const { sinceRenewalMs, leaseMs } = details[0] as { sinceRenewalMs: number; leaseMs: number };
      assert.equal(leaseMs, 300);
      assert.ok(sinceRenewalMs >= 0 && sinceRenewalMs < 300, `last renewed ${sinceRenewalMs} ms before`);
      const after = db.prepare("SELECT position FROM sinho_groups WHERE name = 'fenced'").get() as { position: number };
      assert.equal(after.position, before.position, 'the fenced instance committed nothing');
      db.close();
    } finally {
      await log.close();
    }
  });
});

describe('sqlite: background checkpoints', () => {
  it('copies the WAL into the database file on its own thread, without waiting for the auto-checkpoint', async () => {
    const path = join(dir, 'checkpointed.sqlite');
    const log = openSqliteEventLog({ path, backgroundCheckpointMs: 10 });
    try {
      const payload = 'x'.repeat(1000);
      // About 4 MB: under the committing connection's auto-checkpoint backstop (40 MB), so only the thread can have copied it.
      for (let i = 0; i < 40; i++) await log.append(`bulk-${i}`, Array.from({ length: 100 }, () => ({ type: 'Filled', data: { payload } })));
      const deadline = Date.now() + 5_000;
      while (statSync(path).size < 4_000_000) {
        assert.ok(Date.now() < deadline, `the database file is still ${statSync(path).size} bytes`);
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      await log.close();
    }
    assert.throws(() => openSqliteEventLog({ path, backgroundCheckpointMs: 0 }), /backgroundCheckpointMs/);
  });
});

describe('sqlite: migrating a file written before stream chains (schema 4)', () => {
  it('links every stored event into its stream chain, keeps truncations, and reads and appends as before', async () => {
    const path = join(dir, `log-${n++}.sqlite`);
    const old = new Database(path);
    old.pragma('journal_mode = WAL');
    old.exec('CREATE TABLE sinho_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)');
    for (const m of MIGRATIONS.filter((m) => m.version <= 4)) {
      old.exec(m.sql);
      old.prepare('INSERT INTO sinho_migrations VALUES (?, ?, ?)').run(m.version, m.name, new Date().toISOString());
    }
    // Three streams written the old way: `a` (200 events, truncated below 70), `b` (150), `c` (5, all truncated).
    const insert = old.prepare(
      "INSERT INTO sinho_events (position, id, stream, category, revision, type, schema_version, data, metadata, recorded_at) VALUES (?, ?, ?, 'old', ?, 'E', 1, ?, '{}', 0)",
    );
    const revisions = new Map<string, number>();
    let position = 0;
    for (let i = 0; i < 200; i++) {
      for (const s of i < 5 ? ['old-a', 'old-b', 'old-c'] : i < 150 ? ['old-a', 'old-b'] : ['old-a']) {
        const revision = (revisions.get(s) ?? -1) + 1;
        revisions.set(s, revision);
        position += 1;
        insert.run(position, `00000000-0000-7000-8000-${String(position).padStart(12, '0')}`, s, revision, JSON.stringify({ r: revision }));
      }
    }
    for (const [s, revision] of revisions) old.prepare('INSERT INTO sinho_streams (name, revision) VALUES (?, ?)').run(s, revision);
    old.prepare('UPDATE sinho_head SET position = ?').run(position);
    old.exec("DELETE FROM sinho_events WHERE stream = 'old-a' AND revision < 70; DELETE FROM sinho_events WHERE stream = 'old-c'");
    old.close();

    const log = openSqliteEventLog({ path, readPageSize: 9 });
    paths.set(log, path);
    try {
      const read = async (s: string, options = {}) => (await collect(log.readStream(s, options))).map((e) => e.revision);
      const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);
      assert.deepEqual(await read('old-a'), range(70, 199));
      assert.deepEqual(await read('old-a', { direction: 'backwards', from: 130, limit: 65 }), range(70, 130).reverse());
      assert.deepEqual(await read('old-a', { from: 100, limit: 3 }), [100, 101, 102]);
      assert.deepEqual(await read('old-b'), range(0, 149));
      assert.deepEqual(await read('old-c'), []);
      await log.append('old-a', [{ type: 'E', data: { r: 200 } }], { expectedRevision: 199 });
      await log.append('old-c', [{ type: 'E', data: { r: 5 } }], { expectedRevision: 4 });
      assert.deepEqual(await read('old-a', { direction: 'backwards', limit: 2 }), [200, 199]);
      assert.deepEqual(await read('old-c'), [5]);
      await log.truncateStream('old-b', 140);
      assert.deepEqual(await read('old-b'), range(140, 149));
      withDb(log, (db) => {
        assert.equal((db.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'sinho_events_stream_revision'").get() as { n: number }).n, 0);
        assert.deepEqual(
          (db.prepare("SELECT revision FROM sinho_stream_marks WHERE stream = 'old-a' ORDER BY revision").all() as { revision: number }[]).map((r) => r.revision),
          [128, 192],
        );
      });
    } finally {
      await log.close();
    }
  });
});

eventLogConformance('sqlite (writing on the calling thread)', (options?: object) => factory({ ...options, writerThread: false }), 'durable');

describe('sqlite: the writer thread', () => {
  it('carries a batch and its result across the thread, failed requests with their error class and fields', async () => {
    const event = (id: string, stream: string) => ({ id, idGiven: true, stream, category: 'order', type: 'Placed', schemaVersion: 1, data: '{"n":1}', metadata: '{}' });
    const batch = [
      { appends: [{ stream: 'order-1', expectedRevision: 'any' as const, events: [event('a', 'order-1'), event('b', 'order-1')] }] },
      { appends: [{ stream: 'order-2', expectedRevision: 3, events: [event('c', 'order-2')] }] },
      {
        appends: [
          { stream: 'order-3', expectedRevision: 'noStream' as const, events: [event('d', 'order-3')] },
          { stream: 'order-4', expectedRevision: 'any' as const, events: [event('e', 'order-4')] },
        ],
      },
    ];
    assert.deepEqual(decodeBatch(structuredClone(encodeBatch(batch))), batch);
    const result: CommitResult = {
      head: 40,
      durability: 'durable',
      outcomes: [
        { ok: true, streams: [{ stream: 'order-1', revision: 8, alreadyStored: false, events: [{ id: 'a', revision: 7, position: 37 }, { id: 'b', revision: 8, position: 38 }] }] },
        { ok: false, error: new WrongExpectedRevision('order-2', 3, 5) },
        {
          ok: true,
          streams: [
            { stream: 'order-3', revision: 0, alreadyStored: true, events: [{ id: 'd', revision: 0, position: 12 }] },
            { stream: 'order-4', revision: 2, alreadyStored: false, events: [{ id: 'e', revision: 2, position: 39 }] },
          ],
        },
      ],
    };
    const back = decodeResult(structuredClone(encodeResult(result)), batch);
    const failed = back.outcomes[1]!;
    assert.ok(!failed.ok && failed.error instanceof WrongExpectedRevision);
    assert.equal(failed.error.code, 'WRONG_EXPECTED_REVISION');
    assert.equal(failed.error.actual, 5);
    assert.equal(failed.error.message, (result.outcomes[1] as { error: Error }).error.message);
    assert.deepEqual({ ...back, outcomes: [back.outcomes[0], back.outcomes[2]] }, { ...result, outcomes: [result.outcomes[0], result.outcomes[2]] });
  });

  it('keeps positions and per-stream order through lone appends and bursts alternating under a consumer group', async () => {
    const log = await factory();
    try {
      const seen = new Map<string, number[]>();
      const group = await subscribe(log, 'mix', {
        concurrency: 8,
        handler: (e) => {
          const list = seen.get(e.stream) ?? [];
          list.push((e.data as { i: number }).i);
          seen.set(e.stream, list);
        },
      });
      const positions: number[] = [];
      let i = 0;
      for (let phase = 0; phase < 6; phase++) {
        // Lone appends (one batch of one event at a time), then a burst of 300 at once (split over two batches in flight).
        for (let k = 0; k < 20; k++) positions.push((await log.append(`mix-${k % 3}`, [{ type: 'M', data: { i: i++ } }])).events[0]!.position);
        const burst = Array.from({ length: 300 }, () => {
          const n = i++;
          return log.append(`mix-${n % 3}`, [{ type: 'M', data: { i: n } }]);
        });
        for (const r of await Promise.all(burst)) positions.push(r.events[0]!.position);
      }
      const head = await log.headPosition();
      await group.waitForCheckpoint(head);
      await group.stop();
      assert.deepEqual([...positions].sort((a, b) => a - b), Array.from({ length: i }, (_, k) => k + 1), 'positions unique and without a hole');
      let delivered = 0;
      for (const [name, list] of seen) {
        delivered += list.length;
        assert.deepEqual(list, [...list].sort((a, b) => a - b), `${name} delivered in append order`);
      }
      assert.equal(delivered, i);
    } finally {
      await log.close();
    }
  });

  it('rejects a bad writerThread or externalCommitCheckMs before creating anything', () => {
    const path = join(dir, `never-${n++}.sqlite`);
    for (const options of [{ writerThread: 'yes' }, { externalCommitCheckMs: 0 }, { externalCommitCheckMs: 1.5 }]) {
      assert.throws(() => openSqliteEventLog({ path, ...(options as object) }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT');
    }
    assert.throws(() => statSync(path), /ENOENT/);
  });

  it('fails waiting and later writes when the thread dies, instead of leaving them hanging', async () => {
    const path = join(dir, `log-${n++}.sqlite`);
    const setUp = openSqliteEventLog({ path }); // migrates the file
    await setUp.close();
    const writer = new WriterThread(path, { busyTimeoutMs: 1000, externalCommitCheckMs: 50 }, 1000);
    const group = await writer.subscriptions.ensureGroup('g', 0);
    assert.equal(group.name, 'g');
    await (writer as unknown as { worker: Worker }).worker.terminate();
    await assert.rejects(writer.subscriptions.getGroup('g'), /writer thread exited/);
    await writer.close();
  });

  it('does not keep a process alive whose log was never closed', async () => {
    const path = join(dir, `log-${n++}.sqlite`);
    const script = `import { openSqliteEventLog } from ${JSON.stringify(new URL('../src/log/sqlite/index.ts', import.meta.url).href)};
const log = openSqliteEventLog({ path: ${JSON.stringify(path)} });
await log.append('order-1', [{ type: 'Placed', data: {} }]);
console.log('appended');`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const code = await Promise.race([once(child, 'exit').then(([c]) => c), sleep(20_000).then(() => 'still running')]);
    if (code === 'still running') child.kill('SIGKILL');
    assert.equal(code, 0);
    assert.equal(out.trim(), 'appended');
  });
});
