/**
 * The SQLite log's write side: appends, consumer-group state, snapshots and
 * truncation, all on one connection, by default on a thread of its own.
 *
 * A SQLite call runs on the thread that makes it. With 1 KiB events about
 * half of the main thread's time under a flat-out load was the append
 * transaction (B-tree inserts, WAL frames, the fsync), during which the
 * process could neither validate the next appends nor deliver to its
 * consumers. So a file log hands its writes to a writer thread: the main
 * thread keeps validation, group commit, delivery and reads (WAL readers never
 * wait for the writer), and the two run on two cores. Every write of the
 * process goes to that one connection, so the process never contends with
 * itself for SQLite's write lock. Durability is unchanged: an append resolves
 * once the writer's commit, fsync included, has returned.
 *
 * `writerOn` is the write side on a connection of the calling thread (used
 * for `:memory:` and with `writerThread: false`, and inside the writer
 * thread); `WriterThread` is the same interface, answered by the thread.
 */
import Database from 'better-sqlite3';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import * as errors from '../../errors.js';
import type { SubscriptionStorage } from '../../subscription/storage.js';
import type { AppendRequest, CommitResult, PreparedAppend, PreparedEvent, RequestOutcome, StreamOutcome } from '../storage.js';
import type { ExpectedRevision, Snapshot } from '../types.js';
import { commitBatch, prepareAppendStatements } from './append.js';
import { BUSY_HANDLER_MS, retryingWhileBusy } from './busy.js';
import { withoutFsync } from './file.js';
import { watchExternalCommits } from './notify.js';
import { prepareReadStatements, truncateStream } from './read.js';
import { createSqliteSubscriptionStorage } from './subscription.js';

export interface SqliteWriter {
  commit(batch: readonly AppendRequest[], durability: 'durable' | 'relaxed'): Promise<CommitResult>;
  writeSnapshot(stream: string, snapshot: Snapshot): Promise<void>;
  truncateStream(stream: string, beforeRevision: number): Promise<void>;
  readonly subscriptions: SubscriptionStorage;
  /** Commits of OTHER connections to the file (not this writer's). */
  watchExternalCommits(onCommit: (head: number) => void): () => void;
  close(): Promise<void>;
}

export interface WriterSettings {
  /** Budget for waiting on another process's write lock (retryingWhileBusy). */
  busyTimeoutMs: number;
  externalCommitCheckMs: number;
}

