import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { openPostgresEventLog } from '../src/log/postgres/index.js';
import { commitBatch, RevisionGuesses } from '../src/log/postgres/append.js';
import { prepareAppends, resolveLimits } from '../src/log/validation.js';
import { FILTERED_SPAN, readAllPage } from '../src/log/postgres/read.js';
import { arrayLiteral, PG_TYPES } from '../src/log/postgres/pg-types.js';
import { eventLogConformance } from './conformance/event-log.js';
import { aggregateConformance } from './conformance/aggregate.js';
import { followsThroughAnotherWriter } from './support/logs.js';
import { subscriptionConformance, type ProjectionFixture } from './conformance/subscription.js';
import pg from 'pg';
import { subscribe, type EventLog } from '../src/index.js';
import { dropSchema, POSTGRES_URL, postgresSkipReason, randomName } from './support/services.js';
import { sleep, until } from './support/wait.js';

const skip = await postgresSkipReason();
const schemas: string[] = [];
after(async () => {
  if (!skip) for (const s of schemas) await dropSchema(s);
});
// Every log gets a fresh schema: tests are isolated and leave nothing behind.
const schemaOf = new WeakMap<EventLog, string>();
const factory = async (options?: object) => {
  const schema = randomName('t');
  schemas.push(schema);
  const log = await openPostgresEventLog({ ...options, connectionString: POSTGRES_URL, schema, poolSize: 4 });
  schemaOf.set(log, schema);
  return log;
};
const query = async <R>(sql: string): Promise<R[]> => {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    return (await client.query(sql)).rows as R[];
  } finally {
    await client.end();
  }
};
const projection: ProjectionFixture = {
  createTable: async (log) => {
    const table = `${schemaOf.get(log)}.${randomName('counts')}`;
    await query(`CREATE TABLE ${table} (key text PRIMARY KEY, n integer NOT NULL)`);
    return table;
  },
  increment: (table, key) => ({ sql: `INSERT INTO ${table} (key, n) VALUES ($1, 1) ON CONFLICT (key) DO UPDATE SET n = ${table}.n + 1`, params: [key] }),
  read: async (_log, table) => new Map((await query<{ key: string; n: number }>(`SELECT key, n FROM ${table}`)).map((r) => [r.key, r.n])),
};

describe('postgres adapter', { skip }, () => {
  eventLogConformance('postgres', factory, 'durable');
  aggregateConformance('postgres', factory);
  subscriptionConformance('postgres', factory, projection, (log) => openPostgresEventLog({ connectionString: POSTGRES_URL, schema: schemaOf.get(log)!, poolSize: 4 }));
});

describe('postgres: two processes writing one log', { skip }, () => {
  it('a follower of one sees the events of both, in order and without a hole', async () => {
    // Small pages: followers' windows fill pages, so a full page must claim only up to its last row.
    const mine = await factory({ readPageSize: 16 });
    const other = await openPostgresEventLog({ connectionString: POSTGRES_URL, schema: schemaOf.get(mine)!, poolSize: 4, readPageSize: 16 });
    const reader = await openPostgresEventLog({ connectionString: POSTGRES_URL, schema: schemaOf.get(mine)!, poolSize: 4, readPageSize: 16 });
    try {
      await followsThroughAnotherWriter(mine, other, reader);
    } finally {
      await reader.close();
      await other.close();
      await mine.close();
    }
  });
});

