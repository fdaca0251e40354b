/**
 * The small slice of `pg` this adapter uses, so the rest of the adapter's code
 * does not depend on the driver's full types; the one transaction helper; and
 * what every Sinho store on PostgreSQL configures the same way (int8 parsing,
 * schema names).
 */
import pg from 'pg';
import { InvalidInput } from '../../errors.js';

// int8 columns (positions, revisions, cursors) as JS numbers: exact up to 2^53, far beyond any log's size.
export const PG_TYPES = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === 20 ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,50}$/;

/** Schema names are put into SQL text: only plain lower-case identifiers are accepted. */
export function checkSchemaName(schema: string): void {
  if (!IDENTIFIER.test(schema)) {
    throw new InvalidInput('INVALID_ARGUMENT', `schema must match ${IDENTIFIER} (lower-case letters, digits, underscore), got ${JSON.stringify(schema)}.`);
  }
}
export interface PgQueryable {
  query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<{ rows: R[]; rowCount: number | null }>;
}

export interface PgPoolClient extends PgQueryable {
  release(error?: Error | boolean): void;
}

export interface PgPool extends PgQueryable {
  connect(): Promise<PgPoolClient>;
  end(): Promise<void>;
}

/**
 * Runs `work` in a transaction on a pooled connection: COMMIT when it
 * resolves, ROLLBACK when it throws. A connection whose ROLLBACK failed is
 * destroyed rather than returned to the pool.
 */
export async function inTransaction<T>(pool: PgPool, work: (client: PgQueryable) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    try {
      const result = await work(client);
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

/**
 * A PostgreSQL array literal (for a `$n::text[]`, `uuid[]` or `bigint[]` parameter), every element quoted, so that
 * a stream named `NULL` stays a name. The append path passes validated stream names, categories, event types, UUIDs
 * and integers, none of which holds a quote or a backslash: they are joined as they are, where pg's own
 * serialisation escapes element by element (about 2.5 KB of short-lived strings per event; docs/log.md). Any value
 * that does hold one is escaped as pg would.
 */
export function arrayLiteral(values: readonly (string | number)[]): string {
  if (values.length === 0) return '{}';
  for (const value of values) {
    if (typeof value === 'string' && (value.includes('"') || value.includes('\\'))) {
      return `{${values.map((v) => `"${String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`).join(',')}}`;
    }
  }
  return `{"${values.join('","')}"}`;
}