/** The write side on `db`, a connection of the calling thread. Closing it leaves `db` open (its owner closes it). */
export function writerOn(db: Database.Database, settings: WriterSettings): SqliteWriter {
  const append = prepareAppendStatements(db);
  const read = prepareReadStatements(db);
  const upsertSnapshot = db.prepare<[string, string, number, string, string]>(
    'INSERT INTO sinho_snapshots (stream, key, revision, state, created_at) VALUES (?, ?, ?, ?, ?) ' +
      'ON CONFLICT (stream, key) DO UPDATE SET revision = excluded.revision, state = excluded.state, created_at = excluded.created_at WHERE excluded.revision >= sinho_snapshots.revision',
  );
  const writes = retryingWhileBusy(
    {
      commit: async (batch: readonly AppendRequest[], durability: 'durable' | 'relaxed') => commitBatch(db, append, batch, durability),
      // No fsync of its own, like a relaxed append: a snapshot is derived from events that are already durable;
      // if power fails before the next durable commit flushes the WAL, loads fall back to the previous snapshot
      // and the events. Writers that snapshot often (moim: every 50 joins of a community) otherwise paid one
      // fsync per snapshot, outside group commit.
      writeSnapshot: async (stream: string, snapshot: Snapshot) => {
        const state = JSON.stringify(snapshot.state);
        withoutFsync(db, () => upsertSnapshot.run(stream, snapshot.key, snapshot.revision, state, new Date().toISOString()));
      },
      truncateStream: async (stream: string, beforeRevision: number) => truncateStream(read, stream, beforeRevision),
    },
    settings.busyTimeoutMs,
  );
  return {
    ...writes,
    subscriptions: retryingWhileBusy(createSqliteSubscriptionStorage(db), settings.busyTimeoutMs),
    watchExternalCommits: (onCommit) => watchExternalCommits(db, () => read.head.get()!.position, settings.externalCommitCheckMs, onCommit),
    close: async () => {},
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Errors cross the thread as plain data: a structured clone keeps an Error's message but not its class or its
// own fields (`code`, `details`, a WrongExpectedRevision's `actual`), which callers switch on.

interface WireError {
  name: string;
  message: string;
  stack?: string;
  fields: Record<string, unknown>;
}

const ERROR_CLASSES = new Map<string, new (...args: never[]) => Error>(
  Object.values(errors).flatMap((value) => (typeof value === 'function' && value.prototype instanceof Error ? [[value.name, value as new (...args: never[]) => Error]] : [])),
);

function toWire(error: unknown): WireError {
  if (!(error instanceof Error)) return { name: 'Error', message: String(error), fields: {} };
  return { name: error.name, message: error.message, stack: error.stack, fields: { ...error } };
}

function fromWire(wire: WireError): Error {
  const error: Error = Object.create((ERROR_CLASSES.get(wire.name) ?? Error).prototype);
  Object.defineProperty(error, 'message', { value: wire.message, writable: true, configurable: true });
  Object.defineProperty(error, 'stack', { value: wire.stack, writable: true, configurable: true });
  return Object.assign(error, { name: wire.name }, wire.fields);
}

// ---------------------------------------------------------------------------------------------------------------
// A batch and its result cross the thread as flat arrays of strings and numbers. A structured clone writes every
// object's keys and the receiving thread builds every object again: for batches of 1 KiB events, cloning them as
// objects cost the two threads together about a third of what the commit itself took.

/** One batch as [requests, then per request: appends, then per append: stream, expected, events, then per event its 7 fields]. */
type WireBatch = (string | number | boolean)[];

export function encodeBatch(batch: readonly AppendRequest[]): WireBatch {
  const out: WireBatch = [batch.length];
  for (const request of batch) {
    out.push(request.appends.length);
    for (const append of request.appends) {
      out.push(append.stream, append.expectedRevision, append.events.length);
      for (const e of append.events) out.push(e.id, e.idGiven, e.category, e.type, e.schemaVersion, e.data, e.metadata);
    }
  }
  return out;
}

export function decodeBatch(wire: WireBatch): AppendRequest[] {
  let i = 0;
  const next = (): never => wire[i++] as never;
  const batch: AppendRequest[] = [];
  for (let requests = next() as number; requests > 0; requests--) {
    const appends: PreparedAppend[] = [];
    for (let n = next() as number; n > 0; n--) {
      const stream: string = next();
      const expectedRevision: ExpectedRevision = next();
      const events: PreparedEvent[] = [];
      for (let k = next() as number; k > 0; k--) {
        events.push({ id: next(), idGiven: next(), stream, category: next(), type: next(), schemaVersion: next(), data: next(), metadata: next() });
      }
      appends.push({ stream, expectedRevision, events });
    }
    batch.push({ appends });
  }
  return batch;
}

/**
 * A result as numbers, read against its batch (outcomes follow the batch's requests, appends and events one to
 * one; see planCommit): [head, then per request 1 and per append: alreadyStored, revision, then each event's
 * revision and position; or 0 for a failed request, whose error is in `errors` under the request's index].
 */
interface WireResult {
  head: number;
  durability: CommitResult['durability'];
  numbers: number[];
  errors: Record<number, WireError>;
}

export function encodeResult(result: CommitResult): WireResult {
  const numbers: number[] = [];
  const errors: Record<number, WireError> = {};
  result.outcomes.forEach((outcome, index) => {
    if (!outcome.ok) {
      numbers.push(0);
      errors[index] = toWire(outcome.error);
      return;
    }
    numbers.push(1);
    for (const s of outcome.streams) {
      numbers.push(s.alreadyStored ? 1 : 0, s.revision);
      for (const e of s.events) numbers.push(e.revision, e.position);
    }
  });
  return { head: result.head, durability: result.durability, numbers, errors };
}

export function decodeResult(wire: WireResult, batch: readonly AppendRequest[]): CommitResult {
  let i = 0;
  const n = wire.numbers;
  const outcomes: RequestOutcome[] = batch.map((request, index) => {
    if (n[i++] === 0) return { ok: false, error: fromWire(wire.errors[index]!) };
    const streams: StreamOutcome[] = request.appends.map((append) => {
      const alreadyStored = n[i++] === 1;
      const revision = n[i++]!;
      const events = append.events.map((e) => ({ id: e.id, revision: n[i++]!, position: n[i++]! }));
      return { stream: append.stream, revision, events, alreadyStored };
    });
    return { ok: true, streams };
  });
  return { outcomes, head: wire.head, durability: wire.durability };
}

// ---------------------------------------------------------------------------------------------------------------

/** The methods of SubscriptionStorage, each answered by the thread (checked against the interface below). */
const SUBSCRIPTION_METHODS = [
  'acquireLease',
  'releaseLease',
  'ensureGroup',
  'heartbeat',
  'leave',
  'getGroup',
  'listGroups',
  'deleteGroup',
  'loadDeferred',
  'commitGroup',
  'highestProcessed',
  'processedIds',
  'resetGroup',
  'liveProjectionVersion',
  'switchProjection',
  'runStatements',
] as const satisfies readonly (keyof SubscriptionStorage)[];
type MethodsOf<T> = { [K in keyof T]: T[K] extends (...args: never[]) => unknown ? K : never }[keyof T];
// A method added to SubscriptionStorage but not listed above fails to compile here.
const allListed: [Exclude<MethodsOf<SubscriptionStorage>, (typeof SUBSCRIPTION_METHODS)[number]>] extends [never] ? true : never = true;
void allListed;

type Request =
  | { kind: 'call'; id: number; target: 'log' | 'subscriptions'; method: string; args: unknown[] }
  | { kind: 'watch'; on: boolean }
  | { kind: 'close' };
type Reply = { kind: 'result'; id: number; ok: true; value: unknown } | { kind: 'result'; id: number; ok: false; error: WireError } | { kind: 'external'; head: number };

interface ThreadData {
  sinhoSqliteWriter: true;
  path: string;
  settings: WriterSettings;
  /** The committing connection's wal_autocheckpoint, in pages (a backstop when checkpoints run on their own thread). */
  autocheckpointPages: number;
}

/**
 * The thread's entry. It imports this module by URL; when that URL is a TypeScript source (tests run the sources
 * under tsx), it goes through tsx's API, as a worker thread of Node 20 does not inherit the parent's loader. Only
 * dynamic imports: the source is evaluated as CommonJS, or as a module when the process runs with
 * `--input-type=module` (workers inherit it), and `import()` is the one thing that works in both.
 */
const THREAD_SOURCE = `
import('node:worker_threads').then(async ({ workerData }) => {
  const module = workerData.tsx ? await (await import(workerData.tsx)).tsImport(workerData.entry, workerData.entry) : await import(workerData.entry);
  module.serveWriterThread();
});
`;

/** The write side, answered by a thread with its own connection to `path`. */
export class WriterThread implements SqliteWriter {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private readonly watchers = new Set<(head: number) => void>();
  private nextId = 1;
  private failure: Error | undefined;
  private readonly exited: Promise<unknown>;
  readonly subscriptions: SubscriptionStorage;

  constructor(path: string, settings: WriterSettings, autocheckpointPages: number) {
    const entry = import.meta.url;
    let tsx: string | undefined;
    if (entry.endsWith('.ts')) {
      try {
        tsx = import.meta.resolve('tsx/esm/api');
      } catch {
        tsx = undefined; // another loader that workers inherit
      }
    }
    const data: ThreadData & { entry: string; tsx?: string } = { sinhoSqliteWriter: true, path, settings, autocheckpointPages, entry, tsx };
    this.worker = new Worker(THREAD_SOURCE, { eval: true, workerData: data });
    this.exited = new Promise((r) => this.worker.once('exit', r));
    this.worker.on('message', (reply: Reply) => this.receive(reply));
    this.worker.on('error', (error) => this.fail(error));
    this.worker.on('exit', (code) => this.fail(new Error(`The SQLite writer thread exited (code ${code}); the log cannot write any more.`)));
    // A forgotten log must not keep the process alive: the thread holds it only while a call is waiting.
    this.worker.unref();
    const subscriptions: Record<string, unknown> = { supportsStatements: true };
    for (const method of SUBSCRIPTION_METHODS) subscriptions[method] = (...args: unknown[]) => this.call('subscriptions', method, args);
    this.subscriptions = subscriptions as unknown as SubscriptionStorage;
  }

  async commit(batch: readonly AppendRequest[], durability: 'durable' | 'relaxed'): Promise<CommitResult> {
    return decodeResult((await this.call('log', 'commit', [encodeBatch(batch), durability])) as WireResult, batch);
  }

  async writeSnapshot(stream: string, snapshot: Snapshot): Promise<void> {
    await this.call('log', 'writeSnapshot', [stream, snapshot]);
  }

  async truncateStream(stream: string, beforeRevision: number): Promise<void> {
    await this.call('log', 'truncateStream', [stream, beforeRevision]);
  }

  watchExternalCommits(onCommit: (head: number) => void): () => void {
    this.watchers.add(onCommit);
    if (this.watchers.size === 1) this.post({ kind: 'watch', on: true });
    return () => {
      if (this.watchers.delete(onCommit) && this.watchers.size === 0) this.post({ kind: 'watch', on: false });
    };
  }

  async close(): Promise<void> {
    if (!this.failure) {
      this.worker.ref(); // wait for the thread to close its connection
      this.post({ kind: 'close' });
    }
    await this.exited;
  }

  private call(target: 'log' | 'subscriptions', method: string, args: unknown[]): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    if (this.pending.size === 0) this.worker.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.post({ kind: 'call', id, target, method, args });
    });
  }

  private post(request: Request): void {
    this.worker.postMessage(request);
  }

  private receive(reply: Reply): void {
    if (reply.kind === 'external') {
      for (const watcher of this.watchers) watcher(reply.head);
      return;
    }
    const waiting = this.pending.get(reply.id);
    if (!waiting) return;
    this.pending.delete(reply.id);
    if (this.pending.size === 0) this.worker.unref();
    if (reply.ok) waiting.resolve(reply.value);
    else waiting.reject(fromWire(reply.error));
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const waiting of this.pending.values()) waiting.reject(this.failure);
    this.pending.clear();
  }
}

