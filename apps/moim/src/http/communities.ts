/** Communities: create, search, join, leave, and the member list (members only). */
import { randomUUID } from 'node:crypto';
import { Type } from 'typebox';
import { handleCommand, loadAggregate } from 'sinho';
import { community, communityStream } from '../domain/community.js';
import { requestMetadata, type App, type MoimApi, type RequireSession } from './context.js';
import { forbidden, notFound } from './problems.js';
import { settlementSummary, startSettlement } from '../settlement.js';

const Id = Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false });
const Community = Type.Object({ id: Type.String(), name: Type.String(), description: Type.String(), owner: Type.String(), members: Type.Integer(), createdAt: Type.String() });

export async function communityRoutes(app: App, api: MoimApi, requireSession: RequireSession): Promise<void> {
  app.addHook('preHandler', requireSession);

  /** The community as the log has it now (authoritative, not the read model). */
  const load = async (id: string) => {
    const { state } = await loadAggregate(api.log, community, communityStream(id), { cache: api.stateCache });
    if (!state.communityId) throw notFound('The community');
    return state;
  };

  app.post(
    '/communities',
    {
      schema: {
        body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 100 }), description: Type.String({ maxLength: 2000, default: '' }) }, { additionalProperties: false }),
        response: { 201: Type.Object({ communityId: Type.String() }) },
      },
    },
    async (request, reply) => {
      const communityId = randomUUID();
      const { name, description = '' } = request.body;
      await handleCommand(api.log, community, communityStream(communityId), { kind: 'create', communityId, name, description, owner: request.memberId }, { metadata: requestMetadata(request), cache: api.stateCache });
      return reply.code(201).send({ communityId });
    },
  );

  app.get(
    '/communities',
    {
      schema: {
        querystring: Type.Object(
          { q: Type.String({ maxLength: 100, default: '' }), limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }), offset: Type.Integer({ minimum: 0, maximum: 100_000, default: 0 }) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ items: Type.Array(Community) }) },
      },
    },
    async (request) => {
      const { q = '', limit = 20, offset = 0 } = request.query;
      return { items: await api.readModels.searchCommunities(q, limit, offset) };
    },
  );

  app.get('/communities/:id', { schema: { params: Id, response: { 200: Community } } }, async (request) => {
    const found = await api.readModels.community(request.params.id);
    if (!found) throw notFound('The community');
    return found;
  });

  app.post('/communities/:id/members', { schema: { params: Id, response: { 200: Type.Object({ joined: Type.Boolean() }) } } }, async (request) => {
    // An unknown community is the decider's COMMUNITY_NOT_FOUND (404).
    const result = await handleCommand(api.log, community, communityStream(request.params.id), { kind: 'join', memberId: request.memberId }, { metadata: requestMetadata(request), snapshotEvery: 50, cache: api.stateCache });
    return { joined: result.events.length > 0 };
  });

  app.delete('/communities/:id/members/me', { schema: { params: Id } }, async (request, reply) => {
    await load(request.params.id);
    await handleCommand(api.log, community, communityStream(request.params.id), { kind: 'leave', memberId: request.memberId }, { metadata: requestMetadata(request), cache: api.stateCache });
    return reply.code(204).send();
  });

  app.get(
    '/communities/:id/members',
    { schema: { params: Id, response: { 200: Type.Object({ items: Type.Array(Type.Object({ memberId: Type.String(), joinedAt: Type.String() })) }) } } },
    async (request) => {
      const state = await load(request.params.id);
      if (!state.members.includes(request.memberId)) throw forbidden('Only members of a community see its members.');
      return { items: await api.readModels.communityMembers(request.params.id) };
    },
  );

  app.get(
    '/communities/:id/online',
    { schema: { params: Id, response: { 200: Type.Object({ online: Type.Array(Type.String()) }) } } },
    async (request) => {
      const state = await load(request.params.id);
      if (!state.members.includes(request.memberId)) throw forbidden('Only members of a community see who is online.');
      return { online: await api.feed.online(state.members, Date.now()) };
    },
  );

  app.put(
    '/communities/:id/dues',
    { schema: { params: Id, body: Type.Object({ amount: Type.Integer({ minimum: 0, maximum: 1_000_000_000 }) }, { additionalProperties: false }), response: { 200: Type.Object({ amount: Type.Integer() }) } } },
    async (request) => {
      await load(request.params.id);
      const result = await handleCommand(api.log, community, communityStream(request.params.id), { kind: 'set-dues', amount: request.body.amount, by: request.memberId }, { metadata: requestMetadata(request), cache: api.stateCache });
      return { amount: result.state.dues };
    },
  );

  const Period = Type.String({ pattern: '^[0-9]{4}-(0[1-9]|1[0-2])$' });
  const Summary = Type.Object({
    runId: Type.String(),
    period: Type.String(),
    amount: Type.Integer(),
    members: Type.Integer(),
    queued: Type.Integer(),
    succeeded: Type.Integer(),
    failed: Type.Array(Type.Object({ memberId: Type.String(), reason: Type.String() })),
    done: Type.Boolean(),
  });

  app.post(
    '/communities/:id/settlements',
    { schema: { params: Id, body: Type.Object({ period: Period }, { additionalProperties: false }), response: { 202: Summary } } },
    async (request, reply) => {
      await load(request.params.id);
      // Running the same period again resumes it and charges nobody twice.
      const summary = await startSettlement(api.log, request.params.id, request.body.period, request.memberId, requestMetadata(request));
      return reply.code(202).send(summary);
    },
  );

  app.get(
    '/communities/:id/settlements/:period',
    { schema: { params: Type.Object({ id: Type.String({ format: 'uuid' }), period: Period }, { additionalProperties: false }), response: { 200: Summary } } },
    async (request) => {
      const state = await load(request.params.id);
      if (state.owner !== request.memberId) throw forbidden('Only the owner sees settlements.');
      const summary = await settlementSummary(api.log, request.params.id, request.params.period);
      if (!summary) throw notFound('The settlement');
      return summary;
    },
  );
}
