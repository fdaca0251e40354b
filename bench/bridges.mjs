/**
 * bench:bridges — the RabbitMQ relay against a plain amqplib publisher with
 * publisher confirms, in the same run, and moim's session lookups on Redis
 * against SQLite. Loopback only; the broker and Redis are the machine's.
 *
 * Relay: N events (default 100,000) already in a SQLite log; the relay
 * publishes them from its checkpoint, persistent, mandatory, with confirms,
 * and commits its durable checkpoint; measured until its lag is 0. Plain: the
 * same N messages (same size) published by amqplib on a confirm channel with
 * the same number of unconfirmed messages in flight (256). Both go to a topic
 * exchange bound to one durable queue, purged between runs.
 *
 * The two alternate for ROUNDS rounds (default 3; the relay replays the same
 * log under a new group each round) and the figures are medians, with the
 * median of the per-round ratios: this VM's stolen CPU moves single runs by
 * tens of percent.
 *
 * Sessions: lookups of live sessions (64 concurrent) for 5 s on each store,
 * without the per-process cache (the store itself is measured).
 *
 * Usage: npm run bench:bridges   (EVENTS=100000, ROUNDS=3)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import amqp from 'amqplib';
import { openSqliteEventLog } from '../dist/log/sqlite/index.js';
import { startRabbitRelay } from '../dist/bridges/rabbitmq/index.js';
import { SqliteSessionStore } from '../apps/moim/dist/sessions.js';
import { RedisSessionStore } from '../apps/moim/dist/sessions-redis.js';
import { machine, writeDocSection, writeResults, median } from './report.mjs';

const EVENTS = Number(process.env.EVENTS ?? 100_000);
const IN_FLIGHT = 256;
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const URL = process.env.RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const REDIS = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const dir = mkdtempSync(join(tmpdir(), 'bench-bridges-'));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const suffix = Date.now().toString(36);
const exchange = `bench_bridges_${suffix}`;
const queue = `bench_bridges_q_${suffix}`;
const payload = (n) => ({ orderId: `order-${n}`, amount: n % 1000, note: 'x'.repeat(64) });

const admin = await amqp.connect(URL);
const ch = await admin.createChannel();
await ch.assertExchange(exchange, 'topic', { durable: true });
await ch.assertQueue(queue, { durable: true });
await ch.bindQueue(queue, exchange, '#');

async function plainPublisher() {
  const connection = await amqp.connect(URL);
  const channel = await connection.createConfirmChannel();
  const started = performance.now();
  let next = 0;
  let confirmed = 0;
  await new Promise((resolve, reject) => {
    const pump = () => {
      while (next < EVENTS && next - confirmed < IN_FLIGHT) {
        const n = next++;
        channel.publish(exchange, 'order.OrderPlaced', Buffer.from(JSON.stringify(payload(n))), { persistent: true, mandatory: true, messageId: `m-${n}`, contentType: 'application/json' }, (err) => {
          if (err) return reject(err);
          confirmed++;
          if (confirmed === EVENTS) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  const seconds = (performance.now() - started) / 1000;
  await connection.close();
  return { messages: EVENTS, seconds, perSecond: Math.round(EVENTS / seconds) };
}

const log = openSqliteEventLog({ path: join(dir, 'relay.sqlite') });
for (let i = 0; i < EVENTS; i += 1000) {
  // 1,000 streams: per-stream order leaves the relay 256 streams in flight, like the plain publisher's window.
  await Promise.all(Array.from({ length: 1000 }, (_, k) => log.append(`order-${(i + k) % 1000}`, [{ type: 'OrderPlaced', data: payload(i + k) }])));
}

async function relay(round, metadataHeaders) {
  const started = performance.now();
  const r = await startRabbitRelay(log, { url: URL, exchange, declareExchange: false, metadataHeaders, concurrency: Number(process.env.RELAY_CONCURRENCY ?? IN_FLIGHT), group: `bench-relay-${suffix}-${round}-${metadataHeaders ? 'h' : 'lean'}` });
  while (r.group.stats().lag > 0 || r.stats().published < EVENTS) await sleep(5);
  await r.group.flush();
  const seconds = (performance.now() - started) / 1000;
  await r.stop();
  return { messages: EVENTS, seconds, perSecond: Math.round(EVENTS / seconds) };
}

async function lookups(name, store) {
  const tokens = [];
  for (let i = 0; i < 1000; i++) tokens.push((await store.create(`member-${i}`, 3_600_000)).token);
  let done = 0;
  const until = performance.now() + 5000;
  await Promise.all(
    Array.from({ length: 64 }, async (_, w) => {
      for (let i = w; performance.now() < until; i += 64) {
        if (!(await store.get(tokens[i % tokens.length]))) throw new Error(`${name}: a live session was not found`);
        done++;
      }
    }),
  );
  await store.close();
  return { lookups: done, perSecond: Math.round(done / 5) };
}

const rounds = [];
for (let round = 1; round <= ROUNDS; round++) {
  const plainRound = await plainPublisher();
  await ch.purgeQueue(queue);
  const relayRound = await relay(round, true);
  await ch.purgeQueue(queue);
  const leanRound = await relay(round, false);
  await ch.purgeQueue(queue);
  const r2 = (x) => Math.round(x * 100) / 100;
  rounds.push({ plain: plainRound, relay: relayRound, lean: leanRound, ratio: r2(relayRound.perSecond / plainRound.perSecond), leanRatio: r2(leanRound.perSecond / plainRound.perSecond) });
  console.log(`round ${round}: plain ${plainRound.perSecond}/s, relay ${relayRound.perSecond}/s (${rounds.at(-1).ratio}x), without x-sinho headers ${leanRound.perSecond}/s (${rounds.at(-1).leanRatio}x)`);
}
await log.close();
await ch.deleteQueue(queue);
await ch.deleteExchange(exchange);
await admin.close();
const plain = { perSecond: median(rounds.map((r) => r.plain.perSecond)), seconds: median(rounds.map((r) => r.plain.seconds)) };
const relayed = { perSecond: median(rounds.map((r) => r.relay.perSecond)), seconds: median(rounds.map((r) => r.relay.seconds)) };
const ratio = median(rounds.map((r) => r.ratio));
const lean = { perSecond: median(rounds.map((r) => r.lean.perSecond)), seconds: median(rounds.map((r) => r.lean.seconds)) };
const leanRatio = median(rounds.map((r) => r.leanRatio));
if (process.env.RELAY_ONLY === '1') process.exit(0); // profiling the relay: nothing recorded
const sqliteSessions = await lookups('sqlite', new SqliteSessionStore(join(dir, 'sessions.sqlite')));
console.log('sessions sqlite', sqliteSessions);
const redisSessions = await lookups('redis', await RedisSessionStore.connect(REDIS));
console.log('sessions redis', redisSessions);
rmSync(dir, { recursive: true, force: true });

const results = { name: 'bridges', date: new Date().toISOString(), machine: machine(), events: EVENTS, inFlight: IN_FLIGHT, rounds, plain, relay: relayed, ratio, lean, leanRatio, sessions: { sqlite: sqliteSessions, redis: redisSessions } };
writeResults('bridges', results);
const m = results.machine;
writeDocSection(
  'bridges',
  `<!-- bench:bridges:start -->
## bench:bridges — RabbitMQ relay and session stores

Command: \`npm run bench:bridges\` (EVENTS=${EVENTS}, ${ROUNDS} alternating rounds; medians). Machine: ${m.cpu}, ${m.memoryGiB} GiB, Node ${m.node}; ${results.date.slice(0, 10)}. The machine's RabbitMQ and Redis, loopback.

| Publishing ${EVENTS.toLocaleString('en-US')} persistent messages with confirms (${IN_FLIGHT} unconfirmed at most) | messages/s | seconds |
|---|---:|---:|
| plain amqplib publisher | ${plain.perSecond.toLocaleString('en-US')} | ${plain.seconds.toFixed(2)} |
| Sinho relay from a SQLite log (durable checkpoint after confirms), default: with the x-sinho-* headers | ${relayed.perSecond.toLocaleString('en-US')} | ${relayed.seconds.toFixed(2)} |
| the same, \`metadataHeaders: false\` (the same properties as the plain publisher's messages, plus type, app id, correlation id and timestamp) | ${lean.perSecond.toLocaleString('en-US')} | ${lean.seconds.toFixed(2)} |

Relay / plain, the median of the per-round ratios (target ≥ 0.8×): **${ratio}×** with the headers (${rounds.map((r) => `${r.ratio}×`).join(', ')}), **${leanRatio}×** without them (${rounds.map((r) => `${r.leanRatio}×`).join(', ')}).

| moim session lookups (64 concurrent, store only, 5 s) | lookups/s |
|---|---:|
| SQLite (\`data/sessions.sqlite\`) | ${sqliteSessions.perSecond.toLocaleString('en-US')} |
| Redis | ${redisSessions.perSecond.toLocaleString('en-US')} |
<!-- bench:bridges:end -->`,
);
