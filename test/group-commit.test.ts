/**
 * When the group committer cuts batches. The store here is a hand-held one whose commits finish when the test says
 * so: what is tested is the committer's timing, which a real store would only blur.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GroupCommitter } from '../src/log/group-commit.js';
import type { AppendRequest, CommitResult, LogStorage } from '../src/log/storage.js';
import { sleep } from './support/wait.js';

const tick = () => new Promise((r) => setImmediate(r));

function heldStore() {
  const commits: { events: number; finish: () => void }[] = [];
  let head = 0;
  const storage = {
    commit: (batch: readonly AppendRequest[]) =>
      new Promise<CommitResult>((resolve) => {
        const events = batch.reduce((n, r) => n + r.appends.reduce((m, a) => m + a.events.length, 0), 0);
        commits.push({
          events,
          finish: () => resolve({ outcomes: batch.map(() => ({ ok: true, streams: [] })), head: (head += events), durability: 'durable' }),
        });
      }),
  } as unknown as LogStorage;
  return { storage, commits };
}

const request = (events: number): AppendRequest => ({
  appends: [{ stream: 's-1', expectedRevision: 'any', events: Array.from({ length: events }, () => ({}) as never) }],
});

describe('group commit: cutting batches', () => {
  it('lets the next batch gather while one commits, and sends a full one at once to wait on the lock', async () => {
    const { storage, commits } = heldStore();
    const committer = new GroupCommitter(storage, 8, 2, () => {});
    const settled: Promise<unknown>[] = [];
    const enqueue = (events: number) => settled.push(committer.enqueue(request(events), 'durable'));
    for (let i = 0; i < 3; i++) enqueue(1);
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [3], 'the first batch takes what the turn brought');
    for (let i = 0; i < 5; i++) enqueue(1);
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [3], 'less than a full batch waits for the commit in flight');
    commits[0]!.finish();
    await tick();
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [3, 5], 'then goes as one batch');
    for (let i = 0; i < 10; i++) enqueue(1);
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [3, 5, 8], 'a full batch is cut while another commits');
    await tick();
    assert.equal(commits.length, 3, 'never more than two in flight');
    commits[1]!.finish();
    await tick();
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [3, 5, 8], 'the two left wait for the full batch still in flight');
    commits[2]!.finish();
    await tick();
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [3, 5, 8, 2]);
    commits[3]!.finish();
    await Promise.all(settled);
    await committer.whenIdle();
  });

  it('with one batch in flight at most, always waits for it', async () => {
    const { storage, commits } = heldStore();
    const committer = new GroupCommitter(storage, 4, 1, () => {});
    const settled = Array.from({ length: 10 }, () => committer.enqueue(request(1), 'durable'));
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [4]);
    commits[0]!.finish();
    await tick();
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [4, 4]);
    commits[1]!.finish();
    await tick();
    await tick();
    commits[2]!.finish();
    await Promise.all(settled);
    assert.deepEqual(commits.map((c) => c.events), [4, 4, 2]);
  });
});

describe('group commit: the group-commit delay', () => {
  const DELAY = 40;

  it('holds the next batch back when appends kept arriving during the previous commit, and it gathers more', async () => {
    const { storage, commits } = heldStore();
    const committer = new GroupCommitter(storage, 100, 2, () => {}, DELAY);
    const settled: Promise<unknown>[] = [];
    const enqueue = (events: number) => settled.push(committer.enqueue(request(events), 'durable'));
    enqueue(1);
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [1], 'an append to an idle log is not delayed');
    for (let i = 0; i < 5; i++) enqueue(1); // five arrive while it commits: appends are arriving on their own
    commits[0]!.finish();
    await tick();
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [1], 'the next batch is held back');
    for (let i = 0; i < 3; i++) enqueue(1);
    await sleep(DELAY * 2);
    assert.deepEqual(commits.map((c) => c.events), [1, 8], 'and goes after the delay with what arrived meanwhile');
    commits[1]!.finish();
    await Promise.all(settled);
    await committer.whenIdle();
  });

  it('never delays a writer waiting on its own appends, nor fewer than five arrivals', async () => {
    const { storage, commits } = heldStore();
    const committer = new GroupCommitter(storage, 100, 2, () => {}, DELAY);
    for (let round = 0; round < 3; round++) {
      const batch = Array.from({ length: 4 }, () => committer.enqueue(request(1), 'durable'));
      await tick();
      assert.equal(commits.length, round + 1, `round ${round}: cut in the same turn`);
      commits[round]!.finish();
      await Promise.all(batch);
    }
    const arriving = Array.from({ length: 4 }, () => committer.enqueue(request(1), 'durable'));
    await tick();
    const during = Array.from({ length: 4 }, () => committer.enqueue(request(1), 'durable')); // four arrive while it commits
    commits[3]!.finish();
    await tick();
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [4, 4, 4, 4, 4], 'four arrivals are no sign of a steady stream');
    commits[4]!.finish();
    await Promise.all([...arriving, ...during]);
    await committer.whenIdle();
  });

  it('sends a held-back batch at once when it becomes full', async () => {
    const { storage, commits } = heldStore();
    const committer = new GroupCommitter(storage, 10, 2, () => {}, 10_000);
    const settled: Promise<unknown>[] = [];
    const enqueue = (events: number) => settled.push(committer.enqueue(request(events), 'durable'));
    enqueue(1);
    await tick();
    for (let i = 0; i < 6; i++) enqueue(1);
    commits[0]!.finish();
    await tick();
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [1], 'held back');
    for (let i = 0; i < 4; i++) enqueue(1);
    await tick();
    assert.deepEqual(commits.map((c) => c.events), [1, 10], 'full: sent without waiting out the 10 s delay');
    commits[1]!.finish();
    await Promise.all(settled);
    await committer.whenIdle();
  });
});
