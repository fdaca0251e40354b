/** Family accounts: create, view (members only), join (verified members), leave, remove (owner). */
import { randomUUID } from 'node:crypto';
import { Type } from 'typebox';
import { handleCommand, loadAggregate } from 'sinho';
import { family, familyStream } from '../domain/family.js';
import { member, memberStream } from '../domain/member.js';
import { requestMetadata, type App, type MoimApi, type RequireSession } from './context.js';
import { forbidden, notFound } from './problems.js';

const Id = Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false });
const Family = Type.Object({ familyId: Type.String(), name: Type.String(), owner: Type.String(), members: Type.Array(Type.String()) });

export async function familyRoutes(app: App, api: MoimApi, requireSession: RequireSession): Promise<void> {
  app.addHook('preHandler', requireSession);

  const load = async (id: string) => {
    const { state } = await loadAggregate(api.log, family, familyStream(id), { cache: api.stateCache });
    if (!state.familyId) throw notFound('The family account');
    return state;
  };
  const view = (s: Awaited<ReturnType<typeof load>>) => ({ familyId: s.familyId!, name: s.name, owner: s.owner, members: s.members });

  app.post(
    '/families',
    { schema: { body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 100 }) }, { additionalProperties: false }), response: { 201: Family } } },
    async (request, reply) => {
      const familyId = randomUUID();
      const result = await handleCommand(api.log, family, familyStream(familyId), { kind: 'create', familyId, name: request.body.name, owner: request.memberId }, { metadata: requestMetadata(request), cache: api.stateCache });
      return reply.code(201).send(view(result.state));
    },
  );

  app.get('/families/:id', { schema: { params: Id, response: { 200: Family } } }, async (request) => {
    const state = await load(request.params.id);
    if (!state.members.includes(request.memberId)) throw forbidden('Only members of a family account see it.');
    return view(state);
  });

  app.post('/families/:id/members', { schema: { params: Id, response: { 200: Family } } }, async (request) => {
    await load(request.params.id);
    // The service orchestrates: it asks the member aggregate, the family decides.
    const { state: me } = await loadAggregate(api.log, member, memberStream(request.memberId));
    const result = await handleCommand(api.log, family, familyStream(request.params.id), { kind: 'join', memberId: request.memberId, verified: me.verified }, { metadata: requestMetadata(request), cache: api.stateCache });
    return view(result.state);
  });

  app.delete(
    '/families/:id/members/:memberId',
    { schema: { params: Type.Object({ id: Type.String({ format: 'uuid' }), memberId: Type.String({ format: 'uuid' }) }, { additionalProperties: false }) } },
    async (request, reply) => {
      const state = await load(request.params.id);
      const { memberId } = request.params;
      const metadata = requestMetadata(request);
      if (memberId === request.memberId) {
        await handleCommand(api.log, family, familyStream(request.params.id), { kind: 'leave', memberId }, { metadata, cache: api.stateCache });
      } else {
        if (!state.members.includes(request.memberId)) throw forbidden('Only members of a family account can change it.');
        await handleCommand(api.log, family, familyStream(request.params.id), { kind: 'remove', memberId, by: request.memberId, reason: 'owner' }, { metadata, cache: api.stateCache });
      }
      return reply.code(204).send();
    },
  );
}
