import { createHash } from 'node:crypto';

/**
 * A deterministic UUID (version 8, name-based on SHA-256) for `name`: the
 * same name always gives the same id, so an event appended again under it is
 * recognised by idempotent append. Callers namespace their names
 * (`sinho:command:…`, `sinho:undelivered:…`).
 */
export function nameBasedUuid(name: string): string {
  const h = createHash('sha256').update(name).digest();
  h[6] = (h[6]! & 0x0f) | 0x80;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const hex = h.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}
