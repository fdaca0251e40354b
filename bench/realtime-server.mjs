/**
 * The server side of bench/realtime.mjs, one process per system (forked, IPC):
 * - `sinho`: the log (SQLite), the fan-out group and one gateway, on files in a
 *   temporary folder. A join is a durable append of `MemberJoined`; the fan-out
 *   stores one notification per recipient feed; the gateway pushes it.
 * - `socketio`: one Socket.IO server (websocket transport); a join is
 *   `io.to(community).except(joiner).emit(...)`, in memory, at most once.
 * - `ws`: the ceiling, plain `ws` with rooms in memory (see startRawWs).
 * Both fire joins from an open-model schedule (intended send times; a late
 * timer does not push the schedule back) and stamp each with its intended
 * time, so clients measure join -> receive latency without coordinated omission.
 */
import { createServer } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

const system = process.argv[2];
const now = () => performance.timeOrigin + performance.now();
let communities = [];
let communityOf = [];
let fire;
let gatewayChild;
let close;

function reply(message) {
  process.send(message);
}

/**
 * Sinho as deployed: the worker (log, fan-out; here also the join trigger) in
 * this process, the gateway in a child process of its own, both on the same
 * SQLite files; the gateway notices the worker's commits through
 * `PRAGMA data_version` (externalCommitCheckMs, default 10 ms).
 */
