/**
 * Settlement batches. `startSettlement` (API) records the run and queues one
 * request per member; the settlement worker (worker role, a consumer group
 * ordered by member) charges each member's dues through the account
 * aggregate and records the outcome. Every append has a deterministic event
 * id, so a re-run of the same period, a redelivered request or a restarted
 * queueing charges nobody twice: the log stores an event id once.
 */
import { commandEventId, domainError, loadAggregate, subscribe, type ConsumerGroup, type EventLog, type EventMetadata, type RecordedEvent } from 'sinho';
import { account, accountStream, available } from './domain/account.js';
import { community, communityStream } from './domain/community.js';
import { settlementRunId, settlementStream, summarize, type SettlementSummary } from './domain/settlement.js';

const QUEUE_CHUNK = 500;

async function readAll(log: EventLog, stream: string, limit?: number): Promise<RecordedEvent[]> {
  const out: RecordedEvent[] = [];
  for await (const e of log.readStream(stream, limit === undefined ? {} : { limit })) out.push(e);
  return out;
}

export async function settlementSummary(log: EventLog, communityId: string, period: string): Promise<SettlementSummary | undefined> {
  return summarize(await readAll(log, settlementStream(settlementRunId(communityId, period))));
}

/**
 * Starts the settlement of `period` for a community, or, when it exists,
 * queues whatever its first start did not (a crash between chunks); returns
 * its summary. The run records its dues and members at the first start.
 */
export async function startSettlement(log: EventLog, communityId: string, period: string, by: string, metadata: EventMetadata): Promise<SettlementSummary> {
  const { state } = await loadAggregate(log, community, communityStream(communityId));
  if (!state.communityId) throw domainError('COMMUNITY_NOT_FOUND', 'No such community.');
  if (state.owner !== by) throw domainError('NOT_COMMUNITY_OWNER', 'Only the owner runs settlements.');
  const runId = settlementRunId(communityId, period);
  const stream = settlementStream(runId);
  const occurredAt = new Date().toISOString();
  if (!(await settlementSummary(log, communityId, period))) {
    if (!state.dues) throw domainError('NO_DUES', 'Set monthly dues before running a settlement.');
    const members = state.members.filter((m) => m !== state.owner);
    try {
      await log.append(stream, [{ type: 'SettlementStarted', data: { runId, communityId, period, amount: state.dues, members }, metadata: { ...metadata, occurredAt } }], { expectedRevision: 'noStream' });
    } catch (error) {
      // Two starts raced: the other one recorded the run; it is queued below either way.
      if ((error as { code?: string }).code !== 'WRONG_EXPECTED_REVISION') throw error;
    }
  }
  const [started] = await readAll(log, stream, 1);
  const { amount, members } = started!.data as { amount: number; members: string[] };
  for (let i = 0; i < members.length; i += QUEUE_CHUNK) {
    await log.append(
      stream,
      members.slice(i, i + QUEUE_CHUNK).map((memberId) => ({
        id: commandEventId(`${runId}:request`, memberId, 0),
        type: 'SettlementRequested',
        data: { runId, communityId, period, memberId, amount },
        metadata: { ...metadata, occurredAt },
      })),
    );
  }
  return (await settlementSummary(log, communityId, period))!;
}

/** The settlement worker: charges one member per request, in parallel across members. */
export function startSettlementWorker(log: EventLog, options: { standby?: boolean } = {}): Promise<ConsumerGroup> {
  return subscribe(log, 'settlement-worker', {
    standby: options.standby,
    bindings: [{ kind: 'direct', key: 'settlement.SettlementRequested' }],
    orderingKey: (e) => (e.data as { memberId: string }).memberId,
    concurrency: 32,
    retry: { initialDelayMs: 200, maxDelayMs: 10_000, maxAttempts: 10 },
    handler: async (event) => {
      const { runId, communityId, period, memberId, amount } = event.data as { runId: string; communityId: string; period: string; memberId: string; amount: number };
      const stream = settlementStream(runId);
      const metadata = { correlationId: event.metadata.correlationId ?? event.id, causationId: event.id, occurredAt: event.metadata.occurredAt };
      const chargeId = commandEventId(`${runId}:charge`, memberId, 0);
      const resultId = commandEventId(`${runId}:result`, memberId, 0);
      const [charged] = await log.readEvents([chargeId]);
      let failure: string | undefined;
      if (!charged) {
        const acc = await loadAggregate(log, account, accountStream(memberId));
        if (available(acc.state) < amount) failure = `insufficient funds (available ${available(acc.state)}, dues ${amount})`;
        else {
          // Expected revision: a concurrent transfer makes this throw, and the retry checks the funds again.
          await log.append(accountStream(memberId), [{ id: chargeId, type: 'DuesCharged', data: { communityId, period, amount }, metadata }], { expectedRevision: acc.revision });
        }
      }
      await log.append(stream, [
        failure === undefined
          ? { id: resultId, type: 'SettlementItemSucceeded', data: { runId, memberId }, metadata }
          : { id: resultId, type: 'SettlementItemFailed', data: { runId, memberId, reason: failure }, metadata },
      ]);
    },
  });
}
