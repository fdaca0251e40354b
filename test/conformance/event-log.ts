/**
 * The EventLog conformance suite. Every adapter runs exactly these tests
 * through a factory that returns a fresh, isolated log.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { NewEvent, RecordedEvent } from '../../src/index.js';
import { createUpcasters, eventSchema } from '../../src/index.js';
import { recordedEventsOf, storageOf } from '../../src/log/stored-event-log.js';
import { randomName } from '../support/services.js';
import { rejectsWithCode, suiteLogs, type LogFactory } from '../support/logs.js';

export type { LogFactory };

export async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

export function stream(category = 'test'): string {
  return `${category}-${randomName('s')}`;
}

function ev(type: string, data: unknown = {}, extra: Partial<NewEvent> = {}): NewEvent {
  return { type, data, ...extra };
}

export function eventLogConformance(name: string, factory: LogFactory, expectedDurability: 'durable' | 'none'): void {
  describe(`EventLog conformance: ${name}`, () => {
    const open = suiteLogs(factory);

    it('appends and reads a stream in order, with revisions, positions, category and metadata', async () => {
      const log = await open();
      const s = stream('community');
      const r1 = await log.append(s, [ev('Created', { name: 'a' }), ev('Joined', { user: 1 }, { metadata: { actor: 'u1', headers: { h: 'v' } } })]);
      assert.equal(r1.revision, 1);
      assert.equal(r1.durability, expectedDurability);
      assert.equal(r1.alreadyStored, false);
      assert.deepEqual(r1.events.map((e) => e.revision), [0, 1]);
      const r2 = await log.append(s, [ev('Joined', { user: 2 })]);
      assert.equal(r2.revision, 2);
      assert.ok(r2.events[0]!.position > r1.events[1]!.position);
      const events = await collect(log.readStream(s));
      assert.deepEqual(events.map((e) => e.type), ['Created', 'Joined', 'Joined']);
      assert.deepEqual(events.map((e) => e.revision), [0, 1, 2]);
      const first = events[0]!;
      assert.equal(first.category, 'community');
      assert.equal(first.stream, s);
      assert.equal(first.schemaVersion, 1);
      assert.deepEqual(first.data, { name: 'a' });
      assert.match(first.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'generated ids are UUIDv7');
      assert.ok(!Number.isNaN(Date.parse(first.metadata.occurredAt)));
      assert.equal(events[1]!.metadata.actor, 'u1');
      assert.deepEqual(events[1]!.metadata.headers, { h: 'v' });
      assert.equal(await log.streamRevision(s), 2);
      assert.equal(await log.streamRevision(stream()), -1);
    });

    it('reads streams backwards, from a revision, with a limit, across pages', async () => {
      const log = await open({ readPageSize: 3 });
      const s = stream();
      await log.append(s, Array.from({ length: 10 }, (_, i) => ev('N', { i })));
      assert.deepEqual((await collect(log.readStream(s))).map((e) => e.revision), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      assert.deepEqual((await collect(log.readStream(s, { direction: 'backwards' }))).map((e) => e.revision), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
      assert.deepEqual((await collect(log.readStream(s, { from: 4, limit: 4 }))).map((e) => e.revision), [4, 5, 6, 7]);
      assert.deepEqual((await collect(log.readStream(s, { from: 5, direction: 'backwards', limit: 2 }))).map((e) => e.revision), [5, 4]);
      assert.deepEqual(await collect(log.readStream(stream())), []);
    });

    it('enforces every kind of expected revision and reports the actual one', async () => {
      const log = await open();
      const s = stream();
      await rejectsWithCode(log.append(s, [ev('A')], { expectedRevision: 'streamExists' }), 'WRONG_EXPECTED_REVISION');
      await rejectsWithCode(log.append(s, [ev('A')], { expectedRevision: 0 }), 'WRONG_EXPECTED_REVISION');
      await log.append(s, [ev('A')], { expectedRevision: 'noStream' });
      const conflict = await rejectsWithCode(log.append(s, [ev('B')], { expectedRevision: 'noStream' }), 'WRONG_EXPECTED_REVISION');
      assert.equal(conflict.details.actual, 0);
      await log.append(s, [ev('B')], { expectedRevision: 'streamExists' });
      const wrong = await rejectsWithCode(log.append(s, [ev('C')], { expectedRevision: 5 }), 'WRONG_EXPECTED_REVISION');
      assert.equal(wrong.details.actual, 1);
      await log.append(s, [ev('C')], { expectedRevision: 1 });
      await log.append(s, [ev('D')], { expectedRevision: 'any' });
      assert.deepEqual((await collect(log.readStream(s))).map((e) => e.type), ['A', 'B', 'C', 'D']);
    });

    it('keeps revisions unique and conflicts exact under many concurrent appenders', async () => {
      const log = await open();
      const shared = stream();
      // 200 appenders to one stream, 'any': all succeed, revisions 0..199 exactly once.
      const results = await Promise.all(Array.from({ length: 200 }, (_, i) => log.append(shared, [ev('N', { i })])));
      assert.deepEqual(results.map((r) => r.revision).sort((a, b) => a - b), Array.from({ length: 200 }, (_, i) => i));
      // 50 appenders all expecting revision 199: exactly one wins, the others see actual 200.
      const racing = await Promise.allSettled(Array.from({ length: 50 }, (_, i) => log.append(shared, [ev('R', { i })], { expectedRevision: 199 })));
      const won = racing.filter((r) => r.status === 'fulfilled');
      assert.equal(won.length, 1);
      for (const r of racing) {
        if (r.status === 'rejected') {
          assert.equal(r.reason.code, 'WRONG_EXPECTED_REVISION');
          assert.equal(r.reason.details.actual, 200);
        }
      }
      // Appenders to 100 different streams, each with optimistic chains of 3.
      const streams = Array.from({ length: 100 }, () => stream());
      await Promise.all(
        streams.map(async (s) => {
          for (let r = 0; r < 3; r++) await log.append(s, [ev('N', { r })], { expectedRevision: r === 0 ? 'noStream' : r - 1 });
        }),
      );
      for (const s of streams) assert.deepEqual((await collect(log.readStream(s))).map((e) => e.revision), [0, 1, 2]);
      // Positions across the whole log are unique and contiguous.
      const all = await collect(log.readAll());
      assert.deepEqual(
        all.map((e) => e.position),
        Array.from({ length: all.length }, (_, i) => i + 1),
      );
    });

    it('group-commits concurrent appends and says which durability each got', async () => {
      const log = await open();
      let commits = 0;
      const off = log.onCommit(() => commits++);
      const results = await Promise.all(Array.from({ length: 256 }, () => log.append(stream(), [ev('G')])));
      off();
      assert.equal(new Set(results.map((r) => r.events[0]!.position)).size, 256);
      assert.ok(commits <= 16, `256 concurrent appends shared transactions (${commits} commits)`);
      const relaxed = await log.append(stream(), [ev('R')], { durability: 'relaxed' });
      assert.equal(relaxed.durability, expectedDurability === 'none' ? 'none' : 'relaxed');
      const mixed = await Promise.all([
        log.append(stream(), [ev('D')]),
        log.append(stream(), [ev('R')], { durability: 'relaxed' }),
        log.append(stream(), [ev('D')]),
      ]);
      assert.deepEqual(mixed.map((r) => r.durability), expectedDurability === 'none' ? ['none', 'none', 'none'] : ['durable', 'relaxed', 'durable']);
    });

    it('appends to several streams atomically, each with its own expectation', async () => {
      const log = await open();
      const a = stream();
      const b = stream();
      await log.append(a, [ev('A0')]);
      const head = await log.headPosition();
      await rejectsWithCode(
        log.appendMulti([
          { stream: a, events: [ev('A1')], expectedRevision: 0 },
          { stream: b, events: [ev('B0')], expectedRevision: 3 },
        ]),
        'WRONG_EXPECTED_REVISION',
      );
      assert.equal(await log.headPosition(), head, 'nothing was written');
      assert.equal(await log.streamRevision(a), 0);
      assert.equal(await log.streamRevision(b), -1);
      const ok = await log.appendMulti([
        { stream: a, events: [ev('A1')], expectedRevision: 0 },
        { stream: b, events: [ev('B0'), ev('B1')], expectedRevision: 'noStream' },
      ]);
      assert.deepEqual(ok.streams.map((s) => s.revision), [1, 1]);
      const positions = ok.streams.flatMap((s) => s.events.map((e) => e.position));
      assert.deepEqual(positions, [head + 1, head + 2, head + 3]);
    });

    it('makes appends idempotent by event id, and rejects the same id with other content', async () => {
      const log = await open();
      const s = stream();
      const id1 = '0190f5a0-0000-7000-8000-000000000001';
      const id2 = '0190f5a0-0000-7000-8000-000000000002';
      const first = await log.append(s, [ev('A', { x: 1, y: [1, 2] }, { id: id1 }), ev('B', null, { id: id2 })]);
      const head = await log.headPosition();
      // Same ids, same content (keys in another order): a no-op returning the stored positions.
      const again = await log.append(s, [ev('A', { y: [1, 2], x: 1 }, { id: id1 }), ev('B', null, { id: id2.toUpperCase() })], { expectedRevision: 'noStream' });
      assert.equal(again.alreadyStored, true);
      assert.deepEqual(again.events, first.events);
      assert.equal(await log.headPosition(), head);
      await rejectsWithCode(log.append(s, [ev('A', { x: 2 }, { id: id1 })]), 'EVENT_ID_CONFLICT');
      await rejectsWithCode(log.append(stream(), [ev('A', { x: 1, y: [1, 2] }, { id: id1 })]), 'EVENT_ID_CONFLICT');
      await rejectsWithCode(log.append(s, [ev('A', { x: 1, y: [1, 2] }, { id: id1 }), ev('C')]), 'EVENT_ID_CONFLICT');
      assert.equal(await log.headPosition(), head, 'nothing was written');
      // Two concurrent deliveries of the same event (they share a group commit): stored once.
      const id3 = '0190f5a0-0000-7000-8000-000000000003';
      const [x, y] = await Promise.all([log.append(s, [ev('D', 1, { id: id3 })]), log.append(s, [ev('D', 1, { id: id3 })])]);
      assert.deepEqual(x.events, y.events);
      assert.equal([x, y].filter((r) => r.alreadyStored).length, 1);
      assert.equal((await collect(log.readStream(s))).length, 3);
      assert.deepEqual((await log.readEvents([id3, id1])).map((e) => e.type), ['A', 'D']);
    });

    it('rejects malformed input and limit violations with typed codes, writing nothing', async () => {
      const log = await open({ limits: { maxEventBytes: 1000, maxEventsPerAppend: 5, maxStreamsPerAppend: 2 } });
      const s = stream();
      await log.append(s, [ev('A')]);
      const head = await log.headPosition();
      const cases: [() => Promise<unknown>, string][] = [
        [() => log.append(s, [ev('A', 'x'.repeat(2000))]), 'EVENT_TOO_LARGE'],
        [() => log.append(s, [ev('A', {}, { metadata: { headers: { big: 'y'.repeat(2000) } } })]), 'EVENT_TOO_LARGE'],
        [() => log.append(s, Array.from({ length: 6 }, () => ev('A'))), 'TOO_MANY_EVENTS'],
        [() => log.appendMulti([stream(), stream(), stream()].map((x) => ({ stream: x, events: [ev('A')] }))), 'TOO_MANY_EVENTS'],
        [() => log.append('', [ev('A')]), 'INVALID_STREAM_NAME'],
        [() => log.append('has space', [ev('A')]), 'INVALID_STREAM_NAME'],
        [() => log.append('-leading', [ev('A')]), 'INVALID_STREAM_NAME'],
        [() => log.append('x'.repeat(201), [ev('A')]), 'INVALID_STREAM_NAME'],
        [() => log.append(42 as unknown as string, [ev('A')]), 'INVALID_STREAM_NAME'],
        [() => log.append(s, [ev('')]), 'INVALID_EVENT_TYPE'],
        [() => log.append(s, [ev('1abc')]), 'INVALID_EVENT_TYPE'],
        [() => log.append(s, [ev('bad type')]), 'INVALID_EVENT_TYPE'],
        [() => log.append(s, [{ type: 'A' } as NewEvent]), 'INVALID_EVENT'],
        [() => log.append(s, [ev('A', { n: Number.NaN })]), 'INVALID_EVENT'],
        [() => log.append(s, [ev('A', { d: new Date() })]), 'INVALID_EVENT'],
        [() => log.append(s, [ev('A', { b: 1n })]), 'INVALID_EVENT'],
        [() => log.append(s, [ev('A', [undefined])]), 'INVALID_EVENT'],
        [() => log.append(s, [ev('A', {}, { id: 'not-a-uuid' })]), 'INVALID_EVENT'],
        [() => log.append(s, [ev('A', {}, { schemaVersion: 0 })]), 'INVALID_EVENT'],
        [() => log.append(s, [ev('A', {}, { metadata: { occurredAt: 'yesterday' } })]), 'INVALID_EVENT'],
        [() => log.append(s, [ev('A', {}, { metadata: { unknown: 'x' } as never })]), 'INVALID_EVENT'],
        [() => log.append(s, [ev('A', {}, { metadata: { headers: { n: 1 } } as never })]), 'INVALID_EVENT'],
        [() => log.append(s, [ev('A', {}, { id: '0190f5a0-0000-7000-8000-0000000000aa' }), ev('B', {}, { id: '0190f5a0-0000-7000-8000-0000000000aa' })]), 'INVALID_EVENT'],
        [() => log.append(s, 'nope' as never), 'INVALID_ARGUMENT'],
        [() => log.append(s, [ev('A')], { expectedRevision: -5 }), 'INVALID_ARGUMENT'],
        [() => log.append(s, [ev('A')], { expectedRevision: 1.5 }), 'INVALID_ARGUMENT'],
        [() => log.append(s, [ev('A')], { durability: 'sometimes' as never }), 'INVALID_ARGUMENT'],
        [() => log.appendMulti([]), 'INVALID_ARGUMENT'],
        [() => log.appendMulti([{ stream: s, events: [ev('A')] }, { stream: s, events: [ev('B')] }]), 'INVALID_ARGUMENT'],
        [() => collect(log.readAll({ fromPosition: -1 })), 'INVALID_ARGUMENT'],
        [() => collect(log.readAll({ filter: { types: 'A' as never } })), 'INVALID_ARGUMENT'],
        [() => collect(log.readStream(s, { limit: -1 })), 'INVALID_ARGUMENT'],
        [() => collect(log.readStream('bad name')), 'INVALID_STREAM_NAME'],
      ];
      for (const [call, code] of cases) await rejectsWithCode(call, code);
      assert.equal(await log.headPosition(), head, 'nothing was written');
      assert.equal(await log.streamRevision(s), 0);
    });

    it('reads the whole log by position, filtered by category and type, in pages', async () => {
      const log = await open({ readPageSize: 4 });
      const start = (await log.headPosition()) + 1;
      const member = stream('member');
      const family = stream('family');
      for (let i = 0; i < 5; i++) {
        await log.append(member, [ev('Registered', { i }), ev('Verified', { i })]);
        await log.append(family, [ev('Created', { i })]);
      }
      const all = await collect(log.readAll({ fromPosition: start }));
      assert.equal(all.length, 15);
      assert.deepEqual(all.map((e) => e.position), Array.from({ length: 15 }, (_, i) => start + i));
      const members = await collect(log.readAll({ fromPosition: start, filter: { categories: ['member'] } }));
      assert.equal(members.length, 10);
      assert.ok(members.every((e) => e.category === 'member'));
      const verified = await collect(log.readAll({ fromPosition: start, filter: { types: ['Verified', 'Created'] } }));
      assert.equal(verified.length, 10);
      const both = await collect(log.readAll({ fromPosition: start, filter: { categories: ['member'], types: ['Verified'] } }));
      assert.deepEqual(both.map((e) => e.data), [0, 1, 2, 3, 4].map((i) => ({ i })));
      assert.equal((await collect(log.readAll({ fromPosition: start + 3, limit: 6 }))).length, 6);
    });

    it('wakes waiting readers on commit and follows the log live without losing an event', async () => {
      const log = await open({ readPageSize: 7 });
      const s = stream('follow');
      const head = await log.headPosition();
      const waited = log.waitForCommit(head);
      setTimeout(() => void log.append(s, [ev('Tick')]), 20);
      assert.ok((await waited) > head);
      const controller = new AbortController();
      const seen: RecordedEvent[] = [];
      const following = (async () => {
        for await (const e of log.follow({ fromPosition: head + 1, filter: { categories: ['follow'] }, signal: controller.signal })) {
          seen.push(e);
          if (seen.length === 101) controller.abort();
        }
      })();
      await log.append(stream('other'), [ev('Noise')]);
      await Promise.all(Array.from({ length: 20 }, async (_, w) => {
        for (let i = 0; i < 5; i++) await log.append(s, [ev('Tick', { w, i })]);
      }));
      await following;
      assert.equal(seen.length, 101);
      assert.deepEqual(seen.map((e) => e.revision), Array.from({ length: 101 }, (_, i) => i));
      const timedOut = await log.waitForCommit(await log.headPosition(), { timeoutMs: 30 });
      assert.equal(timedOut, await log.headPosition());
    });

    it('gives followers the events this process just committed exactly as the store has them', async () => {
      // A small cache and small pages: pages straddle the cached run, start before it, and run past it.
      const log = await open({ readPageSize: 7, recentEvents: 20 });
      const start = (await log.headPosition()) + 1;
      const a = stream('recent');
      const b = stream('recentother');
      const written: { id: string; stream: string; type: string; data: unknown; revision: number; position: number }[] = [];
      const keep = (streamName: string, types: string[], datas: unknown[], result: { events: { id: string; revision: number; position: number }[] }) =>
        result.events.forEach((e, k) => written.push({ id: e.id, stream: streamName, type: types[k]!, data: datas[k], revision: e.revision, position: e.position }));
      const controller = new AbortController();
      const followed: RecordedEvent[] = [];
      const filtered: RecordedEvent[] = [];
      let expected = Number.POSITIVE_INFINITY;
      const following = (async () => {
        for await (const e of log.follow({ fromPosition: start, signal: controller.signal })) {
          followed.push(e);
          if (followed.length === expected) controller.abort();
        }
      })();
      const filteredController = new AbortController();
      const followingFiltered = (async () => {
        for await (const e of log.follow({ fromPosition: start, filter: { categories: ['recentother'] }, signal: filteredController.signal })) filtered.push(e);
      })();
      for (let i = 0; i < 30; i++) {
        const r = await log.append(a, [ev('A', { i }), ev('A2', { i, nested: { list: [1, 'two', null] } })]);
        keep(a, ['A', 'A2'], [{ i }, { i, nested: { list: [1, 'two', null] } }], r);
        if (i % 3 === 0) {
          const multi = await log.appendMulti([{ stream: b, events: [ev('B', { i })] }, { stream: a, events: [ev('A3', { i })] }]);
          keep(b, ['B'], [{ i }], multi.streams[0]!);
          keep(a, ['A3'], [{ i }], multi.streams[1]!);
        }
        if (i % 5 === 0) {
          // Neither a failed expectation nor an idempotent repeat adds anything.
          await rejectsWithCode(log.append(b, [ev('Never')], { expectedRevision: 999 }), 'WRONG_EXPECTED_REVISION');
          const first = written.find((w) => w.stream === a)!;
          const again = await log.append(a, [ev('A', { i: 0 }, { id: first.id })]);
          assert.equal(again.alreadyStored, true);
        }
      }
      // Concurrent appenders: one group commit holds many requests.
      await Promise.all(Array.from({ length: 40 }, async (_, w) => keep(b, ['B'], [{ w }], await log.append(b, [ev('B', { w })]))));
      written.sort((x, y) => x.position - y.position);
      expected = written.length;
      await following;
      const shape = (e: RecordedEvent) => ({ id: e.id, stream: e.stream, type: e.type, data: e.data, revision: e.revision, position: e.position });
      assert.deepEqual(followed.map(shape), written);
      const wantFiltered = written.filter((w) => w.stream === b);
      while (filtered.length < wantFiltered.length) await new Promise((r) => setTimeout(r, 5));
      filteredController.abort();
      await followingFiltered;
      assert.deepEqual(filtered.map(shape), wantFiltered);
      assert.deepEqual((await collect(log.readAll({ fromPosition: start }))).map(shape), written);
      // Truncated events are gone for readers of this process at once, cached or not.
      await log.truncateStream(a, 50);
      const after = await collect(log.readAll({ fromPosition: start, filter: { categories: ['recent'] } }));
      assert.deepEqual(after.map((e) => e.revision), written.filter((w) => w.stream === a && w.revision >= 50).map((w) => w.revision));
    });

    it('reads any range of a long interleaved stream, both ways, before and after truncations', async () => {
      const log = await open({ readPageSize: 7 });
      const a = stream('long');
      const b = stream('long');
      for (let i = 0; i < 300; i += 10) {
        await log.appendMulti([
          { stream: a, events: Array.from({ length: 10 }, (_, k) => ev('A', { r: i + k })) },
          { stream: b, events: [ev('B', { i })] },
        ]);
      }
      const revisions = async (options: { direction?: 'forwards' | 'backwards'; from?: number; limit?: number }) =>
        (await collect(log.readStream(a, options))).map((e) => {
          assert.equal((e.data as { r: number }).r, e.revision);
          return e.revision;
        });
      const range = (from: number, to: number) => (from <= to ? Array.from({ length: to - from + 1 }, (_, k) => from + k) : Array.from({ length: from - to + 1 }, (_, k) => from - k));
      const check = async (first: number, last: number) => {
        assert.deepEqual(await revisions({}), range(first, last));
        assert.deepEqual(await revisions({ direction: 'backwards' }), range(last, first));
        for (const from of [0, 1, 63, 64, 65, 127, 128, 200, 255, 256, last, last + 1]) {
          for (const limit of [1, 5, 64, 70]) {
            const forwards = range(Math.max(from, first), Math.min(last, Math.max(from, first) + limit - 1));
            assert.deepEqual(await revisions({ from, limit }), Math.max(from, first) > last ? [] : forwards, `forwards from ${from}, limit ${limit}`);
            const top = Math.min(from, last);
            const backwards = top < first ? [] : range(top, Math.max(first, top - limit + 1));
            assert.deepEqual(await revisions({ direction: 'backwards', from, limit }), backwards, `backwards from ${from}, limit ${limit}`);
          }
        }
      };
      await check(0, 299);
      await log.truncateStream(a, 130);
      await check(130, 299);
      await log.truncateStream(a, 100); // below what is gone already: nothing changes
      await check(130, 299);
      await log.append(a, Array.from({ length: 40 }, (_, k) => ev('A', { r: 300 + k })));
      await check(130, 339);
      await log.truncateStream(a, 10_000); // past the end: every event goes, later appends stay
      assert.deepEqual(await revisions({}), []);
      assert.equal(await log.streamRevision(a), 339);
      await log.append(a, [ev('A', { r: 340 })]);
      assert.deepEqual(await revisions({}), [340]);
      assert.equal((await collect(log.readStream(b))).length, 30);
    });

    it('lets timers run while a follower catches up on a backlog', async () => {
      const log = await open({ readPageSize: 50 });
      const s = stream('backlog');
      const from = (await log.headPosition()) + 1;
      for (let i = 0; i < 10; i++) await log.append(s, Array.from({ length: 100 }, (_, j) => ev('B', { n: i * 100 + j })));
      const controller = new AbortController();
      let timerRan = false;
      let seen = 0;
      let timerRanBeforeEnd: boolean | undefined;
      setTimeout(() => (timerRan = true), 0);
      for await (const _ of log.follow({ fromPosition: from, signal: controller.signal })) {
        seen += 1;
        if (seen === 1000) {
          timerRanBeforeEnd = timerRan;
          controller.abort();
        }
      }
      assert.equal(timerRanBeforeEnd, true, 'a timer due at once ran before the follower read 20 pages');
    });

    it('serves a follower of this log\'s own commits without reading the head or the events from the store', async () => {
      const log = await open();
      const storage = storageOf(log);
      const s = stream('ownfollow');
      await log.append(s, [ev('Before')]);
      const start = await log.headPosition();
      const counts = { headPosition: 0, readAllPage: 0 };
      const { headPosition, readAllPage } = storage;
      // The store's methods are counted from here on; the follower reads the head once when it starts.
      storage.headPosition = () => (counts.headPosition++, headPosition.call(storage));
      storage.readAllPage = (q) => (counts.readAllPage++, readAllPage.call(storage, q));
      try {
        const controller = new AbortController();
        const seen: number[] = [];
        let started!: () => void;
        const ready = new Promise<void>((r) => (started = r));
        const following = (async () => {
          for await (const e of log.follow({ fromPosition: start, signal: controller.signal })) {
            if (e.position === start) started();
            else seen.push(e.revision);
            if (seen.length === 30) controller.abort();
          }
        })();
        await ready;
        const before = { ...counts };
        for (let i = 0; i < 30; i++) await log.append(s, [ev('Tick', { i })]);
        await following;
        assert.deepEqual(seen, Array.from({ length: 30 }, (_, i) => i + 1));
        assert.deepEqual(counts, before, 'each wake-up came with the committed head, and the rows were in memory');
      } finally {
        storage.headPosition = headPosition;
        storage.readAllPage = readAllPage;
      }
    });

    it('gives an append its recorded events without a read while the recent events hold them, and none after', async () => {
      const log = await open({ recentEvents: 8 });
      const s = stream('recorded');
      const result = await log.append(s, [ev('A', { i: 1, nested: { list: [1, 'two'] } }), ev('B', { i: 2 }, { metadata: { actor: 'u' } })]);
      const recorded = recordedEventsOf(result);
      assert.ok(recorded, 'held right after the append');
      assert.deepEqual(recorded, await log.readEvents(result.events.map((e) => e.id)));
      const repeat = await log.append(s, [ev('A', { i: 1, nested: { list: [1, 'two'] } }, { id: result.events[0]!.id })]);
      assert.equal(repeat.alreadyStored, true);
      assert.equal(recordedEventsOf(repeat), undefined, 'an idempotent repeat wrote nothing');
      // Eight newer events push it out: callers read it back instead (handleCommand does).
      for (let i = 0; i < 4; i++) await log.append(stream('recordedother'), [ev('X'), ev('Y')]);
      assert.equal(recordedEventsOf(result), undefined);
      const off = await open({ recentEvents: 0 });
      assert.equal(recordedEventsOf(await off.append(stream('recorded'), [ev('A')])), undefined);
    });

    it('upcasts old schema versions on read and stamps new events with the latest version', async () => {
      const schema = eventSchema('Registered')
        .initial<{ name: string }>()
        .then((v1) => ({ displayName: v1.name }))
        .then((v2) => ({ ...v2, locale: 'ko-KR' }));
      const log = await open({ upcasters: createUpcasters([schema]) });
      const s = stream('member');
      await log.append(s, [
        ev('Registered', { name: 'Jiwoo' }, { schemaVersion: 1 }),
        ev('Registered', { displayName: 'Minji' }, { schemaVersion: 2 }),
        ev('Registered', { displayName: 'Hana', locale: 'en' }),
        ev('Other', { untouched: true }),
      ]);
      const events = await collect(log.readStream(s));
      assert.deepEqual(
        events.map((e) => [e.schemaVersion, e.data]),
        [
          [3, { displayName: 'Jiwoo', locale: 'ko-KR' }],
          [3, { displayName: 'Minji', locale: 'ko-KR' }],
          [3, { displayName: 'Hana', locale: 'en' }],
          [1, { untouched: true }],
        ],
      );
      await log.append(s, [ev('Registered', {}, { schemaVersion: 9 })]);
      await rejectsWithCode(() => collect(log.readStream(s)), 'UNKNOWN_SCHEMA_VERSION');
    });

    it('stores snapshots by key and truncates streams keeping revisions', async () => {
      const log = await open();
      const s = stream();
      await log.append(s, Array.from({ length: 6 }, (_, i) => ev('N', { i })));
      assert.equal(await log.readSnapshot(s, 'k@1'), undefined);
      await log.writeSnapshot(s, { key: 'k@1', revision: 3, state: { sum: 6 } });
      await log.writeSnapshot(s, { key: 'k@1', revision: 2, state: { sum: 3 } });
      assert.deepEqual(await log.readSnapshot(s, 'k@1'), { key: 'k@1', revision: 3, state: { sum: 6 } }, 'an older snapshot never replaces a newer one');
      assert.equal(await log.readSnapshot(s, 'k@2'), undefined);
      await log.truncateStream(s, 4);
      assert.deepEqual((await collect(log.readStream(s))).map((e) => e.revision), [4, 5]);
      assert.equal(await log.streamRevision(s), 5);
      const r = await log.append(s, [ev('N')], { expectedRevision: 5 });
      assert.equal(r.revision, 6);
    });

    it('finds the first position recorded at or after a time', async () => {
      const log = await open();
      await log.append(stream(), [ev('Before')]);
      await new Promise((r) => setTimeout(r, 20));
      const at = new Date();
      const after = await log.append(stream(), [ev('After1'), ev('After2')]);
      assert.equal(await log.positionAt(at), after.events[0]!.position);
      assert.equal(await log.positionAt(new Date(Date.now() + 60_000)), (await log.headPosition()) + 1);
      await rejectsWithCode(log.positionAt(new Date('nope')), 'INVALID_ARGUMENT');
    });

    it('refuses work after close', async () => {
      const log = await factory();
      await log.close();
      await log.close();
      await rejectsWithCode(log.append(stream(), [ev('A')]), 'LOG_CLOSED');
      await rejectsWithCode(log.headPosition(), 'LOG_CLOSED');
    });
  });
}
