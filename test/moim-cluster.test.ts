/**
 * The multi-process deployment recipe (apps/moim/deploy/cluster.mjs): moim on
 * PostgreSQL, Redis and RabbitMQ with 2 API processes, 2 workers, 3 gateways,
 * the ledger and the checker, all as real processes; the end-to-end story
 * passes against it, including a SIGKILLed worker whose standby takes over.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { exclusive, postgresSkipReason, rabbitmqSkipReason, redisSkipReason } from './support/services.js';

const skip = (await postgresSkipReason()) ?? (await redisSkipReason()) ?? (await rabbitmqSkipReason());

async function free(port: number): Promise<boolean> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A base port with base..base+12 free (the recipe's fixed offsets). */
async function basePort(): Promise<number> {
  for (;;) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    const ports = [0, 1, 2, 10, 11, 12].map((k) => base + k);
    if ((await Promise.all(ports.map(free))).every(Boolean)) return base;
  }
}

describe('moim deployed as processes on PostgreSQL, Redis and RabbitMQ', { skip, timeout: 240_000 }, () => {
  // Other files restart Redis and RabbitMQ: never while this runs.
  const releases: (() => void)[] = [];
  before(async () => {
    releases.push(await exclusive('redis'), await exclusive('rabbitmq'));
  });
  after(() => releases.forEach((release) => release()));

  it('passes the end-to-end story, through a worker killed midway', async () => {
    const child = spawn(process.execPath, ['apps/moim/deploy/cluster.mjs', '--check', '--base-port', String(await basePort())], { env: { ...process.env, MOIM_LOG: 'error' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 0, out);
    for (const step of ['a session works on both API processes', 'worker 2 takes over', 'after the takeover: notified once, no hole, no duplicate', 'a transfer after the takeover is confirmed', "API 1 refuses seo's token at once", '0 discrepancies']) {
      assert.ok(out.includes(step), `${step}\n${out}`);
    }
  });
});
