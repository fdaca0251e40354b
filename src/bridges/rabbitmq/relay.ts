/**
 * The RabbitMQ relay: a consumer group that publishes selected events to an
 * exchange, persistent, with publisher confirms. An event is acknowledged to
 * the group (and so passes the checkpoint) only after the broker confirmed
 * it: at-least-once, and `message-id` = event id lets consumers deduplicate.
 *
 * Connection loss (a broker restart, a network cut) is not a failure of the
 * event: publishes wait for amqplib's recovery to reconnect (backoff with
 * jitter) and are sent again on the new channel, so nothing is lost and no
 * retry is recorded. A nack or an unroutable (returned) message is a failure
 * of the event: it goes through the group's retry policy and ends as a
 * Sinho dead letter, visible and redeliverable once the topology is fixed.
 */
import { EventEmitter } from 'node:events';
import type { ChannelModel, ConfirmChannel, Message, Options, RecoveringChannelModel } from 'amqplib';
import { InvalidInput, SinhoError } from '../../errors.js';
import type { EventLog, RecordedEvent } from '../../log/types.js';
import { routingKeyOf, validateBindings, type Binding } from '../../subscription/routing.js';
import { subscribe } from '../../subscription/index.js';
import type { ConsumerGroup, SubscribeOptions } from '../../subscription/consumer-group.js';
import { declareTopology, validateTopology, type ExchangeType, type Topology } from './topology.js';
import { checkAmqpUrl, connectRabbit } from './connection.js';

export interface RabbitRelayOptions {
  /** e.g. amqp://guest:guest@127.0.0.1:5672 */
  url: string;
  /** The exchange events are published to. */
  exchange: string;
  /** Declared with this type unless `declareExchange` is false. Default `topic`. */
  exchangeType?: ExchangeType;
  /** Declare the exchange (durable). Default true; false checks that it exists instead. */
  declareExchange?: boolean;
  /** More topology to declare at every (re)connect: exchanges, queues, bindings, retry tiers. */
  topology?: Topology;
  /** Consumer group name. Default `rabbitmq-relay-<exchange>`. */
  group?: string;
  /** Which events are published. Default every event. */
  bindings?: Binding[];
  /** Routing key of an event. Default `<category>.<type>` or the routing-key header (as subscriptions route). */
  routingKey?: (event: RecordedEvent) => string;
  /** Streams published in parallel (unconfirmed messages at most); per-stream order is kept. Default 256. */
  concurrency?: number;
  /**
   * What keeps its order: one message of a key is unconfirmed at a time. Default: the event's stream. Consumers
   * that need no order can give `(event) => event.id`, and every message of the window can be in flight.
   */
  orderingKey?: (event: RecordedEvent) => string;
  /** What an unroutable (returned) message does: `dead-letter` (retries, then a Sinho dead letter) or `ignore`. Default `dead-letter`. */
  unroutable?: 'dead-letter' | 'ignore';
  /**
   * Add the `x-sinho-*` headers (stream, revision, position, schema version, occurred-at, causation id, actor).
   * Default true. Each header is work for the broker on every message: without them the relay sends what a
   * plain publisher sends (message id, correlation id, type, app id, content type, timestamp, and the event's own
   * metadata headers), and publishes faster (see docs/benchmarks.md).
   */
  metadataHeaders?: boolean;
  /** Retry policy for nacked and unroutable messages. */
  retry?: SubscribeOptions['retry'];
  /** Where a new group starts. Default `beginning`. */
  startFrom?: SubscribeOptions['startFrom'];
  /** Wait for the group's lease as a hot standby instead of failing when another process holds it (see SubscribeOptions). */
  standby?: boolean;
  /** Connection attempts before start-up fails (the broker unreachable). Default 3. */
  connectAttempts?: number;
  /** Shown in the broker's connection list. Default `sinho-relay`. */
  connectionName?: string;
}

export interface RelayStats {
  published: number;
  returned: number;
  nacked: number;
  reconnects: number;
  connected: boolean;
}

