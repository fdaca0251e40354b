/**
 * moim's read models: communities, community memberships (the fan-out list
 * for notifications) and family memberships. One versioned projection keeps
 * them in the log's own store (the SQLite file, or the PostgreSQL schema),
 * transactionally with its checkpoint, so they cannot drift from the log and
 * can be rebuilt from it (bump READ_MODEL_VERSION: the new version replays
 * into new tables while the old one serves, then readers switch).
 */
import Database from 'better-sqlite3';
import pg from 'pg';
import { liveProjectionVersion, runProjection, type EventLog, type Projection, type RecordedEvent } from 'sinho';

export const READ_MODELS = 'moim-read-models';
// v2: memberships record the log position of the join (notification fan-out takes the members before it).
export const READ_MODEL_VERSION = 2;

/** Where the read models live: the log's SQLite file, or a PostgreSQL schema (the log's). */
export type ReadModelStore = { kind: 'sqlite' } | { kind: 'postgres'; schema: string };
const SQLITE: ReadModelStore = { kind: 'sqlite' };

export const tables = (v: number, store: ReadModelStore = SQLITE) => {
  const prefix = store.kind === 'postgres' ? `${store.schema}.` : '';
  return {
    communities: `${prefix}moim_communities_v${v}`,
    memberships: `${prefix}moim_memberships_v${v}`,
    families: `${prefix}moim_family_members_v${v}`,
    balances: `${prefix}moim_balances_v${v}`,
  };
};

/** The statements are written with `?` placeholders; PostgreSQL numbers them ($1, $2, ...). */
function dialect(store: ReadModelStore): (sql: string) => string {
  if (store.kind === 'sqlite') return (sql) => sql;
  return (sql) => {
    let n = 0;
    return sql.replace(/\?/g, () => `$${++n}`);
  };
}

export function readModelSetup(v: number, store: ReadModelStore = SQLITE): string[] {
  const t = tables(v, store);
  // Index names are unqualified in PostgreSQL (they live in their table's schema).
  const name = (table: string) => table.slice(table.indexOf('.') + 1);
  if (store.kind === 'postgres') {
    return [
      `CREATE TABLE IF NOT EXISTS ${t.communities} (id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL, owner TEXT NOT NULL, members INTEGER NOT NULL, created_at TEXT NOT NULL)`,
      `CREATE INDEX IF NOT EXISTS ${name(t.communities)}_name ON ${t.communities} (lower(name))`,
      `CREATE TABLE IF NOT EXISTS ${t.memberships} (community_id TEXT NOT NULL, member_id TEXT NOT NULL, joined_at TEXT NOT NULL, joined_position BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (community_id, member_id))`,
      `CREATE INDEX IF NOT EXISTS ${name(t.memberships)}_member ON ${t.memberships} (member_id)`,
      `CREATE TABLE IF NOT EXISTS ${t.families} (family_id TEXT NOT NULL, member_id TEXT NOT NULL, PRIMARY KEY (family_id, member_id))`,
      `CREATE INDEX IF NOT EXISTS ${name(t.families)}_member ON ${t.families} (member_id)`,
      `CREATE TABLE IF NOT EXISTS ${t.balances} (member_id TEXT PRIMARY KEY, balance BIGINT NOT NULL)`,
    ];
  }
  return [
    `CREATE TABLE IF NOT EXISTS ${t.communities} (id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL, owner TEXT NOT NULL, members INTEGER NOT NULL, created_at TEXT NOT NULL)`,
    `CREATE INDEX IF NOT EXISTS ${t.communities}_name ON ${t.communities} (name COLLATE NOCASE)`,
    `CREATE TABLE IF NOT EXISTS ${t.memberships} (community_id TEXT NOT NULL, member_id TEXT NOT NULL, joined_at TEXT NOT NULL, joined_position INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (community_id, member_id)) WITHOUT ROWID`,
    `CREATE INDEX IF NOT EXISTS ${t.memberships}_member ON ${t.memberships} (member_id)`,
    `CREATE TABLE IF NOT EXISTS ${t.families} (family_id TEXT NOT NULL, member_id TEXT NOT NULL, PRIMARY KEY (family_id, member_id)) WITHOUT ROWID`,
    `CREATE INDEX IF NOT EXISTS ${t.families}_member ON ${t.families} (member_id)`,
    `CREATE TABLE IF NOT EXISTS ${t.balances} (member_id TEXT PRIMARY KEY, balance INTEGER NOT NULL) WITHOUT ROWID`,
  ];
}

