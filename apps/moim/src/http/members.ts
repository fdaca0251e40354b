/** Registration, sessions, and the signed-in member's own identity. */
import { randomUUID, createHash } from 'node:crypto';
import { Type } from 'typebox';
import { handleCommand, loadAggregate, WrongExpectedRevision } from 'sinho';
import { member, memberStream } from '../domain/member.js';
import { hashPassword, verifyPassword } from '../passwords.js';
import { RateLimiter } from '../rate-limit.js';
import { requestMetadata, type App, type MoimApi, type RequireSession } from './context.js';
import { HttpProblem, notFound } from './problems.js';

/** One stream per e-mail address claims it: registering appends to it with `noStream`, so two registrations cannot share an address. */
export const emailStream = (email: string): string => `email-${createHash('sha256').update(email.trim().toLowerCase()).digest('hex')}`;

const Email = Type.String({ format: 'email', maxLength: 254 });
const Password = Type.String({ minLength: 8, maxLength: 200 });
const Me = Type.Object({ memberId: Type.String(), email: Type.String(), displayName: Type.String(), verified: Type.Boolean() });

export async function memberRoutes(app: App, api: MoimApi, requireSession: RequireSession, loginsPerMinute: number, loginsPerMinutePerAddress: number): Promise<void> {
  const byEmail = new RateLimiter(loginsPerMinute, 60_000);
  const byAddress = new RateLimiter(loginsPerMinutePerAddress, 60_000);
  const badLogin = () => new HttpProblem(401, 'INVALID_CREDENTIALS', 'E-mail or password is wrong.');

  app.post(
    '/members',
    {
      schema: {
        body: Type.Object({ email: Email, displayName: Type.String({ minLength: 1, maxLength: 80 }), password: Password }, { additionalProperties: false }),
        response: { 201: Type.Object({ memberId: Type.String() }) },
      },
    },
    async (request, reply) => {
      const { email, displayName, password } = request.body;
      const memberId = randomUUID();
      const passwordHash = await hashPassword(password);
      const normalized = email.trim().toLowerCase();
      const metadata = requestMetadata(request);
      try {
        await api.log.appendMulti([
          { stream: emailStream(normalized), events: [{ type: 'EmailClaimed', data: { memberId }, metadata }], expectedRevision: 'noStream' },
          { stream: memberStream(memberId), events: [{ type: 'MemberRegistered', data: { memberId, email: normalized, displayName, passwordHash }, metadata }], expectedRevision: 'noStream' },
        ]);
      } catch (error) {
        if (error instanceof WrongExpectedRevision) throw new HttpProblem(409, 'EMAIL_TAKEN', 'This e-mail address is already registered.');
        throw error;
      }
      return reply.code(201).send({ memberId });
    },
  );

  app.post(
    '/sessions',
    {
      schema: {
        body: Type.Object({ email: Email, password: Password }, { additionalProperties: false }),
        response: { 201: Type.Object({ token: Type.String(), expiresAt: Type.String() }) },
      },
    },
    async (request, reply) => {
      const email = request.body.email.trim().toLowerCase();
      const wait = Math.max(byEmail.hit(email), byAddress.hit(request.ip));
      if (wait > 0) {
        reply.header('retry-after', Math.ceil(wait / 1000));
        throw new HttpProblem(429, 'RATE_LIMITED', 'Too many login attempts; try again later.');
      }
      const [claim] = await collect(api.log.readStream(emailStream(email), { limit: 1 }));
      if (!claim) throw badLogin();
      const { state } = await loadAggregate(api.log, member, memberStream((claim.data as { memberId: string }).memberId));
      if (!state.memberId || !(await verifyPassword(request.body.password, state.passwordHash))) throw badLogin();
      const session = await api.sessions.create(state.memberId, api.sessionTtlMs);
      return reply.code(201).send({ token: session.token, expiresAt: new Date(session.expiresAt).toISOString() });
    },
  );

  app.delete('/sessions/current', { preHandler: requireSession }, async (request, reply) => {
    await api.sessions.delete(request.headers.authorization!.slice(7).trim());
    return reply.code(204).send();
  });

  const me = async (memberId: string) => {
    const { state } = await loadAggregate(api.log, member, memberStream(memberId));
    if (!state.memberId) throw notFound('The member');
    return { memberId: state.memberId, email: state.email, displayName: state.displayName, verified: state.verified };
  };

  app.get('/me', { preHandler: requireSession, schema: { response: { 200: Me } } }, async (request) => me(request.memberId));

  // Identity verification is an external check in the seeds (a phone or ID
  // provider); moim records its outcome.
  app.post('/me/identity-verification', { preHandler: requireSession, schema: { response: { 200: Me } } }, async (request) => {
    await handleCommand(api.log, member, memberStream(request.memberId), { kind: 'verify-identity' }, { metadata: requestMetadata(request) });
    return me(request.memberId);
  });

  app.post('/me/identity-reset', { preHandler: requireSession, schema: { response: { 200: Me } } }, async (request) => {
    await handleCommand(api.log, member, memberStream(request.memberId), { kind: 'reset-identity' }, { metadata: requestMetadata(request) });
    return me(request.memberId);
  });
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}
