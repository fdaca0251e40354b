/**
 * moim's HTTP API in-process (fastify inject), with the worker role running
 * in the same process on the same store, once on the embedded default (SQLite
 * files) and once on PostgreSQL (log, read models and feeds in a schema): members and sessions, communities
 * and their read model, family accounts and the identity-reset policy, and
 * bad input on every endpoint (the right 4xx, and nothing written).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startApi, startWorker, type ApiRole, type WorkerRole } from '../apps/moim/src/moim.js';
import type { EventLog } from '../src/index.js';
import { POSTGRES_URL, dropSchema, postgresSkipReason, randomName } from './support/services.js';
import { eventually } from './support/wait.js';

const postgresSkip = await postgresSkipReason();

for (const store of ['sqlite', 'postgres'] as const) describe(`moim API (${store})`, { timeout: 60_000, skip: store === 'postgres' ? postgresSkip : undefined }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'moim-'));
  const schema = randomName('moim');
  let api: ApiRole & { log: EventLog };
  let worker: WorkerRole;
  let n = 0;

  before(async () => {
    const config = { dataDir: dir, sessionTtlMs: 3_600_000, ...(store === 'postgres' ? { postgresUrl: POSTGRES_URL, postgresSchema: schema } : {}) };
    api = await startApi(config, { logger: false, loginAttemptsPerMinute: 5 });
    worker = await startWorker(config);
  });
  after(async () => {
    await worker?.close();
    await api?.close();
    rmSync(dir, { recursive: true, force: true });
    if (store === 'postgres') {
      await dropSchema(schema);
      await dropSchema(`${schema}_feed`);
    }
  });

  const call = async (method: string, url: string, options: { token?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {}) => {
    const res = await api.app.inject({
      method: method as 'GET',
      url,
      headers: { ...(options.token ? { authorization: `Bearer ${options.token}` } : {}), ...(options.body !== undefined || options.raw ? { 'content-type': 'application/json' } : {}), ...options.headers },
      payload: options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body)),
    });
    return { status: res.statusCode, type: String(res.headers['content-type'] ?? ''), body: res.body ? (JSON.parse(res.body) as Record<string, any>) : {} };
  };

  /** Registers and signs in a fresh member. */
  const member = async (name = `m${n++}`) => {
    const email = `${name}-${Date.now()}@example.com`;
    const reg = await call('POST', '/members', { body: { email, displayName: name, password: 'correct horse' } });
    assert.equal(reg.status, 201);
    const login = await call('POST', '/sessions', { body: { email, password: 'correct horse' } });
    assert.equal(login.status, 201);
    return { id: reg.body.memberId as string, email, token: login.body.token as string };
  };

  /** Asserts the call is refused with `status`/`code` and appended nothing to the log. */
  const refused = async (status: number, code: string, ...args: Parameters<typeof call>) => {
    const head = await api.log.headPosition();
    const res = await call(...args);
    assert.equal(res.status, status, `${args[0]} ${args[1]}: ${JSON.stringify(res.body)}`);
    assert.equal(res.body.code, code);
    assert.match(res.type, /application\/problem\+json/);
    assert.equal(res.body.stack, undefined);
    assert.equal(await api.log.headPosition(), head, 'nothing was appended');
    return res;
  };

  it('registers, signs in and out, and refuses bad credentials and bad input', async () => {
    const a = await member('alice');
    const me = await call('GET', '/me', { token: a.token });
    assert.deepEqual(me.body, { memberId: a.id, email: a.email, displayName: 'alice', verified: false });
    await refused(409, 'EMAIL_TAKEN', 'POST', '/members', { body: { email: a.email.toUpperCase(), displayName: 'again', password: 'whatever1' } });
    await refused(401, 'INVALID_CREDENTIALS', 'POST', '/sessions', { body: { email: a.email, password: 'wrong password' } });
    await refused(401, 'INVALID_CREDENTIALS', 'POST', '/sessions', { body: { email: 'nobody@example.com', password: 'wrong password' } });
    await refused(400, 'VALIDATION_FAILED', 'POST', '/members', { body: { email: 'not-an-email', displayName: 'x', password: 'long enough' } });
    await refused(400, 'VALIDATION_FAILED', 'POST', '/members', { body: { email: 'x@example.com', displayName: 'x', password: 'short' } });
    await refused(400, 'VALIDATION_FAILED', 'POST', '/members', { body: { email: 'x@example.com', displayName: 42, password: 'long enough' } });
    await refused(400, 'VALIDATION_FAILED', 'POST', '/members', { body: { email: 'x@example.com', displayName: 'x', password: 'long enough', admin: true } });
    await refused(400, 'MALFORMED_JSON', 'POST', '/members', { raw: '{"email":' });
    await refused(413, 'PAYLOAD_TOO_LARGE', 'POST', '/members', { body: { email: 'x@example.com', displayName: 'x'.repeat(20_000), password: 'long enough' } });
    await refused(401, 'UNAUTHORIZED', 'GET', '/me');
    await refused(401, 'UNAUTHORIZED', 'GET', '/me', { token: 'forged' });
    assert.equal((await call('DELETE', '/sessions/current', { token: a.token })).status, 204);
    await refused(401, 'UNAUTHORIZED', 'GET', '/me', { token: a.token });
    await refused(404, 'NOT_FOUND', 'GET', '/no-such-route');
  });

  it('rate-limits login attempts per e-mail address', async () => {
    const a = await member('limited');
    for (let i = 0; i < 4; i++) await call('POST', '/sessions', { body: { email: a.email, password: 'wrong password' } });
    const limited = await refused(429, 'RATE_LIMITED', 'POST', '/sessions', { body: { email: a.email, password: 'correct horse' } });
    assert.ok(limited.body.detail);
  });

  it('creates, finds, joins and leaves communities; only members see the member list', async () => {
    const owner = await member('owner');
    const joiner = await member('joiner');
    const outsider = await member('outsider');
    const name = `Hiking ${Date.now()}`;
    const created = await call('POST', '/communities', { token: owner.token, body: { name, description: 'Saturdays' } });
    assert.equal(created.status, 201);
    const id = created.body.communityId as string;
    const found = await eventually(() => call('GET', `/communities?q=${encodeURIComponent(name.slice(0, 10))}`, { token: joiner.token }), (r) => r.body.items?.some((c: { id: string }) => c.id === id), 'the read model');
    assert.equal(found.status, 200);
    assert.deepEqual((await call('POST', `/communities/${id}/members`, { token: joiner.token })).body, { joined: true });
    assert.deepEqual((await call('POST', `/communities/${id}/members`, { token: joiner.token })).body, { joined: false }, 'joining twice changes nothing');
    const members = await eventually(() => call('GET', `/communities/${id}/members`, { token: joiner.token }), (r) => r.body.items?.length === 2, 'the membership read model');
    assert.deepEqual(members.body.items.map((m: { memberId: string }) => m.memberId).sort(), [owner.id, joiner.id].sort());
    assert.equal((await call('GET', `/communities/${id}`, { token: outsider.token })).body.members, 2);
    await refused(403, 'FORBIDDEN', 'GET', `/communities/${id}/members`, { token: outsider.token });
    await refused(404, 'NOT_FOUND', 'POST', `/communities/${crypto.randomUUID()}/members`, { token: outsider.token });
    await refused(400, 'VALIDATION_FAILED', 'POST', '/communities/not-a-uuid/members', { token: outsider.token });
    await refused(400, 'VALIDATION_FAILED', 'POST', '/communities', { token: owner.token, body: { name: '' } });
    await refused(400, 'VALIDATION_FAILED', 'GET', '/communities?limit=1000', { token: owner.token });
    await refused(422, 'OWNER_CANNOT_LEAVE', 'DELETE', `/communities/${id}/members/me`, { token: owner.token });
    assert.equal((await call('DELETE', `/communities/${id}/members/me`, { token: joiner.token })).status, 204);
    await eventually(() => call('GET', `/communities/${id}`, { token: owner.token }), (r) => r.body.members === 1, 'the member count');
    await refused(401, 'UNAUTHORIZED', 'POST', '/communities', { body: { name: 'x' } });
  });

  it('runs family accounts: verified members join, the owner removes, and an identity reset removes the member everywhere', async () => {
    const owner = await member('parent');
    const child = await member('child');
    const other = await member('other');
    const f1 = await call('POST', '/families', { token: owner.token, body: { name: 'Kims' } });
    const f2 = await call('POST', '/families', { token: owner.token, body: { name: 'Kims abroad' } });
    assert.equal(f1.status, 201);
    const [id1, id2] = [f1.body.familyId as string, f2.body.familyId as string];
    await refused(422, 'IDENTITY_NOT_VERIFIED', 'POST', `/families/${id1}/members`, { token: child.token });
    assert.equal((await call('POST', '/me/identity-verification', { token: child.token })).body.verified, true);
    assert.deepEqual((await call('POST', `/families/${id1}/members`, { token: child.token })).body.members, [owner.id, child.id]);
    assert.equal((await call('POST', `/families/${id2}/members`, { token: child.token })).status, 200);
    await refused(403, 'FORBIDDEN', 'GET', `/families/${id1}`, { token: other.token });
    await refused(403, 'FORBIDDEN', 'DELETE', `/families/${id1}/members/${child.id}`, { token: other.token });
    await refused(404, 'NOT_FOUND', 'GET', `/families/${crypto.randomUUID()}`, { token: owner.token });
    // The member module only records the reset; the family module's own policy removes the member, asynchronously.
    const reset = await call('POST', '/me/identity-reset', { token: child.token });
    assert.equal(reset.body.verified, false);
    for (const id of [id1, id2]) {
      await eventually(() => call('GET', `/families/${id}`, { token: owner.token }), (r) => r.status === 200 && !r.body.members.includes(child.id), `the policy to remove the member from ${id}`);
    }
    assert.equal(worker.familyPolicy.stats().deadLetters, 0);
    // The owner removes a member; a member cannot remove the owner.
    await call('POST', '/me/identity-verification', { token: other.token });
    await call('POST', `/families/${id1}/members`, { token: other.token });
    await refused(422, 'NOT_FAMILY_OWNER', 'DELETE', `/families/${id1}/members/${owner.id}`, { token: other.token });
    assert.equal((await call('DELETE', `/families/${id1}/members/${other.id}`, { token: owner.token })).status, 204);
    assert.deepEqual((await call('GET', `/families/${id1}`, { token: owner.token })).body.members, [owner.id]);
  });

  it('answers the probes, serves its OpenAPI document and docs page, and exposes metrics', async () => {
    assert.deepEqual((await call('GET', '/healthz')).body, { status: 'ok' });
    assert.deepEqual((await call('GET', '/readyz')).body, { status: 'ready' });
    const openapi = await api.app.inject({ method: 'GET', url: '/docs/json' });
    const doc = JSON.parse(openapi.body) as { openapi: string; paths: Record<string, unknown> };
    assert.match(doc.openapi, /^3\./);
    for (const path of ['/members', '/sessions', '/communities', '/communities/{id}/members', '/families/{id}', '/transfers']) assert.ok(doc.paths[path], `${path} documented`);
    const page = await api.app.inject({ method: 'GET', url: '/docs/' });
    assert.equal(page.statusCode, 200);
    assert.match(String(page.headers['content-type']), /html/);
    const metrics = await api.app.inject({ method: 'GET', url: '/metrics' });
    assert.match(metrics.body, /http_request_duration_seconds_bucket\{[^}]*route="\/members"/);
    assert.match(metrics.body, /nodejs_eventloop_lag_seconds/);
    assert.match(metrics.body, /sinho_consumer_group_lag\{group="moim-read-models@v2"\} \d+/);
    assert.match(metrics.body, /sinho_consumer_group_dead_letters\{group="family-identity-policy"\} 0/);
  });
});
