/**
 * The report: one self-contained HTML file (uPlot and the data inlined, no
 * network needed to open it) with the load, latency, errors, connections,
 * deliveries, the target's and host's resources and the generator's health on
 * one timeline; the summary tables; and, given a previous run's JSON, a
 * comparison with regressions highlighted.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { RunSummary } from './summary.js';

const require = createRequire(import.meta.url);

/** One compared metric. `worse` says whether the change is a regression. */
export interface Comparison {
  metric: string;
  previous: number;
  current: number;
  changePercent: number | null;
  worse: boolean;
}

const HIGHER_IS_WORSE: [string, (s: RunSummary) => number][] = [
  ['latency p50 (ms)', (s) => s.latency.p50],
  ['latency p99 (ms)', (s) => s.latency.p99],
  ['latency max (ms)', (s) => s.latency.max],
  ['delivery p50 (ms)', (s) => s.delivery.p50],
  ['delivery p99 (ms)', (s) => s.delivery.p99],
  ['errors', (s) => s.totals.errors],
  ['lost', (s) => s.lost],
  ['duplicates', (s) => s.totals.duplicates],
  ['out of order', (s) => s.totals.outOfOrder],
  ['late deliveries', (s) => s.totals.late],
  ['dropped arrivals', (s) => s.totals.dropped],
];

/** Compares two runs: a regression is > 10% worse (and, for counts, any increase from 0). */
export function compareRuns(previous: RunSummary, current: RunSummary): Comparison[] {
  const rows: Comparison[] = [];
  const row = (metric: string, p: number, c: number, higherIsWorse: boolean) => {
    const changePercent = p === 0 ? (c === 0 ? 0 : null) : Math.round(((c - p) / p) * 1000) / 10;
    const worse = higherIsWorse ? (p === 0 ? c > 0 : c > p * 1.1) : c < p * 0.9;
    rows.push({ metric, previous: p, current: c, changePercent, worse });
  };
  row('completed actions/s', previous.rate, current.rate, false);
  for (const [metric, of] of HIGHER_IS_WORSE) row(metric, of(previous), of(current), true);
  return rows;
}

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** Renders the report. `previous` adds the comparison section. */
export function renderReport(summary: RunSummary, previous?: RunSummary): string {
  const uplotJs = readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8');
  const uplotCss = readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8');
  const comparison = previous ? compareRuns(previous, summary) : undefined;
  const t = summary.totals;
  const verdict = summary.failure
    ? `<p class="bad">The run could not be completed (${esc(summary.failure.code)}): ${esc(summary.failure.message)}</p>`
    : summary.aborted
      ? `<p class="bad">The run stopped early: ${esc(summary.aborted)}</p>`
      : '';
  const validity = summary.valid
    ? '<p class="good">The generator kept up: the figures describe the target.</p>'
    : summary.invalidReasons.length > 0
      ? `<p class="bad">INVALID RUN: the generator was the bottleneck, so the figures describe the generator, not the target.</p><ul>${summary.invalidReasons.map((r) => `<li>${esc(r)}</li>`).join('')}</ul>`
      : '';
  const table = (rows: [string, unknown][]) => `<table>${rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</table>`;
  const latencyRow = (name: string, l: RunSummary['latency']) => `<tr><th>${esc(name)}</th><td>${l.count}</td><td>${l.mean}</td><td>${l.p50}</td><td>${l.p90}</td><td>${l.p95}</td><td>${l.p99}</td><td>${l.p999}</td><td>${l.max}</td></tr>`;
  const data = JSON.stringify({ seconds: summary.seconds, monitor: summary.monitor, agentHealth: summary.agentHealth ?? [] }).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(summary.scenario)}: load test report</title>
