import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { openMemoryEventLog, openMemoryFeedStore } from '../src/log/memory/index.js';
import { openSqliteFeedStore } from '../src/log/sqlite/index.js';
import { CLOSE_CODES, Gateway, runFanOut, undeliveredStream, type FeedStore, type GatewayOptions, type GatewaySession } from '../src/realtime/index.js';
import { FeedClient, type NotificationMessage } from '../src/client/index.js';
import { feedStoreConformance } from './conformance/feed-store.js';
import { rawClient } from './support/realtime.js';
import { sleep, until } from './support/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'sinho-realtime-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

feedStoreConformance('memory', ({ now }) => openMemoryFeedStore({ now }));
feedStoreConformance('sqlite', ({ now }) => openSqliteFeedStore({ path: join(dir, `feed-${n++}.sqlite`), now }));

describe('sqlite feed store across processes', () => {
  it('two writers on one file number a user\'s feed densely (neither trusts a stale cursor)', async () => {
    const path = join(dir, `feed-${n++}.sqlite`);
    const a = openSqliteFeedStore({ path });
    const b = openSqliteFeedStore({ path });
    for (let i = 0; i < 20; i++) await (i % 3 === 0 ? a : b).publish([{ sourceId: `w${i}`, type: 'T', data: i, recipients: ['u'] }]);
    assert.deepEqual((await a.read('u', 0, 100)).map((e) => [e.cursor, e.data]), Array.from({ length: 20 }, (_, i) => [i + 1, i]));
    await a.close();
    await b.close();
  });

  it('wakes a watcher on another connection to the same file', async () => {
    const path = join(dir, `feed-${n++}.sqlite`);
    const writer = openSqliteFeedStore({ path });
    const reader = openSqliteFeedStore({ path, externalCommitCheckMs: 5 });
    let woke = 0;
    const stop = reader.watch(() => woke++);
    await writer.publish([{ sourceId: 'x', type: 'T', data: 1, recipients: ['a'] }], { nodeOf: () => 0 });
    await until(() => woke > 0, 2000, 'the external commit wake-up');
    assert.equal((await reader.readNode(0, 0, 10)).length, 1);
    stop();
    await writer.close();
    await reader.close();
  });
});

/** A test bed: a feed store, sessions by token, gateways. */
function bed(feed: FeedStore = openMemoryFeedStore()) {
  const sessions = new Map<string, GatewaySession>();
  const gateways: Gateway[] = [];
  let seq = 0;
  const login = (userId: string, expiresAt?: number): string => {
    const token = `token-${userId}-${seq++}`;
    sessions.set(token, { userId, ...(expiresAt !== undefined ? { expiresAt } : {}) });
    return token;
  };
  const gateway = async (options: Partial<GatewayOptions> = {}) => {
    const g = await Gateway.start({ feed, authenticate: async (token) => sessions.get(token), ...options });
    gateways.push(g);
    return g;
  };
  let source = 0;
  const notify = (recipients: string[], data: unknown = null, nodes = 1) =>
    feed.publish([{ sourceId: `src-${source++}`, type: 'MemberJoined', data, recipients }], { nodeOf: (u) => (nodes === 1 ? 0 : Number(u) % nodes) });
  const close = async () => {
    for (const g of gateways) await g.close();
    await feed.close();
  };
  return { feed, sessions, login, gateway, notify, close };
}

const hello = (c: Awaited<ReturnType<typeof rawClient>>, frame: Record<string, unknown>) => c.send({ type: 'hello', ...frame });

