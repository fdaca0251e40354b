#!/usr/bin/env node
/**
 * moim over HTTP, measured with an independent load generator (autocannon,
 * rate-limited with `overallRate`) on loopback, against the built service
 * started the way `npm start` starts it (API process + worker process +
 * ledger simulator) in a fresh data folder.
 *
 * 1. Join throughput: POST /communities/:id/members, every request a new
 *    (member, community) pair, at 1,000, 3,000 and 5,000 requests/s (the
 *    seeds' steps): achieved joins/s, p50/p99, errors; the last step is held
 *    for JOIN_SECONDS (60). Peak RSS of the service's processes.
 * 2. Isolation: p99 of a read endpoint (GET /communities/:id) at a steady
 *    1,000 requests/s, first idle, then while the worker drains a backlog of
 *    BACKLOG (200,000) events appended while it was stopped.
 *
 * Usage: npm run bench:moim   (BENCH_QUICK=1 for a short run; JOIN_CONNECTIONS=50 by default;
 *        BENCH_ONLY=isolation or BENCH_ONLY=joins runs that part alone and records nothing)
 * Writes bench/results/moim.json and the "moim" section of docs/benchmarks.md.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { consumerGroups } from '../dist/index.js';
import { openSqliteEventLog } from '../dist/log/sqlite/index.js';
import { machine, writeDocSection, writeResults } from './report.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.env.BENCH_QUICK === '1';
const MEMBERS = quick ? 200 : 500;
const COMMUNITIES = quick ? 200 : 800;
const STEPS = [1000, 3000, 5000];
const STEP_SECONDS = quick ? 5 : 20;
const JOIN_SECONDS = quick ? 10 : 60;
// About as long as the worker takes to drain the backlog (some 20,000 events/s here), so the reads are measured while it works.
const ISOLATION_SECONDS = quick ? 5 : 10;
const BACKLOG = quick ? 20_000 : 200_000;
// autocannon paces `overallRate` per connection and tick: with many connections it sends bursts, which
// show up as latency of the generator's own making (100 connections at 1,000/s: p99 ~100 ms on /healthz).
const JOIN_CONNECTIONS = Number(process.env.JOIN_CONNECTIONS ?? 50);
const READ_CONNECTIONS = 10;
const workDir = join(root, '.tmp', 'bench-moim');
const main = join(root, 'apps', 'moim', 'dist', 'main.js');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts `moim start` (or one role) and resolves with its API address and child process. */
async function startMoim(args, env) {
  // MOIM_BENCH_PROFILE=<dir>: CPU profiles of moim's processes (fork passes the flags on to each role).
  const profile = process.env.MOIM_BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.MOIM_BENCH_PROFILE}`] : [];
  const child = spawn(process.execPath, [...profile, main, 'start', ...args], { env: { ...process.env, MOIM_DATA_DIR: workDir, MOIM_LOG: process.env.MOIM_LOG ?? 'off', MOIM_LOGIN_LIMIT_PER_ADDRESS: '1000000', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const deadline = Date.now() + 30_000;
  const ready = args.includes('worker') ? /moim worker/ : /API listening on/;
  while (!ready.test(out)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`moim did not start: ${out}`);
    await sleep(50);
  }
  return { child, base: /API listening on (http:\/\/\S+)/.exec(out)?.[1], output: () => out };
}

async function stop(child) {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/** Peak RSS (VmHWM) of a process and its children, MB. */
function peakRssMB(pid) {
  const pids = [pid];
  try {
    for (const line of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)) if (line) pids.push(Number(line));
  } catch {}
  let kb = 0;
  for (const p of pids) {
    try {
      kb += Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
    } catch {}
  }
  return Math.round(kb / 1024);
}

async function http(base, method, path, token, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (res.status >= 400) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : {};
}

async function seed(base) {
  const tokens = [];
  // scrypt runs on libuv's pool: register in parallel, a few at a time.
  for (let i = 0; i < MEMBERS; i += 16) {
    await Promise.all(
      Array.from({ length: Math.min(16, MEMBERS - i) }, async (_, k) => {
        const email = `bench${i + k}@example.com`;
        await http(base, 'POST', '/members', undefined, { email, displayName: `b${i + k}`, password: 'long enough' });
        tokens[i + k] = (await http(base, 'POST', '/sessions', undefined, { email, password: 'long enough' })).token;
      }),
    );
  }
  const communities = [];
  for (let c = 0; c < COMMUNITIES; c++) communities.push((await http(base, 'POST', '/communities', tokens[c % MEMBERS], { name: `bench community ${c}` })).communityId);
  return { tokens, communities };
}

/** Every request a new (member, community) pair: member-major order spreads consecutive joins over communities. */
function joinRequests(seeded) {
  let next = 0;
  return [
    {
      method: 'POST',
      setupRequest: (req) => {
        const i = next++;
        const community = seeded.communities[i % COMMUNITIES];
        const member = Math.floor(i / COMMUNITIES) % MEMBERS;
        return { ...req, path: `/communities/${community}/members`, headers: { ...req.headers, authorization: `Bearer ${seeded.tokens[member]}` } };
      },
    },
  ];
}

function run(options) {
  return new Promise((resolve, reject) => {
    // Completed requests per second of the run: autocannon's rate is a budget per connection and second, so
    // a stall shows as a second that completed fewer than asked (the rest of that second's budget is lost).
    const perSecond = [];
    const instance = autocannon(options, (error, result) => (error ? reject(error) : resolve({ ...result, perSecond })));
    instance.on('tick', (c) => perSecond.push(c.counter));
  });
}

const summarize = (r, rate) => ({
  targetPerSecond: rate,
  achievedPerSecond: Math.round(r.requests.total / r.duration),
  p50Ms: r.latency.p50,
  p99Ms: r.latency.p99,
  maxMs: r.latency.max,
  requests: r.requests.total,
  /** What the generator's schedule asked for: the rate times the whole seconds run. */
  asked: rate * Math.round(r.duration),
  /** The fewest requests completed in one second of the run. */
  // (whole seconds only: autocannon ends with a tick for the last fraction of a second)
  slowestSecond: r.perSecond.length > 0 ? Math.min(...r.perSecond.slice(0, Math.max(1, Math.floor(r.duration)))) : null,
  non2xx: r.non2xx,
  errors: r.errors + r.timeouts,
  seconds: Math.round(r.duration),
});

async function joins(results) {
  const moim = await startMoim(['--port', '0', '--ledger-port', '0'], {});
  try {
    const seeded = await seed(moim.base);
    console.log(`seeded ${MEMBERS} members, ${COMMUNITIES} communities`);
    const requests = joinRequests(seeded);
    results.joins = [];
    for (const rate of STEPS) {
      const seconds = rate === STEPS.at(-1) ? JOIN_SECONDS : STEP_SECONDS;
      const r = await run({ url: moim.base, connections: JOIN_CONNECTIONS, overallRate: rate, duration: seconds, requests });
      const s = summarize(r, rate);
      console.log(JSON.stringify(s));
      results.joins.push(s);
    }
    results.peakRssMB = peakRssMB(moim.child.pid);
  } finally {
    await stop(moim.child);
  }
}

async function isolation(results) {
  // API and worker as separate roles, so the worker can be stopped while a backlog is appended.
  const api = await startMoim(['--role', 'api', '--port', '0'], {});
  let worker = await startMoim(['--role', 'worker'], {});
  try {
    const email = 'iso@example.com';
    await http(api.base, 'POST', '/members', undefined, { email, displayName: 'iso', password: 'long enough' });
    const token = (await http(api.base, 'POST', '/sessions', undefined, { email, password: 'long enough' })).token;
    const community = (await http(api.base, 'POST', '/communities', token, { name: 'isolation' })).communityId;
    while (!(await fetch(`${api.base}/communities/${community}`, { headers: { authorization: `Bearer ${token}` } })).ok) await sleep(20);
    const read = { url: `${api.base}/communities/${community}`, connections: READ_CONNECTIONS, headers: { authorization: `Bearer ${token}` }, overallRate: 1000, duration: ISOLATION_SECONDS };
    await run({ ...read, duration: 3 }); // warm-up
    const idle = summarize(await run(read), 1000);
    console.log('idle', JSON.stringify(idle));
    await stop(worker.child);
    // The backlog: community joins appended straight to the store while no worker runs.
    const log = openSqliteEventLog({ path: join(workDir, 'moim.sqlite'), backgroundCheckpointMs: false });
    for (let i = 0; i < BACKLOG; i += 1000) {
      const id = crypto.randomUUID();
      await log.append(`community-${id}`, [
        { type: 'CommunityCreated', data: { communityId: id, name: `backlog ${i}`, description: '', owner: crypto.randomUUID() } },
        ...Array.from({ length: 999 }, () => ({ type: 'MemberJoined', data: { communityId: id, memberId: crypto.randomUUID() } })),
      ]);
    }
    const head = await log.headPosition();
    await log.close();
    worker = await startMoim(['--role', 'worker'], {});
    const drainStarted = Date.now();
    // Watch the read-model projection's checkpoint while the reads are measured.
    const watcher = openSqliteEventLog({ path: join(workDir, 'moim.sqlite'), backgroundCheckpointMs: false });
    let drainedAt;
    let checkpoint = 0;
    const watching = setInterval(async () => {
      checkpoint = (await consumerGroups(watcher).list()).find((g) => g.name === 'moim-read-models@v2')?.checkpoint ?? checkpoint;
      if (checkpoint >= head && drainedAt === undefined) drainedAt = Date.now();
    }, 250);
    const loaded = summarize(await run(read), 1000);
    clearInterval(watching);
    await new Promise((r) => setTimeout(r, 300));
    await watcher.close();
    console.log('while draining', JSON.stringify(loaded), 'drained in', drainedAt === undefined ? 'more than the measurement' : `${(drainedAt - drainStarted) / 1000} s`);
    results.isolation = {
      readsPerSecond: 1000,
      idle,
      whileDraining: loaded,
      backlogEvents: BACKLOG,
      drainedDuringMeasurement: Math.min(BACKLOG, Math.max(0, checkpoint - (head - BACKLOG))),
      /** Seconds the worker took to drain the whole backlog (undefined: longer than the measurement). */
      drainSeconds: drainedAt === undefined ? undefined : +((drainedAt - drainStarted) / 1000).toFixed(1),
      p99Ratio: +(loaded.p99Ms / Math.max(idle.p99Ms, 0.001)).toFixed(2),
    };
  } finally {
    await stop(worker.child);
    await stop(api.child);
  }
}

function writeReport(results) {
  writeResults('moim', results);
  const m = results.machine;
  const iso = results.isolation;
  const last = results.joins.at(-1);
  const section = [
    '<!-- bench:moim:start -->',
    '## moim over HTTP (`npm run bench:moim`)',
    '',
    `Run ${results.date} on ${m.cpu}, ${m.memoryGiB} GiB; Node ${m.node}. The service as \`npm start\` runs it (API process, worker process, gateway process, ledger simulator) on SQLite in a fresh folder; autocannon ${results.generator} in the benchmark's process on the same machine, rate-limited with \`overallRate\` (${JOIN_CONNECTIONS} connections for joins, ${READ_CONNECTIONS} for reads), loopback only.`,
    '',
    `Joins: \`POST /communities/:id/members\`, each request a new (member, community) pair over ${MEMBERS} members and ${COMMUNITIES} communities. Latency as autocannon reports it (from each request's send). autocannon's rate is a budget per connection and second: "completed / asked" compares the requests completed with the rate times the seconds run, and "slowest second" is the fewest completed in one second (a stall loses the rest of that second's budget).`,
    '',
    '| target req/s | achieved joins/s | completed / asked | slowest second | p50 ms | p99 ms | max ms | non-2xx | errors | seconds |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...results.joins.map((j) => `| ${j.targetPerSecond.toLocaleString('en-US')} | ${j.achievedPerSecond.toLocaleString('en-US')} | ${j.requests.toLocaleString('en-US')} / ${j.asked.toLocaleString('en-US')} | ${j.slowestSecond?.toLocaleString('en-US') ?? 'n/a'} | ${j.p50Ms} | ${j.p99Ms} | ${j.maxMs} | ${j.non2xx} | ${j.errors} | ${j.seconds} |`),
    '',
    `Target: 5,000 joins/s held for 60 s with p99 under 50 ms and no errors. This run: **${last.achievedPerSecond.toLocaleString('en-US')} joins/s**, p99 **${last.p99Ms} ms**, ${last.non2xx + last.errors} failed requests over ${last.seconds} s. Peak RSS of the service (API + worker + gateway + ledger): **${results.peakRssMB} MB**.`,
    '',
    `Isolation: \`GET /communities/:id\` at a steady 1,000 requests/s for ${iso.idle.seconds} s, idle, then while the worker process drains a backlog of ${iso.backlogEvents.toLocaleString('en-US')} events appended while it was stopped (${iso.drainSeconds === undefined ? `it projected ${iso.drainedDuringMeasurement.toLocaleString('en-US')} of them during the measurement` : `it drained them all in ${iso.drainSeconds} s of the ${iso.whileDraining.seconds} s measured`}).`,
    '',
    '| | p50 ms | p99 ms | max ms | achieved req/s |',
    '|---|---:|---:|---:|---:|',
    `| idle | ${iso.idle.p50Ms} | ${iso.idle.p99Ms} | ${iso.idle.maxMs} | ${iso.idle.achievedPerSecond.toLocaleString('en-US')} |`,
    `| while draining | ${iso.whileDraining.p50Ms} | ${iso.whileDraining.p99Ms} | ${iso.whileDraining.maxMs} | ${iso.whileDraining.achievedPerSecond.toLocaleString('en-US')} |`,
    '',
    `p99 under load / idle: **${iso.p99Ratio}×** (target ≤ 1.5×).`,
    '<!-- bench:moim:end -->',
  ].join('\n');
  writeDocSection('moim', section);
}

rmSync(workDir, { recursive: true, force: true });
mkdirSync(workDir, { recursive: true });
const results = {
  date: new Date().toISOString(),
  quick,
  generator: JSON.parse(readFileSync(join(root, 'node_modules', 'autocannon', 'package.json'), 'utf8')).version,
  machine: machine(),
};
// BENCH_ONLY=isolation or BENCH_ONLY=joins runs that part alone and prints it, recording nothing (for exploring).
const only = process.env.BENCH_ONLY;
try {
  if (only !== 'isolation') await joins(results);
  rmSync(workDir, { recursive: true, force: true });
  mkdirSync(workDir, { recursive: true });
  if (only !== 'joins') await isolation(results);
  if (only === 'joins') console.log('joins only: nothing recorded');
  else if (only === 'isolation') {
    const { idle, whileDraining } = results.isolation;
    console.log(`isolation: p99 ${whileDraining.p99Ms} ms while draining / ${idle.p99Ms} ms idle = ${(whileDraining.p99Ms / idle.p99Ms).toFixed(2)}x (nothing recorded)`);
  } else {
    writeReport(results);
    console.log('wrote bench/results/moim.json and docs/benchmarks.md');
  }
} finally {
  rmSync(workDir, { recursive: true, force: true });
}
