/**
 * Versioned projections with blue-green rebuilds.
 *
 * A projection version N runs as the consumer group `<name>@v<N>` and writes
 * its own tables (its `setup` creates them; by convention they carry the
 * version in their names). The store records which version is **live**, the
 * one readers use (`liveProjectionVersion`). Starting version N while N-1 is
 * live is a rebuild: N replays the log from the beginning into its new tables
 * while N-1 keeps serving (in this process or in the old deployment), reports
 * its progress, and once it has caught up it is switched live with a
 * compare-and-set, so readers move over at once and never see a half-built
 * read model. The old version can then be stopped and retired (its group
 * deleted, its tables dropped).
 */
import { EventEmitter } from 'node:events';
import { InvalidInput, SinhoError } from '../errors.js';
import { storageOf } from '../log/stored-event-log.js';
import type { EventLog } from '../log/types.js';
import { validateGroupName, type SubscribeOptions } from './consumer-group.js';
import { consumerGroups, subscribe, type Subscription } from './index.js';
import { committedCheckpoint } from './partitioned-group.js';
import type { ProjectionStatement } from './storage.js';

export interface ProjectionOptions extends Omit<SubscribeOptions, 'startFrom'> {
  /** Integer >= 1. A higher version than the live one is a rebuild. */
  version: number;
  /** Statements that create this version's tables (idempotent, e.g. CREATE TABLE IF NOT EXISTS), run before the first event. */
  setup?: (string | ProjectionStatement)[];
  /** Switch live once the rebuild is at most this many positions behind the log's head. Default 0. */
  switchAtLag?: number;
  /** How often progress is measured and reported, ms. Default 1,000. */
  progressIntervalMs?: number;
}

export interface ProjectionProgress {
  name: string;
  version: number;
  /** This version's checkpoint (for a partitioned group, its lowest partition's). */
  position: number;
  /** The log's head when measured. */
  head: number;
  /** position / head, from 0 to 1 (1 for an empty log). */
  ratio: number;
  /** Positions per second since the previous measurement. */
  positionsPerSecond: number;
  /** Estimated time to catch up at that rate, ms (undefined when not moving). */
  etaMs: number | undefined;
  /** Whether this version is the live one. */
  live: boolean;
}

export interface ProjectionEventMap {
  'projection:progress': [ProjectionProgress];
  /** This version became live; `from` is the version that served before (undefined for the first). */
  'projection:switched': [{ name: string; from: number | undefined; to: number }];
  'projection:error': [{ name: string; error: Error }];
}

/** The consumer group that runs `version` of projection `name`. */
export function projectionGroupName(name: string, version: number): string {
  return `${name}@v${version}`;
}

/** The version of projection `name` that serves reads, or undefined while none has caught up. */
export function liveProjectionVersion(log: EventLog, name: string): Promise<number | undefined> {
  return storageOf(log).subscriptions.liveProjectionVersion(name);
}

export class Projection extends EventEmitter<ProjectionEventMap> {
  private timer: NodeJS.Timeout | undefined;
  private measuring: Promise<void> | undefined;
  private last: { at: number; position: number } | undefined;
  private progressNow: ProjectionProgress;
  private stopped = false;

  constructor(
    private readonly log: EventLog,
    readonly name: string,
    readonly version: number,
    /** The consumer group running this version. */
    readonly group: Subscription,
    private readonly switchAtLag: number,
    private isLive: boolean,
  ) {
    super();
    this.progressNow = { name, version, position: 0, head: 0, ratio: 0, positionsPerSecond: 0, etaMs: undefined, live: isLive };
  }

  /** @internal */
  begin(intervalMs: number): void {
    this.timer = setInterval(() => void this.measure(), intervalMs);
  }

  /** The latest measured progress. */
  progress(): ProjectionProgress {
    return { ...this.progressNow };
  }

  get live(): boolean {
    return this.isLive;
  }

  /** Measures progress now, and switches this version live when it has caught up. */
  measure(): Promise<void> {
    if (this.measuring || this.stopped) return this.measuring ?? Promise.resolve();
    this.measuring = (async () => {
      try {
        await this.group.flush();
        const storage = storageOf(this.log).subscriptions;
        const [head, position] = await Promise.all([this.log.headPosition(), this.checkpoint()]);
        const now = Date.now();
        const rate = this.last && now > this.last.at ? ((position - this.last.position) * 1000) / (now - this.last.at) : 0;
        this.last = { at: now, position };
        if (!this.isLive && head - position <= this.switchAtLag) {
          const from = await storage.liveProjectionVersion(this.name);
          if (from === undefined || from < this.version) {
            if (await storage.switchProjection(this.name, from, this.version)) {
              this.isLive = true;
              this.emit('projection:switched', { name: this.name, from, to: this.version });
            }
          }
        }
        this.progressNow = {
          name: this.name,
          version: this.version,
          position,
          head,
          ratio: head === 0 ? 1 : Math.min(1, position / head),
          positionsPerSecond: Math.round(rate),
          etaMs: rate > 0 ? Math.round(((head - position) / rate) * 1000) : undefined,
          live: this.isLive,
        };
        this.emit('projection:progress', this.progress());
      } catch (error) {
        this.emit('projection:error', { name: this.name, error: error as Error });
      } finally {
        this.measuring = undefined;
      }
    })();
    return this.measuring;
  }

