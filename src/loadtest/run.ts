/**
 * The controller: starts the target when the scenario says how, checks it is
 * reachable, runs the generators (this process, or `sinho loadtest agent`
 * processes), samples the monitor every second on the load's timeline, and
 * builds the summary with thresholds and the generator-health verdict.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { LoadRun, LoadTestError, type LoadGenerator, type GeneratorResult, type Progress } from './load-run.js';
import { GeneratorSampler, ProcSampler, scrapeMetrics, type GeneratorSample, type RemoteSample } from './monitor.js';
import type { Scenario } from './scenario.js';
import { generatorVerdict, mergeResults, type MonitorSample, type RunSummary } from './summary.js';
import { checkThresholds } from './thresholds.js';
import { RemoteGenerator } from './agent.js';
import { emptyCounters, Latency } from './stats.js';

export interface RunLoadTestOptions {
  /** Base URLs of `sinho loadtest agent` processes; none: generate load in this process. */
  agents?: string[];
  /** The token the agents were started with (their `--token`), sent with every request to them. */
  agentToken?: string;
  /** Called every second with the run's progress. */
  onProgress?: (progress: Progress) => void;
  /** Lines worth telling the user (target started, setup done, ...). */
  log?: (line: string) => void;
  /** Aborting ends the phases early; the drain and the report still happen. */
  signal?: AbortSignal;
}

class LocalGenerator implements LoadGenerator {
  readonly name = 'local';
  private readonly run: LoadRun;
  constructor(scenario: Scenario) {
    this.run = new LoadRun(scenario);
  }
  prepare(): Promise<void> {
    return this.run.prepare();
  }
  async load(startAt: number): Promise<{ result: GeneratorResult; health: GeneratorSample[] }> {
    // The controller's monitor samples this process; its generator samples are the health record.
    return { result: await this.run.load(startAt), health: [] };
  }
  async progress(): Promise<Progress> {
    return this.run.progress();
  }
  async stop(reason: string): Promise<void> {
    this.run.stop(reason);
  }
  close(): Promise<void> {
    return this.run.close();
  }
}

/** A started target process (its own process group, so its children stop with it). */
class TargetProcess {
  private stderr = '';
  exited: number | null | undefined;
  constructor(readonly child: ChildProcess) {
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-4000);
    });
    child.on('exit', (code, signal) => {
      this.exited = code ?? (signal ? -1 : null);
    });
  }
  get pid(): number | undefined {
    return this.child.pid;
  }
  tail(): string {
    return this.stderr.trim().split('\n').slice(-10).join('\n');
  }
  async stop(): Promise<void> {
    if (this.exited !== undefined || !this.child.pid) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    try {
      process.kill(-this.child.pid, 'SIGTERM');
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-this.child.pid!, 'SIGKILL');
      } catch {}
    }, 10_000);
    await exited;
    clearTimeout(timer);
  }
}

