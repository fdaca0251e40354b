/**
 * Transfer confirmation driven by RabbitMQ, for a team that keeps its ledger
 * checker outside Sinho (the other style, the default, is Sinho's durable
 * delayed delivery in transfer-processor.ts). The worker still submits each
 * transfer to the ledger and records `TransferSubmitted`; then:
 * 1. the relay publishes `transfer.TransferSubmitted` (with confirms) to the
 *    exchange, which routes it into the first delay tier of the checks queue:
 *    the first check happens after the confirmation delay;
 * 2. the checker (ledger/checker.ts: plain amqplib, no Sinho) asks the ledger;
 *    still pending goes to the next delay tier, up to MAX_CHECKS checks;
 *    a final answer (or "not final after N checks") is published to the
 *    results queue, with message-id `<transferId>:<outcome>`;
 * 3. the inbound consumer turns each result into TransferConfirmed or
 *    TransferFailed (idempotent: a repeated result changes nothing).
 */
import type { EventLog } from 'sinho';
import { retryQueueName, startRabbitInbound, startRabbitRelay, type RabbitInbound, type RabbitRelay } from 'sinho/rabbitmq';
import { MAX_CHECKS } from './domain/transfer.js';
import { confirmTransfer, failTransfer } from './transfers.js';

export interface RabbitTransferTopology {
  exchange: string;
  checks: string;
  results: string;
  delayMs: number;
}

export interface RabbitTransferChecks {
  relay: RabbitRelay;
  inbound: RabbitInbound<TransferResult>;
  close(): Promise<void>;
}

export type TransferResult = { transferId: string; outcome: 'confirmed' | 'failed'; reason?: string };

export async function startRabbitTransferChecks(log: EventLog, url: string, t: RabbitTransferTopology, options: { standby?: boolean } = {}): Promise<RabbitTransferChecks> {
  const relay = await startRabbitRelay(log, {
    standby: options.standby,
    url,
    exchange: t.exchange,
    group: 'moim-transfer-relay',
    bindings: [{ kind: 'direct', key: 'transfer.TransferSubmitted' }],
    topology: {
      retry: [{ queue: t.checks, delaysMs: [t.delayMs], maxAttempts: MAX_CHECKS }],
      queues: [{ name: t.results }],
      // Into the first delay tier: the first check waits the confirmation delay too.
      bindings: [{ queue: retryQueueName(t.checks, t.delayMs), exchange: t.exchange, pattern: 'transfer.TransferSubmitted' }],
    },
  });
  const inbound = await startRabbitInbound<TransferResult>(log, {
    url,
    queue: t.results,
    handle: async (m, l) => {
      const metadata = { correlationId: m.correlationId ?? m.messageId, causationId: m.messageId };
      if (m.data.outcome === 'confirmed') await confirmTransfer(l, m.data.transferId, metadata);
      else await failTransfer(l, m.data.transferId, m.data.reason ?? 'failed', metadata);
    },
  });
  return {
    relay,
    inbound,
    close: async () => {
      await inbound.stop();
      await relay.stop();
    },
  };
}
