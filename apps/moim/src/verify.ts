/**
 * History verification (`moim verify`): recomputes community memberships,
 * family memberships and balances from the log, and compares them with the
 * read models, reporting every discrepancy (expected: none).
 *
 * The read models trail the log, so the comparison is made at the read
 * models' own checkpoint: their rows are read in one snapshot, the
 * checkpoint before and after (retrying until both agree, i.e. no commit
 * landed in between), and the log is folded up to that checkpoint.
 */
import { consumerGroups, liveProjectionVersion, projectionGroupName, type EventLog } from 'sinho';
import { balanceDelta, READ_MODEL_VERSION, READ_MODELS, type ReadModels } from './read-models.js';

export interface Discrepancy {
  kind: 'community-members' | 'membership' | 'family-membership' | 'balance';
  key: string;
  /** From the log. */
  expected: number | boolean;
  /** From the read model. */
  actual: number | boolean;
}

export interface VerifyReport {
  readModelVersion: number;
  /** The log position both sides were compared at. */
  position: number;
  events: number;
  checked: { communities: number; memberships: number; familyMemberships: number; balances: number };
  discrepancies: Discrepancy[];
}

export async function verifyHistory(log: EventLog, readModels: ReadModels): Promise<VerifyReport> {
  const version = (await liveProjectionVersion(log, READ_MODELS)) ?? READ_MODEL_VERSION;
  const group = projectionGroupName(READ_MODELS, version);
  const checkpoint = async () => (await consumerGroups(log).checkpoint(group)) ?? 0;
  let position: number;
  let rows: Awaited<ReturnType<ReadModels['snapshot']>>;
  for (;;) {
    const before = await checkpoint();
    rows = await readModels.snapshot();
    if ((await checkpoint()) === before) {
      position = before;
      break;
    }
  }

  const members = new Map<string, Set<string>>();
  const families = new Map<string, Set<string>>();
  const balances = new Map<string, number>();
  let events = 0;
  for await (const e of log.readAll({ filter: { categories: ['community', 'family', 'account'] } })) {
    if (e.position > position) break;
    events += 1;
    const d = e.data as Record<string, string>;
    const set = (map: Map<string, Set<string>>, key: string) => map.get(key) ?? map.set(key, new Set()).get(key)!;
    switch (e.type) {
      case 'CommunityCreated':
        set(members, d.communityId!).add(d.owner!);
        break;
      case 'MemberJoined':
        set(members, d.communityId!).add(d.memberId!);
        break;
      case 'MemberLeft':
        set(members, d.communityId!).delete(d.memberId!);
        break;
      case 'FamilyAccountCreated':
        set(families, d.familyId!).add(d.owner!);
        break;
      case 'FamilyMemberJoined':
        set(families, d.familyId!).add(d.memberId!);
        break;
      case 'FamilyMemberLeft':
      case 'FamilyMemberRemoved':
        set(families, d.familyId!).delete(d.memberId!);
        break;
      default: {
        const delta = balanceDelta(e);
        if (delta !== 0) {
          const id = e.stream.slice('account-'.length);
          balances.set(id, (balances.get(id) ?? 0) + delta);
        }
      }
    }
  }

  const discrepancies: Discrepancy[] = [];
  const compareSets = (kind: 'membership' | 'family-membership', expected: Map<string, Set<string>>, actual: { group: string; member: string }[]) => {
    const seen = new Set(actual.map((r) => `${r.group}/${r.member}`));
    for (const [group, ids] of expected) for (const m of ids) if (!seen.has(`${group}/${m}`)) discrepancies.push({ kind, key: `${group}/${m}`, expected: true, actual: false });
    for (const r of actual) if (!expected.get(r.group)?.has(r.member)) discrepancies.push({ kind, key: `${r.group}/${r.member}`, expected: false, actual: true });
  };
  compareSets('membership', members, rows.memberships.map((r) => ({ group: r.community_id, member: r.member_id })));
  compareSets('family-membership', families, rows.families.map((r) => ({ group: r.family_id, member: r.member_id })));
  const counted = new Map(rows.communities.map((c) => [c.id, c.members]));
  for (const [id, ids] of members) if (counted.get(id) !== ids.size) discrepancies.push({ kind: 'community-members', key: id, expected: ids.size, actual: counted.get(id) ?? 0 });
  const stored = new Map(rows.balances.map((b) => [b.member_id, b.balance]));
  for (const id of new Set([...balances.keys(), ...stored.keys()])) {
    if ((balances.get(id) ?? 0) !== (stored.get(id) ?? 0)) discrepancies.push({ kind: 'balance', key: id, expected: balances.get(id) ?? 0, actual: stored.get(id) ?? 0 });
  }
  return {
    readModelVersion: rows.version,
    position,
    events,
    checked: { communities: members.size, memberships: [...members.values()].reduce((n, s) => n + s.size, 0), familyMemberships: [...families.values()].reduce((n, s) => n + s.size, 0), balances: balances.size },
    discrepancies,
  };
}
