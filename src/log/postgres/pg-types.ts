/**
 * The small slice of `pg` this adapter uses, so the rest of the adapter's code
 * does not depend on the driver's full types; and the one transaction helper.
 */
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
export async function inTransaction<T>(pool: PgPool, work: (client: PgQueryable) => Promise<T>, begin = 'BEGIN'): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query(begin);
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
