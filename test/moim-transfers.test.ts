/**
 * moim transfers against the ledger service (in-process, on a real port):
 * confirmation after the ledger's finality delay, a forced failure, a
 * transfer that never becomes final, ledger errors retried, balances that
 * change only on confirmation, and bad requests refused without writes.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { moimClient } from './support/moim.js';
import type { FastifyInstance } from 'fastify';
import { buildLedger } from '../apps/moim/src/ledger/service.js';
import { startApi, startWorker, type WorkerRole } from '../apps/moim/src/moim.js';
import { verifyHistory } from '../apps/moim/src/verify.js';
import Database from 'better-sqlite3';
import { sleep } from './support/wait.js';


describe('moim transfers', { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'moim-transfers-'));
  let ledger: FastifyInstance;
  let ledgerUrl: string;
  let api: Awaited<ReturnType<typeof startApi>>;
  let worker: WorkerRole;

  before(async () => {
    // Final after 150 ms; one request in five answered with HTTP 503 (retried by the worker).
    ledger = await buildLedger({ finalityMs: 150, failureRate: 0, errorRate: 0.2 });
    ledgerUrl = await ledger.listen({ port: 0, host: '127.0.0.1' });
    const config = { dataDir: dir, sessionTtlMs: 3_600_000, ledgerUrl, confirmationDelayMs: 100 };
    api = await startApi(config, { logger: false });
    worker = await startWorker(config);
  });
  after(async () => {
    await worker?.close();
    await api?.close();
    await ledger?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const { call, member, settled } = moimClient(() => api.app, { emailPrefix: 't', settleTimeoutMs: 20_000 });

  it('confirms after finality, fails when the ledger fails or never finalises, and moves money only on confirmation', async () => {
    const a = await member();
    const b = await member();
    assert.deepEqual((await call('POST', '/me/deposits', a.token, { amount: 1000 })).body, { balance: 1000, available: 1000 });

    const ok = await call('POST', '/transfers', a.token, { to: b.id, amount: 300 });
    assert.equal(ok.status, 202);
    assert.deepEqual((await call('GET', '/me/account', a.token)).body, { balance: 1000, available: 700 }, 'reserved, not yet moved');
    assert.equal((await settled(a.token, ok.body.transferId)).status, 'confirmed');
    assert.deepEqual((await call('GET', '/me/account', a.token)).body, { balance: 700, available: 700 });
    assert.deepEqual((await call('GET', '/me/account', b.token)).body, { balance: 300, available: 300 });
    assert.equal((await call('GET', `/transfers/${ok.body.transferId}`, b.token)).status, 200, 'the payee sees it');

    assert.equal((await fetch(`${ledgerUrl}/simulate/fail-next`, { method: 'POST' })).status, 200);
    const failed = await call('POST', '/transfers', a.token, { to: b.id, amount: 100 });
    const f = await settled(a.token, failed.body.transferId);
    assert.equal(f.status, 'failed');
    assert.equal(f.reason, 'rejected by the ledger');

    assert.equal((await fetch(`${ledgerUrl}/simulate/hold-next`, { method: 'POST' })).status, 200);
    const held = await call('POST', '/transfers', a.token, { to: b.id, amount: 100 });
    const h = await settled(a.token, held.body.transferId);
    assert.equal(h.status, 'failed');
    assert.equal(h.checks, 2, 'two pending checks recorded, the third decided');
    assert.match(h.reason, /not final after 3 checks/);

    assert.deepEqual((await call('GET', '/me/account', a.token)).body, { balance: 700, available: 700 }, 'failed transfers released their reservations');
    assert.deepEqual((await call('GET', '/me/account', b.token)).body, { balance: 300, available: 300 });
    assert.equal(worker.transfers.stats().deadLetters, 0);
  });

  it('refuses bad transfers and writes nothing', async () => {
    const a = await member();
    const b = await member();
    const outsider = await member();
    await call('POST', '/me/deposits', a.token, { amount: 50 });
    const head = await api.log.headPosition();
    const expect = async (status: number, code: string, res: Promise<{ status: number; body: Record<string, any> }>) => {
      const r = await res;
      assert.equal(r.status, status, JSON.stringify(r.body));
      assert.equal(r.body.code, code);
    };
    await expect(422, 'INSUFFICIENT_FUNDS', call('POST', '/transfers', a.token, { to: b.id, amount: 51 }));
    await expect(422, 'SAME_ACCOUNT', call('POST', '/transfers', a.token, { to: a.id, amount: 1 }));
    await expect(422, 'UNKNOWN_PAYEE', call('POST', '/transfers', a.token, { to: crypto.randomUUID(), amount: 1 }));
    await expect(400, 'VALIDATION_FAILED', call('POST', '/transfers', a.token, { to: b.id, amount: 0 }));
    await expect(400, 'VALIDATION_FAILED', call('POST', '/transfers', a.token, { to: b.id, amount: '5' }));
    await expect(400, 'VALIDATION_FAILED', call('POST', '/transfers', a.token, { to: 'nobody', amount: 5 }));
    await expect(400, 'VALIDATION_FAILED', call('POST', '/me/deposits', a.token, { amount: -5 }));
    await expect(401, 'UNAUTHORIZED', call('POST', '/transfers', undefined, { to: b.id, amount: 5 }));
    assert.equal(await api.log.headPosition(), head);
    const t = await call('POST', '/transfers', a.token, { to: b.id, amount: 50 });
    await expect(403, 'FORBIDDEN', call('GET', `/transfers/${t.body.transferId}`, outsider.token));
    await expect(404, 'NOT_FOUND', call('GET', `/transfers/${crypto.randomUUID()}`, a.token));
    await settled(a.token, t.body.transferId);
  });

  it('settles monthly dues once per period, recording who failed and why', async () => {
    const owner = await member();
    const [b, c, d] = [await member(), await member(), await member()];
    const created = await call('POST', '/communities', owner.token, { name: `Dues ${Date.now()}` });
    const id = created.body.communityId as string;
    for (const m of [b, c, d]) assert.equal((await call('POST', `/communities/${id}/members`, m.token)).status, 200);
    for (const m of [b, c]) await call('POST', '/me/deposits', m.token, { amount: 100 });
    assert.equal((await call('POST', `/communities/${id}/settlements`, owner.token, { period: '2026-11' })).body.code, 'NO_DUES');
    assert.equal((await call('PUT', `/communities/${id}/dues`, b.token, { amount: 30 })).body.code, 'NOT_COMMUNITY_OWNER');
    assert.deepEqual((await call('PUT', `/communities/${id}/dues`, owner.token, { amount: 30 })).body, { amount: 30 });
    assert.equal((await call('POST', `/communities/${id}/settlements`, owner.token, { period: '2026-13' })).status, 400);
    assert.equal((await call('POST', `/communities/${id}/settlements`, b.token, { period: '2026-11' })).body.code, 'NOT_COMMUNITY_OWNER');

    const settle = async (period: string) => {
      const started = await call('POST', `/communities/${id}/settlements`, owner.token, { period });
      assert.equal(started.status, 202, JSON.stringify(started.body));
      assert.equal(started.body.queued, 3);
      const deadline = Date.now() + 15_000;
      for (;;) {
        const s = await call('GET', `/communities/${id}/settlements/${period}`, owner.token);
        if (s.body.done) return s.body;
        assert.ok(Date.now() < deadline, `settlement ${period} not done: ${JSON.stringify(s.body)}`);
        await sleep(25);
      }
    };
    const first = await settle('2026-11');
    assert.equal(first.succeeded, 2);
    assert.deepEqual(first.failed.map((f: { memberId: string }) => f.memberId), [d.id]);
    assert.match(first.failed[0].reason, /insufficient funds/);
    // The same period again: nobody is charged twice.
    const again = await settle('2026-11');
    assert.deepEqual(again, first);
    for (const m of [b, c]) assert.deepEqual((await call('GET', '/me/account', m.token)).body, { balance: 70, available: 70 });
    await settle('2026-12');
    for (const m of [b, c]) assert.deepEqual((await call('GET', '/me/account', m.token)).body, { balance: 40, available: 40 });
    assert.equal((await call('GET', `/communities/${id}/settlements/2026-12`, b.token)).status, 403);
    assert.equal(worker.settlements.stats().deadLetters, 0);
  });

  it('verifies the history: the read models match the log, and a tampered row is reported', async () => {
    await worker.readModels.group.waitForCheckpoint(await api.log.headPosition());
    const clean = await verifyHistory(api.log, api.readModels);
    assert.deepEqual(clean.discrepancies, []);
    assert.ok(clean.checked.balances >= 4 && clean.checked.memberships >= 4, JSON.stringify(clean.checked));
    // Tamper with the read model behind the projection's back.
    const db = new Database(join(dir, 'moim.sqlite'));
    const row = db.prepare('SELECT member_id FROM moim_balances_v2 LIMIT 1').get() as { member_id: string };
    db.prepare('UPDATE moim_balances_v2 SET balance = balance + 1 WHERE member_id = ?').run(row.member_id);
    db.close();
    const tampered = await verifyHistory(api.log, api.readModels);
    assert.equal(tampered.discrepancies.length, 1);
    assert.equal(tampered.discrepancies[0]!.kind, 'balance');
    assert.equal(tampered.discrepancies[0]!.key, row.member_id);
  });
});
