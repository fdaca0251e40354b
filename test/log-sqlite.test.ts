import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { openSqliteEventLog } from '../src/log/sqlite/index.js';
import { eventLogConformance } from './conformance/event-log.js';
import { aggregateConformance } from './conformance/aggregate.js';

const dir = mkdtempSync(join(tmpdir(), 'sinho-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const factory = async (options?: object) => openSqliteEventLog({ ...options, path: join(dir, `log-${n++}.sqlite`) });

eventLogConformance('sqlite', factory, 'durable');
aggregateConformance('sqlite', factory);

describe('sqlite: two connections on one file', () => {
  it('wakes a follower on one connection when another connection commits, and keeps positions unique', async () => {
    const path = join(dir, 'shared.sqlite');
    const a = openSqliteEventLog({ path });
    const b = openSqliteEventLog({ path, externalCommitCheckMs: 20 });
    try {
      const controller = new AbortController();
      const seen: number[] = [];
      const following = (async () => {
        for await (const e of b.follow({ signal: controller.signal })) {
          seen.push(e.position);
          if (seen.length === 20) controller.abort();
        }
      })();
      for (let i = 0; i < 10; i++) {
        await a.append('shared-1', [{ type: 'A', data: { i } }]);
        await b.append('shared-1', [{ type: 'B', data: { i } }]);
      }
      await following;
      assert.deepEqual(seen, Array.from({ length: 20 }, (_, i) => i + 1));
      assert.equal(await a.streamRevision('shared-1'), 19);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