<style>${uplotCss}
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{text-align:left;background:#f6f6f6}
.good{color:#186a18}.bad{color:#b00020;font-weight:600}tr.worse td{background:#fde2e2}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(640px,1fr));gap:16px}.chart h3{font-size:14px;margin:4px 0}
</style></head><body>
<h1>${esc(summary.scenario)}</h1>
<p>Started ${esc(summary.startedAt)} · ${summary.generators} generator(s) · load ${(summary.loadMs / 1000).toFixed(1)} s, drain ${(summary.drainMs / 1000).toFixed(1)} s</p>
${verdict}${validity}
<h2>Thresholds</h2>
${summary.thresholds.length === 0 ? '<p>None given.</p>' : `<table><tr><th>threshold</th><th>actual</th><th>result</th></tr>${summary.thresholds.map((r) => `<tr><th>${esc(r.threshold)}</th><td>${r.actual}${esc(r.unit)}</td><td class="${r.passed ? 'good' : 'bad'}">${r.passed ? 'pass' : 'FAIL'}</td></tr>`).join('')}</table>`}
<h2>Summary</h2>
<div style="display:flex;gap:32px;flex-wrap:wrap">
${table([
  ['arrivals scheduled', t.scheduled],
  ['actions ok', t.ok],
  ['actions failed', t.errors],
  ['arrivals dropped', t.dropped],
  ['late sends', t.lateSends],
  ['completed actions/s', summary.rate],
  ['HTTP requests (load)', t.requests],
  ['setup', `${summary.setup.users} users, ${summary.setup.subscriptions} subscriptions, ${summary.setup.groups} groups in ${(summary.setup.durationMs / 1000).toFixed(1)} s`],
])}
${table([
  ['deliveries expected', t.expected],
  ['delivered', t.delivered],
  ['lost', summary.lost],
  ['duplicates', t.duplicates],
  ['out of order', t.outOfOrder],
  ['late (past the deadline)', t.late],
  ['unexpected', t.unexpected],
  ['messages received', t.messages],
  ['subscription reconnects', summary.reconnects],
])}
</div>
<table><tr><th>latency (ms)</th><th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th></tr>
${latencyRow('action, from the intended send', summary.latency)}${latencyRow('delivery, from the action\u2019s intended send', summary.delivery)}</table>
${
  Object.keys(summary.errors).length === 0
    ? ''
    : `<h2>Errors by type</h2><table><tr><th>type</th><th>count</th><th>example</th></tr>${Object.entries(summary.errors)
        .sort((a, b) => b[1].count - a[1].count)
        .map(([k, e]) => `<tr><th>${esc(k)}</th><td>${e.count}</td><td style="text-align:left">${esc(e.example)}</td></tr>`)
        .join('')}</table>`
}
${summary.lostSample.length === 0 ? '' : `<h2>Lost deliveries (sample)</h2><table><tr><th>user</th><th>key</th></tr>${summary.lostSample.map((l) => `<tr><td>${l.user}</td><td>${esc(l.key)}</td></tr>`).join('')}</table>`}
${
  comparison
    ? `<h2>Compared with the previous run (${esc(previous!.startedAt)})</h2><table><tr><th>metric</th><th>previous</th><th>this run</th><th>change</th></tr>${comparison
        .map((c) => `<tr class="${c.worse ? 'worse' : ''}"><th>${esc(c.metric)}</th><td>${c.previous}</td><td>${c.current}</td><td>${c.changePercent === null ? 'new' : `${c.changePercent > 0 ? '+' : ''}${c.changePercent}%`}${c.worse ? ' (regression)' : ''}</td></tr>`)
        .join('')}</table>`
    : ''
}
<h2>Timeline</h2>
<div class="charts" id="charts"></div>
<script>${uplotJs}</script>
<script>
const DATA = ${data};
const S = DATA.seconds, M = DATA.monitor;
const charts = [];
function chart(title, x, series, unit) {
  const box = document.createElement('div'); box.className = 'chart';
  const h = document.createElement('h3'); h.textContent = title; box.appendChild(h);
  document.getElementById('charts').appendChild(box);
  const colors = ['#1f77b4','#d62728','#2ca02c','#ff7f0e','#9467bd','#8c564b','#e377c2','#17becf'];
  const opts = { width: 640, height: 240, scales: { x: { time: false } },
    axes: [{ label: 'seconds' }, { label: unit, size: 60 }],
    series: [{ label: 't' }].concat(series.map((s, i) => ({ label: s[0], stroke: colors[i % colors.length], width: 1.5 }))) };
  const u = new uPlot(opts, [x].concat(series.map((s) => s[1])), box);
  u.root.dataset.title = title;
  charts.push(u);
}
const st = S.map((s) => s.t), mt = M.map((m) => m.t);
chart('Throughput (per second)', st, [['scheduled', S.map((s) => s.counters.scheduled)], ['ok', S.map((s) => s.counters.ok)], ['errors', S.map((s) => s.counters.errors)], ['dropped', S.map((s) => s.counters.dropped)]], 'actions/s');
chart('Action latency from the intended send', st, [['p50', S.map((s) => s.latency.p50)], ['p95', S.map((s) => s.latency.p95)], ['p99', S.map((s) => s.latency.p99)], ['max', S.map((s) => s.latency.max)]], 'ms');
const kinds = [...new Set(S.flatMap((s) => Object.keys(s.errorKinds)))];
chart('Errors by type (per second)', st, kinds.length ? kinds.map((k) => [k, S.map((s) => s.errorKinds[k] || 0)]) : [['errors', S.map(() => 0)]], 'errors/s');
chart('Connections and actions in flight', st, [['open subscriptions', S.map((s) => s.connections)], ['actions in flight', S.map((s) => s.inFlight)]], 'count');
chart('Deliveries (per second) and pending', st, [['delivered', S.map((s) => s.counters.delivered)], ['expected', S.map((s) => s.counters.expected)], ['pending', S.map((s) => s.pending)], ['late', S.map((s) => s.counters.late)], ['duplicates', S.map((s) => s.counters.duplicates)], ['out of order', S.map((s) => s.counters.outOfOrder)]], 'deliveries');
chart('Delivery lag from the action\\u2019s intended send', st, [['p50', S.map((s) => s.delivery.p50)], ['p99', S.map((s) => s.delivery.p99)], ['max', S.map((s) => s.delivery.max)]], 'ms');
chart('Target CPU (% of one core) and event-loop lag', mt, [['CPU %', M.map((m) => m.target ? m.target.cpuPercent : null)], ['event-loop lag p99 (ms)', M.map((m) => m.targetMetrics && m.targetMetrics.eventLoopLagP99Ms != null ? m.targetMetrics.eventLoopLagP99Ms : null)]], '% / ms');
chart('Target memory (RSS)', mt, [['RSS MiB', M.map((m) => m.target ? m.target.rssBytes / 1048576 : null)]], 'MiB');
chart('Host CPU and memory', mt, [['CPU % (all cores)', M.map((m) => m.host ? m.host.cpuPercent : null)], ['steal % (other VMs)', M.map((m) => m.host ? m.host.stealPercent : null)], ['I/O wait %', M.map((m) => m.host ? m.host.iowaitPercent : null)], ['memory used %', M.map((m) => m.host ? (100 * m.host.memUsedBytes) / m.host.memTotalBytes : null)]], '%');
chart('Host network', mt, [['rx MiB/s', M.map((m) => m.host ? m.host.rxBytesPerSec / 1048576 : null)], ['tx MiB/s', M.map((m) => m.host ? m.host.txBytesPerSec / 1048576 : null)]], 'MiB/s');
chart('Generator health', mt, [['CPU % of one core', M.map((m) => m.generator ? m.generator.cpuPercent : null)], ['event-loop delay p99 (ms)', M.map((m) => m.generator ? m.generator.eventLoopP99Ms : null)]], '% / ms');
for (const a of DATA.agentHealth) chart('Agent ' + a.agent, a.samples.map((_, i) => i + 1), [['CPU % of one core', a.samples.map((s) => s.cpuPercent)], ['event-loop delay p99 (ms)', a.samples.map((s) => s.eventLoopP99Ms)]], '% / ms');
window.__charts = charts;
</script>
</body></html>
`;
}
