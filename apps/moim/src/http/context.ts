/** What the route modules share: the API's dependencies, the app type, the session guard, request metadata. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { AggregateStateCache, EventLog } from 'sinho';
import type { FeedStore } from 'sinho/realtime';
import type { ReadModels } from '../read-models.js';
import type { SessionStore } from '../sessions.js';

export interface MoimApi {
  log: EventLog;
  sessions: SessionStore;
  readModels: ReadModels;
  /** Notification feeds (here: presence, who is online). */
  feed: FeedStore;
  /** Aggregate states of this process, caught up on each use (hot communities are not refolded per request). */
  stateCache: AggregateStateCache;
  /** Session lifetime, ms. */
  sessionTtlMs: number;
  /** False while starting or draining: `/readyz` answers 503. */
  ready(): boolean;
}

export type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>;

declare module 'fastify' {
  interface FastifyRequest {
    /** The signed-in member (set by `requireSession`). */
    memberId: string;
  }
}

export type RequireSession = (request: FastifyRequest) => Promise<void>;

/** The correlation metadata every event caused by a request carries. */
export function requestMetadata(request: FastifyRequest): { correlationId: string; actor?: string } {
  return request.memberId ? { correlationId: request.id, actor: request.memberId } : { correlationId: request.id };
}
