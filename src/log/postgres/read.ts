import type { AllPageQuery, StoredEvent, StreamPageQuery } from '../storage.js';
import type { PgQueryable } from './pg-types.js';

// JSON columns come back as text: the core parses them once, the same way for every adapter.
export const eventColumns = 'id::text AS id, stream, type, schema_version AS "schemaVersion", data::text AS data, metadata::text AS metadata, revision, position';

export async function readStreamPage(db: PgQueryable, schema: string, q: StreamPageQuery): Promise<StoredEvent[]> {
  const op = q.direction === 'forwards' ? '>=' : '<=';
  const order = q.direction === 'forwards' ? 'ASC' : 'DESC';
  const { rows } = await db.query<StoredEvent>(
    `SELECT ${eventColumns} FROM ${schema}.events WHERE stream = $1 AND revision ${op} $2 ORDER BY revision ${order} LIMIT $3`,
    [q.stream, q.fromRevision, q.limit],
  );
  return rows;
}

export async function readAllPage(db: PgQueryable, schema: string, q: AllPageQuery): Promise<StoredEvent[]> {
  if (!q.filter?.categories && !q.filter?.types) {
    // The page is taken from a one-sided range, and the window's upper bound is applied to the page afterwards.
    // With both bounds in one WHERE, a table that has not been analysed yet (a freshly filled log, before
    // autovacuum gets to it) gets PostgreSQL's default range estimate of 0.5% of the rows: the planner then
    // fetches every row of the window with a bitmap scan and sorts it for each page, so reading N events costs
    // O(N²) (50,000 events: 180 ms a page instead of 1 ms). The one-sided range always plans as an ordered index
    // scan that stops after `limit` rows. Rows past `toPosition` that the page drops were read needlessly, at most
    // one page, and only on a window's last page.
    const { rows } = await db.query<StoredEvent>(
      `SELECT * FROM (SELECT ${eventColumns} FROM ${schema}.events WHERE position >= $1 ORDER BY position LIMIT $2) page WHERE position <= $3`,
      [q.fromPosition, q.limit, q.toPosition ?? Number.MAX_SAFE_INTEGER],
    );
    return rows;
  }
  // A filtered page is read span by span of positions. With the whole window in one query, a table without
  // statistics planned a bitmap scan of every matching row of the window, and a sort, for each page: the same
  // O(N²) as above. Within a span that work is bounded by the span, whatever the planner estimates. Without a
  // window bound the page reads up to the head committed when it starts.
  const end = q.toPosition ?? (await readHead(db, schema));
  const page: StoredEvent[] = [];
  for (let from = q.fromPosition; from <= end && page.length < q.limit; from += FILTERED_SPAN) {
    const where = ['position >= $1', 'position <= $2'];
    const params: unknown[] = [from, Math.min(end, from + FILTERED_SPAN - 1)];
    if (q.filter.categories) {
      params.push(q.filter.categories);
      where.push(`category = ANY($${params.length}::text[])`);
    }
    if (q.filter.types) {
      params.push(q.filter.types);
      where.push(`type = ANY($${params.length}::text[])`);
    }
    params.push(q.limit - page.length);
    const { rows } = await db.query<StoredEvent>(
      `SELECT ${eventColumns} FROM ${schema}.events WHERE ${where.join(' AND ')} ORDER BY position LIMIT $${params.length}`,
      params,
    );
    for (const row of rows) page.push(row);
  }
  return page;
}

/** Positions a filtered page reads per query. */
export const FILTERED_SPAN = 10_000;

/** The head: the highest committed position (gap-free: every position up to it is visible). */
export async function readHead(db: PgQueryable, schema: string): Promise<number> {
  const { rows } = await db.query<{ position: number }>(`SELECT position FROM ${schema}.head WHERE singleton`);
  return Number(rows[0]!.position);
}

export async function readEventsById(db: PgQueryable, schema: string, ids: readonly string[]): Promise<StoredEvent[]> {
  const uuids = ids.filter((id) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id));
  if (uuids.length === 0) return [];
  const { rows } = await db.query<StoredEvent>(`SELECT ${eventColumns} FROM ${schema}.events WHERE id = ANY($1::uuid[]) ORDER BY position`, [uuids]);
  return rows;
}