describe('postgres: revisions guessed from this process\'s own commits', () => {
  it('overlays batches in flight on committed revisions, keeps the highest, forgets, clears and stays bounded', () => {
    const guesses = new RevisionGuesses(3);
    assert.deepEqual(guesses.guess(['a', 'b']), { revisions: new Map(), unknown: ['a', 'b'] });
    guesses.commit(new Map([['a', 4], ['b', 1]]));
    guesses.commit(new Map([['a', 2]])); // an earlier batch reporting late
    const inFlight = {};
    guesses.plan(inFlight, new Map([['b', 3]]));
    assert.deepEqual(guesses.guess(['a', 'b', 'c']), { revisions: new Map([['a', 4], ['b', 3]]), unknown: ['c'] });
    guesses.release(inFlight);
    assert.equal(guesses.guess(['b']).revisions.get('b'), 1);
    guesses.forget(['a']);
    assert.deepEqual(guesses.guess(['a']).unknown, ['a']);
    guesses.commit(new Map([['c', 0], ['d', 0], ['b', 2]])); // b committed again: now the most recent
    guesses.commit(new Map([['e', 0]])); // four streams known, capacity three: c goes
    assert.deepEqual(guesses.guess(['b', 'c', 'd', 'e']).unknown, ['c']);
    guesses.clear();
    assert.deepEqual(guesses.guess(['b', 'd', 'e']).unknown, ['b', 'd', 'e']);
  });
});

describe('postgres: appends planned against stale guesses', { skip }, () => {
  it('plans again under the lock when a guessed revision is stale, so revisions and expectations stay exact', async () => {
    const mine = await factory();
    const schema = schemaOf.get(mine)!;
    const other = await openPostgresEventLog({ connectionString: POSTGRES_URL, schema, poolSize: 4 });
    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 2, types: PG_TYPES });
    try {
      const s = randomName('shared');
      for (let i = 0; i < 4; i++) await other.append(s, [{ type: 'Other', data: { i } }]);
      // This process believes the stream is at revision 0 (as if another's commits had not been heard of yet).
      const guesses = new RevisionGuesses();
      guesses.commit(new Map([[s, 0]]));
      const limits = resolveLimits(undefined);
      const prepare = (type: string, expectedRevision?: number) => ({ appends: prepareAppends([{ stream: s, events: [{ type, data: {} }], expectedRevision }], limits, () => 1) });
      const channel = `sinho_log_${schema}`;
      const result = await commitBatch(pool, schema, channel, [prepare('Late', 2), prepare('Next'), prepare('OnTime', 4)], 'durable', guesses);
      assert.deepEqual(
        result.outcomes.map((o) => (o.ok ? o.streams[0]!.events.map((e) => e.revision) : (o.error as unknown as { code: string }).code)),
        ['WRONG_EXPECTED_REVISION', [4], [5]],
      );
      assert.equal(guesses.guess([s]).revisions.get(s), 5, 'what was committed is known now');
      const types = [];
      for await (const e of mine.readStream(s)) types.push(e.type);
      assert.deepEqual(types, ['Other', 'Other', 'Other', 'Other', 'Next', 'OnTime']);
      // Two logs writing one stream in turn: each one's guess is stale until the other's notification arrives.
      const revisions: number[] = [];
      for (let i = 0; i < 10; i++) {
        revisions.push((await mine.append(s, [{ type: 'Mine', data: { i } }])).events[0]!.revision);
        revisions.push((await other.append(s, [{ type: 'Other', data: { i } }])).events[0]!.revision);
      }
      assert.deepEqual(revisions, Array.from({ length: 20 }, (_, i) => 6 + i));
    } finally {
      await pool.end();
      await other.close();
      await mine.close();
    }
  });
});

/** Follows `log` from past its head, recording the events' types; `until` waits (5 s at most) for a count of them. */
function followTypes(log: EventLog) {
  const seen: string[] = [];
  const controller = new AbortController();
  const following = (async () => {
    for await (const e of log.follow({ fromPosition: (await log.headPosition()) + 1, signal: controller.signal })) seen.push(e.type);
  })();
  return {
    seen,
    until: (count: number, what: string) => until(() => seen.length >= count, 5000, what),
    stop: async (): Promise<void> => {
      controller.abort();
      await following;
    },
  };
}

/**
 * Runs `body` with a follower of `mine` that `other`'s commits have woken once (its LISTEN connection comes up in
 * the background, so `other` appends to `stream` until the follower saw one), then stops it and closes both logs.
 */