export interface RelayEventMap {
  'relay:connected': [];
  'relay:disconnected': [{ error?: Error }];
  /** The broker returned a message no queue was bound for. */
  'relay:returned': [{ eventId: string; exchange: string; routingKey: string }];
  'relay:error': [{ error: Error }];
}

class PublishRefused extends SinhoError {}

export class RabbitRelay extends EventEmitter<RelayEventMap> {
  group!: ConsumerGroup;
  private model!: RecoveringChannelModel;
  private channel: ConfirmChannel | undefined;
  private waiting: (() => void)[] = [];
  private readonly returned = new Set<string>();
  private stopped = false;
  private readonly counters = { published: 0, returned: 0, nacked: 0, reconnects: 0 };
  private connections = 0;

  private constructor(private readonly options: RabbitRelayOptions) {
    super();
  }

  static async start(log: EventLog, options: RabbitRelayOptions): Promise<RabbitRelay> {
    validateRelayOptions(options);
    const relay = new RabbitRelay(options);
    await relay.connect();
    const routingKey = options.routingKey ?? routingKeyOf;
    relay.group = await subscribe(log, options.group ?? `rabbitmq-relay-${options.exchange}`, {
      bindings: options.bindings,
      concurrency: options.concurrency ?? 256,
      orderingKey: options.orderingKey,
      standby: options.standby,
      maxBuffered: Math.max(1000, (options.concurrency ?? 256) * 4),
      retry: options.retry,
      startFrom: options.startFrom,
      handler: (event) => relay.publish(event, routingKey(event)),
    });
    return relay;
  }

  private async connect(): Promise<void> {
    const o = this.options;
    this.model = await connectRabbit(o.url, {
      connectAttempts: o.connectAttempts ?? 3,
      connectionName: o.connectionName ?? 'sinho-relay',
      setup: async (model) => {
        await this.openChannel(model);
      },
    });
    this.model.on('disconnect', (error?: Error) => {
      this.channel = undefined;
      this.emit('relay:disconnected', { error });
    });
    this.model.on('error', () => {}); // surfaced through 'disconnect'; recovery reconnects
  }

  private async openChannel(model: ChannelModel): Promise<void> {
    const o = this.options;
    const channel = await model.createConfirmChannel();
    channel.on('error', (error: Error) => this.emit('relay:error', { error }));
    channel.on('return', (message: Message) => {
      const id = message.properties.messageId as string | undefined;
      if (id) this.returned.add(id);
    });
    channel.on('close', () => {
      if (this.channel === channel) this.channel = undefined;
      // A channel-level error closed only the channel: open another on the same connection.
      if (!this.stopped) void this.openChannel(model).catch(() => {});
    });
    if (o.declareExchange === false) await channel.checkExchange(o.exchange);
    else await channel.assertExchange(o.exchange, o.exchangeType ?? 'topic', { durable: true });
    if (o.topology) await declareTopology(channel, o.topology);
    this.channel = channel;
    this.connections += 1;
    if (this.connections > 1) this.counters.reconnects += 1;
    this.emit('relay:connected');
    for (const wake of this.waiting.splice(0)) wake();
  }

  private async ready(): Promise<ConfirmChannel> {
    while (!this.channel) {
      if (this.stopped) throw new SinhoError('BROKER_UNREACHABLE', 'The relay is stopping.');
      await new Promise<void>((resolve) => {
        this.waiting.push(resolve);
        // Also look again now and then (a channel can come back without our wake-up, e.g. during stop).
        setTimeout(resolve, 1000).unref();
      });
    }
    return this.channel;
  }

