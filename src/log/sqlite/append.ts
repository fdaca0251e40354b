import type Database from 'better-sqlite3';
import { lookupKeys, planCommit } from '../plan.js';
import type { AppendRequest, CommitResult, StoredEvent } from '../storage.js';
import { withoutFsync } from './file.js';
import { EVENT_COLUMNS } from './read.js';
import { MARK_EVERY } from './schema.js';

export interface AppendStatements {
  head: Database.Statement<[], { position: number }>;
  streamRevisions: Database.Statement<[string], { name: string; revision: number; last_position: number | null }>;
  eventsById: Database.Statement<[string], StoredEvent>;
  insertEvent: Database.Statement<unknown[]>;
  upsertStream: Database.Statement<[string, number, number]>;
  insertMark: Database.Statement<[string, number, number]>;
  setHead: Database.Statement<[number]>;
}

export function prepareAppendStatements(db: Database.Database): AppendStatements {
  return {
    head: db.prepare('SELECT position FROM sinho_head WHERE singleton = 1'),
    streamRevisions: db.prepare('SELECT name, revision, last_position FROM sinho_streams WHERE name IN (SELECT value FROM json_each(?))'),
    eventsById: db.prepare(`SELECT ${EVENT_COLUMNS} FROM sinho_events WHERE id IN (SELECT value FROM json_each(?))`),
    insertEvent: db.prepare(
      'INSERT INTO sinho_events (position, id, stream, category, revision, type, schema_version, data, metadata, recorded_at, prev_position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    upsertStream: db.prepare(
      'INSERT INTO sinho_streams (name, revision, last_position) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, last_position = excluded.last_position',
    ),
    insertMark: db.prepare('INSERT INTO sinho_stream_marks (stream, revision, position) VALUES (?, ?, ?)'),
    setHead: db.prepare('UPDATE sinho_head SET position = ? WHERE singleton = 1'),
  };
}

/**
 * One group commit as one `BEGIN IMMEDIATE` transaction (the write lock is
 * taken before reading the head, so several processes sharing the file stay
 * serialised). With `synchronous=FULL` in WAL mode the commit fsyncs the WAL
 * once for the whole batch; a relaxed batch switches to `NORMAL` for that one
 * commit, which skips the fsync but keeps the database consistent.
 */
export function commitBatch(
  db: Database.Database,
  s: AppendStatements,
  batch: readonly AppendRequest[],
  durability: 'durable' | 'relaxed',
): CommitResult {
  const run = db.transaction((): CommitResult => {
    const head = s.head.get()!.position;
    const { streams, givenIds } = lookupKeys(batch);
    const revisions = new Map<string, number>();
    // Each event points to its stream's previous one (see schema.ts, migration 5).
    const lastPositions = new Map<string, number | null>();
    for (const row of s.streamRevisions.all(JSON.stringify(streams))) {
      revisions.set(row.name, row.revision);
      lastPositions.set(row.name, row.last_position);
    }
    const stored = new Map<string, StoredEvent>();
    if (givenIds.length > 0) for (const row of s.eventsById.all(JSON.stringify(givenIds))) stored.set(row.id, row);
    const plan = planCommit(batch, revisions, stored, head);
    const recordedAt = Date.now();
    for (const r of plan.rows) {
      s.insertEvent.run(r.position, r.id, r.stream, r.category, r.revision, r.type, r.schemaVersion, r.data, r.metadata, recordedAt, lastPositions.get(r.stream) ?? null);
      lastPositions.set(r.stream, r.position);
      if (r.revision % MARK_EVERY === 0) s.insertMark.run(r.stream, r.revision, r.position);
    }
    for (const [name, revision] of plan.streamRevisions) s.upsertStream.run(name, revision, lastPositions.get(name)!);
    if (plan.head !== head) s.setHead.run(plan.head);
    return { outcomes: plan.outcomes, head: plan.head, durability };
  });
  return durability === 'relaxed' ? withoutFsync(db, () => run.immediate()) : run.immediate();
}
