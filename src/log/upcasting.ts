/**
 * Upcasters turn stored events written with an older `schemaVersion` of their
 * data into the newest shape, on read, so handlers and deciders only ever see
 * the latest version. Stored events are never rewritten.
 *
 * A chain is declared per event type, version by version, and each step's
 * input type is the previous step's output type, so a broken chain does not
 * compile:
 *
 * ```ts
 * const memberRegistered = eventSchema('MemberRegistered')
 *   .initial<{ name: string }>()                                   // version 1
 *   .then((v1) => ({ displayName: v1.name }))                       // version 2
 *   .then((v2) => ({ ...v2, locale: 'ko-KR' as string }));          // version 3
 * type MemberRegisteredData = LatestData<typeof memberRegistered>;
 * ```
 */
import { SinhoError } from '../errors.js';

export interface EventSchema<Type extends string, Latest> {
  readonly type: Type;
  /** The newest version: 1 plus the number of steps. */
  readonly latestVersion: number;
  /** Adds version `latestVersion + 1`, computed from the current latest shape. */
  then<Next>(step: (data: Latest) => Next): EventSchema<Type, Next>;
  /** Brings `data` stored at `fromVersion` to the latest version. */
  upcast(data: unknown, fromVersion: number): Latest;
}

/** The data type of an event schema's newest version. */
export type LatestData<S> = S extends EventSchema<string, infer L> ? L : never;

type Step = (data: unknown) => unknown;

function makeSchema<Type extends string, Latest>(type: Type, steps: readonly Step[]): EventSchema<Type, Latest> {
  const latestVersion = steps.length + 1;
  return {
    type,
    latestVersion,
    then<Next>(step: (data: Latest) => Next): EventSchema<Type, Next> {
      return makeSchema<Type, Next>(type, [...steps, step as Step]);
    },
    upcast(data: unknown, fromVersion: number): Latest {
      if (!Number.isSafeInteger(fromVersion) || fromVersion < 1 || fromVersion > latestVersion) {
        throw new SinhoError(
          'UNKNOWN_SCHEMA_VERSION',
          `Event type "${type}" has schema versions 1-${latestVersion}; cannot read version ${fromVersion}. Was it written by newer code?`,
          { type, version: fromVersion, latestVersion },
        );
      }
      let value = data;
      for (let v = fromVersion; v < latestVersion; v++) value = steps[v - 1]!(value);
      return value as Latest;
    },
  };
}

/** Starts the schema of one event type. */
export function eventSchema<Type extends string>(type: Type): { initial<V1>(): EventSchema<Type, V1> } {
  return { initial: <V1>() => makeSchema<Type, V1>(type, []) };
}

/** The upcasters a log applies on read; built with {@link createUpcasters}. */
export interface Upcasters {
  /** The version new events of `type` get by default (1 for unknown types). */
  latestVersion(type: string): number;
  /** Returns `data` in the latest shape for `type` (unchanged for unknown types or already-latest data). */
  upcast(type: string, version: number, data: unknown): { data: unknown; schemaVersion: number };
}

export function createUpcasters(schemas: readonly EventSchema<string, unknown>[] = []): Upcasters {
  const byType = new Map<string, EventSchema<string, unknown>>();
  for (const s of schemas) {
    if (byType.has(s.type)) throw new SinhoError('INVALID_ARGUMENT', `Two schemas were given for event type "${s.type}".`, { type: s.type });
    byType.set(s.type, s);
  }
  return {
    latestVersion: (type) => byType.get(type)?.latestVersion ?? 1,
    upcast(type, version, data) {
      const schema = byType.get(type);
      if (!schema || version === schema.latestVersion) return { data, schemaVersion: version };
      return { data: schema.upcast(data, version), schemaVersion: schema.latestVersion };
    },
  };
}
