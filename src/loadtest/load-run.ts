/**
 * One generator's run of a scenario (the whole run locally, or one agent's
 * share in distributed mode): set up users, subscriptions and groups, then
 * fire actions on an open workload model, every arrival at its intended time
 * whatever happened to earlier ones, and account for every delivery.
 * Latency is measured from the intended send time, so a stalled target
 * shows up as latency instead of hiding as fewer requests (no coordinated
 * omission).
 */
import { randomBytes } from 'node:crypto';
import { DeliveryLedger, type LostDelivery } from './deliveries.js';
import { HttpClient, StepFailure } from './http.js';
import type { Phase, Scenario, Step } from './scenario.js';
import { Timeline, emptyCounters, type Counters, type SecondRecord } from './stats.js';
import { Subscriber } from './subscriber.js';
import type { Context } from './template.js';
import type { GeneratorSample } from './monitor.js';

/** Which share of the scenario this generator runs. */
export interface Shard {
  index: number;
  count: number;
}

export interface Progress {
  /** Seconds since the load started. */
  t: number;
  totalSeconds: number;
  phase: string;
  /** Actions completed per second (last second). */
  rate: number;
  p99: number;
  ok: number;
  errors: number;
  connections: number;
  pending: number;
  inFlight: number;
}

/** An error kind with its count and one example message. */
export interface ErrorKind {
  count: number;
  example: string;
}

/** What one generator reports; several are merged exactly by the controller. */
export interface GeneratorResult {
  shard: Shard;
  setup: { users: number; groups: number; subscriptions: number; requests: number; durationMs: number };
  /** Wall-clock time the load started (ms since epoch). */
  startedAt: number;
  /** How long the phases took and the drain after them (ms). */
  loadMs: number;
  drainMs: number;
  seconds: SecondRecord[];
  totals: Counters;
  latency: string;
  delivery: string;
  lost: { count: number; sample: LostDelivery[] };
  errors: Record<string, ErrorKind>;
  reconnects: number;
  /** Why the run stopped early, when it did. */
  aborted?: string;
}

/** A generator the controller drives: this process's LoadRun or a remote agent. */
export interface LoadGenerator {
  readonly name: string;
  prepare(): Promise<void>;
  load(startAt: number): Promise<{ result: GeneratorResult; health: GeneratorSample[] }>;
  progress(): Promise<Progress | undefined>;
  stop(reason: string): Promise<void>;
  close(): Promise<void>;
}

/** A run that could not be done (bad target, failed setup). `code` is stable. */
export class LoadTestError extends Error {
  constructor(
    readonly code: 'TARGET_UNREACHABLE' | 'SETUP_FAILED' | 'TARGET_START_FAILED' | 'AGENT_FAILED' | 'AGENT_UNAUTHORIZED' | 'AGENT_TOKEN_REQUIRED' | 'INVALID_SCENARIO',
    message: string,
  ) {
    super(message);
    this.name = 'LoadTestError';
  }
}

interface User {
  index: number;
  ctx: Record<string, unknown>;
  subscriber: Subscriber | undefined;
}

interface Group {
  index: number;
  ctx: Record<string, unknown>;
  members: number[];
  memberSet: Set<number>;
  size: number;
  busy: boolean;
  seq: number;
}

/**
 * Intended arrival times (ms from the load's start) of an open model with
 * these phases, scaled. Within a phase the k-th arrival is where the expected
 * count reaches k, from k = 0 at the phase's start (exact for constant rates
 * and linear ramps: `rate` for `duration` gives rate x duration arrivals);
 * `offset` in [0, 1) shifts a shard's arrivals so several agents interleave.
 */
export function* arrivals(phases: readonly Phase[], scale = 1, offset = 0): Generator<number> {
  let base = 0;
  for (const phase of phases) {
    const seconds = phase.durationMs / 1000;
    const from = phase.from * scale;
    const to = phase.to * scale;
    // Expected arrivals by time t (s): from*t + a*t^2, with a = (to - from) / (2 * duration).
    const a = (to - from) / (2 * seconds);
    for (let k = offset; ; k++) {
      const t = a === 0 ? (from > 0 ? k / from : Infinity) : (-from + Math.sqrt(from * from + 4 * a * k)) / (2 * a);
      if (!Number.isFinite(t) || t >= seconds) break;
      yield base + t * 1000;
    }
    base += phase.durationMs;
  }
}

