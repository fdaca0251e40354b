/**
 * RabbitMQ topology from configuration: exchanges, queues, bindings, and a
 * retry topology for downstream consumers. Validated before anything is
 * declared, so a bad configuration is a clear error at start-up.
 */
import type { Channel, Message } from 'amqplib';
import { InvalidInput } from '../../errors.js';

export type ExchangeType = 'direct' | 'topic' | 'fanout' | 'headers';

export interface ExchangeSpec {
  name: string;
  /** Default `topic`. */
  type?: ExchangeType;
  /** Default true. */
  durable?: boolean;
}

export interface QueueSpec {
  name: string;
  /** Default true. */
  durable?: boolean;
  /** Queue arguments (x-message-ttl, x-dead-letter-exchange, x-queue-type, ...). */
  arguments?: Record<string, unknown>;
}

export interface BindingSpec {
  queue: string;
  exchange: string;
  /** Routing key pattern. Default `#`. */
  pattern?: string;
  /** For headers exchanges: the match arguments (x-match, header values). */
  arguments?: Record<string, unknown>;
}

/**
 * A retry topology for a consumer of `queue`: one delay queue per delay tier
 * (`<queue>.retry.<ms>`, with that TTL, dead-lettering back to `queue`
 * through the default exchange), so a long delay never holds a short one
 * behind it (the head-of-line trap of one DLX+TTL queue); and a final
 * dead-letter queue `<queue>.dead` after `maxAttempts`.
 */
export interface RetryTopologySpec {
  queue: string;
  /** One tier per distinct delay; attempt n waits delaysMs[n - 1] (the last repeats). */
  delaysMs: number[];
  /** Deliveries in all, the first included. Default delaysMs.length + 1. */
  maxAttempts?: number;
}

export interface Topology {
  exchanges?: ExchangeSpec[];
  queues?: QueueSpec[];
  bindings?: BindingSpec[];
  retry?: RetryTopologySpec[];
}

const EXCHANGE_TYPES = new Set(['direct', 'topic', 'fanout', 'headers']);
const NAME = /^[A-Za-z0-9_.:-]{1,200}$/;

function checkName(what: string, name: unknown): void {
  if (typeof name !== 'string' || !NAME.test(name)) throw new InvalidInput('INVALID_ARGUMENT', `${what} must be 1-200 characters of letters, digits, _ . : -; got ${JSON.stringify(name)}.`);
}

/** Throws InvalidInput for anything RabbitMQ would refuse or Sinho cannot honour. */
export function validateTopology(topology: Topology): void {
  for (const e of topology.exchanges ?? []) {
    checkName('exchange name', e.name);
    if (e.type !== undefined && !EXCHANGE_TYPES.has(e.type)) throw new InvalidInput('INVALID_ARGUMENT', `Exchange "${e.name}" has unknown type ${JSON.stringify(e.type)}; expected direct, topic, fanout or headers.`);
  }
  for (const q of topology.queues ?? []) checkName('queue name', q.name);
  for (const b of topology.bindings ?? []) {
    checkName('binding queue', b.queue);
    checkName('binding exchange', b.exchange);
  }
  for (const r of topology.retry ?? []) {
    checkName('retry queue', r.queue);
    if (!Array.isArray(r.delaysMs) || r.delaysMs.length === 0 || !r.delaysMs.every((d) => Number.isSafeInteger(d) && d > 0)) {
      throw new InvalidInput('INVALID_ARGUMENT', `Retry topology of "${r.queue}" needs delaysMs: a non-empty list of integers > 0.`);
    }
    if (r.maxAttempts !== undefined && (!Number.isSafeInteger(r.maxAttempts) || r.maxAttempts < 1)) throw new InvalidInput('INVALID_ARGUMENT', `Retry topology of "${r.queue}": maxAttempts must be an integer >= 1.`);
  }
}

export const retryQueueName = (queue: string, delayMs: number): string => `${queue}.retry.${delayMs}`;
export const deadQueueName = (queue: string): string => `${queue}.dead`;

/** Declares everything (idempotent: declaring what exists with the same settings is a no-op). */
export async function declareTopology(channel: Channel, topology: Topology): Promise<void> {
  for (const e of topology.exchanges ?? []) await channel.assertExchange(e.name, e.type ?? 'topic', { durable: e.durable ?? true });
  for (const q of topology.queues ?? []) await channel.assertQueue(q.name, { durable: q.durable ?? true, arguments: q.arguments });
  for (const r of topology.retry ?? []) {
    await channel.assertQueue(r.queue, { durable: true });
    for (const delay of new Set(r.delaysMs)) {
      await channel.assertQueue(retryQueueName(r.queue, delay), {
        durable: true,
        arguments: { 'x-message-ttl': delay, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': r.queue },
      });
    }
    await channel.assertQueue(deadQueueName(r.queue), { durable: true });
  }
  // Bindings last: they may name the retry tiers' queues.
  for (const b of topology.bindings ?? []) await channel.bindQueue(b.queue, b.exchange, b.pattern ?? '#', b.arguments);
}

/** The header carrying how many times a message was retried through the retry topology. */
export const RETRY_COUNT_HEADER = 'x-retry-count';

/**
 * For a consumer of a queue with a retry topology: sends `message` to the
 * delay tier of its next attempt (or, after `maxAttempts`, to `<queue>.dead`
 * with the reason in headers), waits for the broker's confirm, then acks the
 * original. Returns where it went. Each tier is its own queue with one TTL,
 * so a message waiting 30 s never holds back one waiting 1 s.
 */
export async function retryOrDeadLetter(
  channel: Channel & { waitForConfirms?: () => Promise<void> },
  message: Message,
  spec: RetryTopologySpec,
  reason: string,
): Promise<'retry' | 'dead'> {
  const headers = { ...(message.properties.headers ?? {}) };
  const retried = Number(headers[RETRY_COUNT_HEADER] ?? 0);
  const maxAttempts = spec.maxAttempts ?? spec.delaysMs.length + 1;
  const properties = { ...message.properties, headers } as Record<string, unknown>;
  delete properties.deliveryMode; // set again by persistent: true
  let target: 'retry' | 'dead';
  if (retried + 1 >= maxAttempts) {
    Object.assign(headers, { [RETRY_COUNT_HEADER]: retried, 'x-death-reason': reason.slice(0, 1000), 'x-original-queue': spec.queue, 'x-dead-at': new Date().toISOString() });
    channel.sendToQueue(deadQueueName(spec.queue), message.content, { ...properties, persistent: true });
    target = 'dead';
  } else {
    const delay = spec.delaysMs[Math.min(retried, spec.delaysMs.length - 1)]!;
    Object.assign(headers, { [RETRY_COUNT_HEADER]: retried + 1, 'x-last-error': reason.slice(0, 1000) });
    channel.sendToQueue(retryQueueName(spec.queue, delay), message.content, { ...properties, persistent: true });
    target = 'retry';
  }
  await channel.waitForConfirms?.();
  channel.ack(message);
  return target;
}
