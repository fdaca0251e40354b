import { lookupKeys, planCommit, type CommitPlan } from '../plan.js';
import type { AppendRequest, CommitResult, StoredEvent } from '../storage.js';
import { arrayLiteral, inTransaction, type PgPool, type PgQueryable } from './pg-types.js';
import { eventColumns } from './read.js';

/**
 * What this process believes the streams' revisions are, so that a batch can be
 * planned without reading them first: the revisions its own batches committed,
 * overlaid with those planned by batches still committing (so two batches
 * touching the same stream can both take the fast path). Streams it knows
 * nothing of are read. It is only a guess: `append_planned` re-checks every
 * assumption under the lock, and a batch whose guess was stale is planned
 * again under the lock; its streams are then forgotten, and every commit of
 * another process (announced by its notification) clears what was known.
 */
export class RevisionGuesses {
  private readonly planned = new Map<string, { revision: number; owner: object }>();
  private readonly committed = new Map<string, number>();

  /** @param capacity streams whose committed revision is kept; the least recently committed go first. */
  constructor(private readonly capacity = 10_000) {}

  /** The guessed revisions of `streams`, and the streams that have to be read. */
  guess(streams: readonly string[]): { revisions: Map<string, number>; unknown: string[] } {
    const revisions = new Map<string, number>();
    const unknown: string[] = [];
    for (const name of streams) {
      const revision = this.planned.get(name)?.revision ?? this.committed.get(name);
      if (revision === undefined) unknown.push(name);
      else revisions.set(name, revision);
    }
    return { revisions, unknown };
  }

  /** Revisions planned by the batch `owner`, committing now; they win over anything read or known. */
  plan(owner: object, revisions: ReadonlyMap<string, number>): void {
    for (const [name, revision] of revisions) this.planned.set(name, { revision, owner });
  }

  release(owner: object): void {
    for (const [name, p] of this.planned) if (p.owner === owner) this.planned.delete(name);
  }

  /** Revisions a batch of this process committed. Batches may report out of order: a stream's revision only grows. */
  commit(revisions: ReadonlyMap<string, number>): void {
    if (this.capacity === 0) return;
    for (const [name, revision] of revisions) {
      const known = this.committed.get(name);
      if (known !== undefined && known >= revision) continue;
      this.committed.delete(name); // re-inserted last: the Map's order is the eviction order
      this.committed.set(name, revision);
    }
    for (const name of this.committed.keys()) {
      if (this.committed.size <= this.capacity) break;
      this.committed.delete(name);
    }
  }

  forget(streams: readonly string[]): void {
    for (const name of streams) this.committed.delete(name);
  }

  /** Another process committed: any stream may have moved. */
  clear(): void {
    this.committed.clear();
  }
}

async function readStoredIds(db: PgQueryable, schema: string, givenIds: string[]): Promise<Map<string, StoredEvent>> {
  const stored = new Map<string, StoredEvent>();
  if (givenIds.length === 0) return stored;
  const found = await db.query<StoredEvent>(`SELECT ${eventColumns} FROM ${schema}.events WHERE id = ANY($1::uuid[])`, [givenIds]);
  // Number(): the caller's connection may parse int8 as strings (tests pass raw clients).
  for (const row of found.rows) stored.set(row.id, { ...row, revision: Number(row.revision), position: Number(row.position) });
  return stored;
}

/**
 * Plans the batch against `revisions` and `stored` (positions relative to the
 * head), then calls `append_planned`, which locks the head, verifies those
 * assumptions and writes. Returns undefined when an assumption no longer held
 * (nothing was written; the head lock is now held by this transaction).
 */
async function planAndWrite(
  db: PgQueryable,
  schema: string,
  channel: string,
  batch: readonly AppendRequest[],
  durability: 'durable' | 'relaxed',
  revisions: ReadonlyMap<string, number>,
  stored: ReadonlyMap<string, StoredEvent>,
  onPlanned: (plan: CommitPlan) => void = () => {},
): Promise<CommitResult | undefined> {
  const { streams, givenIds } = lookupKeys(batch);
  const plan = planCommit(batch, revisions, stored, 0);
  onPlanned(plan);
  const r = plan.rows;
  // A relaxed batch does not wait for the WAL flush: set_config(..., true) lasts until the end of the current
  // transaction (the statement's own on the fast path, the caller's on the locked path), whose commit reads it.
  const relaxed = durability === 'relaxed' ? ` FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed` : '';
  const { rows } = await db.query<{ head: number | null }>(
    `SELECT ${schema}.append_planned($1::text[], $2::bigint[], $3::uuid[], $4::uuid[], $5::bigint[], $6::uuid[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::int[], $12::json, $13::json, $14::text[], $15::bigint[], $16::bigint, $17::text) AS head${relaxed}`,
    [
      arrayLiteral(streams),
      arrayLiteral(streams.map((name) => revisions.get(name) ?? -1)),
      arrayLiteral(givenIds.filter((id) => stored.has(id))),
      arrayLiteral(givenIds.filter((id) => !stored.has(id))),
      arrayLiteral(r.map((x) => x.position)),
      arrayLiteral(r.map((x) => x.id)),
      arrayLiteral(r.map((x) => x.stream)),
      arrayLiteral(r.map((x) => x.category)),
      arrayLiteral(r.map((x) => x.revision)),
      arrayLiteral(r.map((x) => x.type)),
      arrayLiteral(r.map((x) => x.schemaVersion)),
      `[${r.map((x) => x.data).join(',')}]`,
      `[${r.map((x) => x.metadata).join(',')}]`,
      arrayLiteral([...plan.streamRevisions.keys()]),
      arrayLiteral([...plan.streamRevisions.values()]),
      r.length,
      channel,
    ],
  );
  const head = rows[0]!.head;
  if (head === null) return undefined;
  const offset = Number(head);
  // Shift what this plan wrote, including idempotent repeats of events written
  // earlier in the same batch; events stored before keep their positions.
  const written = new Set(r.map((x) => x.id));
  for (const o of plan.outcomes) {
    if (!o.ok) continue;
    for (const s of o.streams) for (const e of s.events) if (written.has(e.id)) e.position += offset;
  }
  return { outcomes: plan.outcomes, head: plan.head + offset, durability };
}

