/**
 * The moim HTTP API (fastify). Every request and response body has a
 * schema; errors are problem+json (problems.ts); every route but register,
 * login and the probes needs a session.
 */
import { randomUUID } from 'node:crypto';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import Fastify, { type FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { communityRoutes } from './communities.js';
import { familyRoutes } from './families.js';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { memberRoutes } from './members.js';
import { registerMetrics } from './metrics.js';
import { transferRoutes } from './transfers.js';
import { HttpProblem, problemHandler, unauthorized } from './problems.js';
import type { App, MoimApi } from './context.js';

export type { App, MoimApi } from './context.js';

export interface AppOptions {
  /** Largest request body, bytes. Default 16 KiB. */
  bodyLimit?: number;
  /** pino options, or false for no logs. */
  logger?: boolean | object;
  /** Login attempts per minute and e-mail address. Default 10. */
  loginAttemptsPerMinute?: number;
  /** Login attempts per minute and client address. Default 100. */
  loginAttemptsPerMinutePerAddress?: number;
}


export async function buildApp(api: MoimApi, options: AppOptions = {}): Promise<App> {
  const app = Fastify({
    bodyLimit: options.bodyLimit ?? 16 * 1024,
    logger: options.logger ?? false,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(given) ? given : randomUUID();
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  // Bodies are JSON and validated strictly (a number is not a string);
  // querystrings and path parameters are text, so they are coerced.
  const strict = addFormats.default(new Ajv({ coerceTypes: false, useDefaults: true, removeAdditional: false, allErrors: false }));
  const coercing = addFormats.default(new Ajv({ coerceTypes: 'array', useDefaults: true, removeAdditional: false, allErrors: false }));
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strict : coercing).compile(schema));
  app.decorateRequest('memberId', '');
  app.setErrorHandler(problemHandler);
  app.setNotFoundHandler((request, reply) => problemHandler(new HttpProblem(404, 'NOT_FOUND', `No route ${request.method} ${request.url.split('?')[0]}.`), request, reply));
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  // The OpenAPI document is built from the routes' schemas: /docs/json, and a page at /docs.
  await app.register(swagger, {
    openapi: {
      info: { title: 'moim', version: '0.1.0', description: 'The reference community service built on Sinho. Errors are application/problem+json with a stable `code`.' },
      components: { securitySchemes: { session: { type: 'http', scheme: 'bearer', description: 'A token from POST /sessions' } } },
      security: [{ session: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  registerMetrics(app, api.log);

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    if (!api.ready()) return reply.code(503).type('application/problem+json').send({ title: 'Service Unavailable', status: 503, code: 'NOT_READY', detail: 'Starting or draining.' });
    await api.log.headPosition(); // the store answers
    return { status: 'ready' };
  });

  const requireSession = async (request: FastifyRequest): Promise<void> => {
    const header = request.headers.authorization;
    const token = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7).trim() : '';
    if (!token || token.length > 200) throw unauthorized();
    const session = await api.sessions.get(token);
    if (!session) throw unauthorized();
    request.memberId = session.memberId;
  };

  await app.register(async (scope) => memberRoutes(scope as App, api, requireSession, options.loginAttemptsPerMinute ?? 10, options.loginAttemptsPerMinutePerAddress ?? 100));
  await app.register(async (scope) => communityRoutes(scope as App, api, requireSession));
  await app.register(async (scope) => familyRoutes(scope as App, api, requireSession));
  await app.register(async (scope) => transferRoutes(scope as App, api, requireSession));
  return app;
}
