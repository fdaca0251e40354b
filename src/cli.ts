#!/usr/bin/env node
/**
 * The `sinho` command:
 *   sinho loadtest <scenario>     run a scenario (YAML or a module), print progress and a summary,
 *                                 write the HTML report and the JSON summary; thresholds decide the exit code
 *   sinho loadtest agent          serve a generator for distributed runs
 *   sinho monitor                 serve this host's (and given processes') samples for remote monitoring
 * Exit codes of `loadtest`: 0 passed; 1 a threshold failed; 2 the run could not be done
 * (invalid scenario, target unreachable or died, setup or an agent failed); 3 the generator was the
 * bottleneck (the run is invalid) though every threshold passed.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { createServer } from 'node:http';
import { readFile, writeFile } from 'node:fs/promises';
import { loadScenario, ScenarioError, type ScenarioOverrides } from './loadtest/scenario.js';
import { runLoadTest } from './loadtest/run.js';
import { renderReport } from './loadtest/report.js';
import { startAgent } from './loadtest/agent.js';
import { ProcSampler, type RemoteSample } from './loadtest/monitor.js';
import type { Progress } from './loadtest/load-run.js';
import { exitCodeOf, type RunSummary } from './loadtest/summary.js';

const number = (name: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a number >= 0.`);
  return n;
};
const port = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port is an integer from 0 to 65535.');
  return n;
};

const fmt = (n: number) => n.toLocaleString('en-US');

function progressLine(p: Progress): string {
  return `[${String(p.t).padStart(4)}/${p.totalSeconds}s] ${p.phase} · ${fmt(p.rate)}/s · p99 ${p.p99} ms · ok ${fmt(p.ok)} · errors ${fmt(p.errors)} · connections ${fmt(p.connections)} · in flight ${fmt(p.inFlight)} · deliveries pending ${fmt(p.pending)}`;
}

function printSummary(s: RunSummary): void {
  const t = s.totals;
  const lines = [
    '',
    `${s.scenario}: ${fmt(t.ok)} actions ok, ${fmt(t.errors)} failed, ${fmt(t.dropped)} arrivals dropped, ${s.rate}/s over ${(s.loadMs / 1000).toFixed(1)} s`,
    `  action latency (ms, from the intended send): p50 ${s.latency.p50} · p90 ${s.latency.p90} · p99 ${s.latency.p99} · max ${s.latency.max}`,
  ];
  if (t.expected > 0 || t.unexpected > 0)
    lines.push(
      `  deliveries: ${fmt(t.expected)} expected · ${fmt(t.delivered)} delivered · ${fmt(s.lost)} lost · ${fmt(t.duplicates)} duplicates · ${fmt(t.outOfOrder)} out of order · ${fmt(t.late)} late · ${fmt(t.unexpected)} unexpected`,
      `  delivery latency (ms): p50 ${s.delivery.p50} · p99 ${s.delivery.p99} · max ${s.delivery.max}`,
    );
  for (const [kind, e] of Object.entries(s.errors).sort((a, b) => b[1].count - a[1].count).slice(0, 5)) lines.push(`  error ${kind}: ${fmt(e.count)} (e.g. ${e.example.split('\n')[0]!.slice(0, 160)})`);
  if (s.failure) lines.push(`  COULD NOT RUN (${s.failure.code}): ${s.failure.message}`);
  else if (s.aborted) lines.push(`  STOPPED EARLY: ${s.aborted}`);
  if (!s.valid && s.invalidReasons.length > 0) lines.push('  INVALID RUN: the generator was the bottleneck:', ...s.invalidReasons.map((r) => `    - ${r}`));
  for (const r of s.thresholds) lines.push(`  ${r.passed ? 'pass' : 'FAIL'}  ${r.threshold}  (actual ${r.actual}${r.unit})`);
  process.stdout.write(lines.join('\n') + '\n');
}

const program = new Command('sinho').description('Sinho tools: load tests with delivery accounting, and their monitor');

const loadtest = program
  .command('loadtest')
  .description('run a load-test scenario (YAML, or a .ts/.js module exporting it)')
  .argument('<scenario>', 'the scenario file')
  .option('--agents <urls>', 'comma-separated URLs of `sinho loadtest agent` processes to generate the load')
  .addOption(new Option('--agent-token <token>', 'the token the agents were started with').env('SINHO_AGENT_TOKEN'))
  .option('--report <file>', 'the HTML report to write', 'loadtest-report.html')
  .option('--json <file>', 'the JSON summary to write', 'loadtest-report.json')
  .option('--compare <file>', "a previous run's JSON summary to compare with")
  .option('--rate-scale <factor>', "multiply every phase's rate", number('--rate-scale'))
  .option('--phase-duration <duration>', "replace every phase's duration (e.g. 10s)")
  .option('--users <count>', 'replace users.count', number('--users'))
  .option('--http <url>', 'replace target.http')
  .option('--ws <url>', 'replace target.ws')
  .option('--quiet', 'no live progress')
  .action(async (file: string, opts: { agents?: string; agentToken?: string; report: string; json: string; compare?: string; rateScale?: number; phaseDuration?: string; users?: number; http?: string; ws?: string; quiet?: boolean }) => {
    const overrides: ScenarioOverrides = {};
    if (opts.rateScale !== undefined) overrides.rateScale = opts.rateScale;
    if (opts.phaseDuration !== undefined) overrides.phaseDuration = opts.phaseDuration;
    if (opts.users !== undefined) overrides.users = opts.users;
    if (opts.http !== undefined) overrides.http = opts.http;
    if (opts.ws !== undefined) overrides.ws = opts.ws;
    let previous: RunSummary | undefined;
    try {
      if (opts.compare) previous = JSON.parse(await readFile(opts.compare, 'utf8')) as RunSummary;
    } catch (error) {
      process.stderr.write(`cannot read --compare ${opts.compare}: ${(error as Error).message}\n`);
      process.exitCode = 2;
      return;
    }
    let scenario;
    try {
      scenario = await loadScenario(file, overrides);
    } catch (error) {
      process.stderr.write(`${error instanceof ScenarioError ? error.message : `cannot load ${file}: ${(error as Error).message}`}\n`);
      process.exitCode = 2;
      return;
    }
    const tty = process.stderr.isTTY && !opts.quiet;
    const controller = new AbortController();
    const onSignal = () => {
      process.stderr.write('\nstopping: the phases end now; draining and writing the report\n');
      controller.abort();
    };
    process.once('SIGINT', onSignal);
    const summary = await runLoadTest(scenario, {
      ...(opts.agents ? { agents: opts.agents.split(',').map((s) => s.trim()).filter(Boolean) } : {}),
      ...(opts.agentToken ? { agentToken: opts.agentToken } : {}),
      signal: controller.signal,
      log: (line) => process.stderr.write(`${line}\n`),
      onProgress: opts.quiet
        ? undefined
        : (p) => {
            if (tty) process.stderr.write(`\r\x1b[2K${progressLine(p)}`);
            else if (p.t % 5 === 0) process.stderr.write(`${progressLine(p)}\n`);
          },
    });
    process.off('SIGINT', onSignal);
    if (tty) process.stderr.write('\n');
    await writeFile(opts.json, JSON.stringify(summary, null, 2));
    await writeFile(opts.report, renderReport(summary, previous));
    printSummary(summary);
    process.stdout.write(`  report: ${opts.report}  summary: ${opts.json}\n`);
    process.exitCode = exitCodeOf(summary);
  });

loadtest
  .command('agent')
  .description('serve a load generator that a controller (`sinho loadtest --agents`) drives')
  .option('--host <host>', 'address to listen on (0.0.0.0 to accept other hosts)', '127.0.0.1')
  .option('--port <port>', 'port to listen on (0: any free port)', port, 7070)
  .addOption(new Option('--token <token>', 'a secret of at least 16 characters every request must carry; required beyond loopback').env('SINHO_AGENT_TOKEN'))
  .action(async (opts: { host: string; port: number; token?: string }) => {
    let server;
    try {
      server = await startAgent({ host: opts.host, port: opts.port, ...(opts.token ? { token: opts.token } : {}), log: (line) => process.stderr.write(`${line}\n`) });
    } catch (error) {
      process.stderr.write(`sinho loadtest agent: ${(error as Error).message}\n`);
      process.exitCode = 2;
      return;
    }
    const address = server.address();
    process.stdout.write(`sinho loadtest agent listening on http://${opts.host}:${typeof address === 'object' && address ? address.port : opts.port}\n`);
    const stop = () => server.close(() => process.exit(0));
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });

program
  .command('monitor')
  .description("serve this host's CPU, memory and network (and given processes' CPU and RSS) at GET /sample, for a controller's target.monitors")
  .option('--host <host>', 'address to listen on (0.0.0.0 to accept other hosts)', '127.0.0.1')
  .option('--port <port>', 'port to listen on', port, 9464)
  .option('--pid <pid...>', 'processes to sample, with their descendants')
  .action(async (opts: { host: string; port: number; pid?: string[] }) => {
    const pids = (opts.pid ?? []).map(Number).filter((n) => Number.isInteger(n) && n > 0);
    const sampler = new ProcSampler(() => pids);
    sampler.host();
    sampler.processes();
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || req.url !== '/sample') {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 'NOT_FOUND', message: 'GET /sample' }));
        return;
      }
      const processes = sampler.processes();
      const sample: RemoteSample = { host: sampler.host(), ...(processes ? { processes } : {}) };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(sample));
    });
    await new Promise<void>((resolve) => server.listen(opts.port, opts.host, resolve));
    const address = server.address();
    process.stdout.write(`sinho monitor listening on http://${opts.host}:${typeof address === 'object' && address ? address.port : opts.port}/sample\n`);
    const stop = () => server.close(() => process.exit(0));
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });

await program.parseAsync(process.argv);
