import { SinhoError } from '../../errors.js';
import type { DeferredRow, GroupCommit, GroupRow, SubscriptionStorage } from '../../subscription/storage.js';
import { inTransaction, type PgPool } from './pg-types.js';

/** The database's clock in epoch milliseconds (statement time, the same for every use in one statement). */
const NOW_MS = `(extract(epoch from statement_timestamp()) * 1000)::bigint`;

interface GroupRecord {
  name: string;
  position: number;
  partitions: number;
  created_at: Date;
}

interface DeferredRecord {
  position: number;
  kind: DeferredRow['kind'];
  event_id: string;
  key: string;
  state: DeferredRow['state'];
  attempts: number;
  due_at: number | null;
  errors: DeferredRow['errors'];
  updated_at: Date;
}

const leaseLost = (group: string): SinhoError =>
  new SinhoError('GROUP_LEASE_LOST', `This instance no longer holds consumer group "${group}" (another instance took it over); nothing was committed.`, { group });

/** Consumer-group state in the log's schema, so it commits with a projection's writes. */
export function createPostgresSubscriptionStorage(pool: PgPool, schema: string): SubscriptionStorage {
  const toGroup = (r: GroupRecord): GroupRow => ({ name: r.name, position: Number(r.position), partitions: r.partitions, createdAt: r.created_at.toISOString() });
  const transaction = <T>(work: (q: PgPool['query']) => Promise<T>): Promise<T> => inTransaction(pool, (client) => work(client.query.bind(client) as PgPool['query']));
  return {
    supportsStatements: true,
    ensureGroup: async (name, initialPosition, partitions = 0) => {
      await pool.query(`INSERT INTO ${schema}.groups (name, position, partitions) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING`, [name, initialPosition, partitions]);
      const { rows } = await pool.query<GroupRecord>(`SELECT name, position, partitions, created_at FROM ${schema}.groups WHERE name = $1`, [name]);
      return toGroup(rows[0]!);
    },
    getGroup: async (name) => {
      const { rows } = await pool.query<GroupRecord>(`SELECT name, position, partitions, created_at FROM ${schema}.groups WHERE name = $1`, [name]);
      return rows[0] && toGroup(rows[0]);
    },
    listGroups: async () => {
      const { rows } = await pool.query<GroupRecord>(`SELECT name, position, partitions, created_at FROM ${schema}.groups ORDER BY name`);
      return rows.map(toGroup);
    },
    deleteGroup: (name) =>
      transaction(async (q) => {
        await q(`DELETE FROM ${schema}.group_deferred WHERE group_name = $1`, [name]);
        await q(`DELETE FROM ${schema}.group_processed WHERE group_name = $1`, [name]);
        await q(`DELETE FROM ${schema}.group_members WHERE group_name = $1`, [name]);
        await q(`DELETE FROM ${schema}.groups WHERE name = $1`, [name]);
      }),
    loadDeferred: async (group) => {
      const { rows } = await pool.query<DeferredRecord>(
        `SELECT position, kind, event_id::text AS event_id, key, state, attempts, due_at, errors, updated_at FROM ${schema}.group_deferred WHERE group_name = $1 ORDER BY position`,
        [group],
      );
      return rows.map((r) => ({
        position: Number(r.position),
        kind: r.kind,
        eventId: r.event_id,
        key: r.key,
        state: r.state,
        attempts: r.attempts,
        dueAt: r.due_at === null ? null : Number(r.due_at),
        errors: r.errors,
        updatedAt: r.updated_at.toISOString(),
      }));
    },
    // Lease and membership times come from the database's clock, so that
    // nodes whose clocks disagree still agree on when a lease ran out.
    acquireLease: async (group, owner, leaseMs) => {
      const r = await pool.query(
        `UPDATE ${schema}.groups SET owner = $2, lease_until = ${NOW_MS} + $3
         WHERE name = $1 AND (owner IS NULL OR owner = $2 OR lease_until < ${NOW_MS})`,
        [group, owner, leaseMs],
      );
      return r.rowCount === 1;
    },
    heartbeat: async (group, member, ttlMs) => {
      // One statement, so it needs no transaction and works through a pooler.
      const { rows } = await pool.query<{ member: string }>(
        `WITH beat AS (
           INSERT INTO ${schema}.group_members (group_name, member, until) VALUES ($1, $2, ${NOW_MS} + $3)
           ON CONFLICT (group_name, member) DO UPDATE SET until = EXCLUDED.until
         ), expired AS (
           DELETE FROM ${schema}.group_members WHERE group_name = $1 AND until < ${NOW_MS} AND member <> $2
         )
         SELECT member FROM (
           SELECT member FROM ${schema}.group_members WHERE group_name = $1 AND until >= ${NOW_MS} AND member <> $2
           UNION SELECT $2::text
         ) live ORDER BY member COLLATE "C"`,
        [group, member, ttlMs],
      );
      return rows.map((r) => r.member);
    },
    leave: async (group, member) => {
      await pool.query(`DELETE FROM ${schema}.group_members WHERE group_name = $1 AND member = $2`, [group, member]);
    },
    releaseLease: async (group, owner) => {
      await pool.query(`UPDATE ${schema}.groups SET owner = NULL, lease_until = 0 WHERE name = $1 AND owner = $2`, [group, owner]);
    },
    commitGroup: async (group, c: GroupCommit, owner: string) => {
      if (c.position !== undefined && c.upserts.length === 0 && c.deletes.length === 0 && c.processed.length === 0 && c.statements.length === 0) {
        // The common checkpoint moves the position only: one statement, its own transaction, instead of five round
        // trips (BEGIN, SELECT ... FOR UPDATE, UPDATE, DELETE, COMMIT). The UPDATE locks the group row and checks the
        // lease under that lock (READ COMMITTED re-checks the WHERE against a row a concurrent takeover changed), and
        // the DELETE runs only if it matched, so a fenced instance writes nothing, as in the transaction below.
        const { rows } = await pool.query<{ fenced: boolean }>(
          `WITH moved AS (
             UPDATE ${schema}.groups SET position = $2, updated_at = now() WHERE name = $1 AND owner = $3 RETURNING 1
           ), cleaned AS (
             DELETE FROM ${schema}.group_processed WHERE group_name = $1 AND position <= $2 AND EXISTS (SELECT 1 FROM moved)
           )
           SELECT NOT EXISTS (SELECT 1 FROM moved) AS fenced`,
          [group, c.position, owner],
        );
        if (rows[0]?.fenced) throw leaseLost(group);
        return;
      }
      return transaction(async (q) => {
        // Fencing: lock the group row and check the lease before writing anything.
        const lease = await q<{ owner: string | null }>(`SELECT owner FROM ${schema}.groups WHERE name = $1 FOR UPDATE`, [group]);
        if (lease.rows[0]?.owner !== owner) throw leaseLost(group);
        if (c.upserts.length > 0) {
          // Later upserts of the same row win: keep the last one per key.
          const last = new Map<string, DeferredRow>();
          for (const r of c.upserts) last.set(`${r.kind}:${r.position}`, r);
          const rows = [...last.values()];
          await q(
            `INSERT INTO ${schema}.group_deferred (group_name, kind, position, event_id, key, state, attempts, due_at, errors, updated_at)
             SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::text[], $7::int[], $8::bigint[], $9::jsonb[], $10::timestamptz[])
             ON CONFLICT (group_name, kind, position) DO UPDATE SET
               event_id = EXCLUDED.event_id, key = EXCLUDED.key, state = EXCLUDED.state, attempts = EXCLUDED.attempts,
               due_at = EXCLUDED.due_at, errors = EXCLUDED.errors, updated_at = EXCLUDED.updated_at`,
            [
              group,
              rows.map((r) => r.kind),
              rows.map((r) => r.position),
              rows.map((r) => r.eventId),
              rows.map((r) => r.key),
              rows.map((r) => r.state),
              rows.map((r) => r.attempts),
              rows.map((r) => r.dueAt),
              rows.map((r) => JSON.stringify(r.errors)),
              rows.map((r) => r.updatedAt),
            ],
          );
        }
        if (c.deletes.length > 0) {
          await q(`DELETE FROM ${schema}.group_deferred d USING unnest($2::text[], $3::bigint[]) AS x(kind, position) WHERE d.group_name = $1 AND d.kind = x.kind AND d.position = x.position`, [
            group,
            c.deletes.map((d) => d.kind),
            c.deletes.map((d) => d.position),
          ]);
        }
        if (c.processed.length > 0) {
          await q(`INSERT INTO ${schema}.group_processed (group_name, event_id, position) SELECT $1, * FROM unnest($2::uuid[], $3::bigint[]) ON CONFLICT DO NOTHING`, [
            group,
            c.processed.map((p) => p.eventId),
            c.processed.map((p) => p.position),
          ]);
        }
        for (const st of c.statements) await q(st.sql, st.params);
        if (c.position !== undefined) {
          await q(`UPDATE ${schema}.groups SET position = $2, updated_at = now() WHERE name = $1`, [group, c.position]);
          await q(`DELETE FROM ${schema}.group_processed WHERE group_name = $1 AND position <= $2`, [group, c.position]);
        }
      });
    },
    highestProcessed: async (group) => {
      const { rows } = await pool.query<{ p: number | null }>(`SELECT MAX(position) AS p FROM ${schema}.group_processed WHERE group_name = $1`, [group]);
      return Number(rows[0]?.p ?? 0);
    },
    liveProjectionVersion: async (name) => {
      const { rows } = await pool.query<{ live_version: number }>(`SELECT live_version FROM ${schema}.projections WHERE name = $1`, [name]);
      return rows[0]?.live_version;
    },
    switchProjection: async (name, from, to) => {
      const r =
        from === undefined
          ? await pool.query(`INSERT INTO ${schema}.projections (name, live_version) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, [name, to])
          : await pool.query(`UPDATE ${schema}.projections SET live_version = $2, switched_at = now() WHERE name = $1 AND live_version = $3`, [name, to, from]);
      return r.rowCount === 1;
    },
    runStatements: (list) =>
      transaction(async (q) => {
        for (const st of list) await q(st.sql, st.params);
      }),
    processedIds: async (group, ids) => {
      const { rows } = await pool.query<{ event_id: string }>(`SELECT event_id::text AS event_id FROM ${schema}.group_processed WHERE group_name = $1 AND event_id = ANY($2::uuid[])`, [group, ids]);
      return new Set(rows.map((r) => r.event_id));
    },
    resetGroup: (group, position) =>
      transaction(async (q) => {
        await q(`UPDATE ${schema}.groups SET position = $2, updated_at = now() WHERE name = $1`, [group, position]);
        await q(`DELETE FROM ${schema}.group_deferred WHERE group_name = $1 AND state <> 'dead'`, [group]);
        await q(`DELETE FROM ${schema}.group_processed WHERE group_name = $1`, [group]);
      }),
  };
}