describe('realtime gateway: feed, resume and protocol', () => {
  it('delivers stored then live notifications in order, with no hole and no duplicate at the seam', async () => {
    const b = bed();
    const g = await b.gateway();
    for (let i = 0; i < 5; i++) await b.notify(['1'], { i });
    const token = b.login('1');
    const c = await rawClient(g.url);
    hello(c, { token, cursor: 2 });
    // Live notifications race the stored ones being read.
    const live = Promise.all(Array.from({ length: 20 }, (_, i) => b.notify(['1'], { i: 5 + i })));
    await live;
    await until(() => c.cursors().length === 23, 5000, '23 notifications');
    assert.deepEqual(c.cursors(), Array.from({ length: 23 }, (_, i) => i + 3));
    const welcome = c.frames[0]!;
    assert.equal(welcome.type, 'welcome');
    c.ws.close();
    await b.close();
  });

  it('resumes after a 2-second blip with zero holes and zero duplicates (client SDK)', async () => {
    const b = bed();
    const g = await b.gateway();
    const token = b.login('7');
    const received: NotificationMessage[] = [];
    const client = new FeedClient({ url: g.url, token, WebSocket: WebSocket as never, reconnectInitialMs: 50, ackIntervalMs: 20 });
    client.on('notification', (m) => received.push(m));
    client.start();
    await until(() => g.stats().connections === 1 && g.stats().users === 1, 5000, 'connected');
    for (let i = 0; i < 10; i++) await b.notify(['7'], { i });
    await until(() => received.length === 10, 5000, 'first 10');
    // The blip: the server drops every connection; notifications keep arriving for 2 s.
    for (const conn of (g as unknown as { connections: Set<{ ws: WebSocket }> }).connections) conn.ws.terminate();
    const deadline = Date.now() + 2000;
    let i = 10;
    while (Date.now() < deadline) {
      await b.notify(['7'], { i: i++ });
      await sleep(20);
    }
    await until(() => received.length === i, 10_000, `all ${i}`);
    assert.deepEqual(received.map((m) => m.cursor), Array.from({ length: i }, (_, k) => k + 1));
    assert.deepEqual(received.map((m) => (m.data as { i: number }).i), Array.from({ length: i }, (_, k) => k));
    await until(async () => (await b.feed.bounds('7')).acked === i, 5000, 'acks stored');
    client.close();
    await b.close();
  });

  it('resumes after a 2-day absence (injected clock) without loss, and signals a gap past retention', async () => {
    let now = Date.UTC(2026, 10, 1);
    const clock = () => now;
    const log = openMemoryEventLog();
    const b = bed(openMemoryFeedStore({ now: clock }));
    const fanOut = await runFanOut(log, {
      feed: b.feed,
      bindings: [{ kind: 'fanout' }],
      route: (e) => ({ recipients: ['3'], type: e.type, data: e.data }),
      now: clock,
      undeliveredAfterMs: false,
    });
    const g = await b.gateway({ now: clock });
    for (let i = 0; i < 3; i++) await log.append(`club-${i}`, [{ type: 'MemberJoined', data: { i } }]);
    await until(async () => (await b.feed.bounds('3')).head === 3, 5000, 'fan-out');
    now += 2 * 24 * 3600 * 1000; // two days away
    for (let i = 3; i < 6; i++) await log.append(`club-${i}`, [{ type: 'MemberJoined', data: { i } }]);
    await until(async () => (await b.feed.bounds('3')).head === 6, 5000, 'fan-out after two days');
    assert.equal(await fanOut.prune(), 0, 'two days is within the 30-day retention');
    const c = await rawClient(g.url);
    hello(c, { token: b.login('3'), cursor: 1 });
    await until(() => c.cursors().length === 5, 5000, 'five');
    assert.deepEqual(c.cursors(), [2, 3, 4, 5, 6]);
    assert.equal(c.frames.filter((f) => f.type === 'gap').length, 0);
    c.ws.close();
    // 31 days later the first six are past retention.
    now += 29 * 24 * 3600 * 1000;
    await log.append('club-9', [{ type: 'MemberJoined', data: { i: 6 } }]);
    await until(async () => (await b.feed.bounds('3')).head === 7, 5000, 'fan-out');
    now += 24 * 3600 * 1000 + 1;
    const pruned = await fanOut.prune();
    assert.equal(pruned, 6);
    const d = await rawClient(g.url);
    hello(d, { token: b.login('3'), cursor: 2 });
    await until(() => d.cursors().length === 1, 5000, 'the kept one');
    const gap = d.frames.find((f) => f.type === 'gap');
    assert.deepEqual(gap, { type: 'gap', after: 2, oldest: 7 });
    assert.deepEqual(d.cursors(), [7]);
    d.ws.close();
    await fanOut.stop();
    await log.close();
    await b.close();
  });

  it('starts from the stored acknowledgement when the client gives no cursor', async () => {
    const b = bed();
    const g = await b.gateway();
    for (let i = 0; i < 4; i++) await b.notify(['5']);
    await b.feed.ack([{ userId: '5', cursor: 3 }]);
    const c = await rawClient(g.url);
    hello(c, { token: b.login('5') });
    await until(() => c.cursors().length === 1, 5000, 'one');
    assert.deepEqual(c.cursors(), [4]);
    c.ws.close();
    await b.close();
  });

  it('refuses missing, bad and expired tokens, other users\' feeds, and tokens in the URL', async () => {
    const b = bed();
    const g = await b.gateway();
    const cases: [Record<string, unknown>, number, string][] = [
      [{}, CLOSE_CODES.unauthorized, 'UNAUTHORIZED'],
      [{ token: 'nope' }, CLOSE_CODES.unauthorized, 'UNAUTHORIZED'],
      [{ token: b.login('1', Date.now() - 1) }, CLOSE_CODES.unauthorized, 'UNAUTHORIZED'],
      [{ token: b.login('1'), user: '2' }, CLOSE_CODES.forbidden, 'FORBIDDEN'],
      [{ token: b.login('1'), cursor: 5 }, CLOSE_CODES.cursorAhead, 'CURSOR_AHEAD'],
    ];
    for (const [frame, code, error] of cases) {
      const c = await rawClient(g.url);
      hello(c, frame);
      const closed = await c.closed;
      assert.equal(closed.code, code, JSON.stringify(frame));
      assert.equal(c.frames.find((f) => f.type === 'error' && f.code === error)?.type, 'error', error);
      assert.equal(c.cursors().length, 0);
    }
    await assert.rejects(rawClient(`${g.url}?token=${b.login('1')}`), (e: { status?: number }) => e.status === 400);
    // The Authorization header works instead of hello.token.
    await b.notify(['1'], 'x');
    const ok = await rawClient(g.url, { headers: { authorization: `Bearer ${b.login('1')}` } });
    hello(ok, { cursor: 0 });
    await until(() => ok.cursors().length === 1, 5000, 'delivery with header auth');
    ok.ws.close();
    await b.close();
  });

  it('detects an idle connection that stops answering pings, and closes it', async () => {
    const b = bed();
    const g = await b.gateway({ heartbeatMs: 100 });
    const live = await rawClient(g.url);
    hello(live, { token: b.login('1') });
    await live.waitFor((f) => f.type === 'welcome');
    // A peer that vanished without closing: it never answers a ping.
    const ws = new WebSocket(g.url, { autoPong: false });
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'hello', token: b.login('2') }));
    const closed = await new Promise<number>((r) => ws.once('close', (code) => r(code)));
    assert.equal(closed, 1006, 'terminated, without a close handshake');
    assert.equal(live.ws.readyState, WebSocket.OPEN, 'a peer that answers stays connected');
    await until(() => g.stats().connections === 1, 2000, 'the idle connection forgotten');
    live.ws.close();
    await b.close();
  });

  it('closes a connection when its session expires', async () => {
    const b = bed();
    const g = await b.gateway();
    const c = await rawClient(g.url);
    hello(c, { token: b.login('1', Date.now() + 300) });
    await c.waitFor((f) => f.type === 'welcome');
    const closed = await c.closed;
    assert.equal(closed.code, CLOSE_CODES.sessionExpired);
    assert.ok(c.frames.some((f) => f.type === 'error' && f.code === 'SESSION_EXPIRED'));
    await b.close();
  });

  it('answers malformed, binary, out-of-order, oversized and flooding frames with an error or close code, and keeps serving', async () => {
    const b = bed();
    const g = await b.gateway({ maxFrameBytes: 1024, maxFramesPerSecond: 20, helloTimeoutMs: 300 });
    const expect = async (act: (c: Awaited<ReturnType<typeof rawClient>>) => void | Promise<void>, code: number) => {
      const c = await rawClient(g.url);
      await act(c);
      assert.equal((await c.closed).code, code);
      return c;
    };
    await expect((c) => c.send('{not json'), CLOSE_CODES.badFrame);
    await expect((c) => c.send('[1,2]'), CLOSE_CODES.badFrame);
    await expect((c) => c.send({ type: 'launch' }), CLOSE_CODES.badFrame);
    await expect((c) => c.send({ type: 'ack', cursor: 1 }), CLOSE_CODES.badFrame); // before hello
    await expect((c) => c.send({ type: 'hello', cursor: -1 }), CLOSE_CODES.badFrame);
    await expect((c) => c.ws.send(Buffer.from('binary')), CLOSE_CODES.badFrame);
    await expect((c) => c.send({ type: 'hello', token: 'x'.repeat(2000) }), CLOSE_CODES.frameTooLarge);
    await expect(() => {}, CLOSE_CODES.helloTimeout);
    const flood = await expect(async (c) => {
      hello(c, { token: b.login('1') });
      await c.waitFor((f) => f.type === 'welcome');
      for (let i = 0; i < 200; i++) c.send({ type: 'ping' });
    }, CLOSE_CODES.rateLimited);
    assert.ok(flood.frames.some((f) => f.type === 'error' && f.code === 'RATE_LIMITED'));
    const acker = await expect(async (c) => {
      hello(c, { token: b.login('1') });
      await c.waitFor((f) => f.type === 'welcome');
      c.send({ type: 'ack', cursor: 10 });
    }, CLOSE_CODES.badFrame);
    assert.match((acker.frames.find((f) => f.type === 'error') as { message: string }).message, /past the last cursor sent/);
    // Still serving.
    const c = await rawClient(g.url);
    hello(c, { token: b.login('1') });
    c.send({ type: 'ping' });
    await c.waitFor((f) => f.type === 'pong');
    c.ws.close();
    await b.close();
  });

  it('closes a slow consumer with a resume hint; it resumes without loss; other clients are unaffected', async () => {
    const b = bed();
    const g = await b.gateway({ maxBufferedBytes: 64 * 1024 });
    const slow = await rawClient(g.url);
    hello(slow, { token: b.login('1') });
    await slow.waitFor((f) => f.type === 'welcome');
    const fast = await rawClient(g.url);
    hello(fast, { token: b.login('2') });
    await fast.waitFor((f) => f.type === 'welcome');
    // The slow client stops reading its socket.
    (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const big = 'x'.repeat(8 * 1024);
    const total = 1500; // 12 MB: more than loopback's socket buffers hold
    for (let i = 0; i < total; i += 50) await Promise.all(Array.from({ length: 50 }, (_, k) => b.notify(['1', '2'], { i: i + k, big })));
    await until(() => g.stats().slowConsumersClosed === 1, 20_000, 'the slow consumer closed');
    (slow.ws as unknown as { _socket: { resume(): void } })._socket.resume();
    const closed = await slow.closed;
    assert.ok(closed.code === CLOSE_CODES.slowConsumer || closed.code === 1006, `close code ${closed.code}`);
    await until(() => fast.cursors().length === total, 20_000, 'the fast client got everything');
    assert.deepEqual(fast.cursors(), Array.from({ length: total }, (_, i) => i + 1));
    // Resume from what the slow client actually received.
    const got = slow.cursors();
    assert.deepEqual(got, Array.from({ length: got.length }, (_, i) => i + 1), 'no hole before the close');
    const again = await rawClient(g.url);
    hello(again, { token: b.login('1'), cursor: got.length });
    await until(() => again.cursors().length === total - got.length, 20_000, 'the rest after resume');
    assert.deepEqual([...got, ...again.cursors()], Array.from({ length: total }, (_, i) => i + 1));
    fast.ws.close();
    again.ws.close();
    await b.close();
  });

  it('tells a client at the wrong node which node owns it; each node receives only its users', async () => {
    const b = bed();
    const g0 = await b.gateway({ node: 0, nodes: 2 });
    const g1 = await b.gateway({ node: 1, nodes: 2, nodeUrls: [g0.url] });
    const wrong = await rawClient(g1.url);
    hello(wrong, { token: b.login('4') });
    assert.equal((await wrong.closed).code, CLOSE_CODES.wrongNode);
    const goaway = wrong.frames.find((f) => f.type === 'goaway');
    assert.deepEqual(goaway && goaway.type === 'goaway' && goaway.resume, { cursor: 0, node: 0, url: g0.url });
    // The SDK follows the redirect.
    const received: number[] = [];
    const client = new FeedClient({ url: g1.url, token: b.login('4'), WebSocket: WebSocket as never, reconnectInitialMs: 20 });
    client.on('notification', (m) => received.push(m.cursor)).start();
    const odd = await rawClient(g1.url);
    hello(odd, { token: b.login('5') });
    await until(() => g0.stats().users === 1 && g1.stats().users === 1, 5000, 'both connected');
    for (let i = 0; i < 10; i++) await b.notify(['4', '5'], { i }, 2);
    await until(() => received.length === 10 && odd.cursors().length === 10, 5000, 'deliveries on both nodes');
    assert.equal(g0.stats().delivered, 10);
    assert.equal(g1.stats().delivered, 10);
    assert.deepEqual(await b.feed.readNode(0, 0, 100).then((d) => d.flatMap((x) => x.recipients.map((r) => r.userId))), Array(10).fill('4'));
    client.close();
    odd.ws.close();
    await b.close();
  });

  it('knows who is online, and forgets a node that stopped refreshing', async () => {
    let now = Date.now();
    const b = bed();
    const g = await b.gateway({ now: () => now, presenceTtlMs: 3000, flushIntervalMs: 10 });
    const c = await rawClient(g.url);
    hello(c, { token: b.login('1') });
    await c.waitFor((f) => f.type === 'welcome');
    await until(async () => (await b.feed.online(['1', '2'], now)).length === 1, 5000, 'online');
    c.ws.close();
    await until(async () => (await b.feed.online(['1'], now)).length === 0, 5000, 'offline after disconnect');
    const d = await rawClient(g.url);
    hello(d, { token: b.login('2') });
    await until(async () => (await b.feed.online(['2'], now)).length === 1, 5000, 'online');
    now += 3001; // as if the node crashed and stopped refreshing
    assert.deepEqual(await b.feed.online(['2'], now), []);
    d.ws.close();
    await b.close();
  });

  it('drains: go-away with resume cursors over a window, refuses new connections, clients resume elsewhere with no gap', async () => {
    const path = join(dir, `feed-${n++}.sqlite`);
    const b = bed(openSqliteFeedStore({ path }));
    const g = await b.gateway();
    const clients = Array.from({ length: 20 }, (_, i) => {
      const received: number[] = [];
      const client = new FeedClient({ url: g.url, token: b.login(String(i)), WebSocket: WebSocket as never, reconnectInitialMs: 50 });
      client.on('notification', (m) => received.push(m.cursor)).start();
      return { client, received };
    });
    await until(() => g.stats().connections === 20, 5000, 'all connected');
    const everyone = clients.map((_, i) => String(i));
    let sent = 0;
    const publishing = (async () => {
      for (; sent < 60; sent++) {
        await b.notify(everyone, { sent });
        await sleep(10);
      }
    })();
    await sleep(100);
    const started = Date.now();
    const draining = g.drain({ windowMs: 300 });
    await assert.rejects(rawClient(g.url), (e: { status?: number }) => e.status === 503);
    await draining;
    assert.ok(Date.now() - started < 2500);
    // A replacement node on the same store (another port: clients are pointed at it by a goaway URL in real deploys).
    const replacement = await b.gateway();
    for (const { client } of clients) (client as unknown as { url: string }).url = replacement.url;
    await publishing;
    await until(() => clients.every((c) => c.received.length === 60), 10_000, 'every client complete');
    for (const { received } of clients) assert.deepEqual(received, Array.from({ length: 60 }, (_, i) => i + 1));
    for (const { client } of clients) client.close();
    await b.close();
  });

  it('reports notifications not acknowledged in time as NotificationUndelivered events, once', async () => {
    const log = openMemoryEventLog();
    let now = Date.now();
    const b = bed(openMemoryFeedStore({ now: () => now }));
    const fanOut = await runFanOut(log, {
      feed: b.feed,
      bindings: [{ kind: 'topic', pattern: 'club.MemberJoined' }],
      route: (e) => ({ recipients: ['1', '2'], type: e.type, data: e.data }),
      undeliveredAfterMs: 1000,
      undeliveredCheckMs: 60_000,
      now: () => now,
    });
    await log.append('club-1', [{ type: 'MemberJoined', data: { who: 'x' } }]);
    await until(async () => (await b.feed.bounds('2')).head === 1, 5000, 'fan-out');
    await b.feed.ack([{ userId: '1', cursor: 1 }]);
    now += 1001;
    assert.equal(await fanOut.reportUndelivered(), 1);
    assert.equal(await fanOut.reportUndelivered(), 0);
    const events = [];
    for await (const e of log.readStream(undeliveredStream('2'))) events.push(e);
    assert.equal(events.length, 1);
    assert.equal(events[0]!.type, 'NotificationUndelivered');
    assert.deepEqual((events[0]!.data as { cursor: number }).cursor, 1);
    let none = 0;
    for await (const _ of log.readStream(undeliveredStream('1'))) none++;
    assert.equal(none, 0);
    await fanOut.stop();
    await log.close();
    await b.close();
  });

  it('fan-out notifies nobody twice when the group redelivers', async () => {
    const log = openMemoryEventLog();
    const b = bed();
    let calls = 0;
    const route = (e: { type: string; data: unknown }) => {
      calls++;
      if (calls === 2) throw new Error('transient');
      return { recipients: ['1'], type: e.type, data: e.data };
    };
    const fanOut = await runFanOut(log, { feed: b.feed, bindings: [{ kind: 'fanout' }], route, retry: { delaysMs: [10], maxAttempts: 3 }, undeliveredAfterMs: false });
    await log.append('a-1', [{ type: 'E', data: 1 }]);
    await log.append('a-2', [{ type: 'E', data: 2 }]);
    await until(async () => (await b.feed.bounds('1')).head === 2, 5000, 'both');
    await fanOut.stop();
    await consumerGroupsReset(log);
    const again = await runFanOut(log, { feed: b.feed, bindings: [{ kind: 'fanout' }], route: (e) => ({ recipients: ['1'], type: e.type, data: e.data }), undeliveredAfterMs: false });
    await until(() => again.group.stats().lag === 0, 5000, 'replayed');
    await sleep(50);
    assert.equal((await b.feed.bounds('1')).head, 2, 'a replay from the beginning adds nothing');
    await again.stop();
    await log.close();
    await b.close();
  });
});

async function consumerGroupsReset(log: Parameters<typeof runFanOut>[0]): Promise<void> {
  const { consumerGroups } = await import('../src/index.js');
  await consumerGroups(log).reset('sinho-notifications', 1);
}
