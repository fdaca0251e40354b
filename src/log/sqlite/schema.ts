/**
 * Numbered migrations of the SQLite adapter. Applied in order on open, each in
 * its own transaction, recorded in `sinho_migrations`. Never edit a migration
 * that has been merged: append a new one.
 */
import type Database from 'better-sqlite3';

/**
 * Every MARK_EVERY-th revision of a stream (0, 64, 128, …) has a row in sinho_stream_marks (migration 5). Files
 * hold marks at this spacing, so changing it needs a migration that rewrites them.
 */
export const MARK_EVERY = 64;

export const MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'event log',
    sql: `
      CREATE TABLE sinho_events (
        position       INTEGER PRIMARY KEY,
        id             TEXT    NOT NULL UNIQUE,
        stream         TEXT    NOT NULL,
        category       TEXT    NOT NULL,
        revision       INTEGER NOT NULL,
        type           TEXT    NOT NULL,
        schema_version INTEGER NOT NULL,
        data           TEXT    NOT NULL,
        metadata       TEXT    NOT NULL,
        recorded_at    INTEGER NOT NULL
      );
      CREATE UNIQUE INDEX sinho_events_stream_revision ON sinho_events (stream, revision);
      CREATE INDEX sinho_events_category ON sinho_events (category, position);
      CREATE INDEX sinho_events_type ON sinho_events (type, position);
      CREATE INDEX sinho_events_recorded_at ON sinho_events (recorded_at);
      CREATE TABLE sinho_streams (
        name     TEXT PRIMARY KEY,
        revision INTEGER NOT NULL
      ) WITHOUT ROWID;
      -- The head is kept in its own row rather than MAX(position): truncating a
      -- stream can delete the newest event, and positions must never be reused.
      CREATE TABLE sinho_head (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        position  INTEGER NOT NULL
      );
      INSERT INTO sinho_head (singleton, position) VALUES (1, 0);
      CREATE TABLE sinho_snapshots (
        stream     TEXT    NOT NULL,
        key        TEXT    NOT NULL,
        revision   INTEGER NOT NULL,
        state      TEXT    NOT NULL,
        created_at TEXT    NOT NULL,
        PRIMARY KEY (stream, key)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 2,
    name: 'consumer groups',
    sql: `
      CREATE TABLE sinho_groups (
        name        TEXT    PRIMARY KEY,
        position    INTEGER NOT NULL,
        owner       TEXT,
        lease_until INTEGER NOT NULL DEFAULT 0,
        created_at TEXT    NOT NULL,
        updated_at TEXT    NOT NULL
      ) WITHOUT ROWID;
      CREATE TABLE sinho_group_deferred (
        group_name TEXT    NOT NULL,
        kind       TEXT    NOT NULL CHECK (kind IN ('ordered', 'scheduled')),
        position   INTEGER NOT NULL,
        event_id   TEXT    NOT NULL,
        key        TEXT    NOT NULL,
        state      TEXT    NOT NULL CHECK (state IN ('retry', 'waiting', 'dead', 'scheduled')),
        attempts   INTEGER NOT NULL,
        due_at     INTEGER,
        errors     TEXT    NOT NULL,
        updated_at TEXT    NOT NULL,
        PRIMARY KEY (group_name, kind, position)
      ) WITHOUT ROWID;
      CREATE TABLE sinho_group_processed (
        group_name TEXT    NOT NULL,
        event_id   TEXT    NOT NULL,
        position   INTEGER NOT NULL,
        PRIMARY KEY (group_name, event_id)
      ) WITHOUT ROWID;
      CREATE INDEX sinho_group_processed_position ON sinho_group_processed (group_name, position);
    `,
  },
  {
    version: 3,
    name: 'partitioned consumer groups',
    sql: `
      ALTER TABLE sinho_groups ADD COLUMN partitions INTEGER NOT NULL DEFAULT 0;
      CREATE TABLE sinho_group_members (
        group_name TEXT    NOT NULL,
        member     TEXT    NOT NULL,
        until      INTEGER NOT NULL,
        PRIMARY KEY (group_name, member)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 4,
    name: 'projection versions',
    sql: `
      CREATE TABLE sinho_projections (
        name         TEXT    PRIMARY KEY,
        live_version INTEGER NOT NULL,
        switched_at  TEXT    NOT NULL
      ) WITHOUT ROWID;
    `,
  },
  {
    // A B-tree index on (stream, revision) gets one entry per event at the tail of its stream: a commit of 256
    // events over 256 streams dirtied ~200 index pages, each written whole to the WAL (4 KiB for a ~30-byte
    // entry), and that was ~70% of the WAL bytes and ~20% of the CPU of an append. Instead, each event points to
    // its stream's previous event (a rowid), the stream row knows its newest event, and every 64th revision
    // has a mark: a stream page is a walk down the chain from the nearest mark (see read.ts), and a commit
    // writes the stream rows it writes anyway plus one mark per 64 events.
    version: 5,
    name: 'stream chains',
    sql: `
      ALTER TABLE sinho_events ADD COLUMN prev_position INTEGER;
      ALTER TABLE sinho_streams ADD COLUMN last_position INTEGER;
      ALTER TABLE sinho_streams ADD COLUMN first_revision INTEGER NOT NULL DEFAULT 0;
      CREATE TABLE sinho_stream_marks (
        stream   TEXT    NOT NULL,
        revision INTEGER NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (stream, revision)
      ) WITHOUT ROWID;
      UPDATE sinho_events SET prev_position =
        (SELECT p.position FROM sinho_events p WHERE p.stream = sinho_events.stream AND p.revision = sinho_events.revision - 1);
      UPDATE sinho_streams SET
        last_position = (SELECT e.position FROM sinho_events e WHERE e.stream = sinho_streams.name AND e.revision = sinho_streams.revision),
        first_revision = COALESCE((SELECT MIN(e.revision) FROM sinho_events e WHERE e.stream = sinho_streams.name), sinho_streams.revision + 1);
      INSERT INTO sinho_stream_marks (stream, revision, position)
        SELECT stream, revision, position FROM sinho_events WHERE revision % ${MARK_EVERY} = 0;
      DROP INDEX sinho_events_stream_revision;
    `,
  },
];

export function migrate(db: Database.Database): void {
  db.exec('CREATE TABLE IF NOT EXISTS sinho_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)');
  const applied = new Set((db.prepare('SELECT version FROM sinho_migrations').all() as { version: number }[]).map((r) => r.version));
  for (const m of MIGRATIONS) {
    if (applied.has(m.version)) continue;
    db.transaction(() => {
      // Re-check inside the write lock: another process may have migrated meanwhile.
      if (db.prepare('SELECT 1 FROM sinho_migrations WHERE version = ?').get(m.version)) return;
      db.exec(m.sql);
      db.prepare('INSERT INTO sinho_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, new Date().toISOString());
    }).immediate();
  }
}
