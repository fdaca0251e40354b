/**
 * The main job as a user runs it: `moim start` (what `npm start` runs, on
 * the built code) on real ports, with the worker and the ledger simulator in
 * processes of their own, driven over HTTP through the seeds' story:
 * members verify, a family account loses a member whose identity was reset,
 * a join reaches the membership read model, a transfer is confirmed after
 * the ledger's finality and another fails, a settlement run twice charges
 * once, `moim verify` finds no discrepancy, and SIGTERM stops everything.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { FeedClient, type NotificationMessage } from '../src/client/index.js';
import { sleep } from './support/wait.js';

const main = fileURLToPath(new URL('../apps/moim/dist/main.js', import.meta.url));

describe('moim start: the seeds story over real ports', { timeout: 90_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'moim-start-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('runs the whole story end to end and stops on SIGTERM', async () => {
    const env = { ...process.env, MOIM_DATA_DIR: dir, MOIM_LOG: 'off', MOIM_CONFIRMATION_DELAY_MS: '100', LEDGER_FINALITY_MS: '200', LEDGER_FAILURE_RATE: '0' };
    const child = spawn(process.execPath, [main, 'start', '--port', '0', '--ledger-port', '0', '--gateway-port', '0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const deadline = Date.now() + 60_000;
    const until = async <T>(probe: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> => {
      for (;;) {
        const v = await probe();
        if (ok(v)) return v;
        assert.ok(Date.now() < deadline && child.exitCode === null, `${what}: ${JSON.stringify(v)}; output: ${out}`);
        await sleep(25);
      }
    };
    try {
      await until(async () => out, (o) => /API listening on http/.test(o) && o.includes('moim worker') && o.includes('moim notifications'), 'moim to start');
      const base = /API listening on (http:\/\/\S+)/.exec(out)![1]!;
      const gatewayUrl = /moim notifications: WebSocket (ws:\/\/\S+)/.exec(out)![1]!;
      const ledger = /ledger simulator listening on (http:\/\/\S+)/.exec(out)![1]!;
      const http = async (method: string, path: string, token?: string, body?: unknown) => {
        const res = await fetch(`${base}${path}`, {
          method,
          headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(token ? { authorization: `Bearer ${token}` } : {}) },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        const text = await res.text();
        return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, any> };
      };
      assert.equal((await http('GET', '/readyz')).status, 200);

      // Three members register, sign in and verify their identity.
      const members: { id: string; token: string }[] = [];
      for (const name of ['minji', 'jun', 'seo']) {
        const reg = await http('POST', '/members', undefined, { email: `${name}@example.com`, displayName: name, password: 'long enough' });
        const login = await http('POST', '/sessions', undefined, { email: `${name}@example.com`, password: 'long enough' });
        assert.equal((await http('POST', '/me/identity-verification', login.body.token)).body.verified, true);
        members.push({ id: reg.body.memberId, token: login.body.token });
      }
      const [minji, jun, seo] = members as [(typeof members)[0], (typeof members)[0], (typeof members)[0]];

      // A family account; one member's identity is reset and the family module removes them, asynchronously.
      const fam = (await http('POST', '/families', minji.token, { name: 'Kim family' })).body.familyId as string;
      await http('POST', `/families/${fam}/members`, jun.token);
      await http('POST', `/families/${fam}/members`, seo.token);
      assert.equal((await http('GET', `/families/${fam}`, minji.token)).body.members.length, 3);
      await http('POST', '/me/identity-reset', jun.token);
      await until(() => http('GET', `/families/${fam}`, minji.token), (r) => !r.body.members.includes(jun.id), 'jun to leave the family');

      // A community; joins reach the membership read model, and every other member is notified over the gateway.
      const community = (await http('POST', '/communities', minji.token, { name: 'Han river runners' })).body.communityId as string;
      const minjiFeed: NotificationMessage[] = [];
      const client = new FeedClient({ url: gatewayUrl, token: minji.token, WebSocket: WebSocket as never });
      client.on('notification', (m) => minjiFeed.push(m)).start();
      try {
        await until(() => http('GET', `/communities/${community}/online`, minji.token), (r) => r.body.online?.includes(minji.id), 'minji online');
        await http('POST', `/communities/${community}/members`, jun.token);
        await http('POST', `/communities/${community}/members`, seo.token);
        await until(() => http('GET', `/communities/${community}/members`, seo.token), (r) => r.body.items?.length === 3, 'the membership read model');
        await until(async () => minjiFeed.length, (n) => n === 2, 'two join notifications to minji');
        assert.deepEqual(minjiFeed.map((m) => [m.cursor, m.type, (m.data as { memberId: string }).memberId, (m.data as { communityName: string }).communityName]), [
          [1, 'MemberJoined', jun.id, 'Han river runners'],
          [2, 'MemberJoined', seo.id, 'Han river runners'],
        ]);
        assert.equal((await http('GET', `/communities/${community}/online`, jun.token)).status, 200);
      } finally {
        client.close();
      }
      // jun, a member before seo, got seo's join in his feed though he was offline: it waits for him.
      const junFeed: NotificationMessage[] = [];
      const junClient = new FeedClient({ url: gatewayUrl, token: jun.token, WebSocket: WebSocket as never });
      junClient.on('notification', (m) => junFeed.push(m)).start();
      await until(async () => junFeed.length, (n) => n === 1, "seo's join in jun's feed");
      junClient.close();
      assert.equal((junFeed[0]!.data as { memberId: string }).memberId, seo.id);

      // Transfers against the ledger: one confirmed after finality, one forced to fail.
      await http('POST', '/me/deposits', jun.token, { amount: 500 });
      const settled = (id: string) => until(() => http('GET', `/transfers/${id}`, jun.token), (r) => r.body.status === 'confirmed' || r.body.status === 'failed', 'the transfer');
      const t1 = (await http('POST', '/transfers', jun.token, { to: seo.id, amount: 200 })).body.transferId as string;
      assert.equal((await settled(t1)).body.status, 'confirmed');
      await fetch(`${ledger}/simulate/fail-next`, { method: 'POST' });
      const t2 = (await http('POST', '/transfers', jun.token, { to: seo.id, amount: 100 })).body.transferId as string;
      assert.equal((await settled(t2)).body.status, 'failed');
      assert.deepEqual((await http('GET', '/me/account', jun.token)).body, { balance: 300, available: 300 });
      assert.deepEqual((await http('GET', '/me/account', seo.token)).body, { balance: 200, available: 200 });

      // Settlement of monthly dues, run twice for one period: charged once.
      await http('PUT', `/communities/${community}/dues`, minji.token, { amount: 50 });
      for (let run = 0; run < 2; run++) {
        assert.equal((await http('POST', `/communities/${community}/settlements`, minji.token, { period: '2026-11' })).status, 202);
        const s = await until(() => http('GET', `/communities/${community}/settlements/2026-11`, minji.token), (r) => r.body.done === true, 'the settlement');
        assert.equal(s.body.succeeded, 2);
      }
      assert.equal((await http('GET', '/me/account', jun.token)).body.balance, 250);
      assert.equal((await http('GET', '/me/account', seo.token)).body.balance, 150);
      // The read models have caught up before the store is verified.
      await until(async () => (await fetch(`${base}/metrics`)).text(), (m) => /sinho_consumer_group_lag\{group="moim-read-models@v2"\} 0/.test(m), 'the read models to catch up');
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, out);

    // The history verification over what this run wrote: no discrepancy.
    const verify = spawn(process.execPath, [main, 'verify'], { env: { ...process.env, MOIM_DATA_DIR: dir } });
    let report = '';
    verify.stdout.on('data', (d: Buffer) => (report += d.toString()));
    assert.equal(await new Promise((r) => verify.on('exit', r)), 0, report);
    assert.match(report, /0 discrepancies/);
    assert.match(report, /[1-9]\d* balances/);
  });
});

describe('moim worker priority', { timeout: 60_000, skip: process.platform !== 'linux' && 'thread priorities are read from /proc (Linux)' }, () => {
  it('runs every thread of the worker process at the lower priority, not only its main thread', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moim-nice-'));
    const child = spawn(process.execPath, [main, 'start', '--role', 'worker'], { env: { ...process.env, MOIM_DATA_DIR: dir, MOIM_LOG: 'off', MOIM_WORKER_NICE: '7' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((r) => child.on('exit', r));
    try {
      const deadline = Date.now() + 30_000;
      while (!out.includes('moim worker:')) {
        assert.ok(Date.now() < deadline && child.exitCode === null, `the worker did not start: ${out}`);
        await sleep(25);
      }
      // /proc/<pid>/task/<tid>/stat: the 19th field is the thread's nice value (after the command in parentheses).
      const nices = readdirSync(`/proc/${child.pid}/task`).map((tid) => {
        const stat = readFileSync(`/proc/${child.pid}/task/${tid}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
      });
      assert.ok(nices.length > 5, `Node runs several threads: ${nices.length}`);
      assert.deepEqual([...new Set(nices)], [7], `every thread at nice 7: ${nices.join(' ')}`);
    } finally {
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