async function whileFollowing(mine: EventLog, other: EventLog, stream: string, body: (follower: ReturnType<typeof followTypes>) => Promise<void>): Promise<void> {
  const follower = followTypes(mine);
  try {
    for (let i = 0; follower.seen.length === 0; i++) {
      assert.ok(i < 50, 'the follower never woke');
      await other.append(stream, [{ type: 'Warmup', data: { i } }]);
      await sleep(100);
    }
    await body(follower);
  } finally {
    await follower.stop();
    await other.close();
    await mine.close();
  }
}

describe('postgres: fencing', { skip }, () => {
  // Two checkpoint paths: one that moves the position only (a single statement), and one that also writes a retry.
  for (const failing of [false, true]) {
    it(`stops an instance whose lease was taken over, and its ${failing ? 'checkpoint with a retry' : 'position-only checkpoint'} writes nothing`, async () => {
      const log = await factory();
      const groups = `${schemaOf.get(log)}.groups`;
      const deferred = `${schemaOf.get(log)}.group_deferred`;
      try {
        await log.append('fence-1', [{ type: 'A', data: {} }]);
        const group = await subscribe(log, 'fenced', {
          handler: (e) => {
            if (failing && e.type === 'B') throw new Error('not yet');
          },
          retry: { delaysMs: [60_000], maxAttempts: 2 },
          leaseMs: 300,
        });
        await group.waitForCheckpoint(1);
        const errors: string[] = [];
        group.on('subscription:error', ({ error }) => errors.push((error as { code?: string }).code ?? error.message));
        const stopped = new Promise<void>((r) => group.once('subscription:stopped', () => r()));
        // Another instance takes the group over (as if this one had stalled past its lease).
        await query(`UPDATE ${groups} SET owner = 'other-instance', lease_until = ${Date.now() + 60_000} WHERE name = 'fenced'`);
        const [before] = await query<{ position: number }>(`SELECT position FROM ${groups} WHERE name = 'fenced'`);
        await log.append('fence-1', [{ type: 'B', data: {} }]);
        await stopped;
        assert.deepEqual(errors, ['GROUP_LEASE_LOST']);
        const [after] = await query<{ position: number }>(`SELECT position FROM ${groups} WHERE name = 'fenced'`);
        assert.equal(Number(after!.position), Number(before!.position), 'the fenced instance moved no checkpoint');
        assert.deepEqual(await query(`SELECT position FROM ${deferred} WHERE group_name = 'fenced'`), [], 'and recorded no retry');
        await group.stop();
      } finally {
        await log.close();
      }
    });
  }
});

describe('postgres: array parameters of the append path', { skip }, () => {
  it('round-trips every value through the array literal, quoted or escaped, and a stream named NULL appends as a name', async () => {
    const texts = ['NULL', 'null', 'plain', 'a"b', 'c\\d', 'x,y', '{z}', ' spaced ', ''];
    const client = new pg.Client({ connectionString: POSTGRES_URL });
    await client.connect();
    try {
      const { rows } = await client.query('SELECT $1::text[] AS texts, $2::bigint[] AS numbers, $3::text[] AS empty', [arrayLiteral(texts), arrayLiteral([0, -1, 2 ** 53 - 1]), arrayLiteral([])]);
      assert.deepEqual(rows[0].texts, texts);
      assert.deepEqual(rows[0].numbers.map(Number), [0, -1, 2 ** 53 - 1]);
      assert.deepEqual(rows[0].empty, []);
    } finally {
      await client.end();
    }
    const log = await factory();
    try {
      await log.append('NULL', [{ type: 'Named', data: {} }]);
      const streams: string[] = [];
      for await (const event of log.readStream('NULL')) streams.push(event.stream);
      assert.deepEqual(streams, ['NULL']);
    } finally {
      await log.close();
    }
  });
});

