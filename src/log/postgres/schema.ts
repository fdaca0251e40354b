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
        data           jsonb   NOT NULL,
        metadata       jsonb   NOT NULL,
        recorded_at    timestamptz NOT NULL DEFAULT now(),
        UNIQUE (stream, revision)
      );
      CREATE INDEX events_category ON ${s}.events (category, position);
      CREATE INDEX events_type ON ${s}.events (type, position);
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