/** How an account event changes the balance (reservations do not). */
export function balanceDelta(event: { stream: string; type: string; data: unknown }): number {
  if (!event.stream.startsWith('account-')) return 0;
  const { amount } = event.data as { amount?: number };
  switch (event.type) {
    case 'FundsDeposited':
    case 'TransferCredited':
      return amount ?? 0;
    case 'TransferDebited':
    case 'DuesCharged':
      return -(amount ?? 0);
    default:
      return 0;
  }
}

/** Runs the read-model projection (worker role). */
export function startReadModels(log: EventLog, version = READ_MODEL_VERSION, store: ReadModelStore = SQLITE, options: { standby?: boolean } = {}): Promise<Projection> {
  const t = tables(version, store);
  const sql = dialect(store);
  return runProjection(log, READ_MODELS, {
    version,
    standby: options.standby,
    setup: readModelSetup(version, store),
    bindings: [
      { kind: 'topic', pattern: 'community.*' },
      { kind: 'topic', pattern: 'family.*' },
      { kind: 'topic', pattern: 'account.*' },
    ],
    concurrency: 32,
    project: (event: RecordedEvent, tx) => {
      const d = event.data as Record<string, string>;
      const at = event.metadata.occurredAt ?? new Date().toISOString();
      switch (event.type) {
        case 'CommunityCreated':
          tx.execute(sql(`INSERT INTO ${t.communities} (id, name, description, owner, members, created_at) VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (id) DO NOTHING`), [d.communityId, d.name, d.description, d.owner, at]);
          tx.execute(sql(`INSERT INTO ${t.memberships} (community_id, member_id, joined_at, joined_position) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`), [d.communityId, d.owner, at, event.position]);
          break;
        case 'MemberJoined':
          // The projection is exactly-once (its statements commit with its checkpoint and processed ids), and the
          // decider emits MemberJoined only for a non-member, so counting by one is exact, and costs no scan.
          tx.execute(sql(`INSERT INTO ${t.memberships} (community_id, member_id, joined_at, joined_position) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`), [d.communityId, d.memberId, at, event.position]);
          tx.execute(sql(`UPDATE ${t.communities} SET members = members + 1 WHERE id = ?`), [d.communityId]);
          break;
        case 'MemberLeft':
          tx.execute(sql(`DELETE FROM ${t.memberships} WHERE community_id = ? AND member_id = ?`), [d.communityId, d.memberId]);
          tx.execute(sql(`UPDATE ${t.communities} SET members = members - 1 WHERE id = ?`), [d.communityId]);
          break;
        case 'FamilyAccountCreated':
          tx.execute(sql(`INSERT INTO ${t.families} (family_id, member_id) VALUES (?, ?) ON CONFLICT DO NOTHING`), [d.familyId, d.owner]);
          break;
        case 'FamilyMemberJoined':
          tx.execute(sql(`INSERT INTO ${t.families} (family_id, member_id) VALUES (?, ?) ON CONFLICT DO NOTHING`), [d.familyId, d.memberId]);
          break;
        case 'FamilyMemberLeft':
        case 'FamilyMemberRemoved':
          tx.execute(sql(`DELETE FROM ${t.families} WHERE family_id = ? AND member_id = ?`), [d.familyId, d.memberId]);
          break;
        default: {
          const delta = balanceDelta(event);
          if (delta !== 0) {
            tx.execute(sql(`INSERT INTO ${t.balances} AS b (member_id, balance) VALUES (?, ?) ON CONFLICT (member_id) DO UPDATE SET balance = b.balance + excluded.balance`), [
              event.stream.slice('account-'.length),
              delta,
            ]);
          }
        }
      }
    },
  });
}

export interface CommunitySummary {
  id: string;
  name: string;
  description: string;
  owner: string;
  members: number;
  createdAt: string;
}

/** The rows `moim verify` compares with the log. */
export interface ReadModelSnapshot {
  version: number;
  communities: { id: string; members: number }[];
  memberships: { community_id: string; member_id: string }[];
  families: { family_id: string; member_id: string }[];
  balances: { member_id: string; balance: number }[];
}

