/**
 * Multi-node consumer group on PostgreSQL: three processes run one
 * partitioned group while events are appended; one is SIGKILLed mid-run.
 * Every event must be handled, each stream's events in order, and an event
 * handled twice only if the killed node handled it (it was in flight there,
 * not yet checkpointed).
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { openPostgresEventLog } from '../src/log/postgres/index.js';
import { startChild, type Child } from './support/child.js';
import { dropSchema, POSTGRES_URL, postgresSkipReason, randomName } from './support/services.js';
import { sleep } from './support/wait.js';

const script = fileURLToPath(new URL('./fixtures/partition-node.ts', import.meta.url));

describe('postgres: partitioned group across processes', { timeout: 90_000 }, () => {
  const schema = randomName('t');
  const children: Child[] = [];
  after(async () => {
    for (const c of children) if (c.process.exitCode === null) await c.kill();
    if (!(await postgresSkipReason())) await dropSchema(schema);
  });

  it('survives a SIGKILLed node: every event handled, per-stream order kept, duplicates only from the killed node', async (t) => {
    const skip = await postgresSkipReason();
    if (skip) return t.skip(skip);
    const log = await openPostgresEventLog({ connectionString: POSTGRES_URL, schema });
    const db = new pg.Pool({ connectionString: POSTGRES_URL, max: 2 });
    try {
      await db.query(`CREATE TABLE ${schema}.handled (seq bigserial PRIMARY KEY, node text NOT NULL, stream text NOT NULL, i integer NOT NULL)`);
      const group = randomName('nodes');
      const streams = Array.from({ length: 40 }, () => `acct-${randomName('s')}`);
      let rounds = 0;
      const appendRound = async () => {
        await Promise.all(streams.map((s) => log.append(s, [{ type: 'Moved', data: { i: rounds } }])));
        rounds += 1;
      };
      const nodes = ['a', 'b', 'c'].map((name) => startChild(script, [schema, POSTGRES_URL, group, name]));
      children.push(...nodes);
      const owned = (c: Child) => {
        const last = [...c.lines].reverse().find((l) => l.startsWith('owned '));
        return last === undefined || last === 'owned ' ? [] : last.slice(6).split(',').map(Number);
      };
      // Append while the three nodes start and split the partitions between them.
      const deadline = Date.now() + 30_000;
      while (!nodes.every((c) => owned(c).length > 0) || nodes.reduce((n, c) => n + owned(c).length, 0) !== 8) {
        assert.ok(Date.now() < deadline, `nodes did not split the partitions: ${nodes.map((c) => owned(c).join(',')).join(' | ')}`);
        await appendRound();
        await sleep(50);
      }
      for (let k = 0; k < 10; k++) await appendRound();
      // Kill node b while events keep flowing.
      const killed = nodes[1]!;
      const killedOwned = owned(killed);
      await killed.kill();
      for (let k = 0; k < 20; k++) {
        await appendRound();
        await sleep(25);
      }
      // The survivors take b's partitions over once its lease ran out, and catch up.
      const expected = streams.length * rounds;
      const catchUp = Date.now() + 30_000;
      for (;;) {
        const { rows } = await db.query<{ n: string }>(`SELECT count(DISTINCT (stream, i)) AS n FROM ${schema}.handled`);
        if (Number(rows[0]!.n) === expected) break;
        assert.ok(Date.now() < catchUp, `only ${rows[0]!.n} of ${expected} events handled`);
        await sleep(100);
      }
      const survivors = [nodes[0]!, nodes[2]!];
      // A node reports its partitions once its rebalance finished, which can be just after the events were handled.
      while (survivors.flatMap(owned).length !== 8) {
        assert.ok(Date.now() < catchUp, `the survivors run ${survivors.map((c) => owned(c).join(',')).join(' | ')}`);
        await sleep(50);
      }
      assert.deepEqual(survivors.flatMap(owned).sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7], 'the survivors run every partition');
      assert.ok(killedOwned.every((p) => survivors.some((c) => owned(c).includes(p))));

      const { rows } = await db.query<{ node: string; stream: string; i: number }>(`SELECT node, stream, i FROM ${schema}.handled ORDER BY seq`);
      const count = new Map<string, number>();
      for (const r of rows) count.set(`${r.stream}/${r.i}`, (count.get(`${r.stream}/${r.i}`) ?? 0) + 1);
      const duplicated = rows.filter((r) => count.get(`${r.stream}/${r.i}`)! > 1);
      for (const r of duplicated.filter((d) => d.node === 'b')) count.set(`${r.stream}/${r.i}`, count.get(`${r.stream}/${r.i}`)! - 1);
      assert.ok(
        [...count.values()].every((n) => n === 1),
        `every duplicate pairs a handling on the killed node with one on a survivor: ${duplicated.map((d) => `${d.node}:${d.stream.slice(-6)}/${d.i}`).join(' ')}; stderr: ${nodes.map((c) => c.stderr()).join(' | ')}`,
      );
      // Drop the killed node's duplicated handlings (in flight when it died): what remains is each stream once, in order.
      const kept = rows.filter((r) => !(r.node === 'b' && duplicated.some((d) => d !== r && d.stream === r.stream && d.i === r.i)));
      for (const s of streams) {
        assert.deepEqual(
          kept.filter((r) => r.stream === s).map((r) => r.i),
          Array.from({ length: rounds }, (_, k) => k),
          `${s}: handled in order`,
        );
      }
      t.diagnostic(`${expected} events, ${duplicated.length / 2} redelivered after the kill, rounds ${rounds}`);
      for (const c of survivors) c.process.kill('SIGTERM');
      await Promise.all(survivors.map((c) => new Promise((r) => (c.process.exitCode !== null ? r(null) : c.process.on('exit', r)))));
    } finally {
      await db.end();
      await log.close();
    }
  });
});
