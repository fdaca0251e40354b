import { after, describe } from 'node:test';
import { openPostgresEventLog } from '../src/log/postgres/index.js';
import { eventLogConformance } from './conformance/event-log.js';
import { aggregateConformance } from './conformance/aggregate.js';
import { subscriptionConformance, type ProjectionFixture } from './conformance/subscription.js';
import pg from 'pg';
import type { EventLog } from '../src/index.js';
import { dropSchema, POSTGRES_URL, postgresSkipReason, randomName } from './support/services.js';

const skip = await postgresSkipReason();
const schemas: string[] = [];
after(async () => {
  if (!skip) for (const s of schemas) await dropSchema(s);
});
// Every log gets a fresh schema: tests are isolated and leave nothing behind.
const schemaOf = new WeakMap<EventLog, string>();
const factory = async (options?: object) => {
  const schema = randomName('t');
  schemas.push(schema);
  const log = await openPostgresEventLog({ ...options, connectionString: POSTGRES_URL, schema, poolSize: 4 });
  schemaOf.set(log, schema);
  return log;
};
const query = async <R>(sql: string): Promise<R[]> => {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    return (await client.query(sql)).rows as R[];
  } finally {
    await client.end();
  }
};
const projection: ProjectionFixture = {
  createTable: async (log) => {
    const table = `${schemaOf.get(log)}.${randomName('counts')}`;
    await query(`CREATE TABLE ${table} (key text PRIMARY KEY, n integer NOT NULL)`);
    return table;
  },
  increment: (table, key) => ({ sql: `INSERT INTO ${table} (key, n) VALUES ($1, 1) ON CONFLICT (key) DO UPDATE SET n = ${table}.n + 1`, params: [key] }),
  read: async (_log, table) => new Map((await query<{ key: string; n: number }>(`SELECT key, n FROM ${table}`)).map((r) => [r.key, r.n])),
};

describe('postgres adapter', { skip }, () => {
  eventLogConformance('postgres', factory, 'durable');
  aggregateConformance('postgres', factory);
  subscriptionConformance('postgres', factory, projection, (log) => openPostgresEventLog({ connectionString: POSTGRES_URL, schema: schemaOf.get(log)!, poolSize: 4 }));
});
