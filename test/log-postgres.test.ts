import { after, describe } from 'node:test';
import { openPostgresEventLog } from '../src/log/postgres/index.js';
import { eventLogConformance } from './conformance/event-log.js';
import { aggregateConformance } from './conformance/aggregate.js';
import { dropSchema, POSTGRES_URL, postgresSkipReason, randomName } from './support/services.js';

const skip = await postgresSkipReason();
const schemas: string[] = [];
after(async () => {
  if (!skip) for (const s of schemas) await dropSchema(s);
});
// Every log gets a fresh schema: tests are isolated and leave nothing behind.
const factory = async (options?: object) => {
  const schema = randomName('t');
  schemas.push(schema);
  return openPostgresEventLog({ ...options, connectionString: POSTGRES_URL, schema, poolSize: 4 });
};

describe('postgres adapter', { skip }, () => {
  eventLogConformance('postgres', factory, 'durable');
  aggregateConformance('postgres', factory);
});
