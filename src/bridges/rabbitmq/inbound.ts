/**
 * RabbitMQ inbound: messages turned into commands. A queue is consumed with
 * manual acks and a prefetch; each message is decoded and handed to `handle`,
 * which runs a command on an aggregate (typically `handleCommand` with
 * `commandId: message id`, so a redelivered message appends nothing twice).
 * The message is acked only once `handle` resolved, that is once the append
 * is durable.
 *
 * A message that cannot succeed goes to the dead-letter queue (or exchange)
 * with the reason in headers, and is acked: one without a message id, one
 * that cannot be decoded, one a domain rule refuses, one with bad input. A
 * message that failed for a passing reason (the store unreachable, too many
 * concurrent writers) is retried through the retry tiers when `retry` is
 * given, or put back at the tail of its queue, up to `maxAttempts`; then it
 * is dead-lettered too. Nothing is acked silently and nothing is requeued
 * forever.
 */
import { EventEmitter } from 'node:events';
import type { ConfirmChannel, ConsumeMessage, RecoveringChannelModel } from 'amqplib';
import { InvalidInput, SinhoError } from '../../errors.js';
import type { EventLog } from '../../log/types.js';
import { checkAmqpUrl, connectRabbit } from './connection.js';
import { deadQueueName, declareTopology, retryOrDeadLetter, validateTopology, RETRY_COUNT_HEADER, type RetryTopologySpec, type Topology } from './topology.js';

export interface InboundMessage<T> {
  /** The decoded body. */
  data: T;
  /** The message id: use it as the command id (idempotence). */
  messageId: string;
  correlationId?: string;
  headers: Record<string, unknown>;
  routingKey: string;
  /** Deliveries before this one, through retries. */
  retries: number;
}

export interface RabbitInboundOptions<T> {
  url: string;
  /** The queue consumed (declared durable). */
  queue: string;
  /** Unacknowledged messages at most. Default 32. */
  prefetch?: number;
  /** More topology to declare at every (re)connect. */
  topology?: Topology;
  /** Decodes a body; throwing makes the message undecodable (dead letter). Default: JSON. */
  decode?: (content: Buffer, message: ConsumeMessage) => T;
  /** Runs the command. Resolve when the append is durable; throw a DomainError or InvalidInput to refuse the message. */
  handle: (message: InboundMessage<T>, log: EventLog) => Promise<void>;
  /** Retry tiers for passing failures (their `queue` is this queue); without it, failed messages go back to the tail of the queue. */
  retry?: Omit<RetryTopologySpec, 'queue'>;
  /** Deliveries in all before a passing failure is dead-lettered, when `retry` is not given. Default 5. */
  maxAttempts?: number;
  /** Dead letters go to this exchange (routing key: the queue's name) instead of the queue `<queue>.dead`. */
  deadLetterExchange?: string;
  /** Connection attempts before start-up fails. Default 3. */
  connectAttempts?: number;
  connectionName?: string;
}

export interface InboundStats {
  handled: number;
  deadLettered: number;
  retried: number;
}

export interface InboundEventMap {
  'inbound:dead-letter': [{ messageId?: string; reason: string; code: string }];
  'inbound:retry': [{ messageId: string; attempt: number; error: string }];
  'inbound:error': [{ error: Error }];
}

/** Refusals that no retry can fix. */
const PERMANENT = new Set(['DOMAIN_RULE_VIOLATED', 'INVALID_ARGUMENT', 'INVALID_EVENT', 'INVALID_EVENT_TYPE', 'INVALID_STREAM_NAME', 'EVENT_TOO_LARGE', 'TOO_MANY_EVENTS', 'EVENT_ID_CONFLICT', 'UNKNOWN_SCHEMA_VERSION']);

export class RabbitInbound<T = unknown> extends EventEmitter<InboundEventMap> {
  private model!: RecoveringChannelModel;
  private readonly inFlight = new Set<Promise<void>>();
  private stopping = false;
  private readonly counters: InboundStats = { handled: 0, deadLettered: 0, retried: 0 };

  private constructor(
    private readonly log: EventLog,
    private readonly options: RabbitInboundOptions<T>,
  ) {
    super();
  }

  static async start<T>(log: EventLog, options: RabbitInboundOptions<T>): Promise<RabbitInbound<T>> {
    checkAmqpUrl(options?.url, 'The inbound consumer');
    if (typeof options.handle !== 'function') throw new InvalidInput('INVALID_ARGUMENT', 'The inbound consumer needs a handle function.');
    validateTopology({ queues: [{ name: options.queue }], ...(options.retry ? { retry: [{ ...options.retry, queue: options.queue }] } : {}) });
    if (options.topology) validateTopology(options.topology);
    const inbound = new RabbitInbound(log, options);
    inbound.model = await connectRabbit(options.url, {
      connectAttempts: options.connectAttempts ?? 3,
      connectionName: options.connectionName ?? `sinho-inbound-${options.queue}`,
      setup: (model) => inbound.setup(model),
    });
    inbound.model.on('error', () => {});
    return inbound;
  }