/** Queries over the live version of the read models (any role; its own read connection). */
export interface ReadModels {
  searchCommunities(query: string, limit: number, offset: number): Promise<CommunitySummary[]>;
  community(id: string): Promise<CommunitySummary | undefined>;
  communityMembers(id: string): Promise<{ memberId: string; joinedAt: string }[]>;
  /**
   * The members of a community who joined before log position `position`, in
   * the tables of projection version `version` (the fan-out reads the version
   * its worker runs, which it waited for, not the live one).
   */
  membersBefore(communityId: string, position: number, version?: number): Promise<string[]>;
  familiesOf(memberId: string): Promise<string[]>;
  /** Every row of the live version, read as one consistent snapshot, for `moim verify`. */
  snapshot(): Promise<ReadModelSnapshot>;
  close(): Promise<void>;
}

const escapeLike = (query: string) => `%${query.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

/** Follows a switch to a rebuilt version within a second. */
class LiveVersion {
  private version = READ_MODEL_VERSION;
  private checkedAt = 0;
  constructor(private readonly log: EventLog) {}
  async current(): Promise<number> {
    if (Date.now() - this.checkedAt > 1000) {
      this.checkedAt = Date.now();
      this.version = (await liveProjectionVersion(this.log, READ_MODELS)) ?? READ_MODEL_VERSION;
    }
    return this.version;
  }
}

/** Read models in the log's SQLite file. */
export class SqliteReadModels implements ReadModels {
  private readonly db: Database.Database;
  private readonly live: LiveVersion;
  /** Statements by SQL text: the table names change only with the live version. */
  private readonly statements = new Map<string, Database.Statement>();

  constructor(log: EventLog, path: string) {
    this.live = new LiveVersion(log);
    this.db = new Database(path);
    this.db.pragma('busy_timeout = 5000');
    // The tables exist before the projection first runs, so queries never fail on a fresh store.
    for (const sql of readModelSetup(READ_MODEL_VERSION)) this.db.exec(sql);
  }

  private prepare(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (!statement) this.statements.set(sql, (statement = this.db.prepare(sql)));
    return statement;
  }

  private async t(): Promise<ReturnType<typeof tables>> {
    return tables(await this.live.current());
  }

  async searchCommunities(query: string, limit: number, offset: number): Promise<CommunitySummary[]> {
    const t = await this.t();
    const rows = this.prepare(
      `SELECT id, name, description, owner, members, created_at AS "createdAt" FROM ${t.communities} WHERE name LIKE ? ESCAPE '\\' ORDER BY name COLLATE NOCASE, id LIMIT ? OFFSET ?`,
    ).all(escapeLike(query), limit, offset);
    return rows as CommunitySummary[];
  }

  async community(id: string): Promise<CommunitySummary | undefined> {
    const t = await this.t();
    return this.prepare(`SELECT id, name, description, owner, members, created_at AS "createdAt" FROM ${t.communities} WHERE id = ?`).get(id) as CommunitySummary | undefined;
  }

  async communityMembers(id: string): Promise<{ memberId: string; joinedAt: string }[]> {
    const t = await this.t();
    return this.prepare(`SELECT member_id AS "memberId", joined_at AS "joinedAt" FROM ${t.memberships} WHERE community_id = ? ORDER BY joined_at, member_id`).all(id) as { memberId: string; joinedAt: string }[];
  }

  async membersBefore(communityId: string, position: number, version = READ_MODEL_VERSION): Promise<string[]> {
    const t = tables(version);
    return (this.prepare(`SELECT member_id AS id FROM ${t.memberships} WHERE community_id = ? AND joined_position < ?`).all(communityId, position) as { id: string }[]).map((r) => r.id);
  }

  async familiesOf(memberId: string): Promise<string[]> {
    const t = await this.t();
    return (this.prepare(`SELECT family_id AS id FROM ${t.families} WHERE member_id = ?`).all(memberId) as { id: string }[]).map((r) => r.id);
  }

  async snapshot(): Promise<ReadModelSnapshot> {
    const version = await this.live.current();
    const t = tables(version);
    // One SQLite read transaction: the projection writes its rows and its checkpoint in one commit.
    const read = this.db.transaction(() => ({
      version,
      communities: this.prepare(`SELECT id, members FROM ${t.communities}`).all() as { id: string; members: number }[],
      memberships: this.prepare(`SELECT community_id, member_id FROM ${t.memberships}`).all() as { community_id: string; member_id: string }[],
      families: this.prepare(`SELECT family_id, member_id FROM ${t.families}`).all() as { family_id: string; member_id: string }[],
      balances: this.prepare(`SELECT member_id, balance FROM ${t.balances}`).all() as { member_id: string; balance: number }[],
    }));
    return read.deferred();
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

/** Read models in the log's PostgreSQL schema. */
export class PostgresReadModels implements ReadModels {
  private readonly live: LiveVersion;
  private readonly store: ReadModelStore;

  private constructor(
    log: EventLog,
    private readonly pool: pg.Pool,
    schema: string,
  ) {
    this.live = new LiveVersion(log);
    this.store = { kind: 'postgres', schema };
  }

  static async open(log: EventLog, options: { connectionString: string; schema: string; poolSize?: number }): Promise<PostgresReadModels> {
    const pool = new pg.Pool({ connectionString: options.connectionString, max: options.poolSize ?? 5 });
    pool.on('error', () => {}); // an idle client's error (server restart): the next query reconnects
    const models = new PostgresReadModels(log, pool, options.schema);
    // The tables exist before the projection first runs, so queries never fail on a fresh store.
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`moim-read-models-${options.schema}`]);
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${options.schema}`);
      for (const sql of readModelSetup(READ_MODEL_VERSION, models.store)) await client.query(sql);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      client.release();
      await pool.end();
      throw error;
    }
    client.release();
    return models;
  }

  private async t(): Promise<ReturnType<typeof tables>> {
    return tables(await this.live.current(), this.store);
  }

  async searchCommunities(query: string, limit: number, offset: number): Promise<CommunitySummary[]> {
    const t = await this.t();
    const { rows } = await this.pool.query(
      `SELECT id, name, description, owner, members, created_at AS "createdAt" FROM ${t.communities} WHERE name ILIKE $1 ESCAPE '\\' ORDER BY lower(name), id LIMIT $2 OFFSET $3`,
      [escapeLike(query), limit, offset],
    );
    return rows as CommunitySummary[];
  }

  async community(id: string): Promise<CommunitySummary | undefined> {
    const t = await this.t();
    const { rows } = await this.pool.query(`SELECT id, name, description, owner, members, created_at AS "createdAt" FROM ${t.communities} WHERE id = $1`, [id]);
    return rows[0] as CommunitySummary | undefined;
  }

  async communityMembers(id: string): Promise<{ memberId: string; joinedAt: string }[]> {
    const t = await this.t();
    const { rows } = await this.pool.query(`SELECT member_id AS "memberId", joined_at AS "joinedAt" FROM ${t.memberships} WHERE community_id = $1 ORDER BY joined_at, member_id`, [id]);
    return rows as { memberId: string; joinedAt: string }[];
  }

  async membersBefore(communityId: string, position: number, version = READ_MODEL_VERSION): Promise<string[]> {
    const t = tables(version, this.store);
    const { rows } = await this.pool.query<{ id: string }>(`SELECT member_id AS id FROM ${t.memberships} WHERE community_id = $1 AND joined_position < $2`, [communityId, position]);
    return rows.map((r) => r.id);
  }

  async familiesOf(memberId: string): Promise<string[]> {
    const t = await this.t();
    const { rows } = await this.pool.query<{ id: string }>(`SELECT family_id AS id FROM ${t.families} WHERE member_id = $1`, [memberId]);
    return rows.map((r) => r.id);
  }

  async snapshot(): Promise<ReadModelSnapshot> {
    const version = await this.live.current();
    const t = tables(version, this.store);
    const client = await this.pool.connect();
    try {
      // One snapshot: the projection writes its rows and its checkpoint in one transaction.
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const q = async <R>(sql: string) => (await client.query(sql)).rows as R[];
      const snapshot: ReadModelSnapshot = {
        version,
        communities: await q(`SELECT id, members FROM ${t.communities}`),
        memberships: await q(`SELECT community_id, member_id FROM ${t.memberships}`),
        families: await q(`SELECT family_id, member_id FROM ${t.families}`),
        balances: (await q<{ member_id: string; balance: string | number }>(`SELECT member_id, balance FROM ${t.balances}`)).map((r) => ({ member_id: r.member_id, balance: Number(r.balance) })),
      };
      await client.query('COMMIT');
      return snapshot;
    } finally {
      client.release();
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
