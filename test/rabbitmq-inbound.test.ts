/**
 * RabbitMQ inbound against the real broker: messages become commands, acked
 * after the append; a redelivered message appends nothing twice; poison,
 * undecodable and id-less messages end in the dead-letter queue with their
 * reasons; a passing failure is retried, not requeued forever.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { GetMessage } from 'amqplib';
import { openMemoryEventLog } from '../src/log/memory/index.js';
import { domainError, handleCommand, type Decider } from '../src/index.js';
import { deadQueueName, startRabbitInbound } from '../src/bridges/rabbitmq/index.js';
import { RABBITMQ_URL, rabbitmqSkipReason, randomName, exclusiveDuringSuite } from './support/services.js';
import { until } from './support/wait.js';

const skip = await rabbitmqSkipReason();

type Deposit = { amount: number };
type Deposited = { type: 'Deposited'; data: { amount: number } };
const account: Decider<Deposit, { balance: number }, Deposited> = {
  name: 'account',
  initialState: { balance: 0 },
  evolve: (s, e) => ({ balance: s.balance + e.data.amount }),
  decide: (c) => {
    if (!(c.amount > 0)) throw domainError('AMOUNT_NOT_POSITIVE', `A deposit must be positive, got ${c.amount}.`);
    return { type: 'Deposited', data: { amount: c.amount } };
  },
};

describe('RabbitMQ inbound', { skip, timeout: 240_000 }, () => {
  // Another file restarts the shared server: never at the same time as these tests.
  exclusiveDuringSuite('rabbitmq');

  it('turns messages into commands exactly once, dead-letters what cannot succeed, retries what can', async () => {
    const log = openMemoryEventLog();
    const queue = randomName('inbound');
    let flakyFailures = 0;
    const inbound = await startRabbitInbound<{ account: string; amount: number; flaky?: boolean }>(log, {
      url: RABBITMQ_URL,
      queue,
      maxAttempts: 5,
      handle: async (m, l) => {
        if (m.data.flaky && flakyFailures < 2) {
          flakyFailures++;
          throw new Error('the store is briefly unreachable');
        }
        await handleCommand(l, account, `acct-${m.data.account}`, { amount: m.data.amount }, { commandId: m.messageId, metadata: { correlationId: m.correlationId ?? m.messageId } });
      },
    });
    const amqp = await import('amqplib');
    const connection = await amqp.connect(RABBITMQ_URL);
    const channel = await connection.createConfirmChannel();
    try {
      const send = (body: string, messageId?: string) => channel.sendToQueue(queue, Buffer.from(body), { persistent: true, ...(messageId ? { messageId } : {}) });
      send(JSON.stringify({ account: 'a', amount: 100 }), 'm1');
      send(JSON.stringify({ account: 'a', amount: 100 }), 'm1'); // a redelivery (same message id)
      send(JSON.stringify({ account: 'a', amount: -5 }), 'm2'); // poison: a domain rule refuses it
      send('{not json', 'm3'); // undecodable
      send(JSON.stringify({ account: 'a', amount: 1 })); // no message id
      send(JSON.stringify({ account: 'a', amount: 7, flaky: true }), 'm5'); // fails twice, then succeeds
      await channel.waitForConfirms();
      await until(() => inbound.stats().handled === 3 && inbound.stats().deadLettered === 3, 20_000, 'every message settled');
      assert.equal(inbound.stats().retried, 2);
      const events = [];
      for await (const e of log.readStream('acct-a')) events.push(e.data);
      assert.deepEqual(events, [{ amount: 100 }, { amount: 7 }], 'm1 once, m5 once, nothing from the refused ones');
      const dead: GetMessage[] = [];
      for (;;) {
        const m = await channel.get(deadQueueName(queue), { noAck: true });
        if (!m) break;
        dead.push(m);
      }
      assert.deepEqual(dead.map((m) => m.properties.headers!['x-death-code']).sort(), ['DOMAIN_RULE_VIOLATED', 'MISSING_MESSAGE_ID', 'UNDECODABLE']);
      assert.match(String(dead.find((m) => m.properties.messageId === 'm2')!.properties.headers!['x-death-reason']), /must be positive/);
      assert.equal(dead.find((m) => m.properties.messageId === 'm3')!.content.toString(), '{not json', 'the original body, untouched');
      const q = await channel.checkQueue(queue);
      assert.equal(q.messageCount, 0, 'nothing left requeued');
    } finally {
      await inbound.stop();
      await channel.deleteQueue(queue).catch(() => {});
      await channel.deleteQueue(deadQueueName(queue)).catch(() => {});
      await connection.close().catch(() => {});
      await log.close();
    }
  });

  it('dead-letters a message that keeps failing after maxAttempts, instead of requeueing it forever', async () => {
    const log = openMemoryEventLog();
    const queue = randomName('inbound_stuck');
    const inbound = await startRabbitInbound(log, { url: RABBITMQ_URL, queue, maxAttempts: 3, handle: async () => Promise.reject(new Error('always down')) });
    const amqp = await import('amqplib');
    const connection = await amqp.connect(RABBITMQ_URL);
    const channel = await connection.createConfirmChannel();
    try {
      channel.sendToQueue(queue, Buffer.from('{}'), { messageId: 'stuck', persistent: true });
      await channel.waitForConfirms();
      await until(() => inbound.stats().deadLettered === 1, 10_000, 'the dead letter');
      assert.equal(inbound.stats().retried, 2);
      const m = await channel.get(deadQueueName(queue), { noAck: true });
      assert.ok(m);
      assert.equal(m.properties.headers!['x-death-code'], 'HANDLER_FAILED');
      assert.equal(m.properties.headers!['x-retry-count'], 2);
    } finally {
      await inbound.stop();
      await channel.deleteQueue(queue).catch(() => {});
      await channel.deleteQueue(deadQueueName(queue)).catch(() => {});
      await connection.close().catch(() => {});
      await log.close();
    }
  });
});