describe('postgres: the group-commit delay', { skip }, () => {
  it('rejects a bad delay before it creates anything', async () => {
    for (const bad of [-1, 1001, Number.NaN, '2' as unknown as number]) {
      const schema = randomName('t');
      await assert.rejects(openPostgresEventLog({ connectionString: POSTGRES_URL, schema, groupCommitDelayMs: bad }), (e: { code?: string }) => e.code === 'INVALID_ARGUMENT');
      assert.deepEqual(await query(`SELECT 1 FROM information_schema.schemata WHERE schema_name = '${schema}'`), [], 'no schema was created');
    }
  });

  it('commits a steady stream of appends in fewer, larger batches, and never delays a writer waiting on its own appends', async () => {
    const DELAY = 30;
    const log = await factory({ groupCommitDelayMs: DELAY });
    try {
      await appendSteadilyAndAlone(log, DELAY);
    } finally {
      await log.close();
    }
  });
});

/** Ten appends in a row, then a steady stream of appends, on a log opened with a group-commit delay of `DELAY` ms. */
async function appendSteadilyAndAlone(log: EventLog, DELAY: number): Promise<void> {
  const lone = randomName('lone');
  const started = performance.now();
  for (let i = 0; i < 10; i++) await log.append(lone, [{ type: 'Lone', data: { i } }]);
  const loneMs = performance.now() - started;
  assert.ok(loneMs < 10 * DELAY, `ten appends in a row, each waiting on the last, took ${loneMs.toFixed(0)} ms: no delay`);
  let commits = 0;
  const off = log.onCommit(() => commits++);
  // A steady stream: ten appends every 2 ms for 300 ms, arriving whether or not earlier ones have committed.
  const pending: Promise<{ events: { position: number }[] }>[] = [];
  const end = performance.now() + 300;
  while (performance.now() < end) {
    for (let i = 0; i < 10; i++) pending.push(log.append(randomName('steady'), [{ type: 'Steady', data: { i } }]));
    await sleep(2);
  }
  const positions = (await Promise.all(pending)).map((r) => r.events[0]!.position);
  off();
  assert.equal(new Set(positions).size, positions.length, 'every append committed once');
  // Without the delay each commit (about 2 ms here) would take what arrived meanwhile: over a hundred commits.
  assert.ok(commits <= 300 / DELAY + 4, `${positions.length} appends over 300 ms in ${commits} commits`);
}

describe('postgres: wake-ups through LISTEN/NOTIFY', { skip }, () => {
  it('wakes a follower of one log when another log commits, with no re-check of the head to fall back on', async () => {
    // recheckIntervalMs 0: no periodic head read, so only the notification can wake the follower. (A log skips the
    // notifications of its own connections' commits; the conformance suite checks that its own follower then reads
    // nothing from the store.)
    const mine = await factory({ recheckIntervalMs: 0 });
    const other = await openPostgresEventLog({ connectionString: POSTGRES_URL, schema: schemaOf.get(mine)!, poolSize: 4, recheckIntervalMs: 0 });
    await whileFollowing(mine, other, 'wake-1', async (follower) => {
      for (let i = 0; i < 5; i++) {
        const count = follower.seen.length + 1;
        const started = performance.now();
        await other.append('wake-1', [{ type: 'Next', data: { i } }]);
        await follower.until(count, `commit ${i} of the other log did not wake the follower`);
        assert.ok(performance.now() - started < 2000);
      }
    });
  });
});

describe('postgres: a LISTEN connection that drops', { skip }, () => {
  it('reports the commits made while it was reconnecting once it listens again', async () => {
    const name = randomName('listener');
    const first = await factory({ recheckIntervalMs: 0 });
    const schema = schemaOf.get(first)!;
    await first.close();
    // A log whose connections can be told apart, and no periodic head re-check: only the wake-ups can move it.
    const mine = await openPostgresEventLog({ connectionString: `${POSTGRES_URL}?application_name=${name}`, schema, poolSize: 4, recheckIntervalMs: 0, onBackgroundError: () => {} });
    const other = await openPostgresEventLog({ connectionString: POSTGRES_URL, schema, poolSize: 4 });
    await whileFollowing(mine, other, 'drop-1', async (follower) => {
      const before = follower.seen.length;
      const killed = await query<{ n: number }>(`SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = '${name}'`);
      assert.ok(killed[0]!.n >= 1);
      // Committed at once, while the listener waits to reconnect (at least 100 ms): no notification reaches it.
      await other.append('drop-1', [{ type: 'WhileDown', data: {} }]);
      await follower.until(before + 1, 'the commit made while the listener was down was never reported');
      assert.equal(follower.seen.at(-1), 'WhileDown');
    });
  });
});

