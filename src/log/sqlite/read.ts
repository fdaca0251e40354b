import type Database from 'better-sqlite3';
import type { AllPageQuery, StoredEvent, StreamPageQuery } from '../storage.js';

export const EVENT_COLUMNS = 'id, stream, type, schema_version AS schemaVersion, data, metadata, revision, position';

export interface ReadStatements {
  streamForwards: Database.Statement<[string, number, number], StoredEvent>;
  streamBackwards: Database.Statement<[string, number, number], StoredEvent>;
  all: Database.Statement<[number, number, number], StoredEvent>;
  byId: Database.Statement<[string], StoredEvent>;
  streamRevision: Database.Statement<[string], { revision: number }>;
  head: Database.Statement<[], { position: number }>;
  readSnapshot: Database.Statement<[string, string], { revision: number; state: string }>;
  writeSnapshot: Database.Statement<[string, string, number, string, string]>;
  truncate: Database.Statement<[string, number]>;
  positionAt: Database.Statement<[number], { position: number | null }>;
}

export function prepareReadStatements(db: Database.Database): ReadStatements {
  return {
    streamForwards: db.prepare(`SELECT ${EVENT_COLUMNS} FROM sinho_events WHERE stream = ? AND revision >= ? ORDER BY revision LIMIT ?`),
    streamBackwards: db.prepare(`SELECT ${EVENT_COLUMNS} FROM sinho_events WHERE stream = ? AND revision <= ? ORDER BY revision DESC LIMIT ?`),
    all: db.prepare(`SELECT ${EVENT_COLUMNS} FROM sinho_events WHERE position >= ? AND position <= ? ORDER BY position LIMIT ?`),
    byId: db.prepare(`SELECT ${EVENT_COLUMNS} FROM sinho_events WHERE id IN (SELECT value FROM json_each(?)) ORDER BY position`),
    streamRevision: db.prepare('SELECT revision FROM sinho_streams WHERE name = ?'),
    head: db.prepare('SELECT position FROM sinho_head WHERE singleton = 1'),
    readSnapshot: db.prepare('SELECT revision, state FROM sinho_snapshots WHERE stream = ? AND key = ?'),
    writeSnapshot: db.prepare(
      'INSERT INTO sinho_snapshots (stream, key, revision, state, created_at) VALUES (?, ?, ?, ?, ?) ' +
        'ON CONFLICT (stream, key) DO UPDATE SET revision = excluded.revision, state = excluded.state, created_at = excluded.created_at WHERE excluded.revision >= sinho_snapshots.revision',
    ),
    truncate: db.prepare('DELETE FROM sinho_events WHERE stream = ? AND revision < ?'),
    positionAt: db.prepare('SELECT MIN(position) AS position FROM sinho_events WHERE recorded_at >= ?'),
  };
}

export function readStreamPage(s: ReadStatements, q: StreamPageQuery): StoredEvent[] {
  return (q.direction === 'forwards' ? s.streamForwards : s.streamBackwards).all(q.stream, q.fromRevision, q.limit);
}

const filteredCache = new WeakMap<Database.Database, Map<string, Database.Statement>>();

/** Filtered pages use the category/type indexes; statements are cached per filter shape. */
export function readAllPage(db: Database.Database, s: ReadStatements, q: AllPageQuery): StoredEvent[] {
  const to = q.toPosition ?? Number.MAX_SAFE_INTEGER;
  const categories = q.filter?.categories;
  const types = q.filter?.types;
  if (!categories && !types) return s.all.all(q.fromPosition, to, q.limit);
  const shape = `${categories ? 'c' : ''}${types ? 't' : ''}`;
  let cache = filteredCache.get(db);
  if (!cache) filteredCache.set(db, (cache = new Map()));
  let stmt = cache.get(shape);
  if (!stmt) {
    const where = ['position >= ?', 'position <= ?'];
    if (categories) where.push('category IN (SELECT value FROM json_each(?))');
    if (types) where.push('type IN (SELECT value FROM json_each(?))');
    stmt = db.prepare(`SELECT ${EVENT_COLUMNS} FROM sinho_events WHERE ${where.join(' AND ')} ORDER BY position LIMIT ?`);
    cache.set(shape, stmt);
  }
  const params: unknown[] = [q.fromPosition, to];
  if (categories) params.push(JSON.stringify(categories));
  if (types) params.push(JSON.stringify(types));
  params.push(q.limit);
  return stmt.all(...params) as StoredEvent[];
}
