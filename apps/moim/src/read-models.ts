/**
 * moim's read models: communities, community memberships (the fan-out list
 * for notifications) and family memberships. One versioned projection keeps
 * them in the log's own SQLite file, transactionally with its checkpoint, so
 * they cannot drift from the log and can be rebuilt from it (bump
 * READ_MODEL_VERSION: the new version replays into new tables while the old
 * one serves, then readers switch).
 */
import Database from 'better-sqlite3';
import { liveProjectionVersion, runProjection, type EventLog, type Projection, type RecordedEvent } from 'sinho';

export const READ_MODELS = 'moim-read-models';
export const READ_MODEL_VERSION = 1;

export const tables = (v: number) => ({
  communities: `moim_communities_v${v}`,
  memberships: `moim_memberships_v${v}`,
  families: `moim_family_members_v${v}`,
  balances: `moim_balances_v${v}`,
});

export function readModelSetup(v: number): string[] {
  const t = tables(v);
  return [
    `CREATE TABLE IF NOT EXISTS ${t.communities} (id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL, owner TEXT NOT NULL, members INTEGER NOT NULL, created_at TEXT NOT NULL)`,
    `CREATE INDEX IF NOT EXISTS ${t.communities}_name ON ${t.communities} (name COLLATE NOCASE)`,
    `CREATE TABLE IF NOT EXISTS ${t.memberships} (community_id TEXT NOT NULL, member_id TEXT NOT NULL, joined_at TEXT NOT NULL, PRIMARY KEY (community_id, member_id)) WITHOUT ROWID`,
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
export function startReadModels(log: EventLog, version = READ_MODEL_VERSION): Promise<Projection> {
  const t = tables(version);
  return runProjection(log, READ_MODELS, {
    version,
    setup: readModelSetup(version),
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
          tx.execute(`INSERT INTO ${t.communities} (id, name, description, owner, members, created_at) VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (id) DO NOTHING`, [d.communityId, d.name, d.description, d.owner, at]);
          tx.execute(`INSERT INTO ${t.memberships} (community_id, member_id, joined_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, [d.communityId, d.owner, at]);
          break;
        case 'MemberJoined':
          // The projection is exactly-once (its statements commit with its checkpoint and processed ids), and the
          // decider emits MemberJoined only for a non-member, so counting by one is exact, and costs no scan.
          tx.execute(`INSERT INTO ${t.memberships} (community_id, member_id, joined_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, [d.communityId, d.memberId, at]);
          tx.execute(`UPDATE ${t.communities} SET members = members + 1 WHERE id = ?`, [d.communityId]);
          break;
        case 'MemberLeft':
          tx.execute(`DELETE FROM ${t.memberships} WHERE community_id = ? AND member_id = ?`, [d.communityId, d.memberId]);
          tx.execute(`UPDATE ${t.communities} SET members = members - 1 WHERE id = ?`, [d.communityId]);
          break;
        case 'FamilyAccountCreated':
          tx.execute(`INSERT INTO ${t.families} (family_id, member_id) VALUES (?, ?) ON CONFLICT DO NOTHING`, [d.familyId, d.owner]);
          break;
        case 'FamilyMemberJoined':
          tx.execute(`INSERT INTO ${t.families} (family_id, member_id) VALUES (?, ?) ON CONFLICT DO NOTHING`, [d.familyId, d.memberId]);
          break;
        case 'FamilyMemberLeft':
        case 'FamilyMemberRemoved':
          tx.execute(`DELETE FROM ${t.families} WHERE family_id = ? AND member_id = ?`, [d.familyId, d.memberId]);
          break;
        default: {
          const delta = balanceDelta(event);
          if (delta !== 0) {
            tx.execute(`INSERT INTO ${t.balances} (member_id, balance) VALUES (?, ?) ON CONFLICT (member_id) DO UPDATE SET balance = balance + excluded.balance`, [
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

/** Queries over the live version of the read models (any role; its own read connection). */
export class ReadModels {
  private readonly db: Database.Database;
  private version = READ_MODEL_VERSION;
  private checkedAt = 0;
  /** Statements by SQL text: the table names change only with the live version. */
  private readonly statements = new Map<string, Database.Statement>();

  constructor(
    private readonly log: EventLog,
    path: string,
  ) {
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

  /** Follows a switch to a rebuilt version within a second. */
  private async t(): Promise<ReturnType<typeof tables>> {
    if (Date.now() - this.checkedAt > 1000) {
      this.checkedAt = Date.now();
      this.version = (await liveProjectionVersion(this.log, READ_MODELS)) ?? READ_MODEL_VERSION;
    }
    return tables(this.version);
  }

  async searchCommunities(query: string, limit: number, offset: number): Promise<CommunitySummary[]> {
    const t = await this.t();
    const rows = this.prepare(
      `SELECT id, name, description, owner, members, created_at AS createdAt FROM ${t.communities} WHERE name LIKE ? ESCAPE '\\' ORDER BY name COLLATE NOCASE, id LIMIT ? OFFSET ?`,
    ).all(`%${query.replace(/[\\%_]/g, (c) => `\\${c}`)}%`, limit, offset);
    return rows as CommunitySummary[];
  }

  async community(id: string): Promise<CommunitySummary | undefined> {
    const t = await this.t();
    return this.prepare(`SELECT id, name, description, owner, members, created_at AS createdAt FROM ${t.communities} WHERE id = ?`).get(id) as CommunitySummary | undefined;
  }

  async communityMembers(id: string): Promise<{ memberId: string; joinedAt: string }[]> {
    const t = await this.t();
    return this.prepare(`SELECT member_id AS memberId, joined_at AS joinedAt FROM ${t.memberships} WHERE community_id = ? ORDER BY joined_at, member_id`).all(id) as { memberId: string; joinedAt: string }[];
  }

  async familiesOf(memberId: string): Promise<string[]> {
    const t = await this.t();
    return (this.prepare(`SELECT family_id AS id FROM ${t.families} WHERE member_id = ?`).all(memberId) as { id: string }[]).map((r) => r.id);
  }

  /**
   * Every row of the live version, read in one SQLite read transaction (a
   * consistent snapshot: the projection writes its rows and its checkpoint in
   * one commit), for `moim verify`.
   */
  async snapshot(): Promise<{ version: number; communities: { id: string; members: number }[]; memberships: { community_id: string; member_id: string }[]; families: { family_id: string; member_id: string }[]; balances: { member_id: string; balance: number }[] }> {
    const t = await this.t();
    const read = this.db.transaction(() => ({
      version: this.version,
      communities: this.prepare(`SELECT id, members FROM ${t.communities}`).all() as { id: string; members: number }[],
      memberships: this.prepare(`SELECT community_id, member_id FROM ${t.memberships}`).all() as { community_id: string; member_id: string }[],
      families: this.prepare(`SELECT family_id, member_id FROM ${t.families}`).all() as { family_id: string; member_id: string }[],
      balances: this.prepare(`SELECT member_id, balance FROM ${t.balances}`).all() as { member_id: string; balance: number }[],
    }));
    return read.deferred();
  }

  close(): void {
    this.db.close();
  }
}