  private async checkpoint(): Promise<number> {
    return (await committedCheckpoint(storageOf(this.log).subscriptions, this.group.name)) ?? 0;
  }

  /** Resolves once this version is live (after a rebuild caught up), or rejects after `timeoutMs`. */
  async waitUntilLive(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.isLive) {
      if (this.stopped) throw new SinhoError('INVALID_ARGUMENT', `Projection ${this.name} v${this.version} stopped before it went live.`);
      if (Date.now() > deadline) throw new SinhoError('INVALID_ARGUMENT', `Projection ${this.name} v${this.version} did not catch up within ${timeoutMs} ms (at ${this.progressNow.position} of ${this.progressNow.head}).`);
      await this.measure();
      if (!this.isLive) await new Promise((r) => setTimeout(r, 20));
    }
  }

  /**
   * Retires an older version after the switch: deletes its consumer group
   * (it must be stopped everywhere) and runs `teardown` (e.g. DROP TABLE) in
   * one transaction.
   */
  async retire(version: number, teardown: (string | ProjectionStatement)[] = []): Promise<void> {
    if (!Number.isSafeInteger(version) || version < 1 || version >= this.version) {
      throw new InvalidInput('INVALID_ARGUMENT', `Only a version older than ${this.version} can be retired, got ${JSON.stringify(version)}.`);
    }
    if (!this.isLive) throw new SinhoError('INVALID_ARGUMENT', `Projection ${this.name} v${this.version} is not live yet; retire older versions after the switch.`);
    const admin = consumerGroups(this.log);
    const group = projectionGroupName(this.name, version);
    if ((await admin.list()).some((g) => g.name === group)) await admin.delete(group);
    await storageOf(this.log).subscriptions.runStatements(teardown.map(toStatement));
  }

  /** Stops this version's consumer group (gracefully). Its state stays; starting it again resumes. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.measuring;
    await this.group.stop();
  }
}

function toStatement(s: string | ProjectionStatement): ProjectionStatement {
  return typeof s === 'string' ? { sql: s, params: [] } : s;
}

/**
 * Runs version `options.version` of projection `name`: creates its tables,
 * starts its consumer group from the beginning (or resumes it), reports
 * progress, and switches it live once it has caught up, unless a newer
 * version is live already (then it runs, but never serves).
 */
export async function runProjection(log: EventLog, name: string, options: ProjectionOptions): Promise<Projection> {
  const { version } = options ?? {};
  if (!Number.isSafeInteger(version) || version < 1) throw new InvalidInput('INVALID_ARGUMENT', `version must be an integer >= 1, got ${JSON.stringify(version)}.`, { option: 'version' });
  const groupName = validateGroupName(projectionGroupName(validateGroupName(name), version));
  const switchAtLag = options.switchAtLag ?? 0;
  if (!Number.isSafeInteger(switchAtLag) || switchAtLag < 0) throw new InvalidInput('INVALID_ARGUMENT', `switchAtLag must be an integer >= 0, got ${JSON.stringify(switchAtLag)}.`);
  const interval = options.progressIntervalMs ?? 1000;
  if (!Number.isSafeInteger(interval) || interval < 1) throw new InvalidInput('INVALID_ARGUMENT', `progressIntervalMs must be an integer >= 1, got ${JSON.stringify(interval)}.`);
  const storage = storageOf(log).subscriptions;
  if (!Array.isArray(options.setup ?? [])) throw new InvalidInput('INVALID_ARGUMENT', 'setup must be an array of SQL statements.');
  await storage.runStatements((options.setup ?? []).map(toStatement));
  const { version: _v, setup: _s, switchAtLag: _l, progressIntervalMs: _i, ...subscribeOptions } = options;
  const group = await subscribe(log, groupName, { ...subscribeOptions, startFrom: 'beginning' });
  const live = (await storage.liveProjectionVersion(name)) === version;
  const projection = new Projection(log, name, version, group, switchAtLag, live);
  projection.begin(interval);
  void projection.measure();
  return projection;
}
