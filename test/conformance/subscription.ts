/**
 * Consumer-group conformance, run against every adapter.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { EventLog, RecordedEvent } from '../../src/index.js';
import { consumerGroups, liveProjectionVersion, runProjection, subscribe, type ProjectionProgress } from '../../src/index.js';
import { storageOf } from '../../src/log/stored-event-log.js';
import { randomName } from '../support/services.js';
import { stream } from './event-log.js';
import { rejectsWithCode, suiteLogs, type LogFactory } from '../support/logs.js';
import { sleep, until } from '../support/wait.js';

/** SQL a transactional handler runs, in the adapter's dialect (absent for memory). */
export interface ProjectionFixture {
  /** Creates a fresh counter table and returns its name. */
  createTable(log: EventLog): Promise<string>;
  increment(table: string, key: string): { sql: string; params: unknown[] };
  read(log: EventLog, table: string): Promise<Map<string, number>>;
}


/**
 * `peer` opens a second log on the same store as `log`, as another node would
 * (absent for memory, whose store lives in one log object).
 */
export function subscriptionConformance(name: string, factory: LogFactory, projection?: ProjectionFixture, peer?: (log: EventLog) => Promise<EventLog>): void {
  describe(`Subscription conformance: ${name}`, { timeout: 60_000 }, () => {
    const open = suiteLogs(factory);

    it('delivers every bound event once, in per-stream order, resuming from its checkpoint', async () => {
      const log = await open();
      const streams = Array.from({ length: 20 }, () => stream('order'));
      for (let i = 0; i < 10; i++) await Promise.all(streams.map((s) => log.append(s, [{ type: 'Placed', data: { i } }])));
      await log.append(stream('noise'), [{ type: 'Ignored', data: {} }]);
      const seen = new Map<string, number[]>();
      const handler = async (e: RecordedEvent) => {
        await sleep(Math.random() * 2);
        seen.set(e.stream, [...(seen.get(e.stream) ?? []), (e.data as { i: number }).i]);
      };
      const group = randomName('g');
      const g1 = await subscribe(log, group, { bindings: [{ kind: 'topic', pattern: 'order.#' }], handler, concurrency: 8 });
      await g1.waitForCheckpoint(await log.headPosition());
      await g1.stop();
      for (const s of streams) assert.deepEqual(seen.get(s), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      assert.equal([...seen.keys()].filter((k) => k.startsWith('noise')).length, 0);
      // New events while stopped; a restart delivers only those.
      await Promise.all(streams.map((s) => log.append(s, [{ type: 'Placed', data: { i: 10 } }])));
      const g2 = await subscribe(log, group, { bindings: [{ kind: 'topic', pattern: 'order.#' }], handler });
      await g2.waitForCheckpoint(await log.headPosition());
      await g2.stop();
      for (const s of streams) assert.deepEqual(seen.get(s), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      const stats = g2.stats();
      assert.equal(stats.lag, 0);
      assert.equal(stats.deadLetters, 0);
      assert.equal(stats.handled, 20);
      // handled/s is the mean of the last five whole seconds: once the second in which
      // the 20 events were handled is over, it reads 20 / 5.
      await sleep(1000 - (Date.now() % 1000) + 20);
      assert.equal(g2.stats().handledPerSecond, 4);
    });

    it('keeps each stream in order under random transient failures (property)', async () => {
      const log = await open();
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 2, max: 6 }), fc.integer({ min: 1, max: 8 }), fc.double({ min: 0, max: 0.5, noNaN: true }), async (streamCount, perStream, failureRate) => {
          const streams = Array.from({ length: streamCount }, () => stream('prop'));
          const appended = new Map<string, number[]>();
          for (let i = 0; i < perStream; i++) {
            for (const s of streams) {
              await log.append(s, [{ type: 'N', data: { i } }]);
              appended.set(s, [...(appended.get(s) ?? []), i]);
            }
          }
          const handled = new Map<string, number[]>();
          const g = await subscribe(log, randomName('prop'), {
            bindings: [{ kind: 'topic', pattern: 'prop.*' }],
            retry: { delaysMs: [1, 2, 3], maxAttempts: 1000 },
            concurrency: 3,
            handler: async (e) => {
              if (!streams.includes(e.stream)) return;
              if (Math.random() < failureRate) throw new Error('transient');
              handled.set(e.stream, [...(handled.get(e.stream) ?? []), (e.data as { i: number }).i]);
            },
          });
          await g.waitForCheckpoint(await log.headPosition());
          await until(() => g.stats().retrying === 0 && streams.every((s) => (handled.get(s)?.length ?? 0) >= perStream), 10_000, 'all handled');
          await g.stop();
          for (const s of streams) assert.deepEqual(handled.get(s), appended.get(s));
        }),
        { numRuns: 15 },
      );
    });

    it('counts the events held back behind a retrying event of their stream', async () => {
      const log = await open();
      const s = stream('held');
      await log.append(s, [{ type: 'Bad', data: {} }, { type: 'After', data: { n: 1 } }, { type: 'After', data: { n: 2 } }]);
      const g = await subscribe(log, randomName('held'), {
        bindings: [{ kind: 'topic', pattern: 'held.*' }],
        retry: { delaysMs: [60_000], maxAttempts: 2 },
        handler: (e) => {
          if (e.type === 'Bad') throw new Error('not yet');
        },
      });
      try {
        await until(() => g.stats().retrying === 1, 5_000, 'the retry');
        assert.equal(g.stats().waiting, 2);
      } finally {
        await g.stop();
      }
    });

    it('holds back only the failing stream; the dead letter appears after exactly maxAttempts', async () => {
      const log = await open();
      const poison = stream('hol');
      const others = Array.from({ length: 30 }, () => stream('hol'));
      await log.append(poison, [{ type: 'Bad', data: {} }, { type: 'AfterBad', data: {} }]);
      for (let i = 0; i < 10; i++) await Promise.all(others.map((s) => log.append(s, [{ type: 'Good', data: { i } }])));
      let poisonAttempts = 0;
      let attemptsWhenOthersDone = -1;
      const done = new Map<string, number>();
      const afterBad: number[] = [];
      const group = randomName('hol');
      const g = await subscribe(log, group, {
        bindings: [{ kind: 'topic', pattern: 'hol.*' }],
        retry: { delaysMs: [150, 150], maxAttempts: 3 },
        handler: async (e, ctx) => {
          if (e.type === 'Bad') {
            poisonAttempts += 1;
            assert.equal(ctx.attempt, poisonAttempts);
            assert.equal(ctx.errors.length, poisonAttempts - 1);
            throw new Error(`poison #${ctx.attempt}`);
          }
          if (e.type === 'AfterBad') return void afterBad.push(Date.now());
          done.set(e.stream, (done.get(e.stream) ?? 0) + 1);
          if ([...done.values()].reduce((a, b) => a + b, 0) === 300) attemptsWhenOthersDone = poisonAttempts;
        },
      });
      await until(() => g.stats().deadLetters === 1, 10_000, 'dead letter');
      await until(() => afterBad.length === 1, 5_000, 'the poison stream to continue (skip policy)');
      assert.equal(attemptsWhenOthersDone, 1, 'every other stream finished while the poison was still backing off');
      assert.equal(poisonAttempts, 3);
      const [letter] = await consumerGroups(log).deadLetters(group);
      assert.equal(letter!.attempts, 3);
      assert.deepEqual(letter!.errors.map((e) => e.message), ['poison #1', 'poison #2', 'poison #3']);
      await g.stop();
      const listed = (await consumerGroups(log).list()).find((x) => x.name === group)!;
      assert.equal(listed.deadLetters, 1);
    });

    it('parks a stream at a dead letter until an operator redelivers or discards it', async () => {
      const log = await open();
      const s = stream('park');
      await log.append(s, [{ type: 'A', data: 1 }, { type: 'B', data: 2 }, { type: 'C', data: 3 }]);
      let fail = true;
      const handled: string[] = [];
      const group = randomName('park');
      const g = await subscribe(log, group, {
        bindings: [{ kind: 'direct', key: 'park.B' }, { kind: 'direct', key: 'park.A' }, { kind: 'direct', key: 'park.C' }],
        retry: { delaysMs: [5], maxAttempts: 2 },
        deadLetter: 'park',
        handler: async (e) => {
          if (e.type === 'B' && fail) throw new Error('broken');
          handled.push(e.type);
        },
      });
      await until(() => g.stats().deadLetters === 1, 5_000, 'dead letter');
      await log.append(s, [{ type: 'D', data: 4 }]);
      await sleep(100);
      assert.deepEqual(handled, ['A'], 'C and later wait behind the parked B');
      fail = false;
      const [letter] = await consumerGroups(log).deadLetters(group);
      await consumerGroups(log).redeliver(group, letter!.position);
      await until(() => handled.length === 3, 5_000, 'the stream to resume');
      assert.deepEqual(handled, ['A', 'B', 'C'], 'D is not bound');
      // Discard: a new poison is dropped and the stream continues behind it.
      fail = true;
      await log.append(s, [{ type: 'B', data: 5 }, { type: 'C', data: 6 }]);
      await until(() => g.stats().deadLetters === 1, 5_000, 'second dead letter');
      const [second] = await consumerGroups(log).deadLetters(group);
      await consumerGroups(log).discard(group, second!.position);
      await until(() => handled.length === 4, 5_000, 'the stream to continue');
      assert.deepEqual(handled, ['A', 'B', 'C', 'C']);
      assert.deepEqual(await consumerGroups(log).deadLetters(group), []);
      await g.stop();
    });

    it('keeps retry state durable: a restarted group fires a pending retry at its due time', async () => {
      const log = await open();
      const s = stream('durable');
      await log.append(s, [{ type: 'Flaky', data: {} }, { type: 'Next', data: {} }]);
      const attempts: number[] = [];
      const group = randomName('durable');
      const options = {
        bindings: [{ kind: 'topic' as const, pattern: 'durable.*' }],
        retry: { delaysMs: [400], maxAttempts: 3 },
      };
      const handled: string[] = [];
      const g1 = await subscribe(log, group, {
        ...options,
        handler: async (e) => {
          if (e.type === 'Flaky') {
            attempts.push(Date.now());
            throw new Error('not yet');
          }
          handled.push(e.type);
        },
      });
      await until(() => attempts.length === 1, 5_000, 'first attempt');
      await sleep(30);
      await g1.stop();
      const g2 = await subscribe(log, group, {
        ...options,
        handler: async (e) => {
          if (e.type === 'Flaky') attempts.push(Date.now());
          handled.push(e.type);
        },
      });
      await until(() => handled.length === 2, 5_000, 'retry after restart');
      assert.deepEqual(handled, ['Flaky', 'Next'], 'the waiting event follows its retry, in order');
      assert.ok(attempts[1]! - attempts[0]! >= 390, `the retry waited for its due time (${attempts[1]! - attempts[0]!} ms)`);
      await g2.stop();
    });

    it('delivers scheduled events after their delay, durably', async () => {
      const log = await open();
      const s = stream('transfer');
      const [submitted] = (await log.append(s, [{ type: 'Submitted', data: {} }])).events;
      const deliveries: { at: number; scheduled: boolean }[] = [];
      const started = Date.now();
      const g = await subscribe(log, randomName('sched'), {
        bindings: [{ kind: 'direct', key: 'transfer.Submitted' }],
        handler: async (_e, ctx) => {
          deliveries.push({ at: Date.now() - started, scheduled: ctx.scheduled });
          if (deliveries.length < 3) ctx.schedule(100); // "check again in 100 ms", twice
        },
      });
      await until(() => deliveries.length === 3, 5_000, 'scheduled deliveries');
      assert.deepEqual(deliveries.map((d) => d.scheduled), [false, true, true]);
      assert.ok(deliveries[1]!.at - deliveries[0]!.at >= 95 && deliveries[2]!.at - deliveries[1]!.at >= 95);
      await g.schedule(submitted!.id, { delayMs: 50 });
      await until(() => deliveries.length === 4, 5_000, 'an operator-scheduled delivery');
      await g.stop();
    });

    it('keeps a failed scheduled delivery as a dead letter across restarts, and redelivers it', async () => {
      const log = await open();
      const s = stream('check');
      await log.append(s, [{ type: 'Requested', data: {} }]);
      const group = randomName('sched-dead');
      let failScheduled = true;
      const calls: boolean[] = [];
      const options = {
        bindings: [{ kind: 'direct' as const, key: 'check.Requested' }],
        retry: { delaysMs: [10], maxAttempts: 2 },
        handler: async (_e: RecordedEvent, ctx: { scheduled: boolean; schedule(ms: number): void }) => {
          calls.push(ctx.scheduled);
          if (!ctx.scheduled) ctx.schedule(10);
          else if (failScheduled) throw new Error('ledger unreachable');
        },
      };
      let g = await subscribe(log, group, options);
      await until(() => g.stats().deadLetters === 1, 5_000, 'the scheduled delivery to die');
      assert.deepEqual(calls, [false, true, true], 'one live delivery, then maxAttempts scheduled ones');
      await g.stop();
      // After a restart the dead scheduled delivery stays dead: it is not delivered again by itself.
      g = await subscribe(log, group, options);
      await sleep(100);
      assert.equal(calls.length, 3);
      const [letter] = g.deadLetters();
      assert.equal(letter?.attempts, 2);
      failScheduled = false;
      await g.redeliver(letter!.position);
      await until(() => calls.length === 4, 5_000, 'the redelivery');
      await until(() => g.stats().deadLetters === 0, 5_000, 'the dead letter to go');
      await g.stop();
      assert.deepEqual(await consumerGroups(log).deadLetters(group), []);
    });

    it('replays from a position after a reset', async () => {
      const log = await open();
      const s = stream('replay');
      const first = await log.append(s, [{ type: 'A', data: 1 }, { type: 'B', data: 2 }]);
      const seen: string[] = [];
      const group = randomName('replay');
      const options = { bindings: [{ kind: 'topic' as const, pattern: 'replay.*' }], handler: async (e: RecordedEvent) => void seen.push(e.type) };
      let g = await subscribe(log, group, options);
      await g.waitForCheckpoint(await log.headPosition());
      await g.stop();
      await rejectsWithCode(() => consumerGroups(log).reset(randomName('none'), 1), 'UNKNOWN_GROUP');
      await consumerGroups(log).reset(group, first.events[1]!.position);
      g = await subscribe(log, group, options);
      await g.waitForCheckpoint(await log.headPosition());
      await rejectsWithCode(() => consumerGroups(log).reset(group, 1), 'INVALID_ARGUMENT');
      await g.stop();
      assert.deepEqual(seen, ['A', 'B', 'B']);
      // Reset to a point in time: replays what was committed since then.
      await sleep(20);
      const since = new Date();
      await log.append(s, [{ type: 'C', data: 3 }]);
      g = await subscribe(log, group, options);
      await g.waitForCheckpoint(await log.headPosition());
      await g.stop();
      await consumerGroups(log).reset(group, { at: since });
      g = await subscribe(log, group, options);
      await g.waitForCheckpoint(await log.headPosition());
      await g.stop();
      assert.deepEqual(seen, ['A', 'B', 'B', 'C', 'C']);
    });

    it('rejects bad options and unknown groups with typed errors', async () => {
      const log = await open();
      const handler = async () => {};
      await rejectsWithCode(() => subscribe(log, 'bad name', { handler }), 'INVALID_ARGUMENT');
      await rejectsWithCode(() => subscribe(log, 'g', { bindings: [{ kind: 'topic' } as never], handler }), 'INVALID_BINDING');
      await rejectsWithCode(() => subscribe(log, 'g', { bindings: [], handler }), 'INVALID_BINDING');
      await rejectsWithCode(() => subscribe(log, 'g', { handler, retry: { delaysMs: [-5] } }), 'INVALID_ARGUMENT');
      await rejectsWithCode(() => subscribe(log, 'g', { handler, retry: { initialDelayMs: -1 } }), 'INVALID_ARGUMENT');
      await rejectsWithCode(() => subscribe(log, 'g', { handler, retry: { maxAttempts: 0 } }), 'INVALID_ARGUMENT');
      await rejectsWithCode(() => subscribe(log, 'g', { handler, concurrency: 0 }), 'INVALID_ARGUMENT');
      await rejectsWithCode(() => subscribe(log, 'g', { handler, deadLetter: 'drop' as never }), 'INVALID_ARGUMENT');
      await rejectsWithCode(() => subscribe(log, 'g', {} as never), 'INVALID_ARGUMENT');
      await rejectsWithCode(() => subscribe(log, 'g', { handler, startFrom: { position: -1 } }), 'INVALID_ARGUMENT');
      await rejectsWithCode(() => consumerGroups(log).deadLetters(randomName('none')), 'UNKNOWN_GROUP');
      const group = randomName('twice');
      const g = await subscribe(log, group, { handler });
      await rejectsWithCode(() => subscribe(log, group, { handler }), 'INVALID_ARGUMENT');
      await rejectsWithCode(() => consumerGroups(log).redeliver(group, 999), 'INVALID_ARGUMENT');
      await g.stop();
      if (!projection) await rejectsWithCode(() => subscribe(log, randomName('p'), { project: () => {} }), 'UNSUPPORTED');
    });

    it('lets the lease go when a start fails after taking it, so the next instance starts at once', async () => {
      const log = await open();
      const group = randomName('startfail');
      const subscriptions = storageOf(log).subscriptions;
      const { getGroup } = subscriptions;
      // subscribe reads the group once before starting it; the start reads it again once it holds the lease.
      let reads = 0;
      subscriptions.getGroup = async (name) => {
        if (++reads === 2) throw new Error('store unreachable while starting');
        return getGroup.call(subscriptions, name);
      };
      try {
        await assert.rejects(subscribe(log, group, { handler: () => {}, leaseMs: 300 }), /store unreachable while starting/);
      } finally {
        subscriptions.getGroup = getGroup;
      }
      // With the lease still renewed by the failed start, this one would wait twice the lease and fail with GROUP_BUSY.
      const started = Date.now();
      const next = await subscribe(log, group, { handler: () => {}, leaseMs: 300 });
      assert.ok(Date.now() - started < 300, `started after ${Date.now() - started} ms`);
      await next.stop();
    });

    it('runs a partitioned group: every partition delivers its keys in order; admin sees one group', async () => {
      const log = await open();
      const streams = Array.from({ length: 12 }, () => stream('part'));
      for (let i = 0; i < 5; i++) await Promise.all(streams.map((s) => log.append(s, [{ type: 'Tick', data: { i } }])));
      const seen = new Map<string, number[]>();
      const group = randomName('parts');
      const options = {
        partitions: 4,
        leaseMs: 300,
        bindings: [{ kind: 'topic' as const, pattern: 'part.*' }],
        handler: async (e: RecordedEvent) => void seen.set(e.stream, [...(seen.get(e.stream) ?? []), (e.data as { i: number }).i]),
      };
      const g = await subscribe(log, group, options);
      assert.deepEqual(g.stats().partitions, [0, 1, 2, 3], 'a lone node runs every partition');
      await g.waitForCheckpoint(await log.headPosition());
      for (const s of streams) assert.deepEqual(seen.get(s), [0, 1, 2, 3, 4]);
      const [info, ...others] = (await consumerGroups(log).list()).filter((i) => i.name === group || i.name.startsWith(`${group}#`));
      assert.equal(others.length, 0, 'partitions are not listed as groups of their own');
      assert.equal(info?.partitions, 4);
      assert.equal(info?.lag, 0);
      await rejectsWithCode(() => subscribe(log, group, options), 'INVALID_ARGUMENT');
      await g.stop();
      await rejectsWithCode(() => subscribe(log, group, { ...options, partitions: 8 }), 'INVALID_ARGUMENT');
      await rejectsWithCode(() => subscribe(log, group, { handler: options.handler }), 'INVALID_ARGUMENT');
      await rejectsWithCode(() => subscribe(log, randomName('p'), { ...options, partitions: 0 }), 'INVALID_ARGUMENT');
      // Reset and delete act on every partition.
      await consumerGroups(log).reset(group, 1);
      const again = await subscribe(log, group, options);
      await again.waitForCheckpoint(await log.headPosition());
      await again.stop();
      for (const s of streams) assert.deepEqual(seen.get(s), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
      await consumerGroups(log).delete(group);
      assert.equal((await consumerGroups(log).list()).some((i) => i.name.startsWith(group)), false);
    });

    if (peer) {
      it('runs a standby instance that takes the group over when the holder stops, delivering each event once', async () => {
        const log = await open();
        const other = await peer(log);
        try {
          const s = stream('standby');
          await log.append(s, Array.from({ length: 5 }, (_, i) => ({ type: 'N', data: { i } })));
          const seen: [string, number][] = [];
          const group = randomName('standby');
          const handler = (node: string) => (e: RecordedEvent) => void seen.push([node, (e.data as { i: number }).i]);
          const active = await subscribe(log, group, { handler: handler('active'), leaseMs: 300 });
          await active.waitForCheckpoint(await log.headPosition());
          let takenOver = false;
          const waiting = subscribe(other, group, { handler: handler('standby'), leaseMs: 300, standby: true }).then((g) => ((takenOver = true), g));
          await sleep(1000); // more than twice the lease: a standby does not give up
          assert.equal(takenOver, false, 'the standby waits while the holder renews its lease');
          await log.append(s, Array.from({ length: 5 }, (_, i) => ({ type: 'N', data: { i: 5 + i } })));
          await active.waitForCheckpoint(await log.headPosition());
          await active.stop();
          const standby = await waiting;
          await log.append(s, Array.from({ length: 5 }, (_, i) => ({ type: 'N', data: { i: 10 + i } })));
          await standby.waitForCheckpoint(await log.headPosition());
          await standby.stop();
          assert.deepEqual(seen.map(([, i]) => i), Array.from({ length: 15 }, (_, i) => i), 'each event once, in order');
          assert.deepEqual(seen.filter(([node]) => node === 'standby').map(([, i]) => i), [10, 11, 12, 13, 14]);
        } finally {
          await other.close();
        }
      });

      it('rebalances partitions between nodes as they join and leave, keeping per-stream order', async () => {
        const log = await open();
        const other = await peer(log);
        try {
          const streams = Array.from({ length: 16 }, () => stream('node'));
          const seen = new Map<string, number[]>();
          const handledBy = { a: 0, b: 0 };
          const group = randomName('nodes');
          const options = (node: 'a' | 'b') => ({
            partitions: 6,
            leaseMs: 300,
            bindings: [{ kind: 'topic' as const, pattern: 'node.*' }],
            handler: async (e: RecordedEvent) => {
              await sleep(Math.random());
              handledBy[node] += 1;
              seen.set(e.stream, [...(seen.get(e.stream) ?? []), (e.data as { i: number }).i]);
            },
          });
          let i = 0;
          const appendRound = () => Promise.all(streams.map((s) => log.append(s, [{ type: 'Tick', data: { i } }]))).then(() => void (i += 1));
          const a = await subscribe(log, group, options('a'));
          await appendRound();
          const b = await subscribe(other, group, options('b'));
          // Keep appending while B joins: A hands three partitions over, B takes them.
          while (a.owned().length !== 3 || b.owned().length !== 3) {
            await appendRound();
            await sleep(20);
          }
          assert.deepEqual([...a.owned(), ...b.owned()].sort(), [0, 1, 2, 3, 4, 5]);
          for (let k = 0; k < 3; k++) await appendRound();
          await a.waitForCheckpoint(await log.headPosition());
          assert.ok(handledBy.b > 0, 'the joining node handled events');
          // B leaves gracefully: A takes every partition back.
          await b.stop();
          await until(() => a.owned().length === 6, 5_000, 'A to take the partitions back');
          await appendRound();
          await a.waitForCheckpoint(await log.headPosition());
          await a.stop();
          const expected = Array.from({ length: i }, (_, k) => k);
          for (const s of streams) assert.deepEqual(seen.get(s), expected, `${s}: every event once, in order, across two handovers`);
        } finally {
          await other.close();
        }
      });
    }

    it('rebuilds a projection blue-green: the old version serves until the new one caught up, then readers switch', async () => {
      const log = await open();
      const streams = Array.from({ length: 10 }, () => stream('bg'));
      for (let i = 0; i < 20; i++) await Promise.all(streams.map((s) => log.append(s, [{ type: 'Counted', data: { i } }])));
      const name = randomName('members');
      const counts = new Map<number, Map<string, number>>([[1, new Map()], [2, new Map()]]);
      const count = (version: number) => async (e: RecordedEvent) => {
        if (version === 2) await sleep(0.2);
        const m = counts.get(version)!;
        m.set(e.stream, (m.get(e.stream) ?? 0) + 1);
      };
      const bindings = [{ kind: 'topic' as const, pattern: 'bg.*' }];
      assert.equal(await liveProjectionVersion(log, name), undefined);
      const v1 = await runProjection(log, name, { version: 1, bindings, handler: count(1), progressIntervalMs: 20 });
      await v1.waitUntilLive();
      assert.equal(await liveProjectionVersion(log, name), 1);
      // Version 2 rebuilds from the beginning while version 1 serves and keeps up with new events.
      const progress: ProjectionProgress[] = [];
      const switched: unknown[] = [];
      const v2 = await runProjection(log, name, { version: 2, bindings, handler: count(2), concurrency: 2, progressIntervalMs: 10 });
      v2.on('projection:progress', (p) => progress.push(p));
      v2.on('projection:switched', (e) => switched.push(e));
      for (let i = 20; i < 25; i++) await Promise.all(streams.map((s) => log.append(s, [{ type: 'Counted', data: { i } }])));
      assert.equal(await liveProjectionVersion(log, name), 1, 'the old version serves during the rebuild');
      await v2.waitUntilLive();
      assert.equal(await liveProjectionVersion(log, name), 2);
      assert.deepEqual(switched, [{ name, from: 1, to: 2 }]);
      assert.ok(progress.some((p) => p.ratio < 1 && !p.live), 'progress was reported during the rebuild');
      assert.ok(progress.every((p, k) => k === 0 || p.position >= progress[k - 1]!.position), 'progress only moves forward');
      await v1.group.waitForCheckpoint(await log.headPosition());
      await v1.stop();
      for (const s of streams) assert.equal(counts.get(2)!.get(s), 25, 'the new version saw every event');
      assert.deepEqual(counts.get(2), counts.get(1));
      // The old version is retired; starting it again would never make it live.
      await rejectsWithCode(() => v2.retire(2), 'INVALID_ARGUMENT');
      await v2.retire(1);
      assert.equal((await consumerGroups(log).list()).some((g) => g.name === `${name}@v1`), false);
      const stale = await runProjection(log, name, { version: 1, bindings, handler: async () => {}, progressIntervalMs: 10 });
      await stale.group.waitForCheckpoint(await log.headPosition());
      await stale.measure();
      assert.equal(stale.live, false);
      assert.equal(await liveProjectionVersion(log, name), 2);
      await stale.stop();
      await v2.stop();
      await rejectsWithCode(() => runProjection(log, name, { version: 0, handler: async () => {} }), 'INVALID_ARGUMENT');
      await rejectsWithCode(() => runProjection(log, name, { version: 3, handler: async () => {}, switchAtLag: -1 }), 'INVALID_ARGUMENT');
    });

    if (projection) {
      it('commits a transactional handler\'s writes with the checkpoint, exactly once', async () => {
        const log = await open();
        const table = await projection.createTable(log);
        const streams = Array.from({ length: 5 }, () => stream('proj'));
        for (let i = 0; i < 20; i++) await Promise.all(streams.map((s) => log.append(s, [{ type: 'Counted', data: { i } }])));
        const group = randomName('proj');
        let failures = 0;
        const options = {
          bindings: [{ kind: 'topic' as const, pattern: 'proj.*' }],
          retry: { delaysMs: [1], maxAttempts: 10 },
          project: (e: RecordedEvent, tx: { execute(sql: string, params?: unknown[]): void }) => {
            tx.execute(projection.increment(table, e.stream).sql, projection.increment(table, e.stream).params);
            if (Math.random() < 0.1 && failures++ < 20) throw new Error('flaky projection');
          },
        };
        const g = await subscribe(log, group, options);
        let projected = new Map<string, number>();
        await g.waitForCheckpoint(await log.headPosition());
        // The checkpoint passes retried events (and those waiting behind them) once they are durably deferred;
        // wait until their effects have committed too.
        const deadline = Date.now() + 10_000;
        while (![...streams].every((s) => (projected.get(s) ?? 0) >= 20)) {
          assert.ok(Date.now() < deadline, `projection incomplete: ${JSON.stringify([...projected])}`);
          await sleep(20);
          await g.flush();
          projected = await projection.read(log, table);
        }
        await g.stop();
        const counts = await projection.read(log, table);
        for (const s of streams) assert.equal(counts.get(s), 20, `${s} counted once per event`);
        // Replaying from the start re-runs the projection: the reset clears processed ids by design.
        const g2 = await subscribe(log, group, options);
        await g2.stop();
        assert.deepEqual(await projection.read(log, table), counts, 'a restart applies nothing twice');
      });

      it('rebuilds a transactional projection into new tables, and drops the old ones on retire', async () => {
        const log = await open();
        const streams = Array.from({ length: 4 }, () => stream('tbl'));
        for (let i = 0; i < 10; i++) await Promise.all(streams.map((s) => log.append(s, [{ type: 'Counted', data: { i } }])));
        const name = randomName('tables');
        const v1Table = await projection.createTable(log);
        const v2Table = `${v1Table}_v2`;
        const project = (table: string) => (e: RecordedEvent, tx: { execute(sql: string, params?: unknown[]): void }) => {
          const st = projection.increment(table, e.stream);
          tx.execute(st.sql, st.params);
        };
        const v1 = await runProjection(log, name, { version: 1, project: project(v1Table), progressIntervalMs: 10 });
        await v1.waitUntilLive();
        const v2 = await runProjection(log, name, {
          version: 2,
          setup: [`CREATE TABLE IF NOT EXISTS ${v2Table} (key text PRIMARY KEY, n integer NOT NULL)`],
          project: project(v2Table),
          progressIntervalMs: 10,
        });
        await v2.waitUntilLive();
        await v1.stop();
        assert.deepEqual(await projection.read(log, v2Table), await projection.read(log, v1Table));
        await v2.retire(1, [`DROP TABLE ${v1Table}`]);
        await assert.rejects(() => projection.read(log, v1Table), 'the old table is gone');
        await v2.stop();
      });
    }
  });
}
