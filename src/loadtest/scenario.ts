/**
 * Load-test scenarios: the format (YAML or a TypeScript/JavaScript module
 * exporting the same object), and its validation. Every problem is reported
 * with its field path and, for YAML, its line, before anything is sent.
 * The format is documented in docs/loadtest.md.
 */
import { readFile } from 'node:fs/promises';
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { LineCounter, parseDocument, isNode } from 'yaml';
import { compileTemplate, compileText, type Render, type Context } from './template.js';

/** A scenario as written (YAML or a module's default export). */
export interface ScenarioInput {
  name: string;
  target: {
    /** Base URL of HTTP requests, e.g. http://127.0.0.1:3000. */
    http: string;
    /** Base URL of WebSocket subscriptions (used as {{ target.ws }}). */
    ws?: string;
    /** The target's Prometheus endpoint, scraped every second. */
    metrics?: string;
    /** Remote `sinho monitor` agents to sample every second. */
    monitors?: string[];
    /** Process ids to monitor locally (with their descendants). */
    pids?: number[];
    /** A command the runner starts (and stops) as the target; its process tree is monitored. */
    start?: { command: string; ready: string; timeout?: string };
  };
  variables?: Record<string, string | number | boolean>;
  users?: {
    count: number;
    /** Users set up at once (default 16). */
    concurrency?: number;
    steps?: StepInput[];
    subscribe?: SubscribeInput;
  };
  groups?: {
    /** Members per group, [min, max]: each group gets a random size in it and is closed when full. */
    size: [number, number];
    /** Groups taking joins at once (default 64). Actions on one group are never concurrent, so its membership is exact. */
    open?: number;
    /** Groups created before the load (default: enough for every arrival at the minimum size). */
    count?: number;
    /** Steps that create one group, run as a user who becomes its first member. */
    steps: StepInput[];
  };
  phases: PhaseInput[];
  action: {
    name?: string;
    steps: StepInput[];
    deliveries?: {
      /** `group`: every member of the action's group but the actor (the actor joins it); `all`: every user but the actor; `actor`: the actor. */
      to: 'group' | 'all' | 'actor';
      /** The key a delivery of this action carries (matched against `users.subscribe.deliveries.key`). */
      key: string;
    };
  };
  deliveries?: {
    /** A delivery later than this after the action's intended time is late (default 5s). */
    deadline?: string;
    /** After the last phase, how long to wait for outstanding deliveries (default 10s). */
    drain?: string;
  };
  thresholds?: string[];
  options?: {
    /** Actions in flight at most; an arrival beyond it is dropped and counted (default 10000). */
    maxInFlight?: number;
    /** HTTP connections to the target (default 64). */
    httpConnections?: number;
    /** Request timeout (default 10s). */
    timeout?: string;
    /** A send started later than this after its intended time is counted as late (default 10ms). */
    lateSend?: string;
    /** Abort when every action failed for this long (default 5s): the target is down. */
    abortAfterFailing?: string;
  };
}

export interface StepInput {
  /** `METHOD /path`, path relative to target.http (templated). */
  request: string;
  headers?: Record<string, string>;
  json?: unknown;
  expect?: { status?: number | number[] };
  /** name -> `body.a.b`, `header.name` or `status`. */
  capture?: Record<string, string>;
}

export interface SubscribeInput {
  url: string;
  headers?: Record<string, string>;
  /** A first frame to send after opening (JSON, templated). */
  hello?: unknown;
  /** The subscription is ready when a message matching this arrives (default: when the socket opens). */
  ready?: Record<string, unknown>;
  deliveries: {
    /** Only messages matching these top-level fields are deliveries. */
    when?: Record<string, unknown>;
    key: string;
  };
  /** Frame sent periodically with the last delivery ({{ message... }}). */
  ack?: { every?: string; frame: unknown };
}

export type PhaseInput = { name?: string; duration: string; rate: number } | { name?: string; duration: string; from: number; to: number };

// ---- compiled form ----

export interface Step {
  method: string;
  path: (c: Context) => string;
  headers: Render | undefined;
  json: Render | undefined;
  status: number[] | undefined;
  capture: [name: string, source: string[]][];
  label: string;
}

export interface Phase {
  name: string;
  durationMs: number;
  from: number;
  to: number;
}

