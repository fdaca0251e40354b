/**
 * moim's session stores: the same behaviour on SQLite and on Redis, logout
 * revocation across processes, and a Redis restart during logins.
 */
import assert from 'node:assert/strict';
import { execFileSync, execSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CachedSessionStore, SqliteSessionStore, type SessionStore } from '../apps/moim/src/sessions.js';
import { RedisSessionStore } from '../apps/moim/src/sessions-redis.js';
import { PostgresSessionStore } from '../apps/moim/src/sessions-postgres.js';
import { POSTGRES_URL, REDIS_URL, dropSchema, postgresSkipReason, randomName, redisSkipReason, exclusiveDuringSuite } from './support/services.js';
import { sleep, until } from './support/wait.js';

const skip = await redisSkipReason();
const dir = mkdtempSync(join(tmpdir(), 'moim-sessions-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

function sessionStoreConformance(name: string, open: () => Promise<SessionStore>, options: { skip?: string } = {}) {
  describe(`session store: ${name}`, { skip: options.skip }, () => {
    it('creates, finds, expires and deletes sessions; stores no usable token', async () => {
      const store = await open();
      try {
        const { token, expiresAt } = await store.create('member-1', 60_000);
        assert.ok(expiresAt > Date.now());
        assert.deepEqual(await store.get(token), { memberId: 'member-1', expiresAt });
        assert.equal(await store.get(`${token}x`), undefined);
        const short = await store.create('member-2', 50);
        await sleep(80);
        assert.equal(await store.get(short.token), undefined, 'expired');
        await store.delete(token);
        assert.equal(await store.get(token), undefined, 'deleted');
      } finally {
        await store.close();
      }
    });
  });
}

sessionStoreConformance('sqlite', async () => new SqliteSessionStore(join(dir, `sessions-${n++}.sqlite`)));
sessionStoreConformance('redis', () => RedisSessionStore.connect(REDIS_URL), { skip });
const pgSkip = await postgresSkipReason();
const pgSchemas: string[] = [];
after(async () => {
  for (const schema of pgSchemas) await dropSchema(schema);
});
sessionStoreConformance(
  'postgres',
  () => {
    const schema = randomName('moim_sessions').toLowerCase();
    pgSchemas.push(schema);
    return PostgresSessionStore.open({ connectionString: POSTGRES_URL, schema });
  },
  { skip: pgSkip },
);

describe('sessions on Redis', { skip, timeout: 240_000 }, () => {
  // Another file restarts the shared server: never at the same time as these tests.
  exclusiveDuringSuite('redis');

  it('a logout in one process revokes the session in every process at once, despite their caches', async () => {
    const caches: CachedSessionStore[] = [];
    const open = async () => {
      let cache: CachedSessionStore | undefined;
      const store = await RedisSessionStore.connect(REDIS_URL, { onRevoked: (hash) => cache?.evict(hash) });
      cache = new CachedSessionStore(store, 60_000);
      caches.push(cache);
      return cache;
    };
    const [a, b] = [await open(), await open()];
    const { token } = await a.create('member-9', 60_000);
    assert.equal((await b.get(token))?.memberId, 'member-9'); // now cached in b for a minute
    await a.delete(token);
    await until(async () => (await b.get(token)) === undefined, 2000, 'b to drop the revoked session');
    for (const c of caches) await c.close();
  });

  it('refuses an unreachable Redis at start-up with a clear error', async () => {
    await assert.rejects(RedisSessionStore.connect('redis://127.0.0.1:1', { connectTimeoutMs: 1000 }), /Redis at redis:\/\/127\.0\.0\.1:1 is unreachable/);
  });

  it('a Redis restart during logins: requests wait and succeed, none fails', async () => {
    const store = await RedisSessionStore.connect(REDIS_URL);
    const failures: string[] = [];
    let lostInRestart = 0;
    let done = 0;
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        try {
          const { token } = await store.create('member-r', 60_000);
          // A session written just before the restart is gone with it (this Redis keeps nothing on disk):
          // that login's user logs in again; it is not a failed request.
          if ((await store.get(token))?.memberId === 'member-r') done++;
          else lostInRestart++;
        } catch (error) {
          failures.push((error as Error).message);
        }
      }
    })();
    await until(() => done > 50, 10_000, 'logins before the restart');
    // The machine's Redis keeps nothing on disk; restart it as the environment starts it.
    const startRedis = () =>
      execSync(`redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log`, { stdio: 'ignore' });
    const before = done;
    try {
      execFileSync('redis-cli', ['-u', REDIS_URL, 'shutdown', 'nosave'], { stdio: 'ignore' });
      await sleep(500);
    } finally {
      startRedis(); // whatever happened, the machine's Redis runs again
    }
    await until(() => done > before + 50, 20_000, 'logins after the restart');
    stop = true;
    await loop;
    assert.deepEqual(failures, [], 'no request failed');
    assert.ok(lostInRestart <= 1, `at most the session written as Redis stopped is lost (${lostInRestart})`);
    await store.close();
  });
});
