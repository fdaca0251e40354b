/**
 * Aggregate (decider) conformance, run against every adapter.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { Decider, SinhoError } from '../../src/index.js';
import { AggregateStateCache, domainError, handleCommand, loadAggregate, truncateToSnapshot } from '../../src/index.js';
import { collect, stream } from './event-log.js';
import { suiteLogs, type LogFactory } from '../support/logs.js';

type AccountCommand = { kind: 'open'; owner: string } | { kind: 'deposit'; amount: number } | { kind: 'withdraw'; amount: number };
type AccountEvent =
  | { type: 'Opened'; data: { owner: string } }
  | { type: 'Deposited'; data: { amount: number } }
  | { type: 'Withdrawn'; data: { amount: number } };
interface AccountState {
  open: boolean;
  owner: string | null;
  balance: number;
  history: number[];
}

export const account: Decider<AccountCommand, AccountState, AccountEvent> = {
  name: 'account',
  version: 1,
  initialState: { open: false, owner: null, balance: 0, history: [] },
  evolve(state, event) {
    switch (event.type) {
      case 'Opened':
        return { ...state, open: true, owner: event.data.owner };
      case 'Deposited':
        return { ...state, balance: state.balance + event.data.amount, history: [...state.history, event.data.amount] };
      case 'Withdrawn':
        return { ...state, balance: state.balance - event.data.amount, history: [...state.history, -event.data.amount] };
    }
  },
  decide(command, state) {
    switch (command.kind) {
      case 'open':
        if (state.open) throw domainError('ALREADY_OPEN', 'The account is already open.');
        return { type: 'Opened', data: { owner: command.owner } };
      case 'deposit':
        if (!state.open) throw domainError('NOT_OPEN', 'Open the account first.');
        return { type: 'Deposited', data: { amount: command.amount } };
      case 'withdraw':
        if (!state.open) throw domainError('NOT_OPEN', 'Open the account first.');
        if (command.amount > state.balance) throw domainError('INSUFFICIENT_FUNDS', 'Not enough money.', { balance: state.balance });
        return command.amount === 0 ? [] : [{ type: 'Withdrawn', data: { amount: command.amount } }];
    }
  },
};

export function aggregateConformance(name: string, factory: LogFactory): void {
  describe(`Aggregate conformance: ${name}`, () => {
    const open = suiteLogs(factory);

    it('decides, appends with the expected revision, and returns the new state', async () => {
      const log = await open();
      const s = stream('account');
      const opened1 = await handleCommand(log, account, s, { kind: 'open', owner: 'jiwoo' });
      assert.equal(opened1.revision, 0);
      assert.equal(opened1.state.owner, 'jiwoo');
      const dep = await handleCommand(log, account, s, { kind: 'deposit', amount: 30 }, { metadata: { actor: 'jiwoo', correlationId: 'c1' } });
      assert.equal(dep.state.balance, 30);
      assert.equal(dep.events[0]!.metadata.actor, 'jiwoo');
      const none = await handleCommand(log, account, s, { kind: 'withdraw', amount: 0 });
      assert.deepEqual(none.events, []);
      assert.equal(none.revision, 1);
    });

    it('throws domain errors as DomainError and appends nothing', async () => {
      const log = await open();
      const s = stream('account');
      await handleCommand(log, account, s, { kind: 'open', owner: 'a' });
      const head = await log.headPosition();
      try {
        await handleCommand(log, account, s, { kind: 'withdraw', amount: 5 });
        assert.fail('expected a domain error');
      } catch (error) {
        assert.equal((error as SinhoError).code, 'DOMAIN_RULE_VIOLATED');
        assert.equal((error as SinhoError).details.rule, 'INSUFFICIENT_FUNDS');
      }
      assert.equal(await log.headPosition(), head);
    });

    it('retries on concurrent writers and gives up after maxAttempts with a typed error', async () => {
      const log = await open();
      const s = stream('account');
      await handleCommand(log, account, s, { kind: 'open', owner: 'a' });
      const results = await Promise.all(Array.from({ length: 15 }, () => handleCommand(log, account, s, { kind: 'deposit', amount: 1 }, { maxAttempts: 30 })));
      assert.equal(new Set(results.map((r) => r.revision)).size, 15);
      assert.equal((await loadAggregate(log, account, s)).state.balance, 15);
      // A decider that is always overtaken by another writer.
      const overtaken: typeof account = {
        ...account,
        decide: async (command, state) => {
          await log.append(s, [{ type: 'Deposited', data: { amount: 0 } }]);
          return account.decide(command, state);
        },
      };
      try {
        await handleCommand(log, overtaken, s, { kind: 'deposit', amount: 1 }, { maxAttempts: 3 });
        assert.fail('expected CONCURRENCY_RETRIES_EXHAUSTED');
      } catch (error) {
        assert.equal((error as SinhoError).code, 'CONCURRENCY_RETRIES_EXHAUSTED');
      }
    });

    it('gives the same decisions with state caches as without, when several writers (each with its own cache) share a stream', async () => {
      const log = await open();
      const s = stream('account');
      const caches = [new AggregateStateCache(), new AggregateStateCache(), new AggregateStateCache(2)];
      await handleCommand(log, account, s, { kind: 'open', owner: 'a' }, { cache: caches[0] });
      // Concurrent deposits and withdrawals through three "processes": each cache goes stale as the others write.
      let refused = 0;
      await Promise.all(
        Array.from({ length: 60 }, async (_, i) => {
          const cache = caches[i % 3]!;
          const command = i % 4 === 3 ? ({ kind: 'withdraw', amount: 5 } as const) : ({ kind: 'deposit', amount: 2 } as const);
          try {
            await handleCommand(log, account, s, command, { cache, maxAttempts: 100 });
          } catch (error) {
            if ((error as SinhoError).code !== 'DOMAIN_RULE_VIOLATED') throw error;
            refused += 1;
          }
        }),
      );
      const truth = await loadAggregate(log, account, s, { useSnapshot: false });
      for (const cache of caches) assert.deepEqual((await loadAggregate(log, account, s, { cache })).state, truth.state, 'a cached state catches up with every other writer');
      assert.equal(truth.state.balance, 45 * 2 - (15 - refused) * 5);
      assert.ok(truth.state.balance >= 0, 'no withdrawal was decided on a stale balance');
      assert.ok(caches[2]!.size <= 2);
    });

    it('decides on a cached state without reading, and checks a refusal or a no-op on the caught-up state', async () => {
      const log = await open();
      const s = stream('account');
      const stale = new AggregateStateCache();
      const other = new AggregateStateCache();
      await handleCommand(log, account, s, { kind: 'open', owner: 'a' }, { cache: stale });
      // Another process deposits: the first cache still says balance 0.
      await handleCommand(log, account, s, { kind: 'deposit', amount: 10 }, { cache: other });
      // Refused on the stale state (insufficient funds), accepted on the caught-up one; one attempt is enough.
      const withdrawn = await handleCommand(log, account, s, { kind: 'withdraw', amount: 7 }, { cache: stale, maxAttempts: 1 });
      assert.equal(withdrawn.state.balance, 3);
      assert.equal(withdrawn.revision, 2);
      // Accepted on the stale state but the stream moved on: the append's expected revision catches it, and a
      // conflict with a stale cache does not use up the attempts.
      await handleCommand(log, account, s, { kind: 'deposit', amount: 1 }, { cache: other, maxAttempts: 1 });
      const deposited = await handleCommand(log, account, s, { kind: 'deposit', amount: 2 }, { cache: stale, maxAttempts: 1 });
      assert.equal(deposited.revision, 4);
      assert.equal(deposited.state.balance, 6);
      // With the cache up to date, a command reads nothing from the stream.
      let reads = 0;
      const counting = new Proxy(log, {
        get: (target, key, receiver) =>
          key === 'readStream'
            ? (...args: Parameters<typeof log.readStream>) => {
                reads += 1;
                return target.readStream(...args);
              }
            : Reflect.get(target, key, receiver),
      });
      const again = await handleCommand(counting, account, s, { kind: 'deposit', amount: 1 }, { cache: stale });
      assert.equal(again.state.balance, 7);
      assert.equal(reads, 0, 'a hot aggregate is decided from its cached state');
      // A genuine refusal is still a refusal.
      await assert.rejects(handleCommand(log, account, s, { kind: 'withdraw', amount: 100 }, { cache: stale }), (e: SinhoError) => e.code === 'DOMAIN_RULE_VIOLATED');
      assert.equal((await loadAggregate(log, account, s, { useSnapshot: false })).revision, 5, 'the refusal appended nothing');
    });

    it('handles a command id once, even when delivered concurrently', async () => {
      const log = await open();
      const s = stream('account');
      await handleCommand(log, account, s, { kind: 'open', owner: 'a' });
      const first = await handleCommand(log, account, s, { kind: 'deposit', amount: 10 }, { commandId: 'cmd-1' });
      await handleCommand(log, account, s, { kind: 'deposit', amount: 5 });
      const again = await handleCommand(log, account, s, { kind: 'deposit', amount: 10 }, { commandId: 'cmd-1' });
      assert.equal(again.alreadyHandled, true);
      assert.deepEqual(again.events.map((e) => e.id), first.events.map((e) => e.id));
      assert.equal(again.revision, first.revision);
      assert.equal(again.state.balance, 10, 'the state as of the first handling');
      const concurrent = await Promise.all(Array.from({ length: 5 }, () => handleCommand(log, account, s, { kind: 'deposit', amount: 7 }, { commandId: 'cmd-2', maxAttempts: 10 })));
      assert.equal(new Set(concurrent.map((r) => r.events[0]!.id)).size, 1);
      assert.equal((await loadAggregate(log, account, s)).state.balance, 22);
    });

    it('loads from a snapshot exactly the state a full replay gives, also after truncation (property)', async () => {
      const log = await open();
      const command = fc.oneof(
        fc.record({ kind: fc.constant('deposit' as const), amount: fc.integer({ min: 0, max: 100 }) }),
        fc.record({ kind: fc.constant('withdraw' as const), amount: fc.integer({ min: 0, max: 100 }) }),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(command, { maxLength: 25 }), fc.integer({ min: 1, max: 6 }), fc.boolean(), async (commands, every, truncate) => {
          const s = stream('account');
          await handleCommand(log, account, s, { kind: 'open', owner: 'p' }, { snapshotEvery: every });
          for (const c of commands) {
            await handleCommand(log, account, s, c, { snapshotEvery: every }).catch((e: SinhoError) => {
              if (e.code !== 'DOMAIN_RULE_VIOLATED') throw e;
            });
          }
          const replay = await loadAggregate(log, account, s, { useSnapshot: false });
          const fromSnapshot = await loadAggregate(log, account, s);
          assert.deepEqual(fromSnapshot.state, replay.state);
          assert.equal(fromSnapshot.revision, replay.revision);
          if (replay.revision + 1 >= every) assert.notEqual(fromSnapshot.fromSnapshot, undefined, 'a snapshot was written');
          if (truncate) {
            const keptFrom = await truncateToSnapshot(log, account, s);
            const afterTruncate = await loadAggregate(log, account, s);
            assert.deepEqual(afterTruncate.state, replay.state);
            assert.equal(afterTruncate.revision, replay.revision);
            if (keptFrom !== undefined) assert.equal((await collect(log.readStream(s)))[0]?.revision ?? keptFrom, keptFrom);
            const next = await handleCommand(log, account, s, { kind: 'deposit', amount: 1 });
            assert.equal(next.revision, replay.revision + 1);
          }
        }),
        { numRuns: 25 },
      );
    });

    it('reports a snapshot it could not write and still returns the command, whose events are stored', async () => {
      const log = await open();
      const s = stream('account');
      await handleCommand(log, account, s, { kind: 'open', owner: 'p' });
      const failing = Object.create(log) as typeof log;
      failing.writeSnapshot = async () => {
        throw new Error('disk full');
      };
      const reported: { message: string; stream: string; revision: number }[] = [];
      const onSnapshotError = (error: unknown, at: { stream: string; revision: number }) => reported.push({ message: (error as Error).message, ...at });
      const result = await handleCommand(failing, account, s, { kind: 'deposit', amount: 5 }, { snapshotEvery: 1, onSnapshotError });
      assert.equal(result.state.balance, 5);
      assert.equal(result.revision, 1);
      assert.deepEqual(reported, [{ message: 'disk full', stream: s, revision: 1 }]);
      assert.deepEqual((await collect(log.readStream(s))).map((e) => e.type), ['Opened', 'Deposited']);
      assert.equal(await log.readSnapshot(s, 'account@1'), undefined);
      await assert.rejects(handleCommand(log, account, s, { kind: 'deposit', amount: 1 }, { onSnapshotError: 'log' as never }), { code: 'INVALID_ARGUMENT' });
    });

    it('spreads the snapshots of streams that grow together, one every snapshotEvery events each', async () => {
      const log = await open();
      const every = 8;
      const streams = Array.from({ length: 12 }, () => stream('account'));
      for (const s of streams) await handleCommand(log, account, s, { kind: 'open', owner: 'p' }, { snapshotEvery: every });
      const firstSnapshotAt = new Map<string, number>();
      for (let round = 1; round < 3 * every; round++) {
        for (const s of streams) {
          await handleCommand(log, account, s, { kind: 'deposit', amount: 1 }, { snapshotEvery: every });
          const loaded = await loadAggregate(log, account, s);
          if (loaded.fromSnapshot !== undefined && !firstSnapshotAt.has(s)) firstSnapshotAt.set(s, loaded.fromSnapshot);
          // The snapshot is never more than `every` events behind the stream's last revision.
          if (round >= every) assert.ok(loaded.revision - (loaded.fromSnapshot ?? -1) <= every, `${s}: revision ${loaded.revision}, snapshot ${loaded.fromSnapshot}`);
        }
      }
      assert.equal(firstSnapshotAt.size, streams.length, 'every stream snapshotted within its first cycle');
      for (const at of firstSnapshotAt.values()) assert.ok(at < every, `first snapshot at revision ${at}`);
      assert.ok(new Set(firstSnapshotAt.values()).size > 1, 'streams written in lockstep snapshot at different revisions');
    });

    it('never loads a snapshot of another state version', async () => {
      const log = await open();
      const s = stream('account');
      await handleCommand(log, account, s, { kind: 'open', owner: 'v' }, { snapshotEvery: 1 });
      await handleCommand(log, account, s, { kind: 'deposit', amount: 4 }, { snapshotEvery: 1 });
      const v2 = { ...account, version: 2 };
      const loaded = await loadAggregate(log, v2, s);
      assert.equal(loaded.fromSnapshot, undefined);
      assert.equal(loaded.state.balance, 4);
    });
  });
}
