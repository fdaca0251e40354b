import type Database from 'better-sqlite3';
import { SinhoError } from '../../errors.js';
import type { DeferredRow, GroupCommit, GroupRow, SubscriptionStorage } from '../../subscription/storage.js';

interface GroupRecord {
  name: string;
  position: number;
  partitions: number;
  created_at: string;
}

interface DeferredRecord {
  position: number;
  kind: DeferredRow['kind'];
  event_id: string;
  key: string;
  state: DeferredRow['state'];
  attempts: number;
  due_at: number | null;
  errors: string;
  updated_at: string;
}

const toRow = (r: DeferredRecord): DeferredRow => ({
  position: r.position,
  kind: r.kind,
  eventId: r.event_id,
  key: r.key,
  state: r.state,
  attempts: r.attempts,
  dueAt: r.due_at,
  errors: JSON.parse(r.errors),
  updatedAt: r.updated_at,
});

/** Consumer-group state in the same SQLite file as the log, so it commits with a projection's writes. */
export function createSqliteSubscriptionStorage(db: Database.Database): SubscriptionStorage {
  const s = {
    insertGroup: db.prepare('INSERT INTO sinho_groups (name, position, partitions, created_at, updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING'),
    getGroup: db.prepare<[string], GroupRecord>('SELECT name, position, partitions, created_at FROM sinho_groups WHERE name = ?'),
    listGroups: db.prepare<[], GroupRecord>('SELECT name, position, partitions, created_at FROM sinho_groups ORDER BY name'),
    upsertMember: db.prepare('INSERT INTO sinho_group_members (group_name, member, until) VALUES (?, ?, ?) ON CONFLICT (group_name, member) DO UPDATE SET until = excluded.until'),
    expireMembers: db.prepare('DELETE FROM sinho_group_members WHERE group_name = ? AND until < ?'),
    liveMembers: db.prepare<[string], { member: string }>('SELECT member FROM sinho_group_members WHERE group_name = ? ORDER BY member'),
    deleteMember: db.prepare('DELETE FROM sinho_group_members WHERE group_name = ? AND member = ?'),
    deleteMembersAll: db.prepare('DELETE FROM sinho_group_members WHERE group_name = ?'),
    liveVersion: db.prepare<[string], { live_version: number }>('SELECT live_version FROM sinho_projections WHERE name = ?'),
    insertLive: db.prepare('INSERT INTO sinho_projections (name, live_version, switched_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING'),
    switchLive: db.prepare('UPDATE sinho_projections SET live_version = ?, switched_at = ? WHERE name = ? AND live_version = ?'),
    deleteGroup: db.prepare('DELETE FROM sinho_groups WHERE name = ?'),
    deleteDeferredAll: db.prepare('DELETE FROM sinho_group_deferred WHERE group_name = ?'),
    deleteProcessedAll: db.prepare('DELETE FROM sinho_group_processed WHERE group_name = ?'),
    loadDeferred: db.prepare<[string], DeferredRecord>(
      'SELECT position, kind, event_id, key, state, attempts, due_at, errors, updated_at FROM sinho_group_deferred WHERE group_name = ? ORDER BY position',
    ),
    upsertDeferred: db.prepare(
      `INSERT INTO sinho_group_deferred (group_name, kind, position, event_id, key, state, attempts, due_at, errors, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (group_name, kind, position) DO UPDATE SET
         event_id = excluded.event_id, key = excluded.key, state = excluded.state, attempts = excluded.attempts,
         due_at = excluded.due_at, errors = excluded.errors, updated_at = excluded.updated_at`,
    ),
    deleteDeferred: db.prepare('DELETE FROM sinho_group_deferred WHERE group_name = ? AND kind = ? AND position = ?'),
    insertProcessed: db.prepare('INSERT INTO sinho_group_processed (group_name, event_id, position) VALUES (?, ?, ?) ON CONFLICT DO NOTHING'),
    pruneProcessed: db.prepare('DELETE FROM sinho_group_processed WHERE group_name = ? AND position <= ?'),
    highestProcessed: db.prepare<[string], { p: number | null }>('SELECT MAX(position) AS p FROM sinho_group_processed WHERE group_name = ?'),
    processed: db.prepare<[string, string], { event_id: string }>('SELECT event_id FROM sinho_group_processed WHERE group_name = ? AND event_id IN (SELECT value FROM json_each(?))'),
    setPosition: db.prepare('UPDATE sinho_groups SET position = ?, updated_at = ? WHERE name = ?'),
    resetDeferred: db.prepare("DELETE FROM sinho_group_deferred WHERE group_name = ? AND state <> 'dead'"),
    acquire: db.prepare('UPDATE sinho_groups SET owner = ?, lease_until = ? WHERE name = ? AND (owner IS NULL OR owner = ? OR lease_until < ?)'),
    release: db.prepare('UPDATE sinho_groups SET owner = NULL, lease_until = 0 WHERE name = ? AND owner = ?'),
    owner: db.prepare<[string], { owner: string | null; lease_until: number }>('SELECT owner, lease_until FROM sinho_groups WHERE name = ?'),
  };
  // Projection statements are the user's SQL; prepared once per distinct text.
  const statements = new Map<string, Database.Statement>();
  const prepared = (sql: string): Database.Statement => {
    let stmt = statements.get(sql);
    if (!stmt) {
      if (statements.size > 500) statements.clear();
      statements.set(sql, (stmt = db.prepare(sql)));
    }
    return stmt;
  };
  const commit = db.transaction((group: string, c: GroupCommit, owner: string) => {
    const lease = s.owner.get(group);
    if (!lease || lease.owner !== owner) {
      throw new SinhoError('GROUP_LEASE_LOST', `This instance no longer holds consumer group "${group}" (another instance took it over); nothing was committed.`, { group });
    }
    for (const r of c.upserts) {
      s.upsertDeferred.run(group, r.kind, r.position, r.eventId, r.key, r.state, r.attempts, r.dueAt, JSON.stringify(r.errors), r.updatedAt);
    }
    for (const d of c.deletes) s.deleteDeferred.run(group, d.kind, d.position);
    for (const p of c.processed) s.insertProcessed.run(group, p.eventId, p.position);
    for (const st of c.statements) prepared(st.sql).run(...st.params);
    if (c.position !== undefined) {
      s.setPosition.run(c.position, new Date().toISOString(), group);
      s.pruneProcessed.run(group, c.position);
    }
  });
  const toGroup = (r: GroupRecord): GroupRow => ({ name: r.name, position: r.position, partitions: r.partitions, createdAt: r.created_at });
  const heartbeat = db.transaction((group: string, member: string, ttlMs: number) => {
    const now = Date.now();
    s.upsertMember.run(group, member, now + ttlMs);
    s.expireMembers.run(group, now);
    return s.liveMembers.all(group).map((r) => r.member);
  });
  return {
    supportsStatements: true,
    ensureGroup: async (name, initialPosition, partitions = 0) => {
      const now = new Date().toISOString();
      s.insertGroup.run(name, initialPosition, partitions, now, now);
      return toGroup(s.getGroup.get(name)!);
    },
    heartbeat: async (group, member, ttlMs) => heartbeat.immediate(group, member, ttlMs),
    leave: async (group, member) => void s.deleteMember.run(group, member),
    getGroup: async (name) => {
      const r = s.getGroup.get(name);
      return r && toGroup(r);
    },
    listGroups: async () => s.listGroups.all().map(toGroup),
    deleteGroup: async (name) => {
      db.transaction(() => {
        s.deleteDeferredAll.run(name);
        s.deleteProcessedAll.run(name);
        s.deleteMembersAll.run(name);
        s.deleteGroup.run(name);
      }).immediate();
    },
    loadDeferred: async (group) => s.loadDeferred.all(group).map(toRow),
    commitGroup: async (group, c, owner) => commit.immediate(group, c, owner),
    acquireLease: async (group, owner, leaseMs) => {
      const now = Date.now();
      return s.acquire.run(owner, now + leaseMs, group, owner, now).changes === 1;
    },
    releaseLease: async (group, owner) => void s.release.run(group, owner),
    highestProcessed: async (group) => s.highestProcessed.get(group)?.p ?? 0,
    liveProjectionVersion: async (name) => s.liveVersion.get(name)?.live_version,
    switchProjection: async (name, from, to) => {
      const now = new Date().toISOString();
      return (from === undefined ? s.insertLive.run(name, to, now) : s.switchLive.run(to, now, name, from)).changes === 1;
    },
    runStatements: async (list) => {
      db.transaction(() => {
        for (const st of list) prepared(st.sql).run(...st.params);
      }).immediate();
    },
    processedIds: async (group, ids) => new Set(s.processed.all(group, JSON.stringify(ids)).map((r) => r.event_id)),
    resetGroup: async (group, position) => {
      db.transaction(() => {
        s.setPosition.run(position, new Date().toISOString(), group);
        s.resetDeferred.run(group);
        s.deleteProcessedAll.run(group);
      }).immediate();
    },
  };
}
