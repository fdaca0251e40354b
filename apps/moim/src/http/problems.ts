/**
 * Errors as `application/problem+json` (RFC 9457) with stable codes. Nothing
 * internal (stack, SQL, driver messages) ever reaches a client.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { SinhoError } from 'sinho';

export class HttpProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export const notFound = (what: string) => new HttpProblem(404, 'NOT_FOUND', `${what} was not found.`);
export const forbidden = (why: string) => new HttpProblem(403, 'FORBIDDEN', why);
export const unauthorized = () => new HttpProblem(401, 'UNAUTHORIZED', 'A valid session token is required (Authorization: Bearer <token>).');

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  409: 'Conflict',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

function send(reply: FastifyReply, status: number, code: string, detail: string, extra: Record<string, unknown> = {}): FastifyReply {
  return reply
    .code(status)
    .type('application/problem+json')
    .send({ type: `https://moim.example/problems/${code.toLowerCase().replaceAll('_', '-')}`, title: TITLES[status] ?? 'Error', status, code, detail, ...extra });
}

export function problemHandler(error: FastifyError | Error, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (error instanceof HttpProblem) return send(reply, error.status, error.code, error.message, error.extra);
  const fastifyError = error as FastifyError;
  if (fastifyError.validation) {
    return send(reply, 400, 'VALIDATION_FAILED', 'The request does not match its schema.', {
      errors: fastifyError.validation.map((v) => ({ where: fastifyError.validationContext, path: v.instancePath || '/', message: v.message })),
    });
  }
  if (fastifyError.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return send(reply, 413, 'PAYLOAD_TOO_LARGE', 'The request body is larger than allowed.');
  if (fastifyError.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return send(reply, 415, 'UNSUPPORTED_MEDIA_TYPE', 'Send JSON (Content-Type: application/json).');
  if (fastifyError.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || fastifyError.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (fastifyError.statusCode === 400 && error instanceof SyntaxError)) {
    return send(reply, 400, 'MALFORMED_JSON', 'The request body is not valid JSON.');
  }
  if (error instanceof SinhoError) {
    switch (error.code) {
      case 'DOMAIN_RULE_VIOLATED': {
        const rule = String(error.details.rule ?? 'DOMAIN_RULE_VIOLATED');
        if (rule.endsWith('_NOT_FOUND')) return send(reply, 404, 'NOT_FOUND', error.message);
        return send(reply, rule.endsWith('_EXISTS') ? 409 : 422, rule, error.message);
      }
      case 'WRONG_EXPECTED_REVISION':
      case 'EVENT_ID_CONFLICT':
      case 'CONCURRENCY_RETRIES_EXHAUSTED':
        return send(reply, 409, 'CONFLICT', 'The resource changed concurrently; retry the request.');
      case 'LOG_CLOSED':
        return send(reply, 503, 'UNAVAILABLE', 'The service is shutting down.');
      default:
        if (error.code.startsWith('INVALID_') || error.code === 'EVENT_TOO_LARGE' || error.code === 'TOO_MANY_EVENTS') return send(reply, 400, 'VALIDATION_FAILED', error.message);
    }
  }
  if (fastifyError.statusCode === 429) return send(reply, 429, 'RATE_LIMITED', 'Too many requests; slow down.');
  request.log.error({ err: error }, 'request failed');
  return send(reply, 500, 'INTERNAL', 'Something went wrong on our side; it was logged.');
}