describe('postgres readAll pages on a table the planner has no statistics for', { skip }, () => {
  it('plans every unfiltered page as an ordered index scan that stops at the page, reads filtered pages span by span, and keeps the window bound', async () => {
    const log = await factory();
    const schema = schemaOf.get(log)!;
    // A freshly filled log: autovacuum has not analysed it, so the planner falls back on default estimates.
    const marks: number[] = [];
    for (let i = 0; i < 20; i++) {
      await log.append(`fill-${i}`, Array.from({ length: 1000 }, (_, n) => ({ type: 'Filled', data: { n } })), { durability: 'relaxed' });
      marks.push((await log.append('mark-1', [{ type: 'Marked', data: { i } }], { durability: 'relaxed' })).events[0]!.position);
    }
    const head = await log.headPosition();
    const client = new pg.Client({ connectionString: POSTGRES_URL, types: PG_TYPES });
    await client.connect();
    try {
      const plans: string[] = [];
      // Runs each page query as the adapter sends it, and EXPLAINs it with the same parameters.
      const explaining = {
        query: async <R>(text: string, values?: unknown[]) => {
          const plan = await client.query(`EXPLAIN (FORMAT JSON) ${text}`, values);
          plans.push(JSON.stringify(plan.rows[0]));
          const result = await client.query(text, values);
          return { rows: result.rows as R[], rowCount: result.rowCount };
        },
      };
      const first = await readAllPage(explaining, schema, { fromPosition: 1, limit: 1000 });
      const window = await readAllPage(explaining, schema, { fromPosition: 5001, toPosition: head, limit: 1000 });
      const cut = await readAllPage(explaining, schema, { fromPosition: head - 9, toPosition: head - 5, limit: 1000 });
      assert.deepEqual(first.map((e) => e.position), Array.from({ length: 1000 }, (_, i) => i + 1));
      assert.deepEqual(window.map((e) => e.position), Array.from({ length: 1000 }, (_, i) => i + 5001));
      assert.deepEqual(cut.map((e) => e.position), [head - 9, head - 8, head - 7, head - 6, head - 5]);
      for (const plan of plans) {
        // The old two-sided range planned a bitmap scan of the whole window and a sort, for every page: O(N²) reads.
        assert.doesNotMatch(plan, /"Sort"|Bitmap/, plan);
        assert.match(plan, /"Index Scan"/, plan);
      }
      // Filtered pages are read span by span of positions, so no query scans more than a span, whatever its plan.
      plans.length = 0;
      const texts: unknown[][] = [];
      const recording = {
        query: async <R>(text: string, values?: unknown[]) => {
          if (/ANY/.test(text)) texts.push(values ?? []);
          const result = await client.query(text, values);
          return { rows: result.rows as R[], rowCount: result.rowCount };
        },
      };
      const marked = await readAllPage(recording, schema, { fromPosition: 1, limit: 1000, filter: { categories: ['mark'] } });
      assert.deepEqual(marked.map((e) => e.position), marks);
      assert.equal(texts.length, Math.ceil(head / FILTERED_SPAN));
      for (const values of texts) assert.ok(Number(values[1]) - Number(values[0]) < FILTERED_SPAN, `one span: ${values.slice(0, 2).join('..')}`);
      const two = await readAllPage(recording, schema, { fromPosition: marks[3]!, toPosition: marks[9]!, limit: 2, filter: { types: ['Marked'] } });
      assert.deepEqual(two.map((e) => e.position), [marks[3], marks[4]]);
    } finally {
      await client.end();
      await log.close();
    }
  });
});
