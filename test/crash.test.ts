/**
 * Crash tests: a child process appends in a loop and is killed with SIGKILL.
 * After reopening, every append that had resolved is present exactly once,
 * and a reader sees contiguous positions.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { EventLog } from '../src/index.js';
import { openPostgresEventLog } from '../src/log/postgres/index.js';
import { openSqliteEventLog } from '../src/log/sqlite/index.js';
import { collect } from './conformance/event-log.js';
import { runAndKill, type Ack } from './support/crash.js';
import { dropSchema, POSTGRES_URL, postgresSkipReason, randomName } from './support/services.js';

async function verify(log: EventLog, acks: Ack[]): Promise<void> {
  const all = await collect(log.readAll());
  const head = await log.headPosition();
  assert.equal(all.length, head, 'every position up to the head holds an event');
  assert.deepEqual(all.map((e) => e.position), Array.from({ length: head }, (_, i) => i + 1), 'positions are contiguous');
  const byPosition = new Map(all.map((e) => [e.position, e]));
  const seen = new Set<string>();
  for (const e of all) {
    const d = e.data as { w: number; n: number; k: number };
    const key = `${e.stream}/${d.n}/${d.k}`;
    assert.ok(!seen.has(key), `${key} is stored once`);
    seen.add(key);
  }
  for (const ack of acks) {
    ack.positions.forEach((p, k) => {
      const e = byPosition.get(p);
      assert.ok(e, `acknowledged position ${p} survived the crash`);
      assert.equal(e.stream, ack.stream);
      assert.deepEqual([(e.data as { n: number }).n, (e.data as { k: number }).k], [ack.n, k]);
    });
  }
  // Per stream, revisions are contiguous from 0.
  const perStream = new Map<string, number[]>();
  for (const e of all) perStream.set(e.stream, [...(perStream.get(e.stream) ?? []), e.revision]);
  for (const [s, revisions] of perStream) assert.deepEqual(revisions, revisions.map((_, i) => i), `revisions of ${s} are contiguous`);
  assert.ok(all.length >= acks.length);
}

describe('crash: SIGKILL while appending', () => {
  it('sqlite keeps every acknowledged append exactly once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sinho-crash-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'log.sqlite');
    const acks = await runAndKill(['sqlite', path], 2000, 500);
    assert.ok(acks.length >= 2000);
    const log = openSqliteEventLog({ path });
    try {
      await verify(log, acks);
      // The log keeps working after the crash.
      const r = await log.append('crash-w0', [{ type: 'After', data: {} }]);
      assert.equal(r.events[0]!.position, (await log.headPosition()));
    } finally {
      await log.close();
    }
  });

  it('postgres keeps every acknowledged append exactly once', async (t) => {
    const skip = await postgresSkipReason();
    if (skip) return t.skip(skip);
    const schema = randomName('crash');
    after(() => dropSchema(schema));
    const acks = await runAndKill(['postgres', schema, POSTGRES_URL], 1000, 500);
    const log = await openPostgresEventLog({ connectionString: POSTGRES_URL, schema });
    try {
      await verify(log, acks);
    } finally {
      await log.close();
    }
  });
});
