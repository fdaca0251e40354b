/**
 * Routing: the matchers against RabbitMQ's rules, including the edge cases,
 * and a cross-check of every topic and headers case against a real RabbitMQ
 * (the cases are routed by the broker and by Sinho, and must agree).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { matchBinding, matchHeaders, matchTopic, routingKeyOf, validateBindings, type Binding } from '../src/index.js';
import { RABBITMQ_URL, exclusive, rabbitmqSkipReason, randomName } from './support/services.js';

// [pattern, key, expected by the AMQP 0-9-1 rules as RabbitMQ applies them]
const TOPIC_CASES: [string, string, boolean][] = [
  ['#', '', true],
  ['#', 'a', true],
  ['#', 'a.b.c', true],
  ['#', '.', true],
  ['*', '', false],
  ['*', 'a', true],
  ['*', 'a.b', false],
  ['*', '.', false],
  ['a.#', 'a', true],
  ['a.#', 'a.b', true],
  ['a.#', 'a.b.c', true],
  ['a.#', 'b.a', false],
  ['a.#', 'a.', true],
  ['#.a', 'a', true],
  ['#.a', 'x.y.a', true],
  ['#.a', 'a.x', false],
  ['a.*', 'a', false],
  ['a.*', 'a.b', true],
  ['a.*', 'a.', true],
  ['a.*', 'a.b.c', false],
  ['*.*', '.', true],
  ['*.*', 'a', false],
  ['a.*.#', 'a.b', true],
  ['a.*.#', 'a', false],
  ['a.#.b', 'a.b', true],
  ['a.#.b', 'a.x.y.b', true],
  ['a.#.b', 'a.x.y', false],
  ['#.#', '', true],
  ['#.#', 'a.b', true],
  ['a.#.#.b', 'a.b', true],
  ['', '', true],
  ['', 'a', false],
  ['a', '', false],
  ['a..b', 'a..b', true],
  ['a.*.b', 'a..b', true],
  ['a.b', 'a.b', true],
  ['a.b', 'a.B', false],
  ['member.*', 'member.IdentityReset', true],
  ['*.MemberJoined', 'community.MemberJoined', true],
  ['community.#', 'family.MemberJoined', false],
];

const HEADER_CASES: [Extract<Binding, { kind: 'headers' }>, Record<string, string>, boolean][] = [
  [{ kind: 'headers', headers: { a: '1', b: '2' } }, { a: '1', b: '2', c: '3' }, true],
  [{ kind: 'headers', headers: { a: '1', b: '2' } }, { a: '1' }, false],
  [{ kind: 'headers', match: 'any', headers: { a: '1', b: '2' } }, { a: '1' }, true],
  [{ kind: 'headers', match: 'any', headers: { a: '1', b: '2' } }, { a: '9', c: '1' }, false],
  [{ kind: 'headers', headers: { a: '1', 'x-b': '2' } }, { a: '1' }, true],
  [{ kind: 'headers', match: 'any', headers: { 'x-b': '2' } }, { 'x-b': '2' }, false],
  [{ kind: 'headers', match: 'all-with-x', headers: { a: '1', 'x-b': '2' } }, { a: '1' }, false],
  [{ kind: 'headers', match: 'all-with-x', headers: { a: '1', 'x-b': '2' } }, { a: '1', 'x-b': '2' }, true],
  [{ kind: 'headers', match: 'any-with-x', headers: { 'x-b': '2' } }, { 'x-b': '2' }, true],
  [{ kind: 'headers', headers: {} }, {}, true],
  [{ kind: 'headers', match: 'any', headers: {} }, { a: '1' }, false],
  [{ kind: 'headers', headers: { a: null } }, { a: 'anything' }, true],
  [{ kind: 'headers', headers: { a: null } }, { b: '1' }, false],
];

describe('routing', () => {
  it('matches topics exactly as the AMQP rules say', () => {
    for (const [pattern, key, expected] of TOPIC_CASES) assert.equal(matchTopic(pattern, key), expected, `topic ${JSON.stringify(pattern)} vs ${JSON.stringify(key)}`);
  });

  it('matches headers with x-match all/any and ignores x- headers unless asked', () => {
    for (const [binding, headers, expected] of HEADER_CASES) assert.equal(matchHeaders(binding, headers), expected, JSON.stringify([binding, headers]));
  });

  it('derives the routing key from category and type, or from the routing-key header', () => {
    const event = { category: 'community', type: 'MemberJoined', metadata: { occurredAt: '', headers: { region: 'kr' } } };
    assert.equal(routingKeyOf(event), 'community.MemberJoined');
    assert.equal(routingKeyOf({ ...event, metadata: { occurredAt: '', headers: { 'routing-key': 'custom.key' } } }), 'custom.key');
    assert.equal(matchBinding({ kind: 'direct', key: 'community.MemberJoined' }, event), true);
    assert.equal(matchBinding({ kind: 'direct', key: 'community' }, event), false);
    assert.equal(matchBinding({ kind: 'fanout' }, event), true);
    assert.equal(matchBinding({ kind: 'topic', pattern: 'community.*' }, event), true);
    assert.equal(matchBinding({ kind: 'headers', headers: { region: 'kr' } }, event), true);
  });

  it('rejects invalid bindings with a typed error', () => {
    const bad: unknown[] = [undefined, [], [{}], [{ kind: 'topic' }], [{ kind: 'direct', key: 5 }], [{ kind: 'headers', headers: { a: 1 } }], [{ kind: 'headers', match: 'some', headers: {} }], [null], [{ kind: 'fanoutt' }]];
    for (const b of bad) assert.throws(() => validateBindings(b), { code: 'INVALID_BINDING' }, JSON.stringify(b));
  });
});

const skip = await rabbitmqSkipReason();

describe('routing agrees with a real RabbitMQ', { skip, timeout: 240_000 }, () => {
  it('routes every topic and headers case the same way the broker does', async () => {
    // test/rabbitmq-relay.test.ts restarts the broker; the lock keeps that restart out of this test.
    const release = await exclusive('rabbitmq');
    try {
      await crossCheck();
    } finally {
      release();
    }
  });
});

async function crossCheck(): Promise<void> {
    const amqp = await import('amqplib');
    const connection = await amqp.connect(RABBITMQ_URL);
    const channel = await connection.createChannel();
    try {
      const topicExchange = randomName('sinho_topic');
      const headersExchange = randomName('sinho_headers');
      await channel.assertExchange(topicExchange, 'topic', { durable: false, autoDelete: false });
      await channel.assertExchange(headersExchange, 'headers', { durable: false, autoDelete: false });
      const broker = async (exchange: string, bind: (q: string) => Promise<unknown>, publish: () => void): Promise<boolean> => {
        const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true });
        await bind(queue);
        publish();
        // Publisher-side round trip: a get after a sync call sees the routed message.
        await channel.checkQueue(queue);
        const msg = await channel.get(queue, { noAck: true });
        await channel.deleteQueue(queue);
        return msg !== false;
      };
      for (const [pattern, key] of TOPIC_CASES) {
        const routed = await broker(topicExchange, (q) => channel.bindQueue(q, topicExchange, pattern), () => channel.publish(topicExchange, key, Buffer.from('x')));
        assert.equal(matchTopic(pattern, key), routed, `topic ${JSON.stringify(pattern)} vs ${JSON.stringify(key)}: RabbitMQ says ${routed}`);
      }
      for (const [binding, headers] of HEADER_CASES) {
        const args: Record<string, unknown> = { 'x-match': binding.match ?? 'all' };
        for (const [k, v] of Object.entries(binding.headers)) args[k] = v; // null is encoded as AMQP void (presence match)
        const routed = await broker(headersExchange, (q) => channel.bindQueue(q, headersExchange, '', args), () => channel.publish(headersExchange, '', Buffer.from('x'), { headers }));
        assert.equal(matchHeaders(binding, headers), routed, `headers ${JSON.stringify([binding, headers])}: RabbitMQ says ${routed}`);
      }
      await channel.deleteExchange(topicExchange);
      await channel.deleteExchange(headersExchange);
    } finally {
      await channel.close().catch(() => {});
      await connection.close().catch(() => {});
    }
}
