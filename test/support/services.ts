/**
 * Real-service helpers for tests. A test of PostgreSQL code talks to the real
 * server; when it is unreachable the test is skipped with the reason, unless
 * SINHO_REQUIRE_SERVICES=1 (set by .ci/run), in which case it fails.
 */
import { after, before } from 'node:test';
import pg from 'pg';
import { randomBytes } from 'node:crypto';

export const POSTGRES_URL = process.env.SINHO_TEST_POSTGRES_URL ?? 'postgres://root@127.0.0.1:5432/test';
export const requireServices = process.env.SINHO_REQUIRE_SERVICES === '1';

async function reachable(url: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return undefined;
  } catch (error) {
    return `PostgreSQL at ${url} is unreachable: ${(error as Error).message}`;
  } finally {
    await client.end().catch(() => {});
  }
}

/** Undefined when PostgreSQL is usable; otherwise the skip reason. Throws when services are required. */
export async function postgresSkipReason(): Promise<string | undefined> {
  const reason = await reachable(POSTGRES_URL);
  if (reason && requireServices) throw new Error(`${reason} (SINHO_REQUIRE_SERVICES=1, so this is a failure, not a skip)`);
  return reason;
}

export function randomName(prefix: string): string {
  return `${prefix}_${randomBytes(6).toString('hex')}`;
}

export async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

export const RABBITMQ_URL = process.env.SINHO_TEST_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

/** Undefined when RabbitMQ is usable; otherwise the skip reason. Throws when services are required. */
export async function rabbitmqSkipReason(): Promise<string | undefined> {
  const amqp = await import('amqplib');
  return probe(async () => {
    try {
      const connection = await amqp.connect(RABBITMQ_URL, { timeout: 3000 });
      await connection.close();
      return undefined;
    } catch (error) {
      return `RabbitMQ at ${RABBITMQ_URL} is unreachable: ${(error as Error).message}`;
    }
  });
}

/**
 * Runs a reachability check. When services are required, a failing check is
 * retried for a while first: another test file may be restarting that server
 * (test/rabbitmq-relay.test.ts, test/moim-sessions.test.ts), and a server in
 * the middle of a restart is not an unreachable one.
 */
async function probe(check: () => Promise<string | undefined>): Promise<string | undefined> {
  const deadline = Date.now() + (requireServices ? 60_000 : 0);
  for (;;) {
    const reason = await check();
    if (reason === undefined) return undefined;
    if (Date.now() >= deadline) {
      if (requireServices) throw new Error(`${reason} (SINHO_REQUIRE_SERVICES=1, so this is a failure, not a skip)`);
      return reason;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export const REDIS_URL = process.env.SINHO_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Undefined when Redis is usable; otherwise the skip reason. Throws when services are required. */
export async function redisSkipReason(): Promise<string | undefined> {
  const { Redis } = await import('ioredis');
  return probe(async () => {
    const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 3000 });
    redis.on('error', () => {});
    try {
      await redis.connect();
      await redis.ping();
      return undefined;
    } catch (error) {
      return `Redis at ${REDIS_URL} is unreachable: ${(error as Error).message}`;
    } finally {
      redis.disconnect();
    }
  });
}

/**
 * A lock across test files (they run in parallel processes) for tests that
 * restart a shared server: the restart test and the other tests of that
 * server take it, so none of them sees the server vanish mid-test. A lock
 * whose holder died is taken over.
 */
export async function exclusive(name: string, timeoutMs = 180_000): Promise<() => void> {
  const { mkdirSync, readFileSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = join(tmpdir(), `sinho-test-lock-${name}`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(dir);
      writeFileSync(join(dir, 'pid'), String(process.pid));
      return () => rmSync(dir, { recursive: true, force: true });
    } catch {
      let holder = 0;
      try {
        holder = Number(readFileSync(join(dir, 'pid'), 'utf8'));
      } catch {}
      let alive = true;
      if (holder > 0) {
        try {
          process.kill(holder, 0);
        } catch {
          alive = false;
        }
      }
      if (!alive) rmSync(dir, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new Error(`test lock ${name} is held by process ${holder} for too long`);
      else await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1 (for servers whose port must be known before they start). */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  return port;
}

/**
 * Holds the cross-file lock on `name` (see exclusive) for the whole enclosing
 * suite: call it inside `describe`, for suites that must not run while
 * another file restarts that server.
 */
export function exclusiveDuringSuite(name: string): void {
  let release: (() => void) | undefined;
  before(async () => {
    release = await exclusive(name);
  });
  after(() => release?.());
}
