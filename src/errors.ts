/**
 * Sinho's error hierarchy. Every error a caller can act on carries a stable
 * `code` (never reworded, safe to switch on and to expose in APIs) and a
 * human-readable message. Edges (HTTP, WebSocket) translate codes once; the
 * core never throws bare `Error` for conditions a caller caused.
 */
export type SinhoErrorCode =
  | 'INVALID_ARGUMENT'
  | 'INVALID_STREAM_NAME'
  | 'INVALID_EVENT_TYPE'
  | 'INVALID_EVENT'
  | 'EVENT_TOO_LARGE'
  | 'TOO_MANY_EVENTS'
  | 'WRONG_EXPECTED_REVISION'
  | 'EVENT_ID_CONFLICT'
  | 'UNKNOWN_SCHEMA_VERSION'
  | 'LOG_CLOSED'
  | 'CONCURRENCY_RETRIES_EXHAUSTED'
  | 'DOMAIN_RULE_VIOLATED'
  | 'INVALID_BINDING'
  | 'UNKNOWN_GROUP'
  | 'UNSUPPORTED'
  | 'GROUP_BUSY'
  | 'GROUP_LEASE_LOST'
  | 'BROKER_UNREACHABLE'
  | 'MESSAGE_REFUSED'
  | 'STORE_BUSY';

/** Base class of every error Sinho throws on purpose. */
export class SinhoError extends Error {
  readonly code: SinhoErrorCode;
  /** Structured, JSON-safe facts about the error (never secrets). */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: SinhoErrorCode, message: string, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** A caller passed something malformed (a bad option, a bad event, a bad name). Nothing was written. */
export class InvalidInput extends SinhoError {}

/** The stream was not at the revision the caller expected. Nothing was written. */
export class WrongExpectedRevision extends SinhoError {
  readonly stream: string;
  /** What the caller expected (`any`, `noStream`, `streamExists` or a revision). */
  readonly expected: string | number;
  /** The stream's actual revision, or -1 when the stream does not exist. */
  readonly actual: number;

  constructor(stream: string, expected: string | number, actual: number) {
    super(
      'WRONG_EXPECTED_REVISION',
      `Stream "${stream}" is at revision ${actual === -1 ? '(no stream)' : actual}, but the append expected ${typeof expected === 'number' ? `revision ${expected}` : expected}.`,
      { stream, expected, actual },
    );
    this.stream = stream;
    this.expected = expected;
    this.actual = actual;
  }
}

/** An event id is already stored with different content (or in another place). Nothing was written. */
export class EventIdConflict extends SinhoError {
  constructor(eventId: string, reason: string) {
    super('EVENT_ID_CONFLICT', `Event id ${eventId} is already stored ${reason}.`, { eventId });
  }
}

/** The log was closed; the operation was not performed. */
export class LogClosed extends SinhoError {
  constructor() {
    super('LOG_CLOSED', 'The event log is closed.');
  }
}

/**
 * A business rule refused the command. Thrown by deciders (directly or through
 * {@link domainError}); distinct from infrastructure errors so callers can map
 * it to a 422 instead of a 500.
 */
export class DomainError extends SinhoError {
  /** The rule's own stable code, e.g. `FAMILY_FULL`. */
  readonly rule: string;
  constructor(rule: string, message: string, details: Record<string, unknown> = {}) {
    super('DOMAIN_RULE_VIOLATED', message, { ...details, rule });
    this.rule = rule;
  }
}

/** Convenience for deciders: `throw domainError('NOT_VERIFIED', 'Only verified members can join')`. */
export function domainError(rule: string, message: string, details: Record<string, unknown> = {}): DomainError {
  return new DomainError(rule, message, details);
}

export function isSinhoError(error: unknown): error is SinhoError {
  return error instanceof SinhoError;
}
