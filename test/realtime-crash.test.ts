/**
 * Gateways as real processes: one SIGKILLed under 500 clients, and a rolling
 * restart (SIGTERM, drain, start again) of 3 nodes under 1,000 clients, while
 * notifications keep arriving. Every client must end with the complete
 * sequence of its notifications: no hole, no duplicate.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { openSqliteFeedStore } from '../src/log/sqlite/index.js';
import { gatewayNodeOf, type FeedStore } from '../src/realtime/index.js';
import { FeedClient } from '../src/client/index.js';
import { startChild, type Child } from './support/child.js';
import { sleep, until } from './support/wait.js';

const fixture = fileURLToPath(new URL('./fixtures/gateway-node.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'sinho-gw-crash-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Receiver {
  userId: string;
  client: FeedClient;
  cursors: number[];
  /** Disconnections seen, and go-aways received, by reason. */
  closes: number;
  goaways: string[];
}

function connectAll(users: string[], urlOf: (userId: string) => string): Receiver[] {
  return users.map((userId) => {
    const cursors: number[] = [];
    const client = new FeedClient({ url: urlOf(userId), token: `token-${userId}`, cursor: 0, WebSocket: WebSocket as never, reconnectInitialMs: 100, reconnectMaxMs: 1000 });
    const receiver: Receiver = { userId, client, cursors, closes: 0, goaways: [] };
    client.on('notification', (m) => cursors.push(m.cursor));
    client.on('close', () => receiver.closes++);
    client.on('goaway', (g) => receiver.goaways.push(g.reason));
    client.start();
    return receiver;
  });
}

/** Publishes a notification to a random group of `size` users every `everyMs` until stopped. */
function keepPublishing(feed: FeedStore, users: string[], size: number, nodes: number, everyMs: number) {
  let stop = false;
  let published = 0;
  const done = (async () => {
    while (!stop) {
      const start = Math.floor(Math.random() * (users.length - size));
      await feed.publish([{ sourceId: `n-${published}`, type: 'MemberJoined', data: { n: published }, recipients: users.slice(start, start + size) }], { nodeOf: (u) => gatewayNodeOf(u, nodes) });
      published++;
      await sleep(everyMs);
    }
  })();
  return {
    stop: async () => {
      stop = true;
      await done;
      return published;
    },
  };
}

async function assertComplete(feed: FeedStore, receivers: Receiver[]): Promise<void> {
  const heads = new Map<string, number>();
  for (const r of receivers) heads.set(r.userId, (await feed.bounds(r.userId)).head);
  await until(() => receivers.every((r) => r.cursors.length >= heads.get(r.userId)!), 30_000, 'every client to catch up');
  for (const r of receivers) {
    const head = heads.get(r.userId)!;
    assert.deepEqual(r.cursors, Array.from({ length: head }, (_, i) => i + 1), `user ${r.userId}: complete, in order, no duplicate`);
  }
}

describe('realtime gateways as processes', { timeout: 120_000 }, () => {
  it('a SIGKILLed gateway with 500 clients: restarted, every client resumes with zero holes and zero duplicates', async () => {
    const path = join(dir, 'kill.sqlite');
    const feed = openSqliteFeedStore({ path });
    let gateway: Child = startChild(fixture, [path, '0', '1', '0']);
    const port = Number((await gateway.waitFor('ready ')).split(' ')[1]);
    const users = Array.from({ length: 500 }, (_, i) => String(i));
    const receivers = connectAll(users, () => `ws://127.0.0.1:${port}/realtime`);
    try {
      await until(() => receivers.every((r) => r.cursors.length >= 0 && (r.client as unknown as { ws?: WebSocket }).ws?.readyState === 1), 20_000, '500 connected');
      const publisher = keepPublishing(feed, users, 30, 1, 5);
      await sleep(700);
      await gateway.kill();
      await sleep(300);
      gateway = startChild(fixture, [path, '0', '1', String(port)]);
      await gateway.waitFor('ready ');
      await sleep(700);
      const published = await publisher.stop();
      assert.ok(published > 50, `published ${published}`);
      await assertComplete(feed, receivers);
      assert.ok(receivers.every((r) => r.closes >= 1), 'every client lost its connection in the crash');
      const total = receivers.reduce((n, r) => n + r.cursors.length, 0);
      assert.ok(total >= published * 30 * 0.99, `deliveries ${total}`);
    } finally {
      for (const r of receivers) r.client.close();
      await gateway.kill();
      await feed.close();
    }
  });

  it('a rolling restart of 3 gateways with 1,000 clients while notifications arrive: every client complete, no hole, no duplicate', async () => {
    const path = join(dir, 'rolling.sqlite');
    const feed = openSqliteFeedStore({ path });
    const nodes: Child[] = [];
    const ports: number[] = [];
    for (let k = 0; k < 3; k++) {
      nodes[k] = startChild(fixture, [path, String(k), '3', '0']);
      ports[k] = Number((await nodes[k]!.waitFor('ready ')).split(' ')[1]);
    }
    const users = Array.from({ length: 1000 }, (_, i) => String(i));
    const receivers = connectAll(users, (u) => `ws://127.0.0.1:${ports[Number(u) % 3]}/realtime`);
    try {
      await until(() => receivers.every((r) => (r.client as unknown as { ws?: WebSocket }).ws?.readyState === 1), 30_000, '1,000 connected');
      const publisher = keepPublishing(feed, users, 40, 3, 5);
      for (let k = 0; k < 3; k++) {
        await sleep(400);
        const exited = new Promise<number | null>((r) => nodes[k]!.process.once('exit', (code) => r(code)));
        nodes[k]!.process.kill('SIGTERM');
        assert.equal(await exited, 0, `node ${k} drained and exited cleanly: ${nodes[k]!.stderr()}`);
        nodes[k] = startChild(fixture, [path, String(k), '3', String(ports[k])]);
        await nodes[k]!.waitFor('ready ');
      }
      await sleep(500);
      const published = await publisher.stop();
      assert.ok(published > 50, `published ${published}`);
      await assertComplete(feed, receivers);
      assert.ok(receivers.every((r) => r.goaways.includes('draining')), 'every client was drained by its node');
    } finally {
      for (const r of receivers) r.client.close();
      for (const node of nodes) await node.kill();
      await feed.close();
    }
  });
});
