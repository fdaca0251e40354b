/**
 * The RabbitMQ relay and retry topology against the real broker: message
 * properties, unroutable messages, bad configuration, the retry tiers, and a
 * broker restart (stop_app / start_app) in the middle of 100,000 events.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ChannelModel, ConsumeMessage, GetMessage } from 'amqplib';
import { openSqliteEventLog } from '../src/log/sqlite/index.js';
import { openMemoryEventLog } from '../src/log/memory/index.js';
import { consumerGroups } from '../src/index.js';
import { deadQueueName, retryOrDeadLetter, RETRY_COUNT_HEADER, startRabbitRelay, type RetryTopologySpec } from '../src/bridges/rabbitmq/index.js';
import { declareTopology } from '../src/bridges/rabbitmq/topology.js';
import { RABBITMQ_URL, rabbitmqSkipReason, randomName, exclusiveDuringSuite } from './support/services.js';
import { sleep, until } from './support/wait.js';

const skip = await rabbitmqSkipReason();
const dir = mkdtempSync(join(tmpdir(), 'sinho-relay-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function admin() {
  const amqp = await import('amqplib');
  const connection = await amqp.connect(RABBITMQ_URL);
  const channel = await connection.createConfirmChannel();
  return { connection, channel, close: () => connection.close().catch(() => {}) };
}

/** After a test: stops the relay, deletes what the test made on the broker (queues, then the exchange), closes the log. */
async function cleanUp(relay: { stop(): Promise<void> }, log: { close(): Promise<void> }, made: { queues?: string[]; exchange: string }): Promise<void> {
  await relay.stop();
  const a = await admin();
  for (const q of made.queues ?? []) await a.channel.deleteQueue(q).catch(() => {});
  await a.channel.deleteExchange(made.exchange).catch(() => {});
  await a.close();
  await log.close();
}

