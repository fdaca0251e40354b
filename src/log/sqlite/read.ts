import type Database from 'better-sqlite3';
import type { AllPageQuery, StoredEvent, StreamPageQuery } from '../storage.js';
import { MARK_EVERY } from './schema.js';

export const EVENT_COLUMNS = 'id, stream, type, schema_version AS schemaVersion, data, metadata, revision, position';

interface StreamRow {
  revision: number;
  last_position: number | null;
  first_revision: number;
}

/** Revisions [low, high] of one stream, walking its chain down from `start` (the position of a revision >= high). */
interface ChainWalk {
  start: number;
  low: number;
  high: number;
}

export interface ReadStatements {
  /** Runs `work` in a transaction (call `.immediate` to write); one wrapper for every call. */
  transaction: Database.Transaction<(work: () => unknown) => unknown>;
  stream: Database.Statement<[string], StreamRow>;
  mark: Database.Statement<[string, number], { position: number }>;
  chainForwards: Database.Statement<[ChainWalk], StoredEvent>;
  chainBackwards: Database.Statement<[ChainWalk], StoredEvent>;
  deleteChain: Database.Statement<[ChainWalk]>;
  deleteMarks: Database.Statement<[string, number]>;
  setFirstRevision: Database.Statement<[number, string]>;
  all: Database.Statement<[number, number, number], StoredEvent>;
  byId: Database.Statement<[string], StoredEvent>;
  head: Database.Statement<[], { position: number }>;
  readSnapshot: Database.Statement<[string, string], { revision: number; state: string }>;
  positionAt: Database.Statement<[number], { position: number | null }>;
}

/**
 * A stream's revisions [low, high]: from the event at `start`, down its chain (prev_position) until revision
 * `low`, keeping those at or below `high`. Each step is a rowid lookup. (The CROSS JOIN below keeps the walk as
 * the outer loop: otherwise SQLite's planner may scan the whole events table in position order to avoid a sort.)
 */
const CHAIN = `WITH RECURSIVE walk(at, rev, prev) AS (
    SELECT position, revision, prev_position FROM sinho_events WHERE position = @start
    UNION ALL
    SELECT e.position, e.revision, e.prev_position FROM walk w JOIN sinho_events e ON e.position = w.prev WHERE w.rev > @low
  )`;

export function prepareReadStatements(db: Database.Database): ReadStatements {
  const chain = (order: string) =>
    db.prepare<[ChainWalk], StoredEvent>(
      `${CHAIN} SELECT ${EVENT_COLUMNS} FROM walk CROSS JOIN sinho_events ON position = walk.at WHERE walk.rev BETWEEN @low AND @high ORDER BY walk.at ${order}`,
    );
  return {
    transaction: db.transaction((work: () => unknown) => work()),
    stream: db.prepare('SELECT revision, last_position, first_revision FROM sinho_streams WHERE name = ?'),
    mark: db.prepare('SELECT position FROM sinho_stream_marks WHERE stream = ? AND revision = ?'),
    chainForwards: chain('ASC'),
    chainBackwards: chain('DESC'),
    deleteChain: db.prepare(`${CHAIN} DELETE FROM sinho_events WHERE position IN (SELECT at FROM walk WHERE rev BETWEEN @low AND @high)`),
    deleteMarks: db.prepare('DELETE FROM sinho_stream_marks WHERE stream = ? AND revision < ?'),
    setFirstRevision: db.prepare('UPDATE sinho_streams SET first_revision = ? WHERE name = ?'),
    all: db.prepare(`SELECT ${EVENT_COLUMNS} FROM sinho_events WHERE position >= ? AND position <= ? ORDER BY position LIMIT ?`),
    byId: db.prepare(`SELECT ${EVENT_COLUMNS} FROM sinho_events WHERE id IN (SELECT value FROM json_each(?)) ORDER BY position`),
    head: db.prepare('SELECT position FROM sinho_head WHERE singleton = 1'),
    readSnapshot: db.prepare('SELECT revision, state FROM sinho_snapshots WHERE stream = ? AND key = ?'),
    positionAt: db.prepare('SELECT MIN(position) AS position FROM sinho_events WHERE recorded_at >= ?'),
  };
}

/** The walk for revisions [low, high] of a stream: from the mark at or above high, or from its newest event. */
function walkFor(s: ReadStatements, stream: string, row: StreamRow, low: number, high: number): ChainWalk | undefined {
  if (row.last_position === null || low > high) return undefined;
  const markRevision = Math.ceil(high / MARK_EVERY) * MARK_EVERY;
  const mark = markRevision < row.revision ? s.mark.get(stream, markRevision) : undefined;
  return { start: mark?.position ?? row.last_position, low, high };
}

/**
 * A page of a stream, in one read transaction (the stream row, its mark and the walk see one snapshot). The
 * revisions of a stream are contiguous from its first kept one (truncation deletes a prefix), so a page is a
 * range of revisions.
 */
export function readStreamPage(s: ReadStatements, q: StreamPageQuery): StoredEvent[] {
  return s.transaction(() => {
    const row = s.stream.get(q.stream);
    if (!row) return [];
    const forwards = q.direction === 'forwards';
    const low = forwards ? Math.max(q.fromRevision, row.first_revision) : Math.max(row.first_revision, Math.min(q.fromRevision, row.revision) - q.limit + 1);
    const high = forwards ? Math.min(low + q.limit - 1, row.revision) : Math.min(q.fromRevision, row.revision);
    const walk = walkFor(s, q.stream, row, low, high);
    return walk ? (forwards ? s.chainForwards : s.chainBackwards).all(walk) : [];
  }) as StoredEvent[];
}

/** Deletes the stream's events below `beforeRevision`, walking its chain; later events keep their revisions. */
export function truncateStream(s: ReadStatements, stream: string, beforeRevision: number): void {
  s.transaction.immediate(() => {
    const row = s.stream.get(stream);
    if (!row || beforeRevision <= row.first_revision) return;
    // Never past the next revision: events appended later are not truncated.
    const first = Math.min(beforeRevision, row.revision + 1);
    const walk = walkFor(s, stream, row, row.first_revision, first - 1);
    if (walk) s.deleteChain.run(walk);
    s.deleteMarks.run(stream, first);
    s.setFirstRevision.run(first, stream);
  });
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
