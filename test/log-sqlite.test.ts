import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { openSqliteEventLog } from '../src/log/sqlite/index.js';
import { eventLogConformance } from './conformance/event-log.js';
import { aggregateConformance } from './conformance/aggregate.js';

const dir = mkdtempSync(join(tmpdir(), 'sinho-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const factory = async (options?: object) => openSqliteEventLog({ ...options, path: join(dir, `log-${n++}.sqlite`) });

eventLogConformance('sqlite', factory, 'durable');
aggregateConformance('sqlite', factory);
