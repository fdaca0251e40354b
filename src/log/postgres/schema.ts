/**
 * Numbered migrations of the PostgreSQL adapter, applied on open inside one
 * transaction under a transaction-scoped advisory lock (safe through a
 * connection pooler, and when several processes open the log at once).
 * Never edit a migration that has been merged: append a new one.
 */
import type { PgQueryable } from './pg-types.js';

export const MIGRATIONS: readonly { version: number; name: string; sql: (schema: string) => string }[] = [
  {
    version: 1,
    name: 'event log',
    sql: (s) => `
      CREATE TABLE ${s}.events (
        position       bigint  PRIMARY KEY,
        id             uuid    NOT NULL UNIQUE,
        stream         text    NOT NULL,
        category       text    NOT NULL,
        revision       bigint  NOT NULL,
        type           text    NOT NULL,
        schema_version integer NOT NULL,
        -- json, not jsonb: validated on insert but stored as written, which is
        -- cheaper to write and returns exactly the text that was appended.
        data           json    NOT NULL,
        metadata       json    NOT NULL,
        recorded_at    timestamptz NOT NULL DEFAULT now(),
        UNIQUE (stream, revision)
      );
      CREATE INDEX events_category ON ${s}.events (category, position);
      CREATE INDEX events_recorded_at ON ${s}.events (recorded_at);
      CREATE TABLE ${s}.streams (
        name     text   PRIMARY KEY,
        revision bigint NOT NULL
      );
      -- One row holding the last committed position. Every append locks it
      -- first (SELECT ... FOR UPDATE) and updates it in the same transaction,
      -- which serialises position assignment with commit: positions become
      -- visible strictly in order, with no gaps even when a writer rolls back
      -- or is killed. See docs/log.md, "Gap-free reading on PostgreSQL".
      CREATE TABLE ${s}.head (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        position  bigint  NOT NULL
      );
      INSERT INTO ${s}.head (singleton, position) VALUES (true, 0);
      -- Locks the head and reads the revisions of the given streams in one
      -- round trip (the lock is held until commit, so every round trip saved
      -- here is time other writers do not wait). A VOLATILE function takes a
      -- new snapshot per statement, so the revisions are read after the lock
      -- is granted and include the previous writer's commit.
      CREATE FUNCTION ${s}.lock_head(stream_names text[])
      RETURNS TABLE (head bigint, name text, revision bigint)
      LANGUAGE plpgsql VOLATILE AS $fn$
      DECLARE
        current_head bigint;
      BEGIN
        SELECT h.position INTO current_head FROM ${s}.head h WHERE h.singleton FOR UPDATE;
        RETURN QUERY SELECT current_head, NULL::text, NULL::bigint
          UNION ALL
          SELECT current_head, st.name, st.revision FROM ${s}.streams st WHERE st.name = ANY(stream_names);
      END
      $fn$;
      -- The fast path of a group commit (see append.ts): the batch was planned
      -- before taking the lock, against the stream revisions and event ids
      -- passed as "assumed". Under the lock, those assumptions are verified;
      -- if any changed, nothing is written and NULL is returned (the caller
      -- re-plans under the lock it now holds). Otherwise the planned rows are
      -- written at positions after the head, in this single round trip.
      -- Event data and metadata arrive as one JSON array each rather than
      -- json[]: joining JSON texts needs no escaping on the client, and the
      -- server parses each batch once.
      CREATE FUNCTION ${s}.append_planned(
        assumed_names text[], assumed_revisions bigint[], present_ids uuid[], absent_ids uuid[],
        rel_positions bigint[], ids uuid[], streams text[], categories text[], revisions bigint[],
        types text[], schema_versions integer[], datas json, metadatas json,
        new_names text[], new_revisions bigint[], event_count bigint, channel text)
      RETURNS bigint
      LANGUAGE plpgsql VOLATILE AS $fn$
      DECLARE
        current_head bigint;
      BEGIN
        SELECT h.position INTO current_head FROM ${s}.head h WHERE h.singleton FOR UPDATE;
        IF EXISTS (
          SELECT 1 FROM unnest(assumed_names, assumed_revisions) AS a(name, revision)
          LEFT JOIN ${s}.streams st ON st.name = a.name
          WHERE COALESCE(st.revision, -1) <> a.revision
        ) THEN
          RETURN NULL;
        END IF;
        IF cardinality(present_ids) > 0
           AND (SELECT count(*) FROM ${s}.events e WHERE e.id = ANY(present_ids)) <> cardinality(present_ids) THEN
          RETURN NULL;
        END IF;
        IF cardinality(absent_ids) > 0 AND EXISTS (SELECT 1 FROM ${s}.events e WHERE e.id = ANY(absent_ids)) THEN
          RETURN NULL;
        END IF;
        IF event_count > 0 THEN
          INSERT INTO ${s}.events (position, id, stream, category, revision, type, schema_version, data, metadata)
          SELECT current_head + x.p, x.i, x.st, x.c, x.r, x.t, x.v, d.value, m.value
          FROM unnest(rel_positions, ids, streams, categories, revisions, types, schema_versions) WITH ORDINALITY AS x(p, i, st, c, r, t, v, n)
          JOIN json_array_elements(datas) WITH ORDINALITY AS d(value, n) USING (n)
          JOIN json_array_elements(metadatas) WITH ORDINALITY AS m(value, n) USING (n);
          INSERT INTO ${s}.streams (name, revision) SELECT * FROM unnest(new_names, new_revisions)
          ON CONFLICT (name) DO UPDATE SET revision = EXCLUDED.revision;
          UPDATE ${s}.head SET position = current_head + event_count WHERE singleton;
          PERFORM pg_notify(channel, (current_head + event_count)::text);
        END IF;
        RETURN current_head;
      END
      $fn$;
      CREATE TABLE ${s}.snapshots (
        stream     text   NOT NULL,
        key        text   NOT NULL,
        revision   bigint NOT NULL,
        state      jsonb  NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (stream, key)
      );
    `,
  },
  {
    version: 2,
    name: 'consumer groups',
    sql: (s) => `
      CREATE TABLE ${s}.groups (
        name        text        PRIMARY KEY,
        position    bigint      NOT NULL,
        owner       text,
        lease_until bigint      NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE ${s}.group_deferred (
        group_name text    NOT NULL,
        kind       text    NOT NULL CHECK (kind IN ('ordered', 'scheduled')),
        position   bigint  NOT NULL,
        event_id   uuid    NOT NULL,
        key        text    NOT NULL,
        state      text    NOT NULL CHECK (state IN ('retry', 'waiting', 'dead', 'scheduled')),
        attempts   integer NOT NULL,
        due_at     bigint,
        errors     jsonb   NOT NULL,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (group_name, kind, position)
      );
      CREATE TABLE ${s}.group_processed (
        group_name text   NOT NULL,
        event_id   uuid   NOT NULL,
        position   bigint NOT NULL,
        PRIMARY KEY (group_name, event_id)
      );
      CREATE INDEX group_processed_position ON ${s}.group_processed (group_name, position);
    `,
  },
  {
    version: 3,
    name: 'partitioned consumer groups',
    sql: (s) => `
      ALTER TABLE ${s}.groups ADD COLUMN partitions integer NOT NULL DEFAULT 0;
      CREATE TABLE ${s}.group_members (
        group_name text   NOT NULL,
        member     text   NOT NULL,
        until      bigint NOT NULL,
        PRIMARY KEY (group_name, member)
      );
    `,
  },
  {
    version: 4,
    name: 'projection versions',
    sql: (s) => `
      CREATE TABLE ${s}.projections (
        name         text        PRIMARY KEY,
        live_version integer     NOT NULL,
        switched_at  timestamptz NOT NULL DEFAULT now()
      );
    `,
  },
];

export async function migrate(db: PgQueryable, schema: string): Promise<void> {
  await db.query('BEGIN');
  try {
    await db.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`sinho:migrate:${schema}`]);
    await db.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await db.query(`CREATE TABLE IF NOT EXISTS ${schema}.migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const { rows } = await db.query<{ version: number }>(`SELECT version FROM ${schema}.migrations`);
    const applied = new Set(rows.map((r) => r.version));
    for (const m of MIGRATIONS) {
      if (applied.has(m.version)) continue;
      await db.query(m.sql(schema));
      await db.query(`INSERT INTO ${schema}.migrations (version, name) VALUES ($1, $2)`, [m.version, m.name]);
    }
    await db.query('COMMIT');
  } catch (error) {
    await db.query('ROLLBACK').catch(() => {});
    throw error;
  }
}
