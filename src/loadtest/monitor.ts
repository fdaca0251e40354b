/**
 * The monitor: samples, every second and on the load's own timeline, the
 * target (its process tree's CPU and RSS, its event-loop lag from its
 * Prometheus endpoint), the host (CPU, memory, network rx/tx) and the
 * generator itself (CPU, event-loop delay). Linux /proc only. Remote hosts run
 * `sinho monitor`, which serves the same host/process sample over HTTP.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux
const PAGE = 4096;

interface ProcStat {
  /** The command name (at most 15 characters on Linux). */
  comm: string;
  ppid: number;
  ticks: number;
  rssBytes: number;
}

function readStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { comm: text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')), ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]), rssBytes: Number(fields[21]) * PAGE };
  } catch {
    return undefined;
  }
}

/** Every process alive now, with its stats (one read of /proc per process). */
function allStats(): Map<number, ProcStat> {
  const stats = new Map<number, ProcStat>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const stat = readStat(pid);
    if (stat) stats.set(pid, stat);
  }
  return stats;
}

/** `roots` and all their descendants that are alive now, with their stats. */
function processTreeStats(roots: readonly number[], stats = allStats()): Map<number, ProcStat> {
  const children = new Map<number, number[]>();
  for (const [pid, stat] of stats) {
    const list = children.get(stat.ppid) ?? [];
    list.push(pid);
    children.set(stat.ppid, list);
  }
  const tree = new Map<number, ProcStat>();
  const queue = roots.filter((pid) => stats.has(pid));
  while (queue.length > 0) {
    const pid = queue.pop()!;
    if (tree.has(pid)) continue;
    tree.set(pid, stats.get(pid)!);
    queue.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/** The pids of `roots` and all their descendants that are alive now. */
export function processTree(roots: readonly number[]): number[] {
  return [...processTreeStats(roots).keys()];
}

/**
 * CPU time (µs) used so far by the processes whose command name starts with one of `names`, and by their
 * descendants: a server's processes found by name (`postgres`, `beam.smp`, `redis-server`), for a benchmark that
 * does not know their pids.
 */
export function cpuMicrosOfProcessesNamed(names: readonly string[]): number {
  if (names.length === 0) return 0;
  const stats = allStats();
  const roots = [...stats].filter(([, stat]) => names.some((name) => stat.comm.startsWith(name))).map(([pid]) => pid);
  let ticks = 0;
  for (const stat of processTreeStats(roots, stats).values()) ticks += stat.ticks;
  return (ticks * 1_000_000) / TICKS_PER_SECOND;
}

/** One host's sample over the last interval. */
export interface HostSample {
  /** Busy share of all cores, 0-100 (steal excluded). */
  cpuPercent: number;
  /** Share of all cores the hypervisor gave to other guests, 0-100: a noisy neighbour, not this host's load. */
  stealPercent: number;
  /** Share of all cores idle while waiting for disk I/O, 0-100 (fsync-heavy targets show it). */
  iowaitPercent: number;
  cores: number;
  memUsedBytes: number;
  memTotalBytes: number;
  /** Bytes per second over all interfaces (loopback included: local targets talk over it). */
  rxBytesPerSec: number;
  txBytesPerSec: number;
}

/** The monitored processes' sample: CPU in % of one core (200 = two cores busy), RSS summed. */
export interface ProcessSample {
  cpuPercent: number;
  rssBytes: number;
  processes: number;
}

/** Computes host and process-tree samples as deltas between calls. */
export class ProcSampler {
  private lastCpu: { busy: number; steal: number; iowait: number; total: number } | undefined;
  private lastNet: { rx: number; tx: number; at: number } | undefined;
  private lastTicks = new Map<number, number>();
  private lastAt = 0;

  constructor(private readonly roots: () => readonly number[]) {}

  host(): HostSample {
    const cpuLines = readFileSync('/proc/stat', 'utf8').split('\n');
    const cpu = cpuLines[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0);
    const steal = cpu[7] ?? 0;
    const iowait = cpu[4] ?? 0;
    const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0);
    const busy = total - idle - steal;
    const cores = cpuLines.filter((l) => /^cpu\d+ /.test(l)).length;
    let cpuPercent = 0;
    let stealPercent = 0;
    let iowaitPercent = 0;
    if (this.lastCpu && total > this.lastCpu.total) {
      const span = total - this.lastCpu.total;
      cpuPercent = (100 * (busy - this.lastCpu.busy)) / span;
      stealPercent = (100 * (steal - this.lastCpu.steal)) / span;
      iowaitPercent = (100 * (iowait - this.lastCpu.iowait)) / span;
    }
    this.lastCpu = { busy, steal, iowait, total };
    const mem = Object.fromEntries(
      readFileSync('/proc/meminfo', 'utf8')
        .split('\n')
        .map((l) => /^(\w+):\s+(\d+)/.exec(l))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => [m[1]!, Number(m[2]) * 1024]),
    );
    let rx = 0;
    let tx = 0;
    for (const line of readFileSync('/proc/net/dev', 'utf8').split('\n').slice(2)) {
      const m = /^\s*([^:]+):\s*(.*)$/.exec(line);
      if (!m) continue;
      const f = m[2]!.trim().split(/\s+/).map(Number);
      rx += f[0] ?? 0;
      tx += f[8] ?? 0;
    }
    const now = Date.now();
    let rxBytesPerSec = 0;
    let txBytesPerSec = 0;
    if (this.lastNet && now > this.lastNet.at) {
      const s = (now - this.lastNet.at) / 1000;
      rxBytesPerSec = (rx - this.lastNet.rx) / s;
      txBytesPerSec = (tx - this.lastNet.tx) / s;
    }
    this.lastNet = { rx, tx, at: now };
    return { cpuPercent: round(cpuPercent), stealPercent: round(stealPercent), iowaitPercent: round(iowaitPercent), cores, memUsedBytes: (mem.MemTotal ?? 0) - (mem.MemAvailable ?? 0), memTotalBytes: mem.MemTotal ?? 0, rxBytesPerSec: Math.round(rxBytesPerSec), txBytesPerSec: Math.round(txBytesPerSec) };
  }

  processes(): ProcessSample | undefined {
    const roots = this.roots();
    if (roots.length === 0) return undefined;
    const now = Date.now();
    const tree = processTreeStats(roots);
    let ticks = 0;
    let rssBytes = 0;
    const current = new Map<number, number>();
    for (const [pid, stat] of tree) {
      current.set(pid, stat.ticks);
      rssBytes += stat.rssBytes;
      // A process seen for the first time counts from its start only when it is new since the last sample.
      ticks += stat.ticks - (this.lastTicks.get(pid) ?? (this.lastAt === 0 ? stat.ticks : 0));
    }
    const seconds = this.lastAt === 0 ? 0 : (now - this.lastAt) / 1000;
    this.lastTicks = current;
    this.lastAt = now;
    return { cpuPercent: seconds > 0 ? round((100 * ticks) / TICKS_PER_SECOND / seconds) : 0, rssBytes, processes: tree.size };
  }
}

