/**
 * What moim's Redis users share: the reconnect backoff, and closing clients
 * without hanging when Redis is gone. ioredis is loaded only by its callers.
 */
import type { Redis } from 'ioredis';

/** Reconnect backoff: 100 ms doubling to 2 s, forever. */
export const redisRetryStrategy = (attempt: number): number => Math.min(2000, 50 * 2 ** attempt);

/** quit() waits for a connection that may never come (Redis down): those are disconnected at once. */
export async function closeRedis(...clients: Redis[]): Promise<void> {
  for (const client of clients) {
    if (client.status === 'ready') await client.quit().catch(() => client.disconnect());
    else client.disconnect();
  }
}
