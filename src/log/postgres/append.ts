import { lookupKeys, planCommit } from '../plan.js';
import type { AppendRequest, CommitResult, StoredEvent } from '../storage.js';
import type { PgPool, PgQueryable } from './pg-types.js';
import { eventColumns } from './read.js';

/**
 * Plans and writes one batch inside a transaction the caller opened. Exported
 * so tests can hold transactions open at will; {@link commitBatch} is the
 * normal path.
 *
 * Round trips: (1) lock the head row, (2) read the touched streams' revisions,
 * (3) only when callers gave event ids, look those up, (4) insert events,
 * upsert streams, advance the head and `pg_notify` in one statement.
 */
export async function appendInTransaction(
  db: PgQueryable,
  schema: string,
  channel: string,
  batch: readonly AppendRequest[],
  durability: 'durable' | 'relaxed',
): Promise<CommitResult> {
  const { streams, givenIds } = lookupKeys(batch);
  // Two statements on purpose. In READ COMMITTED a statement's snapshot is
  // taken when it starts: had the streams been read in the statement that
  // waits for the head lock, they would be read as of before the previous
  // writer committed (only the locked row itself is re-read), and this batch
  // would plan revisions that writer already used.
  const locked = await db.query<{ position: number }>(`SELECT position FROM ${schema}.head WHERE singleton FOR UPDATE`);
  // Number(): the caller's connection may parse int8 as strings (tests pass raw clients).
  const head = Number(locked.rows[0]!.position);
  const current = await db.query<{ name: string; revision: number }>(`SELECT name, revision FROM ${schema}.streams WHERE name = ANY($1::text[])`, [streams]);
  const revisions = new Map<string, number>();
  for (const row of current.rows) revisions.set(row.name, Number(row.revision));
  const stored = new Map<string, StoredEvent>();
  if (givenIds.length > 0) {
    const found = await db.query<StoredEvent>(`SELECT ${eventColumns} FROM ${schema}.events WHERE id = ANY($1::uuid[])`, [givenIds]);
    for (const row of found.rows) stored.set(row.id, { ...row, revision: Number(row.revision), position: Number(row.position) });
  }
  const plan = planCommit(batch, revisions, stored, head);
  if (plan.rows.length > 0) {
    const r = plan.rows;
    await db.query(
      `WITH e AS (
         INSERT INTO ${schema}.events (position, id, stream, category, revision, type, schema_version, data, metadata)
         SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::int[], $8::jsonb[], $9::jsonb[])
       ), s AS (
         INSERT INTO ${schema}.streams (name, revision) SELECT * FROM unnest($10::text[], $11::bigint[])
         ON CONFLICT (name) DO UPDATE SET revision = EXCLUDED.revision
       )
       UPDATE ${schema}.head SET position = $12 WHERE singleton RETURNING pg_notify($13, position::text)`,
      [
        r.map((x) => x.position),
        r.map((x) => x.id),
        r.map((x) => x.stream),
        r.map((x) => x.category),
        r.map((x) => x.revision),
        r.map((x) => x.type),
        r.map((x) => x.schemaVersion),
        r.map((x) => x.data),
        r.map((x) => x.metadata),
        [...plan.streamRevisions.keys()],
        [...plan.streamRevisions.values()],
        plan.head,
        channel,
      ],
    );
  }
  return { outcomes: plan.outcomes, head: plan.head, durability };
}

/**
 * One group commit as one transaction. PostgreSQL's default
 * `synchronous_commit = on` makes COMMIT wait for the WAL flush (durable);
 * a relaxed batch sets `synchronous_commit = off` for that transaction only.
 */
export async function commitBatch(
  pool: PgPool,
  schema: string,
  channel: string,
  batch: readonly AppendRequest[],
  durability: 'durable' | 'relaxed',
): Promise<CommitResult> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query(durability === 'relaxed' ? 'BEGIN; SET LOCAL synchronous_commit TO OFF' : 'BEGIN');
    try {
      const result = await appendInTransaction(client, schema, channel, batch, durability);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch((e: Error) => (broken = e));
      throw error;
    }
  } finally {
    client.release(broken);
  }
}