/** Arrivals the phases ask for (an estimate for ramps), scaled. */
export function expectedArrivals(phases: readonly Phase[], scale = 1): number {
  return Math.round(phases.reduce((sum, p) => sum + ((p.from + p.to) / 2) * (p.durationMs / 1000) * scale, 0));
}

async function pool<T>(concurrency: number, items: readonly T[], fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (failure === undefined && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (error) {
        failure ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  if (failure !== undefined) throw failure;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class LoadRun {
  private readonly http: HttpClient;
  private readonly ledger: DeliveryLedger;
  private readonly timeline = new Timeline();
  private readonly users: User[] = [];
  private readonly reserve: Group[] = [];
  private readonly open: Group[] = [];
  private groupCursor = 0;
  private readonly errorKinds = new Map<string, ErrorKind>();
  private readonly base: Context;
  private inFlight = 0;
  private arrivalCount = 0;
  private loadStart = 0;
  private phaseIndex = 0;
  private setupRequests = 0;
  private setup: GeneratorResult['setup'] = { users: 0, groups: 0, subscriptions: 0, requests: 0, durationMs: 0 };
  private abortReason: string | undefined;
  private stopRequested = false;
  private readonly scale: number;
  private last: SecondRecord | undefined;

  constructor(
    private readonly scenario: Scenario,
    readonly shard: Shard = { index: 0, count: 1 },
    private readonly runId = randomBytes(4).toString('hex'),
  ) {
    this.http = new HttpClient(scenario.target.http, { connections: scenario.httpConnections, timeoutMs: scenario.timeoutMs });
    this.ledger = new DeliveryLedger(scenario.deadlineMs);
    this.base = { vars: scenario.variables, run: { id: this.runId, shard: shard.index, shards: shard.count }, target: scenario.target };
    this.scale = 1 / shard.count;
  }

  private countError(kind: string, example: string): void {
    const k = this.errorKinds.get(kind);
    if (k) k.count++;
    else this.errorKinds.set(kind, { count: 1, example: example.slice(0, 500) });
    this.timeline.errorKinds[kind] = (this.timeline.errorKinds[kind] ?? 0) + 1;
  }

  private async step(step: Step, ctx: Context, into: Record<string, unknown>): Promise<void> {
    this.timeline.counters.requests++;
    await this.http.run(step, ctx, into);
  }

  /** Users (with their subscriptions) and groups; throws LoadTestError('SETUP_FAILED'). */
  async prepare(): Promise<void> {
    const started = performance.now();
    const s = this.scenario;
    // This shard's users are the global indices i with i % count == index.
    for (let i = this.shard.index; i < s.users.count; i += this.shard.count) this.users.push({ index: i, ctx: { index: i }, subscriber: undefined });
    try {
      await pool(s.users.concurrency, this.users, async (user) => {
        const ctx = { ...this.base, user: user.ctx };
        for (const step of s.users.steps) await this.step(step, ctx, user.ctx);
        if (s.users.subscribe) {
          user.subscriber = new Subscriber(
            user.index,
            s.users.subscribe,
            ctx,
            {
              delivery: (u, key) => this.ledger.receive(u, key, performance.now() - this.loadStart, this.timeline.counters, this.timeline.delivery),
              message: () => this.timeline.counters.messages++,
              closed: (_u, why) => this.countError(why, `a subscription was closed: ${why}`),
            },
            s.timeoutMs,
          );
          await user.subscriber.connect();
          this.setup.subscriptions++;
        }
        this.setup.users++;
      });
      if (s.groups) {
        const needed = s.groups.count ?? Math.ceil(expectedArrivals(s.phases, this.scale) / Math.max(1, s.groups.min - 1)) + s.groups.open;
        const groups: Group[] = [];
        for (let k = 0; k < needed; k++) {
          const size = s.groups.min + Math.floor(Math.random() * (s.groups.max - s.groups.min + 1));
          groups.push({ index: k * this.shard.count + this.shard.index, ctx: { index: k * this.shard.count + this.shard.index }, members: [], memberSet: new Set(), size, busy: false, seq: 0 });
        }
        let creator = 0;
        await pool(s.users.concurrency, groups, async (group) => {
          const user = this.users[creator++ % this.users.length]!;
          const ctx = { ...this.base, user: user.ctx, group: group.ctx };
          for (const step of s.groups!.steps) await this.step(step, ctx, group.ctx);
          group.members.push(user.index);
          group.memberSet.add(user.index);
          this.setup.groups++;
        });
        this.open.push(...groups.slice(0, s.groups.open));
        this.reserve.push(...groups.slice(s.groups.open).reverse());
      }
    } catch (error) {
      const message = error instanceof StepFailure ? error.message : (error as Error).message;
      const unreachable = error instanceof StepFailure && /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|UND_ERR_CONNECT_TIMEOUT/.test(error.kind);
      throw new LoadTestError(unreachable ? 'TARGET_UNREACHABLE' : 'SETUP_FAILED', `setup failed after ${this.setup.users} users and ${this.setup.groups} groups: ${message}`);
    } finally {
      this.setup.requests = this.timeline.counters.requests;
      this.setupRequests = this.timeline.counters.requests;
      this.timeline.counters = emptyCounters();
      this.setup.durationMs = Math.round(performance.now() - started);
    }
  }

  private nextGroup(): Group | undefined {
    for (let i = 0; i < this.open.length; i++) {
      const g = this.open[(this.groupCursor + i) % this.open.length]!;
      if (!g.busy) {
        this.groupCursor = (this.groupCursor + i + 1) % Math.max(1, this.open.length);
        return g;
      }
    }
    return undefined;
  }

  private closeGroup(group: Group): void {
    const at = this.open.indexOf(group);
    if (at < 0) return;
    const next = this.reserve.pop();
    if (next) this.open[at] = next;
    else this.open.splice(at, 1);
  }

  private pickUser(group: Group | undefined): User | undefined {
    const n = this.users.length;
    if (n === 0) return undefined;
    if (!group) return this.users[Math.floor(Math.random() * n)];
    for (let tries = 0; tries < 16; tries++) {
      const u = this.users[Math.floor(Math.random() * n)]!;
      if (!group.memberSet.has(u.index)) return u;
    }
    return this.users.find((u) => !group.memberSet.has(u.index));
  }

  private dispatch(intended: number, now: number): void {
    const c = this.timeline.counters;
    c.scheduled++;
    if (this.inFlight >= this.scenario.maxInFlight) {
      c.dropped++;
      this.countError('dropped: maxInFlight', `an arrival was not sent: ${this.inFlight} actions in flight (options.maxInFlight)`);
      return;
    }
    let group: Group | undefined;
    if (this.scenario.groups) {
      group = this.nextGroup();
      if (!group) {
        c.dropped++;
        this.countError('dropped: no free group', 'an arrival was not sent: every open group was busy or full (raise groups.open or groups.count)');
        return;
      }
    }
    const user = this.pickUser(group);
    if (!user) {
      c.dropped++;
      this.countError('dropped: no user', 'an arrival was not sent: no user outside the group');
      return;
    }
    if (now - intended > this.scenario.lateSendMs) c.lateSends++;
    if (group) group.busy = true;
    this.inFlight++;
    const arrival = { index: this.arrivalCount++ * this.shard.count + this.shard.index, at: intended };
    void this.act(intended, user, group, arrival).finally(() => {
      this.inFlight--;
      if (group) group.busy = false;
    });
  }

  private async act(intended: number, user: User, group: Group | undefined, arrival: { index: number; at: number }): Promise<void> {
    const s = this.scenario;
    const action: Record<string, unknown> = {};
    const ctx: Context = { ...this.base, user: user.ctx, group: group?.ctx, action, arrival };
    let id: number | undefined;
    let to: number[] = [];
    const d = s.action.deliveries;
    if (d) {
      to = d.to === 'group' ? group!.members.slice() : d.to === 'actor' ? [user.index] : this.users.filter((u) => u !== user).map((u) => u.index);
      id = this.ledger.expect(d.key(ctx), intended, group ? group.index : -1, group ? group.seq++ : -1, to, this.timeline.counters);
    }
    try {
      for (const step of s.action.steps) await this.step(step, ctx, action);
      this.timeline.counters.ok++;
      this.timeline.latency.record(performance.now() - this.loadStart - intended);
      if (group) {
        group.members.push(user.index);
        group.memberSet.add(user.index);
        if (group.members.length >= group.size) this.closeGroup(group);
      }
    } catch (error) {
      this.timeline.counters.errors++;
      const kind = error instanceof StepFailure ? error.kind : (error as Error).name;
      this.countError(kind, (error as Error).message);
      if (id !== undefined) this.ledger.void(id, to, this.timeline.counters);
      // Whether the actor joined is unknown now: the group's membership is no longer exact.
      if (group) this.closeGroup(group);
    }
  }

  private openSubscriptions(): number {
    let n = 0;
    for (const u of this.users) if (u.subscriber?.open) n++;
    return n;
  }

  private roll(): SecondRecord {
    const t = this.timeline.seconds.length + 1;
    this.last = this.timeline.roll(t, { connections: this.openSubscriptions(), pending: this.ledger.pending, inFlight: this.inFlight });
    return this.last;
  }

  /** Asks the run to stop (the phases end now; the drain still runs). */
  stop(reason?: string): void {
    this.stopRequested = true;
    if (reason) this.abortReason ??= reason;
  }

  progress(): Progress {
    const last = this.last;
    const totals = this.timeline.totals;
    return {
      t: this.timeline.seconds.length,
      totalSeconds: Math.round(this.scenario.phases.reduce((a, p) => a + p.durationMs, 0) / 1000),
      phase: this.scenario.phases[this.phaseIndex]?.name ?? 'drain',
      rate: last ? last.counters.ok + last.counters.errors : 0,
      p99: this.timeline.lastP99,
      ok: totals.ok,
      errors: totals.errors,
      connections: last?.connections ?? 0,
      pending: this.ledger.pending,
      inFlight: this.inFlight,
    };
  }

  /** Runs the phases and the drain; `startAt` (epoch ms) lets several agents start together. */
  async load(startAt?: number): Promise<GeneratorResult> {
    const s = this.scenario;
    if (startAt !== undefined && startAt > Date.now()) await sleep(startAt - Date.now());
    const startedAt = Date.now();
    this.loadStart = performance.now();
    const schedule = arrivals(s.phases, this.scale, this.shard.index / this.shard.count);
    const phaseEnds: number[] = [];
    s.phases.reduce((end, p) => (phaseEnds.push(end + p.durationMs), end + p.durationMs), 0);
    const totalMs = phaseEnds[phaseEnds.length - 1] ?? 0;
    let next = schedule.next();
    let failingSeconds = 0;
    const acker = setInterval(() => {
      for (const u of this.users) u.subscriber?.ack();
    }, s.users.subscribe?.ackEveryMs ?? 1000);
    const roller = setInterval(() => {
      const sec = this.roll();
      // A target that fails every action for a while is down: stop instead of hammering it.
      if (sec.counters.errors > 0 && sec.counters.ok === 0) failingSeconds++;
      else failingSeconds = 0;
      if (failingSeconds * 1000 >= s.abortAfterFailingMs && !this.stopRequested) {
        const top = Object.entries(sec.errorKinds).sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'errors';
        this.stop(`the target stopped answering at ${sec.t} s: every action failed for ${failingSeconds} s (${top})`);
      }
    }, 1000);
    try {
      await new Promise<void>((resolve) => {
        const tick = () => {
          const now = performance.now() - this.loadStart;
          while (this.phaseIndex < phaseEnds.length && now >= phaseEnds[this.phaseIndex]!) this.phaseIndex++;
          while (!next.done && next.value <= now && !this.stopRequested) {
            this.dispatch(next.value, now);
            next = schedule.next();
          }
          if (next.done || this.stopRequested || now >= totalMs) return resolve();
          setTimeout(tick, Math.max(0, Math.min(5, next.value - now - 0.5)));
        };
        tick();
      });
      const loadMs = performance.now() - this.loadStart;
      // In-flight actions first (bounded by the request timeout), then outstanding deliveries.
      const drainStart = performance.now();
      while (this.inFlight > 0 && performance.now() - drainStart < s.timeoutMs * Math.max(1, s.action.steps.length) + 1000) await sleep(20);
      while (this.ledger.pending > 0 && performance.now() - drainStart < s.drainMs) await sleep(50);
      const drainMs = performance.now() - drainStart;
      clearInterval(roller);
      this.roll();
      for (const u of this.users) u.subscriber?.ack();
      return {
        shard: this.shard,
        setup: { ...this.setup, requests: this.setupRequests },
        startedAt,
        loadMs: Math.round(loadMs),
        drainMs: Math.round(drainMs),
        seconds: this.timeline.seconds,
        totals: { ...this.timeline.totals },
        latency: this.timeline.totalLatency.encode(),
        delivery: this.timeline.totalDelivery.encode(),
        lost: this.ledger.lost(),
        errors: Object.fromEntries(this.errorKinds),
        reconnects: this.users.reduce((sum, u) => sum + (u.subscriber?.reconnects ?? 0), 0),
        ...(this.abortReason ? { aborted: this.abortReason } : {}),
      };
    } finally {
      clearInterval(roller);
      clearInterval(acker);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.users.map((u) => u.subscriber?.close()));
    await this.http.close();
  }
}