/**
 * The slow path: plans and writes one batch under the head lock, inside a
 * transaction the caller opened. Exported so tests can hold transactions open
 * at will; {@link commitBatch} is the normal path.
 */
export async function appendInTransaction(
  db: PgQueryable,
  schema: string,
  channel: string,
  batch: readonly AppendRequest[],
  durability: 'durable' | 'relaxed',
  onPlanned?: (plan: CommitPlan) => void,
): Promise<CommitResult> {
  const { streams, givenIds } = lookupKeys(batch);
  // Lock the head row, then read the streams' revisions in a new statement
  // (see lock_head: in READ COMMITTED, revisions read by the statement that
  // waited for the lock would predate the previous writer's commit).
  const locked = await db.query<{ name: string | null; revision: number | null }>(`SELECT name, revision FROM ${schema}.lock_head($1::text[])`, [streams]);
  const revisions = new Map<string, number>();
  for (const row of locked.rows) if (row.name !== null) revisions.set(row.name, Number(row.revision));
  const stored = await readStoredIds(db, schema, givenIds);
  const result = await planAndWrite(db, schema, channel, batch, durability, revisions, stored, onPlanned);
  // Impossible while we hold the lock; a broken invariant must not pass silently.
  if (!result) throw new Error('sinho: append_planned rejected assumptions read under the head lock');
  return result;
}

/**
 * One group commit, planned before the lock is taken.
 *
 * The head row lock is held from the moment it is granted until the commit has
 * flushed, and every other writer waits for it, so the fast path keeps that
 * window to one statement plus the flush: (1) take the touched streams'
 * revisions from what this process knows ({@link RevisionGuesses}), reading
 * only the unknown ones, and the caller-given ids, without locking and outside
 * any transaction, (2) plan with {@link planCommit} (positions relative to the
 * head), (3) one `append_planned` statement, which is its own transaction: it
 * locks the head, verifies that nothing the plan assumed has changed, writes,
 * and commits. A process that is the only writer of its streams knows them all
 * after their first commit, so a batch is one round trip; with BEGIN and
 * COMMIT as statements of their own, and the revisions read each time, it was
 * four. When an assumption changed (another writer touched the same streams),
 * nothing was written and the batch is planned again under the lock in a
 * transaction ({@link appendInTransaction}). Either way the outcome is exactly
 * what planning under the lock would have given.
 *
 * PostgreSQL's default `synchronous_commit = on` makes the commit wait for the WAL
 * flush (durable); a relaxed batch turns it off in `append_planned`'s statement,
 * for that transaction only.
 */
export async function commitBatch(
  pool: PgPool,
  schema: string,
  channel: string,
  batch: readonly AppendRequest[],
  durability: 'durable' | 'relaxed',
  guesses: RevisionGuesses,
): Promise<CommitResult> {
  const owner = {};
  let planned: ReadonlyMap<string, number> | undefined;
  const onPlanned = (plan: CommitPlan): void => void (planned = plan.streamRevisions);
  try {
    const { streams, givenIds } = lookupKeys(batch);
    const { revisions, unknown } = guesses.guess(streams);
    const [current, stored] = await Promise.all([
      unknown.length === 0 ? undefined : pool.query<{ name: string; revision: number }>(`SELECT name, revision FROM ${schema}.streams WHERE name = ANY($1::text[])`, [unknown]),
      readStoredIds(pool, schema, givenIds),
    ]);
    for (const row of current?.rows ?? []) revisions.set(row.name, Number(row.revision));
    // A batch of this process may have planned or committed one of these streams while the read was on its way.
    for (const [name, revision] of guesses.guess(unknown).revisions) revisions.set(name, Math.max(revision, revisions.get(name) ?? -1));
    const fast = await planAndWrite(pool, schema, channel, batch, durability, revisions, stored, (plan) => {
      onPlanned(plan);
      guesses.plan(owner, plan.streamRevisions);
    });
    if (fast) {
      guesses.commit(planned!);
      return fast;
    }
    guesses.forget(streams);
    const result = await inTransaction(pool, (client) => appendInTransaction(client, schema, channel, batch, durability, onPlanned));
    guesses.commit(planned!);
    return result;
  } finally {
    guesses.release(owner);
  }
}
