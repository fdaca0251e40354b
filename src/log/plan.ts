/**
 * Planning one group commit. Every adapter calls {@link planCommit} inside its
 * write transaction, after locking the log head, with the current revision of
 * each stream the batch touches and the stored copies of the caller-given event
 * ids. The plan decides, request by request and in arrival order:
 *
 * 1. idempotency: if every event of a stream append is already stored (or was
 *    planned earlier in this batch) with the same content, that append is a
 *    no-op reporting the stored revisions; partial or different matches are an
 *    {@link EventIdConflict};
 * 2. the expected revision, against the stream as earlier requests in the same
 *    batch left it, so sharing a transaction never weakens the check;
 * 3. revisions and positions for the new events, positions continuing the head.
 *
 * A request that fails any check contributes nothing; the others commit. The
 * function is pure, so all adapters share the exact same semantics.
 */
import { EventIdConflict, WrongExpectedRevision } from '../errors.js';
import type { AppendRequest, PlannedRow, PreparedAppend, PreparedEvent, RequestOutcome, StoredEvent, StreamOutcome } from './storage.js';
import type { ExpectedRevision } from './types.js';

export interface CommitPlan {
  outcomes: RequestOutcome[];
  rows: PlannedRow[];
  /** New revision of every stream the plan writes to. */
  streamRevisions: Map<string, number>;
  head: number;
}

/** Streams and caller-given ids a batch needs looked up before planning. */
export function lookupKeys(batch: readonly AppendRequest[]): { streams: string[]; givenIds: string[] } {
  const streams = new Set<string>();
  const givenIds = new Set<string>();
  for (const request of batch) {
    for (const append of request.appends) {
      streams.add(append.stream);
      for (const e of append.events) if (e.idGiven) givenIds.add(e.id);
    }
  }
  return { streams: [...streams], givenIds: [...givenIds] };
}

function canonicalJson(text: string): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v !== null && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) out[k] = sort((v as Record<string, unknown>)[k]);
      return out;
    }
    return v;
  };
  return JSON.stringify(sort(JSON.parse(text)));
}

function sameContent(stored: StoredEvent | PlannedRow, candidate: PreparedEvent): boolean {
  // Metadata is deliberately not compared: a retry legitimately carries a new occurredAt.
  return (
    stored.stream === candidate.stream &&
    stored.type === candidate.type &&
    stored.schemaVersion === candidate.schemaVersion &&
    (stored.data === candidate.data || canonicalJson(stored.data) === canonicalJson(candidate.data))
  );
}

function expectationHolds(expected: ExpectedRevision, actual: number): boolean {
  if (expected === 'any') return true;
  if (expected === 'noStream') return actual === -1;
  if (expected === 'streamExists') return actual >= 0;
  return actual === expected;
}

export function planCommit(
  batch: readonly AppendRequest[],
  currentRevisions: ReadonlyMap<string, number>,
  storedById: ReadonlyMap<string, StoredEvent>,
  head: number,
): CommitPlan {
  const revisions = new Map<string, number>(currentRevisions);
  const plannedById = new Map<string, PlannedRow>();
  const rows: PlannedRow[] = [];
  const streamRevisions = new Map<string, number>();
  const outcomes: RequestOutcome[] = [];
  let position = head;

  const findStored = (id: string): StoredEvent | PlannedRow | undefined => plannedById.get(id) ?? storedById.get(id);

  for (const request of batch) {
    try {
      // First pass: decide every stream append of this request without mutating anything.
      const decisions: ({ kind: 'stored'; outcome: StreamOutcome } | { kind: 'write'; append: PreparedAppend; base: number })[] = [];
      for (const append of request.appends) {
        const actual = revisions.get(append.stream) ?? -1;
        const matches = append.events.map((e) => (e.idGiven ? findStored(e.id) : undefined));
        const matched = matches.filter((m) => m !== undefined).length;
        if (matched > 0) {
          append.events.forEach((e, i) => {
            const m = matches[i];
            if (m && !sameContent(m, e)) throw new EventIdConflict(e.id, `with different content (stream "${m.stream}", type "${m.type}")`);
          });
          if (matched < append.events.length) {
            throw new EventIdConflict(matches.find((m) => m)!.id, 'but other events of this append are not: an append is stored whole or not at all');
          }
          const stored = matches as (StoredEvent | PlannedRow)[];
          decisions.push({
            kind: 'stored',
            outcome: {
              stream: append.stream,
              revision: stored[stored.length - 1]!.revision,
              events: stored.map((m) => ({ id: m.id, revision: m.revision, position: m.position })),
              alreadyStored: true,
            },
          });
          continue;
        }
        if (!expectationHolds(append.expectedRevision, actual)) {
          throw new WrongExpectedRevision(append.stream, append.expectedRevision, actual);
        }
        decisions.push({ kind: 'write', append, base: actual });
      }
      // Second pass: every check passed, so the whole request is written.
      const streams: StreamOutcome[] = [];
      for (const d of decisions) {
        if (d.kind === 'stored') {
          streams.push(d.outcome);
          continue;
        }
        let revision = d.base;
        const events: StreamOutcome['events'] = [];
        for (const e of d.append.events) {
          revision += 1;
          position += 1;
          const row: PlannedRow = {
            id: e.id,
            idGiven: e.idGiven,
            stream: e.stream,
            category: e.category,
            type: e.type,
            schemaVersion: e.schemaVersion,
            data: e.data,
            metadata: e.metadata,
            revision,
            position,
          };
          rows.push(row);
          plannedById.set(e.id, row);
          events.push({ id: e.id, revision, position });
        }
        if (d.append.events.length > 0) {
          revisions.set(d.append.stream, revision);
          streamRevisions.set(d.append.stream, revision);
        }
        streams.push({ stream: d.append.stream, revision, events, alreadyStored: false });
      }
      outcomes.push({ ok: true, streams });
    } catch (error) {
      outcomes.push({ ok: false, error: error as Error });
    }
  }
  return { outcomes, rows, streamRevisions, head: position };
}
