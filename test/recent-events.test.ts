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
    recent.addCommitted(rows(11, 20));
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
    recent.addCommitted([row(1, 'order-1', 'Placed'), row(2, 'user-1', 'Joined'), row(3, 'order-2', 'Shipped'), row(4, 'user-2', 'Left')]);
    assert.deepEqual(positions(recent.page({ fromPosition: 1, toPosition: 4, limit: 10, filter: { categories: ['order'] } })), [1, 3]);
    assert.deepEqual(positions(recent.page({ fromPosition: 1, toPosition: 4, limit: 10, filter: { types: ['Joined', 'Shipped'] } })), [2, 3]);
    assert.deepEqual(positions(recent.page({ fromPosition: 1, toPosition: 4, limit: 10, filter: { categories: ['user'], types: ['Left'] } })), [4]);
    assert.deepEqual(positions(recent.page({ fromPosition: 1, toPosition: 4, limit: 10, filter: { categories: ['none'] } })), []);
    assert.equal(recent.page({ fromPosition: 1, toPosition: 5, limit: 10, filter: { categories: ['order'] } }), undefined);
  });

  it('starts a new run when a commit does not continue the last one, and holds at most its capacity', () => {
    const recent = new RecentEvents(10);
    recent.addCommitted(rows(1, 5));
    recent.addCommitted(rows(8, 9)); // 6 and 7 were committed by somebody else
    assert.equal(recent.page({ fromPosition: 5, toPosition: 9, limit: 100 }), undefined);
    assert.deepEqual(positions(recent.page({ fromPosition: 8, toPosition: 9, limit: 100 })), [8, 9]);
    recent.addCommitted([row(11), row(10)]); // out of order within a commit is fine
    assert.deepEqual(positions(recent.page({ fromPosition: 8, toPosition: 11, limit: 100 })), [8, 9, 10, 11]);
    recent.addCommitted([row(12), row(14)]); // a hole inside a commit: hold nothing
    assert.equal(recent.page({ fromPosition: 8, toPosition: 11, limit: 100 }), undefined);
    recent.addCommitted(rows(20, 45));
    assert.equal(recent.page({ fromPosition: 35, toPosition: 45, limit: 100 }), undefined, 'position 35 was dropped');
    assert.deepEqual(positions(recent.page({ fromPosition: 36, toPosition: 45, limit: 100 })), rows(36, 45).map((r) => r.position));
    recent.clear();
    assert.equal(recent.page({ fromPosition: 40, toPosition: 45, limit: 100 }), undefined);
    const off = new RecentEvents(0);
    off.addCommitted(rows(1, 3));
    assert.equal(off.page({ fromPosition: 1, toPosition: 3, limit: 10 }), undefined);
  });

  it('takes pages followers read up to a seen head, keeps the newest range, and forgets reads older than a truncation', () => {
    const recent = new RecentEvents(100);
    // A window (10, 30] read from the store, with holes where events were truncated.
    recent.addRead({ fromPosition: 11, toPosition: 30, limit: 100 }, [row(11), row(12), row(20), row(30)], recent.generation);
    assert.deepEqual(positions(recent.page({ fromPosition: 11, toPosition: 30, limit: 100 })), [11, 12, 20, 30]);
    assert.deepEqual(positions(recent.page({ fromPosition: 13, toPosition: 25, limit: 100 })), [20], 'holes are events that do not exist');
    assert.deepEqual(positions(recent.page({ fromPosition: 21, toPosition: 29, limit: 100 })), []);
    // A full page covers only up to its last row.
    recent.addRead({ fromPosition: 31, toPosition: 90, limit: 2 }, [row(31), row(35)], recent.generation);
    assert.deepEqual(positions(recent.page({ fromPosition: 30, toPosition: 35, limit: 100 })), [30, 31, 35]);
    assert.equal(recent.page({ fromPosition: 30, toPosition: 36, limit: 100 }), undefined);
    // This process commits right after: the range grows.
    recent.addCommitted(rows(36, 38));
    assert.deepEqual(positions(recent.page({ fromPosition: 35, toPosition: 38, limit: 100 })), [35, 36, 37, 38]);
    // A follower far behind does not evict the head.
    recent.addRead({ fromPosition: 1, toPosition: 5, limit: 100 }, rows(1, 5), recent.generation);
    assert.equal(recent.page({ fromPosition: 1, toPosition: 5, limit: 100 }), undefined);
    assert.deepEqual(positions(recent.page({ fromPosition: 37, toPosition: 38, limit: 100 })), [37, 38]);
    // A newer window that does not continue the range replaces it.
    recent.addRead({ fromPosition: 50, toPosition: 60, limit: 100 }, [row(55)], recent.generation);
    assert.equal(recent.page({ fromPosition: 37, toPosition: 38, limit: 100 }), undefined);
    assert.deepEqual(positions(recent.page({ fromPosition: 50, toPosition: 60, limit: 100 })), [55]);
    // Unbounded or filtered reads, and reads from before a clear (a truncation), are not taken.
    const before = recent.generation;
    recent.clear();
    recent.addRead({ fromPosition: 61, toPosition: 70, limit: 100 }, [row(61)], before);
    recent.addRead({ fromPosition: 61, limit: 100 }, [row(61)], recent.generation);
    recent.addRead({ fromPosition: 61, toPosition: 70, limit: 100, filter: { types: ['Placed'] } }, [row(61)], recent.generation);
    assert.equal(recent.page({ fromPosition: 61, toPosition: 61, limit: 100 }), undefined);
  });
});