  private async setup(model: { createConfirmChannel(): Promise<ConfirmChannel> }): Promise<void> {
    const o = this.options;
    const channel = await model.createConfirmChannel();
    channel.on('error', (error: Error) => this.emit('inbound:error', { error }));
    await channel.assertQueue(o.queue, { durable: true });
    if (!o.deadLetterExchange) await channel.assertQueue(deadQueueName(o.queue), { durable: true });
    if (o.retry) await declareTopology(channel, { retry: [{ ...o.retry, queue: o.queue }] });
    if (o.topology) await declareTopology(channel, o.topology);
    await channel.prefetch(o.prefetch ?? 32);
    await channel.consume(o.queue, (message) => {
      if (!message || this.stopping) return;
      const work = this.process(channel, message).catch((error: Error) => {
        this.emit('inbound:error', { error });
      });
      this.inFlight.add(work);
      void work.finally(() => this.inFlight.delete(work));
    });
  }

  private async process(channel: ConfirmChannel, message: ConsumeMessage): Promise<void> {
    const o = this.options;
    const headers = (message.properties.headers ?? {}) as Record<string, unknown>;
    const messageId = message.properties.messageId as string | undefined;
    const retries = Number(headers[RETRY_COUNT_HEADER] ?? 0);
    if (!messageId) return this.deadLetter(channel, message, 'MISSING_MESSAGE_ID', 'The message has no message-id, so a redelivery could not be recognised.');
    let data: T;
    try {
      data = o.decode ? o.decode(message.content, message) : (JSON.parse(message.content.toString('utf8')) as T);
    } catch (error) {
      return this.deadLetter(channel, message, 'UNDECODABLE', `The body could not be decoded: ${(error as Error).message}`);
    }
    try {
      await o.handle({ data, messageId, correlationId: message.properties.correlationId as string | undefined, headers, routingKey: message.fields.routingKey, retries }, this.log);
    } catch (error) {
      const code = error instanceof SinhoError ? error.code : 'HANDLER_FAILED';
      const reason = (error as Error).message;
      if (PERMANENT.has(code)) return this.deadLetter(channel, message, code, reason);
      return this.retry(channel, message, messageId, retries, code, reason);
    }
    channel.ack(message);
    this.counters.handled += 1;
  }

  private async retry(channel: ConfirmChannel, message: ConsumeMessage, messageId: string, retries: number, code: string, reason: string): Promise<void> {
    const o = this.options;
    this.emit('inbound:retry', { messageId, attempt: retries + 1, error: reason });
    if (o.retry) {
      const where = await retryOrDeadLetter(channel, message, { ...o.retry, queue: o.queue }, `${code}: ${reason}`);
      if (where === 'dead') this.counters.deadLettered += 1;
      else this.counters.retried += 1;
      return;
    }
    if (retries + 1 >= (o.maxAttempts ?? 5)) return this.deadLetter(channel, message, code, reason);
    // Back to the tail of the queue, counted: not requeued forever, and not ahead of other messages.
    channel.sendToQueue(o.queue, message.content, { ...message.properties, headers: { ...message.properties.headers, [RETRY_COUNT_HEADER]: retries + 1, 'x-last-error': reason.slice(0, 1000) }, persistent: true } as never);
    // Counted now: the copy may be consumed and handled before the confirm below arrives.
    this.counters.retried += 1;
    await channel.waitForConfirms();
    channel.ack(message);
  }

  private async deadLetter(channel: ConfirmChannel, message: ConsumeMessage, code: string, reason: string): Promise<void> {
    const o = this.options;
    const headers = {
      ...message.properties.headers,
      'x-death-reason': reason.slice(0, 1000),
      'x-death-code': code,
      'x-original-queue': o.queue,
      'x-dead-at': new Date().toISOString(),
    };
    const properties = { ...message.properties, headers, persistent: true } as never;
    if (o.deadLetterExchange) channel.publish(o.deadLetterExchange, o.queue, message.content, properties);
    else channel.sendToQueue(deadQueueName(o.queue), message.content, properties);
    await channel.waitForConfirms();
    channel.ack(message);
    this.counters.deadLettered += 1;
    this.emit('inbound:dead-letter', { messageId: message.properties.messageId as string | undefined, reason, code });
  }

  stats(): InboundStats {
    return { ...this.counters };
  }

  /** Stops consuming, lets in-flight messages finish (acked or left for redelivery), closes. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.allSettled([...this.inFlight]);
    await this.model.close().catch(() => {});
  }
}

export function startRabbitInbound<T>(log: EventLog, options: RabbitInboundOptions<T>): Promise<RabbitInbound<T>> {
  return RabbitInbound.start(log, options);
}