export interface Scenario {
  name: string;
  input: ScenarioInput;
  target: ScenarioInput['target'];
  variables: Record<string, unknown>;
  users: { count: number; concurrency: number; steps: Step[]; subscribe: Subscribe | undefined };
  groups: { min: number; max: number; open: number; count: number | undefined; steps: Step[] } | undefined;
  phases: Phase[];
  action: { name: string; steps: Step[]; deliveries: { to: 'group' | 'all' | 'actor'; key: (c: Context) => string } | undefined };
  deadlineMs: number;
  drainMs: number;
  thresholds: string[];
  maxInFlight: number;
  httpConnections: number;
  timeoutMs: number;
  lateSendMs: number;
  abortAfterFailingMs: number;
  startTimeoutMs: number;
}

export interface Subscribe {
  url: (c: Context) => string;
  headers: Render | undefined;
  hello: Render | undefined;
  ready: Record<string, unknown> | undefined;
  when: Record<string, unknown> | undefined;
  key: (c: Context) => string;
  ackEveryMs: number;
  ackFrame: Render | undefined;
}

/** One problem in a scenario: where (field path, line when known) and what. */
export interface ScenarioProblem {
  path: string;
  line?: number;
  message: string;
}

/** A scenario that cannot run; `problems` lists every problem found. */
export class ScenarioError extends Error {
  readonly code = 'INVALID_SCENARIO';
  constructor(
    readonly file: string,
    readonly problems: ScenarioProblem[],
  ) {
    super(`${file}: the scenario is invalid:\n${problems.map((p) => `  ${p.line !== undefined ? `line ${p.line}, ` : ''}${p.path || '(top)'}: ${p.message}`).join('\n')}`);
    this.name = 'ScenarioError';
  }
}

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/;
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `250ms`, `5s`, `2m`, `1h` (or a number of milliseconds) to milliseconds; undefined when malformed. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value;
  if (typeof value !== 'string') return undefined;
  const m = DURATION.exec(value.trim());
  return m ? Number(m[1]) * UNITS[m[2]!]! : undefined;
}

const METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS']);

