/**
 * Helpers shared by the conformance suites.
 */
import assert from 'node:assert/strict';
import { after } from 'node:test';
import type { EventLog, EventLogOptions, SinhoError } from '../../src/index.js';

export type LogFactory = (options?: EventLogOptions) => Promise<EventLog>;

/**
 * Call inside a `describe`: returns an `open` that creates a fresh log from
 * `factory` and closes every log it opened when the suite ends.
 */
export function suiteLogs(factory: LogFactory): (options?: EventLogOptions) => Promise<EventLog> {
  const opened: EventLog[] = [];
  after(async () => {
    await Promise.all(opened.map((l) => l.close()));
  });
  return async (options) => {
    const log = await factory(options);
    opened.push(log);
    return log;
  };
}

/** Asserts that the call (or promise) rejects with a SinhoError of `code`, and returns the error. */
export async function rejectsWithCode(promise: Promise<unknown> | (() => unknown), code: string): Promise<SinhoError> {
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (error) {
    assert.equal((error as SinhoError).code, code, `expected code ${code}, got ${(error as SinhoError).code}: ${(error as Error).message}`);
    return error as SinhoError;
  }
  assert.fail(`expected an error with code ${code}`);
}

/**
 * Two logs on one store (two processes' worth of connections), appending at the same time: followers on the
 * first see every event of both, in position order, with no hole. The first log holds its own recent commits in
 * memory (RecentEvents); the other's commits fall between them and must be read from the store. A third log that
 * wrote nothing serves its second follower from the pages its first follower read.
 */
export async function followsThroughAnotherWriter(mine: EventLog, other: EventLog, reader: EventLog): Promise<void> {
  const start = (await mine.headPosition()) + 1;
  const perWriter = 300;
  const follower = (log = mine) => {
    const controller = new AbortController();
    const seen: { position: number; id: string }[] = [];
    const done = (async () => {
      for await (const e of log.follow({ fromPosition: start, signal: controller.signal })) {
        seen.push({ position: e.position, id: e.id });
        if (seen.length === 2 * perWriter) controller.abort();
      }
    })();
    return { controller, seen, done };
  };
  // Two followers in one process share what either read (RecentEvents): one live, one that starts late.
  const live = follower();
  const ids = new Set<string>();
  const writer = (log: EventLog, name: string) =>
    Promise.all(
      Array.from({ length: 10 }, async (_, w) => {
        for (let i = 0; i < perWriter / 10; i++) {
          const r = await log.append(`${name}-${w}`, [{ type: 'Written', data: { w, i } }]);
          ids.add(r.events[0]!.id);
        }
      }),
    );
  await Promise.all([writer(mine, 'mine'), writer(other, 'other')]);
  const late = follower();
  // A log that committed nothing: its followers catch up from the store, the first one's pages serving the second.
  const readers = [follower(reader), follower(reader)];
  const all = [live, late, ...readers];
  const timeout = setTimeout(() => all.forEach((f) => f.controller.abort()), 20_000);
  await Promise.all(all.map((f) => f.done));
  clearTimeout(timeout);
  for (const { seen } of all) {
    assert.equal(seen.length, 2 * perWriter, 'every event of both writers was followed');
    assert.deepEqual(seen.map((e) => e.position), Array.from({ length: 2 * perWriter }, (_, i) => start + i), 'in position order, no hole');
    assert.deepEqual(new Set(seen.map((e) => e.id)), ids);
  }
}
