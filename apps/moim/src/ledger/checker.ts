/**
 * The ledger checker as a team outside Sinho would write it: plain amqplib.
 * It consumes the checks queue, asks the ledger for each transfer's status,
 * and publishes final answers to the results queue. A pending transfer, or a
 * ledger error, goes to the next delay tier of the retry topology with its
 * count in `x-retry-count`; after MAX_CHECKS checks a still-pending transfer
 * is answered "failed: not final after N checks", and a ledger that keeps
 * failing leaves the message in the dead-letter queue for an operator.
 */
import type { ChannelModel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import { MAX_CHECKS } from '../domain/transfer.js';
import type { RabbitTransferTopology, TransferResult } from '../transfer-checks-rabbitmq.js';
import type { LedgerClient } from './client.js';

const MAX_LEDGER_ERRORS = 20;

export async function startLedgerChecker(url: string, t: RabbitTransferTopology, ledger: LedgerClient): Promise<{ close(): Promise<void> }> {
  const amqp = await import('amqplib');
  let closing = false;
  // amqplib's recovery: after a broker restart the checker reconnects and consumes again.
  const connection = await amqp.connect(url, {
    recovery: { initialDelay: 200, maxDelay: 5000, maxRetries: Infinity, initialMaxRetries: 2, setup: (model: ChannelModel) => consume(model) },
  });
  connection.on('error', () => {});

  async function consume(model: ChannelModel): Promise<void> {
    const channel: ConfirmChannel = await model.createConfirmChannel();
    channel.on('error', () => {});
    await channel.prefetch(16);
    await channel.assertQueue(t.checks, { durable: true }); // started before the worker declared it: wait there, not fail
    const send = async (queue: string, body: unknown, options: Record<string, unknown>) => {
      channel.sendToQueue(queue, Buffer.from(JSON.stringify(body)), { persistent: true, contentType: 'application/json', ...options });
      await channel.waitForConfirms();
    };
    await channel.consume(t.checks, (message: ConsumeMessage | null) => {
      if (!message || closing) return;
      // A failure here (the channel closed under it) leaves the message unacked: the broker redelivers it.
      check(message, channel, send).catch(() => {});
    });
  }

  async function check(message: ConsumeMessage, channel: ConfirmChannel, send: (queue: string, body: unknown, options: Record<string, unknown>) => Promise<void>): Promise<void> {
    const { transferId } = JSON.parse(message.content.toString()) as { transferId: string };
    const checks = Number(message.properties.headers?.['x-retry-count'] ?? 0) + 1;
    const errors = Number(message.properties.headers?.['x-error-count'] ?? 0);
    const body = JSON.parse(message.content.toString()) as unknown;
    const answer = async (result: TransferResult) => {
      await send(t.results, result, { messageId: `${transferId}:${result.outcome}`, correlationId: message.properties.correlationId });
      channel.ack(message);
    };
    // Pending counts as a check; a ledger error does not (it is retried up to MAX_LEDGER_ERRORS times).
    const later = async (headers: Record<string, unknown>, dead: boolean) => {
      const queue = dead ? `${t.checks}.dead` : `${t.checks}.retry.${t.delayMs}`;
      await send(queue, body, { ...message.properties, headers: { ...message.properties.headers, ...headers } });
      channel.ack(message);
    };
    let status: Awaited<ReturnType<LedgerClient['status']>>;
    try {
      status = await ledger.status(transferId);
    } catch (error) {
      return later({ 'x-error-count': errors + 1, 'x-last-error': (error as Error).message }, errors + 1 >= MAX_LEDGER_ERRORS);
    }
    if (status.status === 'confirmed') return answer({ transferId, outcome: 'confirmed' });
    if (status.status === 'failed') return answer({ transferId, outcome: 'failed', reason: status.reason });
    if (checks >= MAX_CHECKS) return answer({ transferId, outcome: 'failed', reason: `not final after ${MAX_CHECKS} checks` });
    return later({ 'x-retry-count': checks }, false);
  }

  return {
    close: async () => {
      closing = true;
      await connection.close().catch(() => {});
    },
  };
}