describe('RabbitMQ relay', { skip, timeout: 480_000 }, () => {
  // Another file restarts the shared server: never at the same time as these tests.
  exclusiveDuringSuite('rabbitmq');

  it('publishes persistent messages with message-id, correlation id and headers, after confirms', async () => {
    const log = openMemoryEventLog();
    const exchange = randomName('sinho_relay');
    const queue = randomName('q');
    const a = await admin();
    const relay = await startRabbitRelay(log, { url: RABBITMQ_URL, exchange, topology: { queues: [{ name: queue, durable: false }], bindings: [{ queue, exchange, pattern: 'club.#' }] } });
    try {
      const appended = await log.append('club-1', [{ type: 'MemberJoined', data: { who: 'minji' }, metadata: { correlationId: 'corr-1', actor: 'u1', headers: { tenant: 't1' } } }]);
      await log.append('other-1', [{ type: 'Ignored', data: {} }], {}).catch(() => {});
      let message: GetMessage | false = false;
      await until(async () => (message = await a.channel.get(queue, { noAck: true })) !== false, 10_000, 'the message');
      const m = message as unknown as GetMessage;
      assert.deepEqual(JSON.parse(m.content.toString()), { who: 'minji' });
      assert.equal(m.properties.messageId, appended.events[0]!.id);
      assert.equal(m.properties.correlationId, 'corr-1');
      assert.equal(m.properties.deliveryMode, 2, 'persistent');
      assert.equal(m.properties.type, 'MemberJoined');
      assert.equal(m.fields.routingKey, 'club.MemberJoined');
      assert.equal(m.properties.headers!['x-sinho-stream'], 'club-1');
      assert.equal(m.properties.headers!['x-sinho-actor'], 'u1');
      assert.equal(m.properties.headers!.tenant, 't1');
      await until(() => relay.group.stats().lag === 0, 10_000, 'the checkpoint');
    } finally {
      await a.close();
      await cleanUp(relay, log, { queues: [queue], exchange });
    }
  });

  it('leaves the x-sinho-* headers out with metadataHeaders: false, keeping ids and the event\'s own headers', async () => {
    const log = openMemoryEventLog();
    const exchange = randomName('sinho_lean');
    const queue = randomName('q');
    const a = await admin();
    const relay = await startRabbitRelay(log, { url: RABBITMQ_URL, exchange, metadataHeaders: false, topology: { queues: [{ name: queue, durable: false }], bindings: [{ queue, exchange, pattern: '#' }] } });
    try {
      const appended = await log.append('club-2', [{ type: 'MemberJoined', data: {}, metadata: { correlationId: 'corr-2', headers: { tenant: 't2' } } }]);
      let message: GetMessage | false = false;
      await until(async () => (message = await a.channel.get(queue, { noAck: true })) !== false, 10_000, 'the message');
      const m = message as unknown as GetMessage;
      assert.equal(m.properties.messageId, appended.events[0]!.id);
      assert.equal(m.properties.correlationId, 'corr-2');
      assert.deepEqual(m.properties.headers, { tenant: 't2' });
    } finally {
      await a.close();
      await cleanUp(relay, log, { queues: [queue], exchange });
    }
  });

  it('surfaces unroutable messages and makes them dead letters, not silent drops', async () => {
    const log = openMemoryEventLog();
    const exchange = randomName('sinho_unroutable');
    const relay = await startRabbitRelay(log, { url: RABBITMQ_URL, exchange, retry: { delaysMs: [10], maxAttempts: 2 } });
    const returned: string[] = [];
    relay.on('relay:returned', (r) => returned.push(r.eventId));
    try {
      const appended = await log.append('nowhere-1', [{ type: 'Lost', data: {} }]);
      await until(() => relay.group.stats().deadLetters === 1, 10_000, 'the dead letter');
      const letters = await consumerGroups(log).deadLetters(relay.group.name);
      assert.equal(letters[0]!.eventId, appended.events[0]!.id);
      assert.match(letters[0]!.errors.at(-1)!.message, /returned event .* no queue is bound/);
      assert.ok(returned.length >= 2, 'each attempt was surfaced');
      assert.equal(relay.stats().returned, returned.length);
    } finally {
      await cleanUp(relay, log, { exchange });
    }
  });

  it('refuses bad configuration at start-up with a clear error, without hanging', async () => {
    const log = openMemoryEventLog();
    await assert.rejects(startRabbitRelay(log, { url: RABBITMQ_URL, exchange: 'x', exchangeType: 'fanin' as never }), { code: 'INVALID_ARGUMENT', message: /unknown type "fanin"/ });
    await assert.rejects(startRabbitRelay(log, { url: 'http://nope', exchange: 'x' }), { code: 'INVALID_ARGUMENT' });
    const started = Date.now();
    await assert.rejects(startRabbitRelay(log, { url: 'amqp://guest:guest@127.0.0.1:1', exchange: 'x', connectAttempts: 2 }), { code: 'BROKER_UNREACHABLE', message: /Could not connect to RabbitMQ at amqp:\/\/127\.0\.0\.1:1,/ });
    assert.ok(Date.now() - started < 10_000);
    await log.close();
  });

  it('retry tiers: a 1 s retry is not held behind a 30 s one; the last attempt goes to the dead-letter queue', async () => {
    const queue = randomName('work');
    const spec: RetryTopologySpec = { queue, delaysMs: [1000, 30_000], maxAttempts: 3 };
    const a = await admin();
    const seen: { id: string; attempt: number; at: number }[] = [];
    try {
      await declareTopology(a.channel, { retry: [spec] });
      await a.channel.prefetch(10);
      await a.channel.consume(queue, (msg) => {
        if (!msg) return;
        const id = msg.properties.messageId as string;
        const attempt = Number(msg.properties.headers?.[RETRY_COUNT_HEADER] ?? 0) + 1;
        seen.push({ id, attempt, at: Date.now() });
        void retryOrDeadLetter(a.channel, msg, spec, `failed attempt ${attempt}`);
      });
      const start = Date.now();
      a.channel.sendToQueue(queue, Buffer.from('x'), { messageId: 'slow', persistent: true });
      // 'slow' fails at once (1 s tier), then again (30 s tier): now it waits 30 s.
      await until(() => seen.filter((s) => s.id === 'slow').length === 2, 10_000, 'slow, second attempt');
      a.channel.sendToQueue(queue, Buffer.from('y'), { messageId: 'fast', persistent: true });
      await until(() => seen.filter((s) => s.id === 'fast').length === 2, 5_000, 'fast retried after about 1 s');
      const fast = seen.filter((s) => s.id === 'fast');
      assert.ok(fast[1]!.at - fast[0]!.at >= 900 && fast[1]!.at - fast[0]!.at < 3000, `fast came back after ${fast[1]!.at - fast[0]!.at} ms`);
      assert.equal(seen.filter((s) => s.id === 'slow').length, 2, 'slow still waits in its 30 s tier');
      // fast's third attempt (after the 30 s tier) would be its last; check the dead-letter path directly instead of waiting.
      a.channel.sendToQueue(queue, Buffer.from('z'), { messageId: 'doomed', persistent: true, headers: { [RETRY_COUNT_HEADER]: 2 } });
      let dead: GetMessage | false = false;
      await until(async () => (dead = await a.channel.get(deadQueueName(queue), { noAck: true })) !== false, 5000, 'the dead letter');
      const d = dead as unknown as GetMessage;
      assert.equal(d.properties.messageId, 'doomed');
      assert.equal(d.properties.headers!['x-death-reason'], 'failed attempt 3');
      assert.ok(Date.now() - start < 20_000);
    } finally {
      for (const q of [queue, `${queue}.retry.1000`, `${queue}.retry.30000`, deadQueueName(queue)]) await a.channel.deleteQueue(q).catch(() => {});
      await a.close();
    }
  });

  it('survives a broker restart in the middle of 100,000 events: every event received, exactly once after deduplication', async () => {
    const log = openSqliteEventLog({ path: join(dir, 'restart.sqlite') });
    const total = 100_000;
    for (let i = 0; i < total; i += 1000) {
      await log.append(`order-${i / 1000}`, Array.from({ length: 1000 }, (_, k) => ({ type: 'OrderPlaced', data: { n: i + k } })));
    }
    const exchange = randomName('sinho_restart');
    const queue = randomName('restart_q');
    const amqp = await import('amqplib');
    const received = new Map<string, number>();
    // An independent consumer that reconnects on its own.
    const consumer = await amqp.connect(RABBITMQ_URL, {
      recovery: {
        initialDelay: 200,
        maxDelay: 2000,
        maxRetries: Infinity,
        setup: async (model: ChannelModel) => {
          const ch = await model.createChannel();
          await ch.assertExchange(exchange, 'topic', { durable: true });
          await ch.assertQueue(queue, { durable: true });
          await ch.bindQueue(queue, exchange, '#');
          await ch.prefetch(1000);
          await ch.consume(queue, (msg: ConsumeMessage | null) => {
            if (!msg) return;
            const id = msg.properties.messageId as string;
            received.set(id, (received.get(id) ?? 0) + 1);
            ch.ack(msg);
          });
        },
      },
    });
    consumer.on('error', () => {});
    const relay = await startRabbitRelay(log, { url: RABBITMQ_URL, exchange, concurrency: 256 });
    const disconnects: unknown[] = [];
    relay.on('relay:disconnected', (e) => disconnects.push(e));
    try {
      await until(() => received.size >= 20_000, 60_000, '20,000 received before the restart');
      execFileSync('rabbitmqctl', ['stop_app'], { stdio: 'ignore' });
      await sleep(1000);
      execFileSync('rabbitmqctl', ['start_app'], { stdio: 'ignore' });
      // A busy CI machine restarts the broker slowly: a generous wait, and the relay's state when it runs out.
      await until(() => relay.group.stats().lag === 0 && relay.stats().connected, 180_000, 'the relay to finish').catch((error: Error) => {
        throw new Error(`${error.message}: group ${JSON.stringify(relay.group.stats())}, relay ${JSON.stringify(relay.stats())}, ${received.size} received`);
      });
      await until(() => received.size === total, 60_000, `every event received (${received.size})`);
      const duplicates = [...received.values()].reduce((n, c) => n + c - 1, 0);
      const ids = new Set<string>();
      for await (const e of log.readAll()) ids.add(e.id);
      assert.deepEqual([...received.keys()].filter((id) => !ids.has(id)), [], 'nothing but the log\'s events');
      assert.ok(disconnects.length >= 1, 'the relay saw the broker go');
      assert.ok(relay.stats().reconnects >= 1);
      console.log(`# ${total} events, ${duplicates} duplicates after the restart, ${relay.stats().reconnects} reconnect(s)`);
    } finally {
      await consumer.close().catch(() => {});
      await cleanUp(relay, log, { queues: [queue], exchange });
    }
  });
});