/** Validates and compiles a scenario object; `lineOf` maps a field path to a source line. */
export function compileScenario(input: unknown, file = 'scenario', lineOf: (path: (string | number)[]) => number | undefined = () => undefined): Scenario {
  const problems: ScenarioProblem[] = [];
  const fail = (path: (string | number)[], message: string): void => {
    const line = lineOf(path);
    problems.push({ path: formatPath(path), ...(line !== undefined ? { line } : {}), message });
  };
  const obj = (v: unknown, path: (string | number)[], known: string[], required: string[] = []): Record<string, unknown> | undefined => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      fail(path, `expected an object, got ${describe(v)}`);
      return undefined;
    }
    const o = v as Record<string, unknown>;
    for (const key of Object.keys(o)) if (!known.includes(key)) fail([...path, key], `unknown field; expected one of ${known.join(', ')}`);
    for (const key of required) if (o[key] === undefined) fail([...path, key], 'is required');
    return o;
  };
  const str = (v: unknown, path: (string | number)[], optional = false): string | undefined => {
    if (v === undefined && optional) return undefined;
    if (typeof v !== 'string' || v.length === 0) {
      if (v !== undefined) fail(path, `expected a non-empty string, got ${describe(v)}`);
      return undefined;
    }
    return v;
  };
  const int = (v: unknown, path: (string | number)[], min: number, fallback: number | undefined, max = Number.MAX_SAFE_INTEGER): number | undefined => {
    if (v === undefined) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
      fail(path, `expected a number from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ''}, got ${describe(v)}`);
      return fallback;
    }
    return v;
  };
  const duration = (v: unknown, path: (string | number)[], fallback: number): number => {
    if (v === undefined) return fallback;
    const ms = parseDuration(v);
    if (ms === undefined) {
      fail(path, `expected a duration such as 250ms, 5s or 2m, got ${describe(v)}`);
      return fallback;
    }
    return ms;
  };
  const url = (v: unknown, path: (string | number)[], protocols: string[], optional = false): string | undefined => {
    const s = str(v, path, optional);
    if (s === undefined) {
      if (!optional && v === undefined) fail(path, 'is required');
      return undefined;
    }
    if (s.includes('{{')) return s;
    try {
      const u = new URL(s);
      if (!protocols.includes(u.protocol)) fail(path, `expected a ${protocols.join(' or ')} URL, got ${JSON.stringify(s)}`);
    } catch {
      fail(path, `expected a URL, got ${JSON.stringify(s)}`);
    }
    return s;
  };
  const headerMap = (v: unknown, path: (string | number)[]): Render | undefined => {
    if (v === undefined) return undefined;
    const o = obj(v, path, Object.keys((v as object) ?? {}));
    if (!o) return undefined;
    for (const [k, h] of Object.entries(o)) if (typeof h !== 'string' && typeof h !== 'number') fail([...path, k], `expected a string, got ${describe(h)}`);
    return compileTemplate(o);
  };
  const steps = (v: unknown, path: (string | number)[]): Step[] => {
    if (!Array.isArray(v)) {
      if (v !== undefined) fail(path, `expected a list of steps, got ${describe(v)}`);
      return [];
    }
    const out: Step[] = [];
    v.forEach((raw, i) => {
      const p = [...path, i];
      const s = obj(raw, p, ['request', 'headers', 'json', 'expect', 'capture'], ['request']);
      if (!s) return;
      const request = str(s.request, [...p, 'request']);
      if (!request) return;
      const m = /^([A-Z]+)\s+(\S.*)$/.exec(request.trim());
      if (!m || !METHODS.has(m[1]!)) {
        fail([...p, 'request'], `expected "METHOD /path" with METHOD one of ${[...METHODS].join(', ')}, got ${JSON.stringify(request)}`);
        return;
      }
      let status: number[] | undefined;
      if (s.expect !== undefined) {
        const e = obj(s.expect, [...p, 'expect'], ['status']);
        if (e && e.status !== undefined) {
          const list = Array.isArray(e.status) ? e.status : [e.status];
          if (list.length === 0 || !list.every((x) => Number.isInteger(x) && (x as number) >= 100 && (x as number) <= 599)) fail([...p, 'expect', 'status'], `expected an HTTP status or a list of them, got ${describe(e.status)}`);
          else status = list as number[];
        }
      }
      const capture: [string, string[]][] = [];
      if (s.capture !== undefined) {
        const c = obj(s.capture, [...p, 'capture'], Object.keys((s.capture as object) ?? {}));
        for (const [name, source] of Object.entries(c ?? {})) {
          if (typeof source !== 'string' || !/^(body(\.[\w$-]+)*|header\.[\w-]+|status)$/.test(source)) {
            fail([...p, 'capture', name], `expected body, body.<path>, header.<name> or status, got ${describe(source)}`);
            continue;
          }
          capture.push([name, source.split('.')]);
        }
      }
      out.push({
        method: m[1]!,
        path: compileText(m[2]!),
        headers: headerMap(s.headers, [...p, 'headers']),
        json: s.json === undefined ? undefined : compileTemplate(s.json),
        status,
        capture,
        label: `${m[1]} ${m[2]}`,
      });
    });
    return out;
  };

  const root = obj(input, [], ['name', 'target', 'variables', 'users', 'groups', 'phases', 'action', 'deliveries', 'thresholds', 'options'], ['name', 'target', 'phases', 'action']);
  if (!root) throw new ScenarioError(file, problems);
  const name = str(root.name, ['name']) ?? 'scenario';

  const target = (obj(root.target, ['target'], ['http', 'ws', 'metrics', 'monitors', 'pids', 'start'], ['http']) ?? {}) as Record<string, unknown>;
  url(target.http, ['target', 'http'], ['http:', 'https:']);
  url(target.ws, ['target', 'ws'], ['ws:', 'wss:'], true);
  url(target.metrics, ['target', 'metrics'], ['http:', 'https:'], true);
  if (target.monitors !== undefined) {
    if (!Array.isArray(target.monitors)) fail(['target', 'monitors'], `expected a list of URLs, got ${describe(target.monitors)}`);
    else target.monitors.forEach((m, i) => url(m, ['target', 'monitors', i], ['http:']));
  }
  if (target.pids !== undefined) {
    if (!Array.isArray(target.pids) || !target.pids.every((p) => Number.isInteger(p) && p > 0)) fail(['target', 'pids'], `expected a list of process ids, got ${describe(target.pids)}`);
  }
  let startTimeoutMs = 60_000;
  if (target.start !== undefined) {
    const s = obj(target.start, ['target', 'start'], ['command', 'ready', 'timeout'], ['command', 'ready']);
    if (s) {
      str(s.command, ['target', 'start', 'command']);
      url(s.ready, ['target', 'start', 'ready'], ['http:']);
      startTimeoutMs = duration(s.timeout, ['target', 'start', 'timeout'], 60_000);
    }
  }

  const variables: Record<string, unknown> = {};
  if (root.variables !== undefined) {
    const v = obj(root.variables, ['variables'], Object.keys((root.variables as object) ?? {}));
    for (const [k, value] of Object.entries(v ?? {})) {
      if (!['string', 'number', 'boolean'].includes(typeof value)) fail(['variables', k], `expected a string, number or boolean, got ${describe(value)}`);
      variables[k] = value;
    }
  }

  let users: Scenario['users'] = { count: 0, concurrency: 16, steps: [], subscribe: undefined };
  if (root.users !== undefined) {
    const u = obj(root.users, ['users'], ['count', 'concurrency', 'steps', 'subscribe'], ['count']);
    if (u) {
      users = {
        count: int(u.count, ['users', 'count'], 1, 1, 1_000_000)!,
        concurrency: int(u.concurrency, ['users', 'concurrency'], 1, 16, 10_000)!,
        steps: steps(u.steps, ['users', 'steps']),
        subscribe: undefined,
      };
      if (u.subscribe !== undefined) {
        const sp = ['users', 'subscribe'];
        const s = obj(u.subscribe, sp, ['url', 'headers', 'hello', 'ready', 'deliveries', 'ack'], ['url', 'deliveries']);
        if (s) {
          const wsUrl = url(s.url, [...sp, 'url'], ['ws:', 'wss:']);
          const d = obj(s.deliveries, [...sp, 'deliveries'], ['when', 'key'], ['key']);
          const key = d ? str(d.key, [...sp, 'deliveries', 'key']) : undefined;
          const when = d?.when === undefined ? undefined : obj(d.when, [...sp, 'deliveries', 'when'], Object.keys((d.when as object) ?? {}));
          const ready = s.ready === undefined ? undefined : obj(s.ready, [...sp, 'ready'], Object.keys((s.ready as object) ?? {}));
          let ackEveryMs = 200;
          let ackFrame: Render | undefined;
          if (s.ack !== undefined) {
            const a = obj(s.ack, [...sp, 'ack'], ['every', 'frame'], ['frame']);
            if (a) {
              ackEveryMs = duration(a.every, [...sp, 'ack', 'every'], 200);
              if (a.frame !== undefined) ackFrame = compileTemplate(a.frame);
            }
          }
          users.subscribe = {
            url: compileText(wsUrl ?? ''),
            headers: headerMap(s.headers, [...sp, 'headers']),
            hello: s.hello === undefined ? undefined : compileTemplate(s.hello),
            ready,
            when,
            key: compileText(key ?? ''),
            ackEveryMs,
            ackFrame,
          };
        }
      }
    }
  }

  let groups: Scenario['groups'];
  if (root.groups !== undefined) {
    const g = obj(root.groups, ['groups'], ['size', 'open', 'count', 'steps'], ['size', 'steps']);
    if (g) {
      const size = g.size;
      let min = 2;
      let max = 2;
      if (!Array.isArray(size) || size.length !== 2 || !size.every((n) => Number.isInteger(n) && n >= 1) || (size[0] as number) > (size[1] as number)) fail(['groups', 'size'], `expected [min, max] with 1 <= min <= max, got ${describe(size)}`);
      else [min, max] = size as [number, number];
      if (users.count > 0 && max > users.count) fail(['groups', 'size'], `a group of ${max} needs at least ${max} users; users.count is ${users.count}`);
      groups = { min, max, open: int(g.open, ['groups', 'open'], 1, 64, 100_000)!, count: int(g.count, ['groups', 'count'], 1, undefined, 10_000_000), steps: steps(g.steps, ['groups', 'steps']) };
      if (groups.steps.length === 0) fail(['groups', 'steps'], 'must create the group with at least one step');
    }
  }

  const phases: Phase[] = [];
  if (!Array.isArray(root.phases) || root.phases.length === 0) {
    if (root.phases !== undefined) fail(['phases'], `expected a non-empty list of phases, got ${describe(root.phases)}`);
  } else {
    root.phases.forEach((raw, i) => {
      const p = obj(raw, ['phases', i], ['name', 'duration', 'rate', 'from', 'to'], ['duration']);
      if (!p) return;
      const durationMs = duration(p.duration, ['phases', i, 'duration'], 0);
      if (p.duration !== undefined && parseDuration(p.duration) !== undefined && durationMs <= 0) fail(['phases', i, 'duration'], 'must be longer than 0');
      let from = 0;
      let to = 0;
      if (p.rate !== undefined) {
        if (p.from !== undefined || p.to !== undefined) fail(['phases', i], 'give either rate (constant) or from and to (ramp), not both');
        from = to = int(p.rate, ['phases', i, 'rate'], 0, 0, 1_000_000)!;
      } else if (p.from !== undefined || p.to !== undefined) {
        from = int(p.from, ['phases', i, 'from'], 0, 0, 1_000_000)!;
        to = int(p.to, ['phases', i, 'to'], 0, 0, 1_000_000)!;
        if (p.from === undefined) fail(['phases', i, 'from'], 'is required with to');
        if (p.to === undefined) fail(['phases', i, 'to'], 'is required with from');
      } else fail(['phases', i], 'needs rate (arrivals per second) or from and to (a ramp)');
      phases.push({ name: (typeof p.name === 'string' && p.name) || `phase ${i + 1}`, durationMs, from, to });
    });
  }

  let action: Scenario['action'] = { name: 'action', steps: [], deliveries: undefined };
  const a = obj(root.action, ['action'], ['name', 'steps', 'deliveries'], ['steps']);
  if (a) {
    action = { name: str(a.name, ['action', 'name'], true) ?? 'action', steps: steps(a.steps, ['action', 'steps']), deliveries: undefined };
    if (Array.isArray(a.steps) && a.steps.length === 0) fail(['action', 'steps'], 'needs at least one step');
    if (a.deliveries !== undefined) {
      const d = obj(a.deliveries, ['action', 'deliveries'], ['to', 'key'], ['to', 'key']);
      if (d) {
        if (!['group', 'all', 'actor'].includes(d.to as string)) fail(['action', 'deliveries', 'to'], `expected group, all or actor, got ${describe(d.to)}`);
        if (d.to === 'group' && !groups) fail(['action', 'deliveries', 'to'], 'is group, but the scenario has no groups');
        if (!users.subscribe) fail(['action', 'deliveries'], 'expects deliveries, but users.subscribe is not given');
        const key = str(d.key, ['action', 'deliveries', 'key']);
        action.deliveries = { to: d.to as 'group' | 'all' | 'actor', key: compileText(key ?? '') };
      }
    }
  }
  if (users.count === 0 && (groups || action.steps.length > 0)) {
    // Actions run as users; without a users section there is one anonymous user.
    users.count = groups ? 0 : 1;
    if (groups) fail(['users'], 'groups need users: give users.count');
  }

  let deadlineMs = 5000;
  let drainMs = 10_000;
  if (root.deliveries !== undefined) {
    const d = obj(root.deliveries, ['deliveries'], ['deadline', 'drain']);
    if (d) {
      deadlineMs = duration(d.deadline, ['deliveries', 'deadline'], 5000);
      drainMs = duration(d.drain, ['deliveries', 'drain'], 10_000);
    }
  }

  const thresholds: string[] = [];
  if (root.thresholds !== undefined) {
    if (!Array.isArray(root.thresholds)) fail(['thresholds'], `expected a list such as ["p99 < 50ms", "lost == 0"], got ${describe(root.thresholds)}`);
    else
      root.thresholds.forEach((t, i) => {
        const problem = typeof t === 'string' ? thresholdProblem(t) : `expected a string, got ${describe(t)}`;
        if (problem) fail(['thresholds', i], problem);
        else thresholds.push(t as string);
      });
  }

  const o = root.options === undefined ? {} : (obj(root.options, ['options'], ['maxInFlight', 'httpConnections', 'timeout', 'lateSend', 'abortAfterFailing']) ?? {});
  const scenario: Scenario = {
    name,
    input: input as ScenarioInput,
    target: target as ScenarioInput['target'],
    variables,
    users,
    groups,
    phases,
    action,
    deadlineMs,
    drainMs,
    thresholds,
    maxInFlight: int(o.maxInFlight, ['options', 'maxInFlight'], 1, 10_000, 1_000_000)!,
    httpConnections: int(o.httpConnections, ['options', 'httpConnections'], 1, 64, 10_000)!,
    timeoutMs: duration(o.timeout, ['options', 'timeout'], 10_000),
    lateSendMs: duration(o.lateSend, ['options', 'lateSend'], 10),
    abortAfterFailingMs: duration(o.abortAfterFailing, ['options', 'abortAfterFailing'], 5000),
    startTimeoutMs,
  };
  if (problems.length > 0) throw new ScenarioError(file, problems);
  return scenario;
}