async function startTarget(scenario: Scenario, log: (line: string) => void): Promise<TargetProcess | undefined> {
  const start = scenario.target.start;
  if (!start) return undefined;
  log(`starting the target: ${start.command}`);
  const child = spawn('sh', ['-c', start.command], { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  const target = new TargetProcess(child);
  const deadline = Date.now() + scenario.startTimeoutMs;
  for (;;) {
    if (target.exited !== undefined) throw new LoadTestError('TARGET_START_FAILED', `the target command exited (${target.exited}) before ${start.ready} was ready:\n${target.tail()}`);
    try {
      const response = await fetch(start.ready, { signal: AbortSignal.timeout(1000) });
      if (response.ok) return target;
    } catch {}
    if (Date.now() > deadline) {
      await target.stop();
      throw new LoadTestError('TARGET_START_FAILED', `the target was not ready at ${start.ready} within ${scenario.startTimeoutMs} ms:\n${target.tail()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function checkReachable(url: string): Promise<void> {
  try {
    await fetch(new URL(url).origin, { signal: AbortSignal.timeout(3000) });
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    throw new LoadTestError('TARGET_UNREACHABLE', `the target ${url} is unreachable: ${cause?.code ?? cause?.message ?? (error as Error).message}. Is it running?`);
  }
}

function emptySummary(scenario: Scenario, failure: { code: string; message: string }): RunSummary {
  const none = new Latency();
  return {
    scenario: scenario.name,
    startedAt: new Date().toISOString(),
    generators: 0,
    setup: { users: 0, groups: 0, subscriptions: 0, requests: 0, durationMs: 0 },
    loadMs: 0,
    drainMs: 0,
    rate: 0,
    totals: emptyCounters(),
    lost: 0,
    lostSample: [],
    latency: none.summary(),
    delivery: none.summary(),
    errors: {},
    reconnects: 0,
    seconds: [],
    monitor: [],
    thresholds: [],
    valid: false,
    invalidReasons: [],
    aborted: failure.message,
    failure,
    histograms: { latency: none.encode(), delivery: none.encode() },
  };
}

/**
 * Runs a scenario end to end and returns its summary. A run that cannot be
 * done (target down, setup failing, an agent failing) still returns a summary,
 * with `failure` set and whatever was measured.
 */
export async function runLoadTest(scenario: Scenario, options: RunLoadTestOptions = {}): Promise<RunSummary> {
  const log = options.log ?? (() => {});
  let target: TargetProcess | undefined;
  const generators: LoadGenerator[] = [];
  const monitor: MonitorSample[] = [];
  let monitorTimer: NodeJS.Timeout | undefined;
  let monitorStart: NodeJS.Timeout | undefined;
  // Whatever ends the run (even a failure before the load starts) stops the monitor for good.
  let finished = false;
  const stopMonitor = () => {
    finished = true;
    clearTimeout(monitorStart);
    clearInterval(monitorTimer);
  };
  const self = new GeneratorSampler();
  try {
    target = await startTarget(scenario, log);
    await checkReachable(scenario.target.http);
    const agents = options.agents ?? [];
    if (agents.length > 1 && scenario.action.deliveries?.to === 'all') {
      throw new LoadTestError('INVALID_SCENARIO', 'action.deliveries.to: all needs every user on one generator; with several agents, use group or actor');
    }
    if (agents.length > 0) agents.forEach((url, index) => generators.push(new RemoteGenerator(url, scenario.input, { index, count: agents.length }, options.agentToken)));
    else generators.push(new LocalGenerator(scenario));
    log(`setting up ${scenario.users.count} users${scenario.groups ? ' and the groups' : ''} on ${generators.length} generator(s)`);
    await Promise.all(generators.map((g) => g.prepare()));

    const pids = [...(scenario.target.pids ?? []), ...(target?.pid ? [target.pid] : [])];
    const sampler = new ProcSampler(() => pids);
    sampler.host();
    sampler.processes();
    const startAt = Date.now() + (agents.length > 0 ? 500 : 50);
    const abort = () => void Promise.all(generators.map((g) => g.stop('stopped by the user')));
    options.signal?.addEventListener('abort', abort, { once: true });
    monitorStart = setTimeout(() => {
      if (finished) return;
      self.sample();
      let t = 0;
      monitorTimer = setInterval(() => {
        t++;
        const sample: MonitorSample = { t, host: sampler.host(), generator: self.sample() };
        const processes = sampler.processes();
        if (processes) sample.target = processes;
        monitor.push(sample);
        if (target?.exited !== undefined) void Promise.all(generators.map((g) => g.stop(`the target process exited (${target!.exited}) at ${t} s:\n${target!.tail()}`)));
        void (async () => {
          if (scenario.target.metrics) {
            const m = await scrapeMetrics(scenario.target.metrics);
            if (m) sample.targetMetrics = m;
          }
          if (scenario.target.monitors?.length) {
            sample.remote = {};
            await Promise.all(
              scenario.target.monitors.map(async (url) => {
                try {
                  const r = await fetch(new URL('/sample', url), { signal: AbortSignal.timeout(900) });
                  sample.remote![url] = r.ok ? ((await r.json()) as RemoteSample) : null;
                } catch {
                  sample.remote![url] = null;
                }
              }),
            );
          }
          if (options.onProgress) {
            const parts = (await Promise.all(generators.map((g) => g.progress().catch(() => undefined)))).filter((p): p is Progress => p !== undefined);
            if (parts.length > 0) options.onProgress(sumProgress(parts));
          }
        })();
      }, 1000);
    }, Math.max(0, startAt - Date.now()));
    log('load started');
    const outcomes = await Promise.all(generators.map((g) => g.load(startAt)));
    stopMonitor();
    options.signal?.removeEventListener('abort', abort);
    const merged = mergeResults(outcomes.map((o) => o.result));
    const health = agents.length > 0 ? outcomes.map((o, i) => ({ agent: agents[i]!, samples: o.health })) : [{ agent: 'generator', samples: monitor.flatMap((m) => (m.generator ? [m.generator] : [])) }];
    const invalidReasons = generatorVerdict(health, merged.totals);
    const summary: RunSummary = {
      scenario: scenario.name,
      ...merged,
      monitor,
      ...(agents.length > 0 ? { agentHealth: health } : {}),
      thresholds: [],
      valid: invalidReasons.length === 0,
      invalidReasons,
    };
    summary.thresholds = checkThresholds(scenario.thresholds, summary);
    return summary;
  } catch (error) {
    stopMonitor();
    const code = error instanceof LoadTestError ? error.code : 'AGENT_FAILED';
    const summary = emptySummary(scenario, { code, message: (error as Error).message });
    summary.monitor = monitor;
    return summary;
  } finally {
    stopMonitor();
    self.stop();
    await Promise.all(generators.map((g) => g.close().catch(() => {})));
    await target?.stop();
  }
}

function sumProgress(parts: Progress[]): Progress {
  const first = parts[0]!;
  const sum = (k: 'rate' | 'ok' | 'errors' | 'connections' | 'pending' | 'inFlight') => parts.reduce((a, p) => a + p[k], 0);
  return { t: first.t, totalSeconds: first.totalSeconds, phase: first.phase, rate: sum('rate'), p99: Math.max(...parts.map((p) => p.p99)), ok: sum('ok'), errors: sum('errors'), connections: sum('connections'), pending: sum('pending'), inFlight: sum('inFlight') };
}
