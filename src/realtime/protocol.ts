/**
 * The gateway's WebSocket protocol: JSON text frames, one object each, with a
 * `type`. Shared by the gateway and the client SDK (no Node-only imports), and
 * documented in docs/realtime.md.
 */

/** Client -> server. */
export type ClientFrame =
  /** First frame. `token` unless the upgrade carried `Authorization: Bearer`; `cursor`: resume after it (0: from the oldest kept); `user`: optional, must be the session's own. */
  | { type: 'hello'; token?: string; cursor?: number; user?: string }
  /** Everything up to `cursor` was received. */
  | { type: 'ack'; cursor: number }
  /** Application-level ping (browsers cannot send WebSocket pings); answered with `pong`. */
  | { type: 'ping' };

/** Server -> client. */
export type ServerFrame =
  /** Authenticated; `head` is the user's newest cursor, `oldest` the oldest kept, `node` the gateway node. */
  | { type: 'welcome'; user: string; node: number; head: number; oldest: number; acked: number; heartbeatMs: number }
  | { type: 'notification'; cursor: number; notification: { type: string; data: unknown; at: number } }
  /** Notifications after `after` up to `oldest - 1` are past retention; delivery continues from `oldest`. */
  | { type: 'gap'; after: number; oldest: number }
  /** The server is closing this connection on purpose; resume (after `retryAfterMs`) from `resume.cursor`, at `resume.node` when given. */
  | { type: 'goaway'; reason: 'draining' | 'slow-consumer' | 'session-expired' | 'wrong-node'; resume: { cursor: number; node?: number; url?: string }; retryAfterMs: number }
  | { type: 'pong' }
  | { type: 'error'; code: RealtimeErrorCode; message: string; details?: Record<string, unknown> };

/** Stable error codes of `error` frames. */
export type RealtimeErrorCode =
  | 'BAD_FRAME'
  | 'FRAME_TOO_LARGE'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'HELLO_TIMEOUT'
  | 'CURSOR_AHEAD'
  | 'WRONG_NODE'
  | 'RATE_LIMITED'
  | 'SLOW_CONSUMER'
  | 'SESSION_EXPIRED'
  | 'NOT_ACCEPTING';

/** WebSocket close codes the gateway uses (4000-4999 are the application's). */
export const CLOSE_CODES = {
  normal: 1000,
  goingAway: 1001,
  frameTooLarge: 1009,
  badFrame: 4400,
  unauthorized: 4401,
  forbidden: 4403,
  helloTimeout: 4408,
  cursorAhead: 4409,
  slowConsumer: 4410,
  wrongNode: 4421,
  rateLimited: 4429,
  sessionExpired: 4440,
} as const;

/** Codes after which reconnecting with the same credentials cannot help. */
export const FATAL_CLOSE_CODES: ReadonlySet<number> = new Set([CLOSE_CODES.unauthorized, CLOSE_CODES.forbidden, CLOSE_CODES.sessionExpired, CLOSE_CODES.cursorAhead, CLOSE_CODES.badFrame]);

const isCursor = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** Parses one client frame; returns an error message instead of throwing. */
export function parseClientFrame(text: string): { frame: ClientFrame } | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { error: 'A frame must be one JSON object.' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { error: 'A frame must be one JSON object.' };
  const f = value as Record<string, unknown>;
  switch (f.type) {
    case 'hello': {
      if (f.token !== undefined && (typeof f.token !== 'string' || f.token.length === 0 || f.token.length > 512)) return { error: 'hello.token must be a non-empty string of at most 512 characters.' };
      if (f.cursor !== undefined && !isCursor(f.cursor)) return { error: 'hello.cursor must be an integer >= 0.' };
      if (f.user !== undefined && (typeof f.user !== 'string' || f.user.length === 0 || f.user.length > 200)) return { error: 'hello.user must be a non-empty string.' };
      return { frame: { type: 'hello', token: f.token as string | undefined, cursor: f.cursor as number | undefined, user: f.user as string | undefined } };
    }
    case 'ack':
      if (!isCursor(f.cursor)) return { error: 'ack.cursor must be an integer >= 0.' };
      return { frame: { type: 'ack', cursor: f.cursor } };
    case 'ping':
      return { frame: { type: 'ping' } };
    default:
      return { error: `Unknown frame type ${JSON.stringify(String(f.type)).slice(0, 60)}; expected hello, ack or ping.` };
  }
}
