/**
 * A settlement run (`settlement-<communityId>_<period>`): one per community
 * and month. Starting it records the dues and the members to charge; one
 * `SettlementRequested` per member is the work queue; each request's outcome
 * is recorded once; the summary is a fold of the stream.
 */
import type { DomainEvent } from 'sinho';

export type SettlementEvent =
  | DomainEvent<'SettlementStarted', { runId: string; communityId: string; period: string; amount: number; members: string[] }>
  | DomainEvent<'SettlementRequested', { runId: string; communityId: string; period: string; memberId: string; amount: number }>
  | DomainEvent<'SettlementItemSucceeded', { runId: string; memberId: string }>
  | DomainEvent<'SettlementItemFailed', { runId: string; memberId: string; reason: string }>;

export interface SettlementSummary {
  runId: string;
  communityId: string;
  period: string;
  amount: number;
  members: number;
  queued: number;
  succeeded: number;
  failed: { memberId: string; reason: string }[];
  done: boolean;
}

export const settlementRunId = (communityId: string, period: string): string => `${communityId}_${period}`;
export const settlementStream = (runId: string): string => `settlement-${runId}`;

export function summarize(events: readonly { type: string; data: unknown }[]): SettlementSummary | undefined {
  let summary: SettlementSummary | undefined;
  const outcome = new Map<string, string | null>();
  for (const e of events as SettlementEvent[]) {
    switch (e.type) {
      case 'SettlementStarted':
        summary = { runId: e.data.runId, communityId: e.data.communityId, period: e.data.period, amount: e.data.amount, members: e.data.members.length, queued: 0, succeeded: 0, failed: [], done: false };
        break;
      case 'SettlementRequested':
        if (summary) summary.queued += 1;
        break;
      case 'SettlementItemSucceeded':
        if (!outcome.has(e.data.memberId)) outcome.set(e.data.memberId, null);
        break;
      case 'SettlementItemFailed':
        if (!outcome.has(e.data.memberId)) outcome.set(e.data.memberId, e.data.reason);
        break;
    }
  }
  if (!summary) return undefined;
  for (const [memberId, reason] of outcome) {
    if (reason === null) summary.succeeded += 1;
    else summary.failed.push({ memberId, reason });
  }
  summary.done = summary.queued === summary.members && outcome.size === summary.members;
  return summary;
}