export const THRESHOLD = /^\s*([a-zA-Z][\w.]*)\s*(<=|>=|==|!=|<|>)\s*(\d+(?:\.\d+)?)\s*(ms|s|%)?\s*$/;
export const THRESHOLD_METRICS = ['p50', 'p90', 'p95', 'p99', 'p999', 'max', 'mean', 'delivery.p50', 'delivery.p99', 'delivery.max', 'errors', 'lost', 'duplicates', 'outOfOrder', 'late', 'unexpected', 'dropped', 'lateSends', 'rate'];

function thresholdProblem(text: string): string | undefined {
  const m = THRESHOLD.exec(text);
  if (!m) return `expected "<metric> <op> <number>[ms|s|%]" such as "p99 < 50ms", got ${JSON.stringify(text)}`;
  if (!THRESHOLD_METRICS.includes(m[1]!)) return `unknown metric ${m[1]}; expected one of ${THRESHOLD_METRICS.join(', ')}`;
  if (m[4] === '%' && m[1] !== 'errors') return 'only errors takes a percentage';
  return undefined;
}

function formatPath(path: (string | number)[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** Loads a scenario file: `.yaml`/`.yml`, or a module (`.ts` under tsx, `.js`, `.mjs`) whose default export is the scenario. */
export async function loadScenario(file: string, overrides: ScenarioOverrides = {}): Promise<Scenario> {
  const path = resolve(file);
  const ext = extname(path);
  let input: unknown;
  let lineOf: (p: (string | number)[]) => number | undefined = () => undefined;
  if (ext === '.yaml' || ext === '.yml') {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      throw new ScenarioError(file, [{ path: '', message: `cannot read the file: ${(error as Error).message}` }]);
    }
    const lineCounter = new LineCounter();
    const doc = parseDocument(text, { lineCounter, prettyErrors: false });
    if (doc.errors.length > 0) {
      throw new ScenarioError(
        file,
        doc.errors.map((e) => ({ path: '', line: lineCounter.linePos(e.pos[0]).line, message: `YAML: ${e.message.split('\n')[0]}` })),
      );
    }
    input = doc.toJS();
    lineOf = (p) => {
      // The deepest node that exists on the path (a missing field points at its parent).
      for (let depth = p.length; depth >= 0; depth--) {
        const node = depth === 0 ? doc.contents : doc.getIn(p.slice(0, depth), true);
        if (isNode(node) && node.range) return lineCounter.linePos(node.range[0]).line;
      }
      return undefined;
    };
  } else if (['.ts', '.mts', '.js', '.mjs'].includes(ext)) {
    const module = (await import(pathToFileURL(path).href)) as { default?: unknown };
    input = module.default;
    if (input === undefined) throw new ScenarioError(file, [{ path: '', message: 'the module has no default export (export default { name, target, phases, action, ... })' }]);
  } else {
    throw new ScenarioError(file, [{ path: '', message: `unknown scenario file type ${JSON.stringify(ext)}; use .yaml, .yml, .ts, .js or .mjs` }]);
  }
  return compileScenario(applyOverrides(input, overrides), file, lineOf);
}

/** Command-line adjustments of a scenario (scaled rates and durations, another target). */
export interface ScenarioOverrides {
  /** Multiplies every phase's rate. */
  rateScale?: number;
  /** Replaces every phase's duration. */
  phaseDuration?: string;
  /** Replaces users.count. */
  users?: number;
  /** Replaces target.http / target.ws. */
  http?: string;
  ws?: string;
}

function applyOverrides(input: unknown, o: ScenarioOverrides): unknown {
  if (input === null || typeof input !== 'object') return input;
  const s = structuredClone(input) as ScenarioInput;
  if (Array.isArray(s.phases)) {
    for (const p of s.phases as unknown as Record<string, unknown>[]) {
      if (o.rateScale !== undefined) for (const k of ['rate', 'from', 'to']) if (typeof p[k] === 'number') p[k] = Math.max(0, Math.round((p[k] as number) * o.rateScale));
      if (o.phaseDuration !== undefined) p.duration = o.phaseDuration;
    }
  }
  if (o.users !== undefined && s.users) s.users.count = o.users;
  if (s.target && typeof s.target === 'object') {
    if (o.http) s.target.http = o.http;
    if (o.ws) s.target.ws = o.ws;
  }
  return s;
}

/** Writes a scenario for TypeScript with its type checked. */
export function defineScenario(scenario: ScenarioInput): ScenarioInput {
  return scenario;
}
