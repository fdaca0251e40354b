import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RecentEvents } from '../src/log/recent-events.js';
import type { StoredEvent } from '../src/log/storage.js';

const row = (position: number, stream = 'order-1', type = 'Placed'): StoredEvent => ({ id: `id-${position}`, stream, type, schemaVersion: 1, data: `{"p":${position}}`, metadata: '{}', revision: position, position });
const rows = (from: number, to: number, stream?: string) => Array.from({ length: to - from + 1 }, (_, i) => row(from + i, stream));
const positions = (page: StoredEvent[] | undefined) => page?.map((r) => r.position);

describe('RecentEvents: the rows a page may be answered from', () => {
  it('answers only pages that the contiguous run covers completely', () => {
    const recent = new RecentEvents(100);
    recent.add(rows(11, 20));
    assert.deepEqual(positions(recent.page({ fromPosition: 13, toPosition: 15, limit: 100 })), [13, 14, 15]);
    assert.deepEqual(positions(recent.page({ fromPosition: 13, toPosition: 30, limit: 3 })), [13, 14, 15], 'a full page needs nothing past it');
    assert.deepEqual(positions(recent.page({ fromPosition: 18, toPosition: 20, limit: 100 })), [18, 19, 20]);
    assert.equal(recent.page({ fromPosition: 10, toPosition: 15, limit: 100 }), undefined, 'starts before the run');
    assert.equal(recent.page({ fromPosition: 18, toPosition: 21, limit: 100 }), undefined, 'position 21 may exist, committed elsewhere');
    assert.equal(recent.page({ fromPosition: 18, limit: 100 }), undefined, 'no upper bound: whatever is committed');
    assert.equal(recent.page({ fromPosition: 21, toPosition: 25, limit: 100 }), undefined);
    assert.equal(new RecentEvents(100).page({ fromPosition: 1, limit: 10 }), undefined);
  });

  it('filters by category and type as the stores do', () => {
    const recent = new RecentEvents(100);
    recent.add([row(1, 'order-1', 'Placed'), row(2, 'user-1', 'Joined'), row(3, 'order-2', 'Shipped'), row(4, 'user-2', 'Left')]);
    assert.deepEqual(positions(recent.page({ fromPosition: 1, toPosition: 4, limit: 10, filter: { categories: ['order'] } })), [1, 3]);
    assert.deepEqual(positions(recent.page({ fromPosition: 1, toPosition: 4, limit: 10, filter: { types: ['Joined', 'Shipped'] } })), [2, 3]);
    assert.deepEqual(positions(recent.page({ fromPosition: 1, toPosition: 4, limit: 10, filter: { categories: ['user'], types: ['Left'] } })), [4]);
    assert.deepEqual(positions(recent.page({ fromPosition: 1, toPosition: 4, limit: 10, filter: { categories: ['none'] } })), []);
    assert.equal(recent.page({ fromPosition: 1, toPosition: 5, limit: 10, filter: { categories: ['order'] } }), undefined);
  });

  it('starts a new run when a commit does not continue the last one, and holds at most its capacity', () => {
    const recent = new RecentEvents(10);
    recent.add(rows(1, 5));
    recent.add(rows(8, 9)); // 6 and 7 were committed by somebody else
    assert.equal(recent.page({ fromPosition: 5, toPosition: 9, limit: 100 }), undefined);
    assert.deepEqual(positions(recent.page({ fromPosition: 8, toPosition: 9, limit: 100 })), [8, 9]);
    recent.add([row(11), row(10)]); // out of order within a commit is fine
    assert.deepEqual(positions(recent.page({ fromPosition: 8, toPosition: 11, limit: 100 })), [8, 9, 10, 11]);
    recent.add([row(12), row(14)]); // a hole inside a commit: hold nothing
    assert.equal(recent.page({ fromPosition: 8, toPosition: 11, limit: 100 }), undefined);
    recent.add(rows(20, 45));
    assert.equal(recent.page({ fromPosition: 35, toPosition: 45, limit: 100 }), undefined, 'position 35 was dropped');
    assert.deepEqual(positions(recent.page({ fromPosition: 36, toPosition: 45, limit: 100 })), rows(36, 45).map((r) => r.position));
    recent.clear();
    assert.equal(recent.page({ fromPosition: 40, toPosition: 45, limit: 100 }), undefined);
    const off = new RecentEvents(0);
    off.add(rows(1, 3));
    assert.equal(off.page({ fromPosition: 1, toPosition: 3, limit: 10 }), undefined);
  });
});
