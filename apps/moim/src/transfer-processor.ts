/**
 * The transfer processor (worker role), one consumer group on
 * `transfer.TransferRequested`:
 * 1. the first delivery submits the transfer to the ledger (idempotent by
 *    transfer id), records `TransferSubmitted`, and schedules a check of the
 *    same event after `confirmationDelayMs` (Sinho's durable delayed delivery:
 *    it survives restarts);
 * 2. each scheduled delivery asks the ledger: confirmed or failed is final;
 *    still pending schedules another check, up to MAX_CHECKS, after which the
 *    transfer fails.
 * A ledger error or timeout throws, so the group retries the step with
 * backoff, durably: never lost.
 */
import { handleCommand, loadAggregate, subscribe, type ConsumerGroup, type EventLog, type RecordedEvent } from 'sinho';
import { MAX_CHECKS, transfer, transferStream } from './domain/transfer.js';
import type { Logger } from 'pino';
import type { LedgerClient } from './ledger/client.js';
import { confirmTransfer, failTransfer } from './transfers.js';

export interface TransferProcessorOptions {
  /** Delay before each confirmation check, ms. Default 5,000. */
  confirmationDelayMs?: number;
  logger?: Pick<Logger, 'info'>;
  /**
   * Who checks the ledger after submission: `sinho` (default; durable delayed deliveries of this group) or
   * `rabbitmq` (the relay hands TransferSubmitted to RabbitMQ's retry topology and an external checker;
   * see transfer-checks-rabbitmq.ts).
   */
  checks?: 'sinho' | 'rabbitmq';
  /** Wait for each group's lease as a hot standby of another worker (PostgreSQL deployments). */
  standby?: boolean;
}

export function startTransferProcessor(log: EventLog, ledger: LedgerClient, options: TransferProcessorOptions = {}): Promise<ConsumerGroup> {
  const delay = options.confirmationDelayMs ?? 5000;
  const logger = options.logger ?? { info: () => {} };
  return subscribe(log, 'transfer-processor', {
    standby: options.standby,
    bindings: [{ kind: 'direct', key: 'transfer.TransferRequested' }],
    concurrency: 32,
    retry: { initialDelayMs: 500, multiplier: 2, maxDelayMs: 30_000, maxAttempts: 20 },
    handler: async (event: RecordedEvent, ctx) => {
      const { transferId, from, to, amount } = event.data as { transferId: string; from: string; to: string; amount: number };
      const metadata = { correlationId: event.metadata.correlationId ?? event.id, causationId: event.id };
      const stream = transferStream(transferId);
      const { state } = await loadAggregate(log, transfer, stream);
      if (state.status === 'confirmed' || state.status === 'failed') return;
      // With RabbitMQ checks, this group only submits; the checks happen outside it.
      if (options.checks === 'rabbitmq' && state.status === 'submitted') return;
      if (!ctx.scheduled) {
        await ledger.submit({ id: transferId, from, to, amount }, ctx.signal);
        await handleCommand(log, transfer, stream, { kind: 'submit' }, { commandId: `${event.id}:submit`, metadata });
        if (options.checks !== 'rabbitmq') ctx.schedule(delay);
        logger.info({ correlationId: metadata.correlationId, transferId }, 'transfer submitted to the ledger');
        return;
      }
      const result = await ledger.status(transferId, ctx.signal);
      const outcome = result.status === 'pending' && state.checks + 1 >= MAX_CHECKS ? { status: 'failed' as const, reason: `not final after ${MAX_CHECKS} checks` } : result;
      if (outcome.status !== 'pending') logger.info({ correlationId: metadata.correlationId, transferId, outcome: outcome.status }, 'transfer settled');
      if (outcome.status === 'confirmed') return confirmTransfer(log, transferId, metadata);
      if (outcome.status === 'failed') return failTransfer(log, transferId, outcome.reason, metadata);
      await handleCommand(log, transfer, stream, { kind: 'still-pending' }, { commandId: `${event.id}:check-${state.checks + 1}`, metadata });
      ctx.schedule(delay);
    },
  });
}
