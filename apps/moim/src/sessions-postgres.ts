/**
 * moim's sessions in PostgreSQL: what several API processes share when moim
 * runs on PostgreSQL without Redis. Like the SQLite store, only a hash of each
 * token is stored. A logout in another process takes effect there once its
 * CachedSessionStore entry expires (2 s); Redis evicts at once.
 */
import pg from 'pg';
import { hashToken, newToken, type Session, type SessionStore } from './sessions.js';

export class PostgresSessionStore implements SessionStore {
  private constructor(
    private readonly pool: pg.Pool,
    private readonly table: string,
  ) {}

  /** Connects and creates `<schema>.moim_sessions` when missing (the schema is a plain identifier, as moim's others). */
  static async open(options: { connectionString: string; schema: string; poolSize?: number }): Promise<PostgresSessionStore> {
    if (!/^[a-z_][a-z0-9_]{0,50}$/.test(options.schema)) throw new Error(`invalid PostgreSQL schema name ${JSON.stringify(options.schema)}`);
    const pool = new pg.Pool({ connectionString: options.connectionString, max: options.poolSize ?? 5 });
    // An idle client's error (a server restart) must not crash the process; the next query reconnects.
    pool.on('error', () => {});
    const table = `${options.schema}.moim_sessions`;
    try {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        // Several processes may start at once: one creates, the others wait.
        await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`moim-sessions-${options.schema}`]);
        await client.query(`CREATE SCHEMA IF NOT EXISTS ${options.schema}`);
        await client.query(`CREATE TABLE IF NOT EXISTS ${table} (token_hash text PRIMARY KEY, member_id text NOT NULL, expires_at bigint NOT NULL)`);
        await client.query(`CREATE INDEX IF NOT EXISTS moim_sessions_expiry ON ${table} (expires_at)`);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {});
        throw error;
      } finally {
        client.release();
      }
    } catch (error) {
      await pool.end();
      throw error;
    }
    return new PostgresSessionStore(pool, table);
  }

  async create(memberId: string, ttlMs: number): Promise<{ token: string; expiresAt: number }> {
    const token = newToken();
    const now = Date.now();
    const expiresAt = now + ttlMs;
    // Expired sessions go as new ones come, in the same round trip.
    await this.pool.query(
      `WITH expired AS (DELETE FROM ${this.table} WHERE expires_at < $4)
       INSERT INTO ${this.table} (token_hash, member_id, expires_at) VALUES ($1, $2, $3)`,
      [hashToken(token), memberId, expiresAt, now],
    );
    return { token, expiresAt };
  }

  async get(token: string): Promise<Session | undefined> {
    const { rows } = await this.pool.query<{ member_id: string; expires_at: string }>(`SELECT member_id, expires_at FROM ${this.table} WHERE token_hash = $1`, [hashToken(token)]);
    const row = rows[0];
    if (!row || Number(row.expires_at) <= Date.now()) return undefined;
    return { memberId: row.member_id, expiresAt: Number(row.expires_at) };
  }

  async delete(token: string): Promise<void> {
    await this.pool.query(`DELETE FROM ${this.table} WHERE token_hash = $1`, [hashToken(token)]);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