/** The generator's own health over the last interval. */
export interface GeneratorSample {
  /** % of one core. */
  cpuPercent: number;
  eventLoopP99Ms: number;
  rssBytes: number;
}

export class GeneratorSampler {
  private readonly delay = monitorEventLoopDelay({ resolution: 10 });
  private lastCpu = process.cpuUsage();
  private lastAt = performance.now();

  constructor() {
    this.delay.enable();
  }

  sample(): GeneratorSample {
    const cpu = process.cpuUsage(this.lastCpu);
    const now = performance.now();
    const ms = now - this.lastAt;
    this.lastCpu = process.cpuUsage();
    this.lastAt = now;
    const p99 = this.delay.count > 0 ? this.delay.percentile(99) / 1e6 : 0;
    this.delay.reset();
    return { cpuPercent: ms > 0 ? round(((cpu.user + cpu.system) / 1000 / ms) * 100) : 0, eventLoopP99Ms: round(p99), rssBytes: process.memoryUsage.rss() };
  }

  stop(): void {
    this.delay.disable();
  }
}

/** Selected series of a target's Prometheus endpoint. */
export interface TargetMetricsSample {
  eventLoopLagP99Ms?: number;
  /** Every un-labelled numeric sample, by name (gauges and counters). */
  values: Record<string, number>;
}

/** Scrapes a Prometheus text endpoint; undefined when it does not answer within a second. */
export async function scrapeMetrics(url: string): Promise<TargetMetricsSample | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(1000) });
    if (!response.ok) return undefined;
    const values: Record<string, number> = {};
    for (const line of (await response.text()).split('\n')) {
      const m = /^([a-zA-Z_:][\w:]*)\s+(\S+)$/.exec(line);
      if (m) {
        const v = Number(m[2]);
        if (Number.isFinite(v)) values[m[1]!] = v;
      }
    }
    const lag = values.nodejs_eventloop_lag_p99_seconds ?? values.nodejs_eventloop_lag_seconds;
    return { ...(lag !== undefined ? { eventLoopLagP99Ms: round(lag * 1000) } : {}), values };
  } catch {
    return undefined;
  }
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/** What `sinho monitor` serves at GET /sample. */
export interface RemoteSample {
  host: HostSample;
  processes?: ProcessSample;
}