  private async publish(event: RecordedEvent, routingKey: string): Promise<void> {
    const { content, properties } = relayMessage(event, { metadataHeaders: this.options.metadataHeaders });
    for (;;) {
      const channel = await this.ready();
      try {
        await new Promise<void>((resolve, reject) => {
          // At most `concurrency` messages are unconfirmed at once (one per handler), which bounds amqplib's buffer.
          channel.publish(this.options.exchange, routingKey, content, properties, (error) => (error ? reject(error) : resolve()));
        });
      } catch (error) {
        if (this.channel === channel && !this.stopped) {
          // The channel is alive: the broker nacked the message (a failure of this event).
          this.counters.nacked += 1;
          throw new PublishRefused('MESSAGE_REFUSED', `RabbitMQ nacked event ${event.id}: ${(error as Error).message}`, { eventId: event.id });
        }
        if (this.stopped) throw error;
        continue; // the connection or channel went away: publish again once it is back
      }
      if (this.returned.delete(event.id)) {
        this.counters.returned += 1;
        this.emit('relay:returned', { eventId: event.id, exchange: this.options.exchange, routingKey });
        if ((this.options.unroutable ?? 'dead-letter') === 'dead-letter') {
          throw new PublishRefused('MESSAGE_REFUSED', `RabbitMQ returned event ${event.id}: no queue is bound to exchange "${this.options.exchange}" for routing key "${routingKey}".`, { eventId: event.id, routingKey });
        }
      }
      this.counters.published += 1;
      return;
    }
  }

  stats(): RelayStats {
    return { ...this.counters, connected: this.channel !== undefined };
  }

  /** Stops the group (in-flight publishes finish or are left unacknowledged), then closes the connection. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    const group = this.group;
    // Let in-flight publishes settle while the channel is up; then close.
    await group.stop();
    this.stopped = true;
    for (const wake of this.waiting.splice(0)) wake();
    await this.model.close().catch(() => {});
  }
}

/**
 * The message the relay publishes for an event: the event's data as JSON,
 * persistent and mandatory, `message-id` = event id, the correlation id,
 * type, app id, content type, timestamp, the event's metadata headers and,
 * unless `metadataHeaders` is false, the `x-sinho-*` headers. Exported so a
 * consumer's tests (and bench:bridges' plain publisher) can build the same message.
 */
export function relayMessage(event: RecordedEvent, options: { metadataHeaders?: boolean } = {}): { content: Buffer; properties: Options.Publish } {
  const content = Buffer.from(JSON.stringify(event.data ?? null));
  const m = event.metadata;
  const properties: Options.Publish = {
    persistent: true,
    mandatory: true,
    messageId: event.id,
    correlationId: m.correlationId,
    type: event.type,
    appId: 'sinho',
    contentType: 'application/json',
    timestamp: Math.floor(Date.parse(m.occurredAt) / 1000),
    headers:
      options.metadataHeaders !== false
        ? {
            ...m.headers,
            'x-sinho-stream': event.stream,
            'x-sinho-revision': event.revision,
            'x-sinho-position': event.position,
            'x-sinho-schema-version': event.schemaVersion,
            ...(m.causationId ? { 'x-sinho-causation-id': m.causationId } : {}),
            ...(m.actor ? { 'x-sinho-actor': m.actor } : {}),
            'x-sinho-occurred-at': m.occurredAt,
          }
        : m.headers,
  };
  return { content, properties };
}

function validateRelayOptions(o: RabbitRelayOptions): void {
  checkAmqpUrl(o?.url, 'The relay');
  validateTopology({ exchanges: [{ name: o.exchange, type: o.exchangeType }] });
  if (o.topology) validateTopology(o.topology);
  if (o.bindings) validateBindings(o.bindings);
  if (o.unroutable !== undefined && o.unroutable !== 'dead-letter' && o.unroutable !== 'ignore') {
    throw new InvalidInput('INVALID_ARGUMENT', `unroutable must be "dead-letter" or "ignore", got ${JSON.stringify(o.unroutable)}.`);
  }
  if (o.concurrency !== undefined && (!Number.isSafeInteger(o.concurrency) || o.concurrency < 1)) throw new InvalidInput('INVALID_ARGUMENT', 'concurrency must be an integer >= 1.');
}

/** Starts the relay: connects (failing fast when the broker is unreachable), declares, then follows the log. */
export function startRabbitRelay(log: EventLog, options: RabbitRelayOptions): Promise<RabbitRelay> {
  return RabbitRelay.start(log, options);
}
