/**
 * Helpers shared by the conformance suites.
 */
import assert from 'node:assert/strict';
import { after } from 'node:test';
import type { EventLog, EventLogOptions, SinhoError } from '../../src/index.js';

export type LogFactory = (options?: EventLogOptions) => Promise<EventLog>;

/**
 * Call inside a `describe`: returns an `open` that creates a fresh log from
 * `factory` and closes every log it opened when the suite ends.
 */
export function suiteLogs(factory: LogFactory): (options?: EventLogOptions) => Promise<EventLog> {
  const opened: EventLog[] = [];
  after(async () => {
    await Promise.all(opened.map((l) => l.close()));
  });
  return async (options) => {
    const log = await factory(options);
    opened.push(log);
    return log;
  };
}

/** Asserts that the call (or promise) rejects with a SinhoError of `code`, and returns the error. */
export async function rejectsWithCode(promise: Promise<unknown> | (() => unknown), code: string): Promise<SinhoError> {
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (error) {
    assert.equal((error as SinhoError).code, code, `expected code ${code}, got ${(error as SinhoError).code}: ${(error as Error).message}`);
    return error as SinhoError;
  }
  assert.fail(`expected an error with code ${code}`);
}
