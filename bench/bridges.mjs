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
import { relayMessage, startRabbitRelay } from '../dist/bridges/rabbitmq/index.js';
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

/**
 * A plain amqplib publisher on a confirm channel, IN_FLIGHT unconfirmed at
 * most. `messages` null: bare messages (the payload, message id and content
 * type only); otherwise the prepared messages, published as they are.
 */
async function plainPublisher(messages) {
  const connection = await amqp.connect(URL);
  const channel = await connection.createConfirmChannel();
  const started = performance.now();
  let next = 0;
  let confirmed = 0;
  await new Promise((resolve, reject) => {
    const pump = () => {
      while (next < EVENTS && next - confirmed < IN_FLIGHT) {
        const n = next++;
        const onConfirm = (err) => {
          if (err) return reject(err);
          confirmed++;
          if (confirmed === EVENTS) resolve();
          else pump();
        };
        if (messages) channel.publish(exchange, 'order.OrderPlaced', messages[n].content, messages[n].properties, onConfirm);
        else channel.publish(exchange, 'order.OrderPlaced', Buffer.from(JSON.stringify(payload(n))), { persistent: true, mandatory: true, messageId: `m-${n}`, contentType: 'application/json' }, onConfirm);
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

// The relay's very messages, built before timing, for the plain publisher that sends the same.
const sameMessages = { headers: [], lean: [] };
for await (const event of log.readAll()) {
  sameMessages.headers.push(relayMessage(event));
  sameMessages.lean.push(relayMessage(event, { metadataHeaders: false }));
}

async function relay(round, metadataHeaders) {
  const started = performance.now();
  const r = await startRabbitRelay(log, { url: URL, exchange, declareExchange: false, metadataHeaders, concurrency: Number(process.env.RELAY_CONCURRENCY ?? IN_FLIGHT), group: `bench-relay-${suffix}-${round}-${metadataHeaders ? 'h' : 'lean'}` });
  let samples = 0;
  let inFlightSum = 0;
  for (;;) {
    const stats = r.group.stats();
    if (stats.lag === 0 && r.stats().published >= EVENTS) break;
    samples++;
    inFlightSum += stats.inFlight;
    await sleep(5);
  }
  if (process.env.RELAY_ONLY === '1') console.log(`  relay ${metadataHeaders ? 'headers' : 'lean'}: mean in flight ${Math.round(inFlightSum / samples)}`);
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
const r2 = (x) => Math.round(x * 100) / 100;
for (let round = 1; round <= ROUNDS; round++) {
  const phase = async (run) => {
    const result = await run();
    await ch.purgeQueue(queue);
    return result;
  };
  const bare = await phase(() => plainPublisher(null));
  const plainSame = await phase(() => plainPublisher(sameMessages.headers));
  const relayRound = await phase(() => relay(round, true));
  const plainLean = await phase(() => plainPublisher(sameMessages.lean));
  const leanRound = await phase(() => relay(round, false));
  rounds.push({
    bare,
    plain: plainSame,
    relay: relayRound,
    plainLean,
    lean: leanRound,
    ratio: r2(relayRound.perSecond / plainSame.perSecond),
    leanRatio: r2(leanRound.perSecond / plainLean.perSecond),
    bareRatio: r2(relayRound.perSecond / bare.perSecond),
    leanBareRatio: r2(leanRound.perSecond / bare.perSecond),
  });
  const x = rounds.at(-1);
  console.log(
    `round ${round}: bare plain ${bare.perSecond}/s; same messages: plain ${plainSame.perSecond}/s, relay ${relayRound.perSecond}/s (${x.ratio}x); without x-sinho headers: plain ${plainLean.perSecond}/s, relay ${leanRound.perSecond}/s (${x.leanRatio}x)`,
  );
}
await log.close();
await ch.deleteQueue(queue);
await ch.deleteExchange(exchange);
await admin.close();
const med = (pick) => ({ perSecond: median(rounds.map((r) => pick(r).perSecond)), seconds: median(rounds.map((r) => pick(r).seconds)) });
const bare = med((r) => r.bare);
const plain = med((r) => r.plain);
const relayed = med((r) => r.relay);
const plainLean = med((r) => r.plainLean);
const lean = med((r) => r.lean);
const ratio = median(rounds.map((r) => r.ratio));
const leanRatio = median(rounds.map((r) => r.leanRatio));
const bareRatio = median(rounds.map((r) => r.bareRatio));
const leanBareRatio = median(rounds.map((r) => r.leanBareRatio));
if (process.env.RELAY_ONLY === '1') process.exit(0); // profiling the relay: nothing recorded
const sqliteSessions = await lookups('sqlite', new SqliteSessionStore(join(dir, 'sessions.sqlite')));
console.log('sessions sqlite', sqliteSessions);
const redisSessions = await lookups('redis', await RedisSessionStore.connect(REDIS));
console.log('sessions redis', redisSessions);
rmSync(dir, { recursive: true, force: true });

const results = { name: 'bridges', date: new Date().toISOString(), machine: machine(), events: EVENTS, inFlight: IN_FLIGHT, rounds, bare, plain, relay: relayed, ratio, plainLean, lean, leanRatio, bareRatio, leanBareRatio, sessions: { sqlite: sqliteSessions, redis: redisSessions } };
writeResults('bridges', results);
const m = results.machine;
writeDocSection(
  'bridges',
  `<!-- bench:bridges:start -->
## bench:bridges — RabbitMQ relay and session stores

Command: \`npm run bench:bridges\` (EVENTS=${EVENTS}, ${ROUNDS} alternating rounds; medians). Machine: ${m.cpu}, ${m.memoryGiB} GiB, Node ${m.node}; ${results.date.slice(0, 10)}. The machine's RabbitMQ and Redis, loopback.

| Publishing ${EVENTS.toLocaleString('en-US')} persistent messages with confirms (${IN_FLIGHT} unconfirmed at most) | messages/s | seconds |
|---|---:|---:|
| plain amqplib publisher, bare messages (payload, message id, content type) | ${bare.perSecond.toLocaleString('en-US')} | ${bare.seconds.toFixed(2)} |
| plain amqplib publisher sending the relay's default messages (built before timing with \`relayMessage\`) | ${plain.perSecond.toLocaleString('en-US')} | ${plain.seconds.toFixed(2)} |
| **Sinho relay** from a SQLite log (durable checkpoint after confirms), default: with the x-sinho-* headers | ${relayed.perSecond.toLocaleString('en-US')} | ${relayed.seconds.toFixed(2)} |
| plain amqplib publisher sending the relay's messages without the x-sinho-* headers | ${plainLean.perSecond.toLocaleString('en-US')} | ${plainLean.seconds.toFixed(2)} |
| **Sinho relay**, \`metadataHeaders: false\` | ${lean.perSecond.toLocaleString('en-US')} | ${lean.seconds.toFixed(2)} |

Relay / plain publisher of the same messages, the median of the per-round ratios (target ≥ 0.8×): **${ratio}×** by default (${rounds.map((r) => `${r.ratio}×`).join(', ')}), **${leanRatio}×** with \`metadataHeaders: false\` (${rounds.map((r) => `${r.leanRatio}×`).join(', ')}). Against the bare publisher: ${bareRatio}× by default, ${leanBareRatio}× without the headers. The plain publisher of the same messages has them in memory; the relay reads them from the log, routes them, and commits its checkpoint.

| moim session lookups (64 concurrent, store only, 5 s) | lookups/s |
|---|---:|
| SQLite (\`data/sessions.sqlite\`) | ${sqliteSessions.perSecond.toLocaleString('en-US')} |
| Redis | ${redisSessions.perSecond.toLocaleString('en-US')} |
<!-- bench:bridges:end -->`,
);
