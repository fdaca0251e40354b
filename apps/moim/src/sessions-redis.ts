/**
 * Sessions in Redis, so that several API processes (and gateways) share them
 * without sticky sessions. Keys are `moim:session:<sha256 of the token>`
 * with the session as JSON and Redis's own expiry (PX). A logout deletes the
 * key and publishes the hash on `moim:session:revoked`, so every process
 * drops it from its short-lived cache at once: no session survives a logout.
 *
 * While Redis is unreachable (a restart) commands wait in ioredis's offline
 * queue and run once it is back, so a request waits rather than fails. A
 * Redis without persistence (as on this machine) loses its sessions when it
 * restarts; their users log in again.
 */
import type { Redis } from 'ioredis';
import { hashToken, newToken, type Session, type SessionStore } from './sessions.js';
import { closeRedis, redisRetryStrategy } from './redis.js';

const PREFIX = 'moim:session:';
export const REVOKED_CHANNEL = 'moim:session:revoked';

export class RedisSessionStore implements SessionStore {
  private constructor(
    private readonly redis: Redis,
    private readonly subscriber: Redis,
  ) {}

  /** Connects (failing after `connectTimeoutMs` when Redis is unreachable at start-up). */
  static async connect(url: string, options: { onRevoked?: (tokenHash: string) => void; connectTimeoutMs?: number } = {}): Promise<RedisSessionStore> {
    const { Redis } = await import('ioredis');
    const settings = {
      lazyConnect: true,
      maxRetriesPerRequest: null, // wait for a reconnect rather than fail the request
      retryStrategy: redisRetryStrategy,
      connectTimeout: options.connectTimeoutMs ?? 5000,
    };
    const redis = new Redis(url, settings);
    const subscriber = new Redis(url, settings);
    redis.on('error', () => {}); // reconnects by itself; commands wait meanwhile
    subscriber.on('error', () => {});
    try {
      await Promise.all([connectOnce(redis, settings.connectTimeout), connectOnce(subscriber, settings.connectTimeout)]);
    } catch (error) {
      redis.disconnect();
      subscriber.disconnect();
      throw new Error(`moim: Redis at ${url.replace(/\/\/[^@/]*@/, '//')} is unreachable: ${(error as Error).message}`);
    }
    await subscriber.subscribe(REVOKED_CHANNEL);
    subscriber.on('message', (channel: string, hash: string) => {
      if (channel === REVOKED_CHANNEL) options.onRevoked?.(hash);
    });
    return new RedisSessionStore(redis, subscriber);
  }

  async create(memberId: string, ttlMs: number): Promise<{ token: string; expiresAt: number }> {
    const token = newToken();
    const expiresAt = Date.now() + ttlMs;
    await this.redis.set(PREFIX + hashToken(token), JSON.stringify({ memberId, expiresAt }), 'PX', ttlMs);
    return { token, expiresAt };
  }

  async get(token: string): Promise<Session | undefined> {
    const value = await this.redis.get(PREFIX + hashToken(token));
    if (!value) return undefined;
    const session = JSON.parse(value) as Session;
    return session.expiresAt > Date.now() ? session : undefined;
  }

  async delete(token: string): Promise<void> {
    const hash = hashToken(token);
    await this.redis.del(PREFIX + hash);
    await this.redis.publish(REVOKED_CHANNEL, hash);
  }

  async close(): Promise<void> {
    await closeRedis(this.redis, this.subscriber);
  }
}

/** The first connection, with a deadline: at start-up an unreachable Redis is an error, not a hang. */
async function connectOnce(redis: Redis, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.connect(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
