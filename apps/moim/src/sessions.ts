/**
 * Sessions: opaque random tokens handed to clients; only their SHA-256 is
 * stored, with an expiry, so a leaked store does not leak usable tokens.
 * `SessionStore` is the seam: SQLite here (the default), Redis with the
 * bridges.
 */
import { createHash, randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';

export interface Session {
  memberId: string;
  expiresAt: number;
}

export interface SessionStore {
  /** Creates a session for `memberId` lasting `ttlMs`; returns the token (shown once). */
  create(memberId: string, ttlMs: number): Promise<{ token: string; expiresAt: number }>;
  /** The live session of `token`, or undefined when unknown or expired. */
  get(token: string): Promise<Session | undefined>;
  delete(token: string): Promise<void>;
  close(): Promise<void>;
}

export const hashToken = (token: string): string => createHash('sha256').update(token).digest('hex');

export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * Remembers live sessions of this process for `ttlMs`, so that a busy API
 * does not query the store on every request. A logout in this process takes
 * effect at once; a logout through another API process within `ttlMs`.
 */
export class CachedSessionStore implements SessionStore {
  /** By the token's hash. */
  private readonly cache = new Map<string, { session: Session; until: number }>();

  constructor(
    private readonly store: SessionStore,
    private readonly ttlMs = 2000,
    private readonly maxEntries = 100_000,
  ) {}

  create(memberId: string, ttlMs: number): Promise<{ token: string; expiresAt: number }> {
    return this.store.create(memberId, ttlMs);
  }

  async get(token: string): Promise<Session | undefined> {
    const now = Date.now();
    const key = hashToken(token);
    const hit = this.cache.get(key);
    if (hit && hit.until > now && hit.session.expiresAt > now) return hit.session;
    const session = await this.store.get(token);
    if (session) {
      if (this.cache.size >= this.maxEntries) this.cache.clear();
      this.cache.set(key, { session, until: now + this.ttlMs });
    } else this.cache.delete(key);
    return session;
  }

  async delete(token: string): Promise<void> {
    this.cache.delete(hashToken(token));
    await this.store.delete(token);
  }

  /** Drops a session another process logged out (its token's hash), when the store announces it. */
  evict(tokenHash: string): void {
    this.cache.delete(tokenHash);
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

export class SqliteSessionStore implements SessionStore {
  private readonly db: Database.Database;
  private readonly statements;

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec('CREATE TABLE IF NOT EXISTS moim_sessions (token_hash TEXT PRIMARY KEY, member_id TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID');
    this.db.exec('CREATE INDEX IF NOT EXISTS moim_sessions_expiry ON moim_sessions (expires_at)');
    this.statements = {
      expire: this.db.prepare('DELETE FROM moim_sessions WHERE expires_at < ?'),
      insert: this.db.prepare('INSERT INTO moim_sessions (token_hash, member_id, expires_at) VALUES (?, ?, ?)'),
      get: this.db.prepare<[string], { member_id: string; expires_at: number }>('SELECT member_id, expires_at FROM moim_sessions WHERE token_hash = ?'),
      delete: this.db.prepare('DELETE FROM moim_sessions WHERE token_hash = ?'),
    };
  }

  async create(memberId: string, ttlMs: number): Promise<{ token: string; expiresAt: number }> {
    const token = newToken();
    const expiresAt = Date.now() + ttlMs;
    this.statements.expire.run(Date.now());
    this.statements.insert.run(hashToken(token), memberId, expiresAt);
    return { token, expiresAt };
  }

  async get(token: string): Promise<Session | undefined> {
    const row = this.statements.get.get(hashToken(token));
    if (!row || row.expires_at <= Date.now()) return undefined;
    return { memberId: row.member_id, expiresAt: row.expires_at };
  }

  async delete(token: string): Promise<void> {
    this.statements.delete.run(hashToken(token));
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
