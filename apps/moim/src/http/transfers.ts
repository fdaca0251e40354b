/** Accounts and transfers: deposits (a top-up), the balance, transfer requests and their status. */
import { randomUUID } from 'node:crypto';
import { Type } from 'typebox';
import { loadAggregate } from 'sinho';
import { account, accountStream, available } from '../domain/account.js';
import { transfer, transferStream } from '../domain/transfer.js';
import { deposit, requestTransfer } from '../transfers.js';
import { requestMetadata, type App, type MoimApi, type RequireSession } from './context.js';
import { forbidden, notFound } from './problems.js';

const Amount = Type.Integer({ minimum: 1, maximum: 1_000_000_000 });
const Transfer = Type.Object({
  transferId: Type.String(),
  from: Type.String(),
  to: Type.String(),
  amount: Type.Integer(),
  status: Type.String(),
  checks: Type.Integer(),
  reason: Type.Optional(Type.String()),
});
const Account = Type.Object({ balance: Type.Integer(), available: Type.Integer() });

export async function transferRoutes(app: App, api: MoimApi, requireSession: RequireSession): Promise<void> {
  app.addHook('preHandler', requireSession);

  const accountOf = async (memberId: string) => {
    const { state } = await loadAggregate(api.log, account, accountStream(memberId));
    return { balance: state.balance, available: available(state) };
  };

  app.get('/me/account', { schema: { response: { 200: Account } } }, async (request) => accountOf(request.memberId));

  app.post('/me/deposits', { schema: { body: Type.Object({ amount: Amount }, { additionalProperties: false }), response: { 200: Account } } }, async (request) => {
    await deposit(api.log, request.memberId, request.body.amount, requestMetadata(request));
    return accountOf(request.memberId);
  });

  app.post(
    '/transfers',
    {
      schema: {
        body: Type.Object({ to: Type.String({ format: 'uuid' }), amount: Amount }, { additionalProperties: false }),
        response: { 202: Type.Object({ transferId: Type.String(), status: Type.String() }) },
      },
    },
    async (request, reply) => {
      const transferId = randomUUID();
      await requestTransfer(api.log, { transferId, from: request.memberId, to: request.body.to, amount: request.body.amount }, requestMetadata(request));
      // Accepted: the ledger's answer comes later (GET /transfers/:id).
      return reply.code(202).send({ transferId, status: 'requested' });
    },
  );

  app.get('/transfers/:id', { schema: { params: Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false }), response: { 200: Transfer } } }, async (request) => {
    const { state } = await loadAggregate(api.log, transfer, transferStream(request.params.id));
    if (!state.transferId) throw notFound('The transfer');
    if (state.from !== request.memberId && state.to !== request.memberId) throw forbidden('Only the payer and the payee see a transfer.');
    return { transferId: state.transferId, from: state.from, to: state.to, amount: state.amount, status: state.status, checks: state.checks, ...(state.reason ? { reason: state.reason } : {}) };
  });
}
