/**
 * Bindings with RabbitMQ's exact semantics, as pure functions users can unit
 * test. Every event has a routing key (default `<category>.<type>`, or the
 * `routing-key` metadata header when present) and headers (the metadata
 * headers).
 *
 * Topic rules (AMQP 0-9-1, as RabbitMQ applies them): keys and patterns are
 * split on `.` into words; the empty string has zero words, and a leading,
 * trailing or doubled dot makes an empty word, which is a word like any other;
 * `*` matches exactly one word, `#` zero or more.
 */
import { InvalidInput } from '../errors.js';
import type { RecordedEvent } from '../log/types.js';

export type Binding =
  | { kind: 'direct'; key: string }
  | { kind: 'fanout' }
  | { kind: 'topic'; pattern: string }
  | {
      kind: 'headers';
      /** `all` (default) or `any`; the `-with-x` forms also compare headers starting with `x-`, which are otherwise ignored. */
      match?: 'all' | 'any' | 'all-with-x' | 'any-with-x';
      /** A `null` value matches the header's presence, whatever its value. */
      headers: Record<string, string | null>;
    };

/** The header that overrides an event's routing key. */
export const ROUTING_KEY_HEADER = 'routing-key';

export function routingKeyOf(event: Pick<RecordedEvent, 'category' | 'type' | 'metadata'>): string {
  return event.metadata.headers?.[ROUTING_KEY_HEADER] ?? `${event.category}.${event.type}`;
}

/** Splits a routing key or pattern into words the way RabbitMQ does. */
export function topicWords(key: string): string[] {
  return key === '' ? [] : key.split('.');
}

function matchWords(pattern: readonly string[], p: number, key: readonly string[], k: number): boolean {
  for (;;) {
    if (p === pattern.length) return k === key.length;
    const word = pattern[p]!;
    if (word === '#') {
      // Collapse consecutive '#': they match the same as one.
      if (p + 1 === pattern.length) return true;
      for (let skip = k; skip <= key.length; skip++) if (matchWords(pattern, p + 1, key, skip)) return true;
      return false;
    }
    if (k === key.length) return false;
    if (word !== '*' && word !== key[k]) return false;
    p += 1;
    k += 1;
  }
}

/** True when the topic `pattern` matches `routingKey`. */
export function matchTopic(pattern: string, routingKey: string): boolean {
  return matchWords(topicWords(pattern), 0, topicWords(routingKey), 0);
}

/** True when a headers binding matches `headers`, with RabbitMQ's `x-match` semantics. */
export function matchHeaders(binding: Extract<Binding, { kind: 'headers' }>, headers: Readonly<Record<string, string>> = {}): boolean {
  const mode = binding.match ?? 'all';
  const withX = mode.endsWith('-with-x');
  const any = mode.startsWith('any');
  for (const [name, expected] of Object.entries(binding.headers)) {
    if (!withX && name.startsWith('x-')) continue;
    const present = Object.prototype.hasOwnProperty.call(headers, name);
    const ok = present && (expected === null || headers[name] === expected);
    if (any && ok) return true;
    if (!any && !ok) return false;
  }
  // RabbitMQ: `all` with nothing (left) to compare matches; `any` with no match does not.
  return !any;
}

/** True when `binding` routes `event` (routing key and headers as above). */
export function matchBinding(binding: Binding, event: Pick<RecordedEvent, 'category' | 'type' | 'metadata'>): boolean {
  switch (binding.kind) {
    case 'fanout':
      return true;
    case 'direct':
      return binding.key === routingKeyOf(event);
    case 'topic':
      return matchTopic(binding.pattern, routingKeyOf(event));
    case 'headers':
      return matchHeaders(binding, event.metadata.headers);
  }
}

/** Validates bindings up front; an invalid binding is a typed error, never a silent non-match. */
export function validateBindings(bindings: unknown): Binding[] {
  if (!Array.isArray(bindings) || bindings.length === 0) {
    throw new InvalidInput('INVALID_BINDING', 'bindings must be a non-empty array (use [{ kind: "fanout" }] for every event).');
  }
  return bindings.map((b: unknown, i) => {
    const binding = b as Record<string, unknown>;
    const fail = (why: string): never => {
      throw new InvalidInput('INVALID_BINDING', `Binding ${i} is invalid: ${why}.`, { index: i });
    };
    if (typeof binding !== 'object' || binding === null) fail('it must be an object');
    switch (binding.kind) {
      case 'fanout':
        return { kind: 'fanout' };
      case 'direct':
        if (typeof binding.key !== 'string' || binding.key.length > 255) fail('a direct binding needs a key string of at most 255 characters');
        return { kind: 'direct', key: binding.key as string };
      case 'topic':
        if (typeof binding.pattern !== 'string' || binding.pattern.length > 255) fail('a topic binding needs a pattern string of at most 255 characters');
        return { kind: 'topic', pattern: binding.pattern as string };
      case 'headers': {
        const match = binding.match ?? 'all';
        if (!['all', 'any', 'all-with-x', 'any-with-x'].includes(match as string)) fail(`x-match must be all, any, all-with-x or any-with-x, got ${JSON.stringify(match)}`);
        const headers = binding.headers;
        if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) fail('a headers binding needs a headers object');
        for (const [k, v] of Object.entries(headers as object)) if (v !== null && typeof v !== 'string') fail(`header "${k}" must be a string or null`);
        return { kind: 'headers', match: match as 'all', headers: { ...(headers as Record<string, string | null>) } };
      }
      default:
        return fail(`kind must be direct, fanout, topic or headers, got ${JSON.stringify(binding.kind)}`);
    }
  });
}
