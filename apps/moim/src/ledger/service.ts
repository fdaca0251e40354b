/**
 * The external ledger, simulated as its own small HTTP service (like a
 * blockchain or a bank): a submitted transaction becomes final only after
 * `finalityMs`, and then it is confirmed or failed (`failureRate`). It can
 * also answer with errors (`errorRate`) or slowly (`latencyMs`), the way a
 * remote service does, so that moim's retries are exercised.
 *
 * API: POST /transactions { id, from, to, amount } → 202 { id, status }
 * (idempotent by id); GET /transactions/:id → { id, status, reason? }, status
 * pending | confirmed | failed. Simulation hooks: POST /simulate/fail-next
 * makes the next submitted transaction fail; POST /simulate/hold-next keeps
 * the next one pending forever.
 */
import Fastify, { type FastifyInstance } from 'fastify';

export interface LedgerOptions {
  /** Time until a transaction is final, ms. Default 3,000. */
  finalityMs?: number;
  /** Share of transactions that fail at finality, 0..1. Default 0.1. */
  failureRate?: number;
  /** Share of requests answered with 503, 0..1. Default 0. */
  errorRate?: number;
  /** Added to every answer, ms. Default 0. */
  latencyMs?: number;
}

interface Transaction {
  id: string;
  from: string;
  to: string;
  amount: number;
  submittedAt: number;
  fails: boolean;
  held: boolean;
}

export function ledgerOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): LedgerOptions {
  return {
    finalityMs: Number(env.LEDGER_FINALITY_MS ?? 3000),
    failureRate: Number(env.LEDGER_FAILURE_RATE ?? 0.1),
    errorRate: Number(env.LEDGER_ERROR_RATE ?? 0),
    latencyMs: Number(env.LEDGER_LATENCY_MS ?? 0),
  };
}

export async function buildLedger(options: LedgerOptions = {}): Promise<FastifyInstance> {
  const finalityMs = options.finalityMs ?? 3000;
  const failureRate = options.failureRate ?? 0.1;
  const errorRate = options.errorRate ?? 0;
  const latencyMs = options.latencyMs ?? 0;
  const transactions = new Map<string, Transaction>();
  let failNext = 0;
  let holdNext = 0;
  const app = Fastify({ logger: false, bodyLimit: 4096 });
  app.addHook('onRequest', async (request, reply) => {
    // The simulation's own controls are never slowed or failed.
    if (request.url.startsWith('/simulate/')) return;
    if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs));
    if (Math.random() < errorRate) return reply.code(503).send({ error: 'ledger temporarily unavailable' });
  });
  app.post<{ Body: { id: string; from: string; to: string; amount: number } }>(
    '/transactions',
    {
      schema: {
        body: {
          type: 'object',
          required: ['id', 'from', 'to', 'amount'],
          additionalProperties: false,
          properties: { id: { type: 'string', maxLength: 100 }, from: { type: 'string', maxLength: 100 }, to: { type: 'string', maxLength: 100 }, amount: { type: 'integer', minimum: 1 } },
        },
      },
    },
    async (request, reply) => {
      const { id, from, to, amount } = request.body;
      let tx = transactions.get(id);
      if (!tx) {
        const fails = failNext > 0 || Math.random() < failureRate;
        if (failNext > 0) failNext -= 1;
        const held = holdNext > 0;
        if (held) holdNext -= 1;
        transactions.set(id, (tx = { id, from, to, amount, submittedAt: Date.now(), fails, held }));
      }
      return reply.code(202).send({ id, status: 'pending' });
    },
  );
  app.get<{ Params: { id: string } }>('/transactions/:id', async (request, reply) => {
    const tx = transactions.get(request.params.id);
    if (!tx) return reply.code(404).send({ error: 'unknown transaction' });
    if (tx.held || Date.now() - tx.submittedAt < finalityMs) return { id: tx.id, status: 'pending' };
    return tx.fails ? { id: tx.id, status: 'failed', reason: 'rejected by the ledger' } : { id: tx.id, status: 'confirmed' };
  });
  app.post('/simulate/fail-next', async () => {
    failNext += 1;
    return { failNext };
  });
  app.post('/simulate/hold-next', async () => {
    holdNext += 1;
    return { holdNext };
  });
  return app;
}
