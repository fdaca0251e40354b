/** moim HTTP helpers for tests that drive the API in-process (inject). */
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { sleep } from './wait.js';


/** `app()` is read at each call: the API is usually started in a `before` hook. */
export function moimClient(app: () => FastifyInstance, options: { emailPrefix: string; settleTimeoutMs: number }) {
  let n = 0;
  const call = async (method: string, url: string, token?: string, body?: unknown) => {
    const res = await app().inject({ method: method as 'GET', url, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) }, payload: body ? JSON.stringify(body) : undefined });
    return { status: res.statusCode, body: res.body ? (JSON.parse(res.body) as Record<string, any>) : {} };
  };
  /** Registers and logs in a new member. */
  const member = async () => {
    const email = `${options.emailPrefix}${n++}-${Date.now()}@example.com`;
    const { body } = await call('POST', '/members', undefined, { email, displayName: options.emailPrefix.toUpperCase(), password: 'long enough' });
    const login = await call('POST', '/sessions', undefined, { email, password: 'long enough' });
    return { id: body.memberId as string, token: login.body.token as string };
  };
  /** Waits until transfer `id` is confirmed or failed, and returns it. */
  const settled = async (token: string, id: string) => {
    const deadline = Date.now() + options.settleTimeoutMs;
    for (;;) {
      const t = await call('GET', `/transfers/${id}`, token);
      if (t.body.status === 'confirmed' || t.body.status === 'failed') return t.body;
      assert.ok(Date.now() < deadline, `transfer ${id} is still ${t.body.status}`);
      await sleep(25);
    }
  };
  return { call, member, settled };
}