/** Runs in the writer thread: opens the connection and answers the main thread's calls, one after another. */
export function serveWriterThread(): void {
  const data = workerData as ThreadData;
  if (isMainThread || !parentPort || data?.sinhoSqliteWriter !== true) throw new Error('serveWriterThread runs only in a SQLite writer thread.');
  const port = parentPort;
  const db = new Database(data.path);
  db.pragma(`busy_timeout = ${Math.min(BUSY_HANDLER_MS, data.settings.busyTimeoutMs)}`);
  db.pragma('synchronous = FULL');
  db.pragma(`wal_autocheckpoint = ${data.autocheckpointPages}`);
  const writer = writerOn(db, data.settings);
  const targets: Record<'log' | 'subscriptions', Record<string, (...args: unknown[]) => Promise<unknown>>> = {
    log: writer as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>,
    subscriptions: writer.subscriptions as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>,
  };
  let unwatch: (() => void) | undefined;
  // Calls run strictly one after another, in the order they were sent: batches commit in the order the group
  // committer cut them, and a busy retry (timers) holds back the calls behind it rather than letting them pass.
  let queue: Promise<void> = Promise.resolve();
  port.on('message', (request: Request) => {
    if (request.kind === 'watch') {
      unwatch?.();
      unwatch = request.on ? writer.watchExternalCommits((head) => port.postMessage({ kind: 'external', head } satisfies Reply)) : undefined;
      return;
    }
    if (request.kind === 'close') {
      queue = queue.then(() => {
        unwatch?.();
        db.close();
        port.close();
      });
      return;
    }
    queue = queue.then(async () => {
      try {
        const value =
          request.target === 'log' && request.method === 'commit'
            ? encodeResult(await writer.commit(decodeBatch(request.args[0] as WireBatch), request.args[1] as 'durable' | 'relaxed'))
            : await targets[request.target][request.method]!(...request.args);
        port.postMessage({ kind: 'result', id: request.id, ok: true, value } satisfies Reply);
      } catch (error) {
        port.postMessage({ kind: 'result', id: request.id, ok: false, error: toWire(error) } satisfies Reply);
      }
    });
  });
}