async function startSinho() {
  const { openSqliteEventLog, openSqliteFeedStore } = await import('../dist/log/sqlite/index.js');
  const { runFanOut } = await import('../dist/realtime/index.js');
  const dir = mkdtempSync(join(tmpdir(), 'bench-realtime-'));
  const log = openSqliteEventLog({ path: join(dir, 'log.sqlite') });
  const feed = openSqliteFeedStore({ path: join(dir, 'feed.sqlite') });
  const fanOut = await runFanOut(log, {
    feed,
    bindings: [{ kind: 'direct', key: 'community.MemberJoined' }],
    concurrency: 256,
    undeliveredAfterMs: false,
    route: (event) => {
      const { c, j } = event.data;
      return { recipients: communities[c].filter((m) => m !== j), type: 'MemberJoined', data: event.data };
    },
  });
  const { fork } = await import('node:child_process');
  gatewayChild = fork(new URL(import.meta.url).pathname, ['sinho-gateway', join(dir, 'feed.sqlite')], { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const url = await new Promise((resolve) => gatewayChild.once('message', (m) => resolve(m.url)));
  fire = (k, c, j, t0) => {
    log.append(`community-${c}`, [{ type: 'MemberJoined', data: { k, c, j, t0 } }]).catch((e) => console.error(e));
  };
  close = async () => {
    gatewayChild.send({ type: 'stop' });
    await new Promise((r) => gatewayChild.once('exit', r));
    await fanOut.stop();
    await feed.close();
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return url;
}

/** The Sinho gateway process: serves connections from the shared feed store. */
async function runSinhoGateway(path) {
  const { openSqliteFeedStore } = await import('../dist/log/sqlite/index.js');
  const { Gateway } = await import('../dist/realtime/index.js');
  const feed = openSqliteFeedStore({ path });
  const gateway = await Gateway.start({ feed, port: 0, maxConnections: 50_000, maxFramesPerSecond: 1000, authenticate: async (token) => ({ userId: token }) });
  process.on('message', async (m) => {
    if (m.type === 'rss') {
      globalThis.gc?.();
      await new Promise((r) => setTimeout(r, 200));
      globalThis.gc?.();
      process.send({ type: 'rss', rss: process.memoryUsage().rss });
    }
    if (m.type === 'stop') {
      await gateway.close();
      await feed.close();
      process.exit(0);
    }
  });
  process.send({ url: gateway.url });
}

/**
 * The ceiling: plain `ws`, rooms in memory, one JSON text frame serialised once per join and written to each
 * other member's socket. No protocol, no storage, no acks: what any server could deliver to these clients on
 * this machine, with the load generator's own cost included.
 */
async function startRawWs() {
  const { WebSocketServer } = await import('ws');
  const http = createServer();
  const wss = new WebSocketServer({ server: http, maxPayload: 4096 });
  const sockets = new Map();
  wss.on('connection', (socket, request) => {
    const user = new URL(request.url, 'http://x').searchParams.get('user');
    sockets.set(user, socket);
    socket.on('close', () => sockets.get(user) === socket && sockets.delete(user));
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  fire = (k, c, j, t0) => {
    const frame = JSON.stringify({ type: 'MemberJoined', data: { k, c, j, t0 } });
    for (const m of communities[c]) if (m !== j) sockets.get(m)?.send(frame);
  };
  close = async () => {
    for (const socket of sockets.values()) socket.terminate();
    wss.close();
    await new Promise((r) => http.close(r));
  };
  return `ws://127.0.0.1:${http.address().port}/`;
}

async function startSocketIo() {
  const { Server } = await import('socket.io');
  const http = createServer();
  const io = new Server(http, { transports: ['websocket'], serveClient: false, maxHttpBufferSize: 4096 });
  io.use((socket, next) => {
    const user = socket.handshake.auth?.token;
    if (typeof user !== 'string') return next(new Error('unauthorized'));
    socket.data.user = user;
    next();
  });
  io.on('connection', (socket) => {
    const user = socket.data.user;
    socket.join(`u-${user}`);
    socket.join(`c-${communityOf[Number(user)]}`);
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  fire = (k, c, j, t0) => {
    io.to(`c-${c}`).except(`u-${j}`).emit('notification', { type: 'MemberJoined', data: { k, c, j, t0 } });
  };
  close = async () => {
    io.close();
    await new Promise((r) => http.close(r));
  };
  return `http://127.0.0.1:${http.address().port}`;
}

/** Fires `rate` joins per second for `seconds`, by intended time; reports joins, expected deliveries, late sends. */
async function phase({ rate, seconds, firstJoin, seed }) {
  let x = seed >>> 0;
  const random = () => ((x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const start = now() + 20;
  const total = Math.round(rate * seconds);
  let k = 0;
  let expected = 0;
  let late = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const t = now();
      while (k < total) {
        const intended = start + (k * 1000) / rate;
        if (intended > t) break;
        if (t - intended > 100) late++;
        const c = Math.floor(random() * communities.length);
        const members = communities[c];
        const j = members[Math.floor(random() * members.length)];
        fire(firstJoin + k, c, j, intended);
        expected += members.length - 1;
        k++;
      }
      if (k >= total) return resolve();
      setTimeout(tick, 1);
    };
    setTimeout(tick, 20);
  });
  return { joins: total, expected, late };
}

if (system === 'sinho-gateway') await runSinhoGateway(process.argv[3]);
else process.on('message', async (message) => {
  try {
    switch (message.type) {
      case 'start': {
        communities = message.communities;
        communityOf = [];
        communities.forEach((members, c) => members.forEach((m) => (communityOf[Number(m)] = c)));
        const url = system === 'sinho' ? await startSinho() : system === 'ws' ? await startRawWs() : await startSocketIo();
        return reply({ type: 'started', url });
      }
      case 'rss':
        if (gatewayChild) {
          // The connections live in the gateway process: its RSS is the one per connection.
          gatewayChild.send({ type: 'rss' });
          const { rss } = await new Promise((r) => gatewayChild.once('message', r));
          return reply({ type: 'rss', rss });
        }
        globalThis.gc?.();
        await new Promise((r) => setTimeout(r, 200));
        globalThis.gc?.();
        return reply({ type: 'rss', rss: process.memoryUsage().rss });
      case 'phase':
        return reply({ type: 'phase-done', ...(await phase(message)) });
      case 'stop':
        await close();
        reply({ type: 'stopped' });
        process.exit(0);
    }
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});
if (system !== 'sinho-gateway') reply({ type: 'ready' });
