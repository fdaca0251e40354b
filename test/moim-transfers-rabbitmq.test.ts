/**
 * moim's transfer confirmation in the RabbitMQ style: the relay hands each
 * submitted transfer to RabbitMQ's retry topology, an external checker (plain
 * amqplib) asks the ledger, and the inbound consumer records the outcome.
 * The same outcomes as the native style (test/moim-transfers.test.ts):
 * confirmed after finality, a forced failure, never final after 3 checks,
 * ledger errors retried, money moved only on confirmation.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { moimClient } from './support/moim.js';
import type { FastifyInstance } from 'fastify';
import { buildLedger } from '../apps/moim/src/ledger/service.js';
import { LedgerClient } from '../apps/moim/src/ledger/client.js';
import { startLedgerChecker } from '../apps/moim/src/ledger/checker.js';
import { startApi, startWorker, transferTopologyOf, type WorkerRole } from '../apps/moim/src/moim.js';
import { RABBITMQ_URL, rabbitmqSkipReason, randomName, exclusive } from './support/services.js';

const skip = await rabbitmqSkipReason();

describe('moim transfers through RabbitMQ', { skip, timeout: 240_000 }, () => {
  // Another file restarts the shared server: never at the same time as these tests.
  let release: (() => void) | undefined;
  before(async () => {
    release = await exclusive('rabbitmq');
  });

  const dir = mkdtempSync(join(tmpdir(), 'moim-transfers-rmq-'));
  const prefix = randomName('moim');
  let ledger: FastifyInstance;
  let api: Awaited<ReturnType<typeof startApi>>;
  let worker: WorkerRole;
  let checker: { close(): Promise<void> };
  const config = { dataDir: dir, sessionTtlMs: 3_600_000, ledgerUrl: '', confirmationDelayMs: 200, rabbitmqUrl: RABBITMQ_URL, rabbitmqPrefix: prefix };

  before(async () => {
    // Final after 150 ms; one status request in five answered with HTTP 503 (the checker retries it).
    ledger = await buildLedger({ finalityMs: 150, failureRate: 0, errorRate: 0.2 });
    config.ledgerUrl = await ledger.listen({ port: 0, host: '127.0.0.1' });
    api = await startApi(config, { logger: false });
    worker = await startWorker(config);
    checker = await startLedgerChecker(RABBITMQ_URL, transferTopologyOf(config), new LedgerClient(config.ledgerUrl));
  });
  after(async () => {
    await checker?.close();
    await worker?.close();
    await api?.close();
    await ledger?.close();
    const amqp = await import('amqplib');
    const connection = await amqp.connect(RABBITMQ_URL);
    const channel = await connection.createChannel();
    const t = transferTopologyOf(config);
    for (const q of [t.checks, `${t.checks}.retry.${t.delayMs}`, `${t.checks}.dead`, t.results, `${t.results}.dead`]) await channel.deleteQueue(q).catch(() => {});
    await channel.deleteExchange(t.exchange).catch(() => {});
    await connection.close();
    rmSync(dir, { recursive: true, force: true });
    release?.();
  });

  const { call, member, settled } = moimClient(() => api.app, { emailPrefix: 'r', settleTimeoutMs: 30_000 });

  it('confirms after finality, fails when the ledger fails or never finalises, and moves money only on confirmation', async () => {
    const a = await member();
    const b = await member();
    await call('POST', '/me/deposits', a.token, { amount: 1000 });
    const ok = await call('POST', '/transfers', a.token, { to: b.id, amount: 300 });
    assert.equal(ok.status, 202);
    assert.equal((await settled(a.token, ok.body.transferId)).status, 'confirmed');
    assert.deepEqual((await call('GET', '/me/account', a.token)).body, { balance: 700, available: 700 });
    assert.deepEqual((await call('GET', '/me/account', b.token)).body, { balance: 300, available: 300 });

    await fetch(`${config.ledgerUrl}/simulate/fail-next`, { method: 'POST' });
    const failed = await call('POST', '/transfers', a.token, { to: b.id, amount: 100 });
    const f = await settled(a.token, failed.body.transferId);
    assert.equal(f.status, 'failed');
    assert.equal(f.reason, 'rejected by the ledger');

    await fetch(`${config.ledgerUrl}/simulate/hold-next`, { method: 'POST' });
    const held = await call('POST', '/transfers', a.token, { to: b.id, amount: 50 });
    const h = await settled(a.token, held.body.transferId);
    assert.equal(h.status, 'failed');
    assert.equal(h.reason, 'not final after 3 checks');
    assert.deepEqual((await call('GET', '/me/account', a.token)).body, { balance: 700, available: 700 }, 'failures released their reservations');
    assert.equal(worker.transfers.stats().deadLetters, 0);
  });
});
