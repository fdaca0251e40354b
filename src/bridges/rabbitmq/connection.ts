/**
 * A RabbitMQ connection with amqplib's recovery: reconnects with exponential
 * backoff and jitter, forever once it has connected; at start-up it gives up
 * after `connectAttempts`, so an unreachable broker is a clear error, not a
 * hang. The driver is loaded here, only when a bridge is used.
 */
import type { ChannelModel, RecoveringChannelModel } from 'amqplib';
import { InvalidInput, SinhoError } from '../../errors.js';

/** Throws INVALID_ARGUMENT unless `url` is an amqp:// or amqps:// URL (`who` names the bridge in the message). */
export function checkAmqpUrl(url: unknown, who: string): void {
  if (typeof url !== 'string' || !/^amqps?:\/\//.test(url)) throw new InvalidInput('INVALID_ARGUMENT', `${who} needs url: an amqp:// or amqps:// URL.`);
}

export interface RabbitConnectionOptions {
  /** Attempts before start-up fails. */
  connectAttempts: number;
  /** Shown in the broker's connection list (`rabbitmqctl list_connections client_properties`). */
  connectionName: string;
  /** Runs after every (re)connect: open channels, declare topology, start consumers. */
  setup: (model: ChannelModel) => Promise<void>;
}

export async function connectRabbit(url: string, options: RabbitConnectionOptions): Promise<RecoveringChannelModel> {
  const amqp = await import('amqplib');
  try {
    return await amqp.connect(url, {
      clientProperties: { connection_name: options.connectionName },
      timeout: 5000,
      recovery: {
        initialDelay: 200,
        maxDelay: 5000,
        factor: 2,
        jitter: 0.5,
        maxRetries: Infinity,
        initialMaxRetries: Math.max(0, options.connectAttempts - 1),
        setup: options.setup,
      },
    });
  } catch (error) {
    const where = url.replace(/\/\/[^@/]*@/, '//');
    throw new SinhoError('BROKER_UNREACHABLE', `Could not connect to RabbitMQ at ${where}, or set up what it needs (${options.connectAttempts} attempts): ${(error as Error).message}`, { url: where }, { cause: error });
  }
}
