/**
 * Real-service helpers for tests. A test of PostgreSQL code talks to the real
 * server; when it is unreachable the test is skipped with the reason, unless
 * SINHO_REQUIRE_SERVICES=1 (set by .ci/run), in which case it fails.
 */
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
  try {
    const connection = await amqp.connect(RABBITMQ_URL, { timeout: 3000 });
    await connection.close();
    return undefined;
  } catch (error) {
    const reason = `RabbitMQ at ${RABBITMQ_URL} is unreachable: ${(error as Error).message}`;
    if (requireServices) throw new Error(`${reason} (SINHO_REQUIRE_SERVICES=1, so this is a failure, not a skip)`);
    return reason;
  }
}
