#!/usr/bin/env node
/**
 * Event log benchmark: the built code (dist/) on SQLite and PostgreSQL, side by
 * side with the physical reference measured in the same run:
 *   (a) one awaited append at a time,
 *   (b) 256 concurrent appenders (group commit),
 *   (c) readAll throughput, and peak RSS while reading the whole log,
 * against raw better-sqlite3 inserts in batches of 256 (WAL, synchronous=FULL),
 * raw multi-row pg inserts in batches of 256, and raw read-back of the same rows
 * with JSON parsing. Events are 1 KiB of JSON. Traffic stays on loopback.
 *
 * Usage: npm run bench:log            (full run: 1,000,000 events read on SQLite)
 *        BENCH_QUICK=1 npm run bench:log   (smaller sizes, for a smoke run)
 * Writes bench/results/log.json and the "Event log" section of docs/benchmarks.md.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import { openSqliteEventLog } from '../dist/log/sqlite/index.js';
import { writeDocSection, writeResults } from './report.mjs';
import { openPostgresEventLog } from '../dist/log/postgres/index.js';
import { MIGRATIONS as SQLITE_MIGRATIONS } from '../dist/log/sqlite/schema.js';
import { MIGRATIONS as PG_MIGRATIONS } from '../dist/log/postgres/schema.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const POSTGRES_URL = process.env.SINHO_BENCH_POSTGRES_URL ?? 'postgres://root@127.0.0.1:5432/test';
const quick = process.env.BENCH_QUICK === '1';
const SIZES = quick
  ? { sequential: 300, concurrentEvents: 20_000, readEvents: 50_000, rawBatches: 80 }
  : { sequential: 2_000, concurrentEvents: 200_000, readEvents: 1_000_000, rawBatches: 400 };
const CONCURRENCY = 256;
const BATCH = 256;
const workDir = join(root, '.tmp', 'bench-log');

// 1 KiB of JSON data per event (the metadata adds its own ~40 bytes).
const PAYLOAD = { text: 'x'.repeat(1024 - 40), n: 0, tags: ['a', 'b'] };
const dataJson = () => JSON.stringify({ ...PAYLOAD, n: Math.random() });

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const ms = (ns) => Number(ns) / 1e6;
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
/** The run with the median rate, plus every run's rate. */
const medianRun = (runs) => ({ ...runs.find((r) => r.eventsPerSecond === median(runs.map((x) => x.eventsPerSecond))), runs: runs.map((r) => r.eventsPerSecond) });

function summarize(latenciesMs, events, seconds) {
  const sorted = [...latenciesMs].sort((a, b) => a - b);
  return {
    eventsPerSecond: Math.round(events / seconds),
    p50Ms: +percentile(sorted, 50).toFixed(3),
    p99Ms: +percentile(sorted, 99).toFixed(3),
    events,
    seconds: +seconds.toFixed(2),
  };
}

async function sequential(log, count) {
  const lat = [];
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    const s = process.hrtime.bigint();
    await log.append(`seq-${i % 100}`, [{ type: 'Bench', data: { ...PAYLOAD, n: i } }]);
    lat.push(ms(process.hrtime.bigint() - s));
  }
  return summarize(lat, count, ms(process.hrtime.bigint() - t0) / 1000);
}

async function concurrent(log, totalEvents, streamPrefix) {
  const lat = [];
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, w) => {
      while (next < totalEvents) {
        const i = next++;
        const s = process.hrtime.bigint();
        await log.append(`${streamPrefix}-${i % 1000}`, [{ type: 'Bench', data: { ...PAYLOAD, n: i } }]);
        lat.push(ms(process.hrtime.bigint() - s));
      }
    }),
  );
  return summarize(lat, totalEvents, ms(process.hrtime.bigint() - t0) / 1000);
}

function rawRows(batch, startPosition, n) {
  const rows = [];
  for (let i = 0; i < n; i++) {
    const p = startPosition + i;
    rows.push([p, uuidv7(), `raw-${p % 1000}`, 'raw', Math.floor(p / 1000) + batch, 'Bench', 1, dataJson(), `{"occurredAt":"${new Date().toISOString()}"}`]);
  }
  return rows;
}

function rawSqliteInsert(path, batches) {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  for (const m of SQLITE_MIGRATIONS) db.exec(m.sql);
  const insert = db.prepare('INSERT INTO sinho_events (position, id, stream, category, revision, type, schema_version, data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
  const lat = [];
  let position = 1;
  const t0 = process.hrtime.bigint();
  for (let b = 0; b < batches; b++) {
    const rows = rawRows(b, position, BATCH);
    position += BATCH;
    const s = process.hrtime.bigint();
    db.transaction(() => {
      const recordedAt = Date.now();
      for (const r of rows) insert.run(...r, recordedAt);
    })();
    lat.push(ms(process.hrtime.bigint() - s));
  }
  const result = summarize(lat, batches * BATCH, ms(process.hrtime.bigint() - t0) / 1000);
  db.close();
  return { ...result, note: `batches of ${BATCH}; p50/p99 are per batch` };
}

async function rawPostgresInsert(schema, batches) {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  await client.query(`CREATE SCHEMA ${schema}`);
  await client.query(PG_MIGRATIONS[0].sql(schema));
  const lat = [];
  let position = 1;
  const t0 = process.hrtime.bigint();
  for (let b = 0; b < batches; b++) {
    const rows = rawRows(b, position, BATCH);
    position += BATCH;
    const values = [];
    const params = [];
    rows.forEach((r, i) => {
      values.push(`(${r.map((_, j) => `$${i * 9 + j + 1}`).join(',')})`);
      params.push(...r);
    });
    const s = process.hrtime.bigint();
    await client.query(`INSERT INTO ${schema}.events (position, id, stream, category, revision, type, schema_version, data, metadata) VALUES ${values.join(',')}`, params);
    lat.push(ms(process.hrtime.bigint() - s));
  }
  const result = summarize(lat, batches * BATCH, ms(process.hrtime.bigint() - t0) / 1000);
  await client.query(`DROP SCHEMA ${schema} CASCADE`);
  await client.end();
  return { ...result, note: `multi-row INSERT of ${BATCH} rows, autocommit; p50/p99 are per batch` };
}

/** Fills a log quickly to `count` events (relaxed, large appends: this is set-up, not measured). */
async function fill(log, count) {
  const have = await log.headPosition();
  let left = count - have;
  const chunk = 500;
  while (left > 0) {
    const inFlight = [];
    for (let k = 0; k < 8 && left > 0; k++) {
      const n = Math.min(chunk, left);
      left -= n;
      inFlight.push(log.append(`fill-${left % 997}`, Array.from({ length: n }, (_, i) => ({ type: 'Bench', data: { ...PAYLOAD, n: i } })), { durability: 'relaxed' }));
    }
    await Promise.all(inFlight);
  }
}

// ---- read phase, in a child process so its peak RSS is the reader's alone ----
async function readChild(adapter, target, mode) {
  let count = 0;
  const t0 = process.hrtime.bigint();
  if (mode === 'sinho') {
    const log = adapter === 'sqlite' ? openSqliteEventLog({ path: target }) : await openPostgresEventLog({ connectionString: POSTGRES_URL, schema: target });
    for await (const e of log.readAll()) {
      if (e.data.text.length === 0) throw new Error('unexpected');
      count++;
    }
    await log.close();
  } else if (adapter === 'sqlite') {
    const db = new Database(target, { readonly: true });
    for (const row of db.prepare('SELECT id, stream, type, schema_version, data, metadata, revision, position FROM sinho_events ORDER BY position').iterate()) {
      const data = JSON.parse(row.data);
      JSON.parse(row.metadata);
      if (data.text.length === 0) throw new Error('unexpected');
      count++;
    }
    db.close();
  } else {
    // Raw pg read-back: keyset pages of 1,000 with the same columns, JSON parsed by the driver.
    const client = new pg.Client({ connectionString: POSTGRES_URL });
    await client.connect();
    let from = 0;
    for (;;) {
      const { rows } = await client.query(`SELECT id, stream, type, schema_version, data::text AS data, metadata::text AS metadata, revision, position FROM ${target}.events WHERE position > $1 ORDER BY position LIMIT 1000`, [from]);
      if (rows.length === 0) break;
      for (const row of rows) {
        const data = JSON.parse(row.data);
        JSON.parse(row.metadata);
        if (data.text.length === 0) throw new Error('unexpected');
        count++;
      }
      from = Number(rows[rows.length - 1].position);
    }
    await client.end();
  }
  const seconds = ms(process.hrtime.bigint() - t0) / 1000;
  process.stdout.write(JSON.stringify({ events: count, seconds: +seconds.toFixed(2), eventsPerSecond: Math.round(count / seconds), peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024) }));
}

function runReadChild(adapter, target, mode) {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), 'read-child', adapter, target, mode], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`read child failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Reads alternate sinho/raw three times each; medians are reported (the machine is shared and noisy). */
function readPhase(adapter, target) {
  const sinho = [];
  const raw = [];
  for (let i = 0; i < 3; i++) {
    sinho.push(runReadChild(adapter, target, 'sinho'));
    raw.push(runReadChild(adapter, target, 'raw'));
  }
  const pick = (runs) => ({ ...medianRun(runs), peakRssMB: Math.max(...runs.map((r) => r.peakRssMB)) });
  return { sinho: pick(sinho), raw: pick(raw) };
}

async function benchSqlite() {
  const dir = join(workDir, 'sqlite');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const result = {};
  const log = openSqliteEventLog({ path: join(dir, 'log.sqlite') });
  result.sequential = await sequential(log, SIZES.sequential);
  // Raw reference and group commit alternate, three rounds each; medians reported.
  const raws = [];
  const groups = [];
  for (let round = 0; round < 3; round++) {
    raws.push(rawSqliteInsert(join(dir, `raw-${round}.sqlite`), SIZES.rawBatches));
    groups.push(await concurrent(log, SIZES.concurrentEvents / 2, `conc${round}`));
  }
  result.rawBatchedInsert = medianRun(raws);
  result.groupCommit = medianRun(groups);
  await fill(log, SIZES.readEvents);
  await log.close();
  result.read = readPhase('sqlite', join(dir, 'log.sqlite'));
  rmSync(dir, { recursive: true, force: true });
  return result;
}

async function benchPostgres() {
  const schema = `bench_${process.pid}`;
  const result = {};
  const admin = new pg.Client({ connectionString: POSTGRES_URL });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  const log = await openPostgresEventLog({ connectionString: POSTGRES_URL, schema });
  try {
    result.sequential = await sequential(log, SIZES.sequential);
    const raws = [];
    const groups = [];
    for (let round = 0; round < 3; round++) {
      raws.push(await rawPostgresInsert(`${schema}_raw${round}`, SIZES.rawBatches));
      groups.push(await concurrent(log, SIZES.concurrentEvents / 2, `conc${round}`));
    }
    result.rawBatchedInsert = medianRun(raws);
    result.groupCommit = medianRun(groups);
    await fill(log, Math.min(SIZES.readEvents, quick ? 50_000 : 300_000));
    await log.close();
    result.read = readPhase('postgres', schema);
  } finally {
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  }
  return result;
}

function machine() {
  let pgVersion = 'unknown';
  try {
    pgVersion = execFileSync('psql', [POSTGRES_URL, '-Atc', 'show server_version'], { encoding: 'utf8' }).trim();
  } catch {}
  const db = new Database(':memory:');
  const sqliteVersion = db.prepare('select sqlite_version() v').get().v;
  db.close();
  return {
    cpu: `${os.cpus()[0]?.model ?? 'unknown'} × ${os.cpus().length}`,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    sqlite: sqliteVersion,
    postgres: pgVersion,
  };
}

function ratio(a, b) {
  return +(a / b).toFixed(2);
}

function writeReport(results) {
  writeResults('log', results);
  const { sqlite: s, postgres: p, machine: m } = results;
  const row = (name, r) => `| ${name} | ${r.eventsPerSecond.toLocaleString('en-US')} | ${r.p50Ms ?? '–'} | ${r.p99Ms ?? '–'} |`;
  const lines = [
    '<!-- bench:log:start -->',
    '## Event log (`npm run bench:log`)',
    '',
    `Run ${results.date}${results.quick ? ' (quick mode: reduced sizes)' : ''} on ${m.cpu}, ${m.memoryGiB} GiB, ${m.os}; Node ${m.node}, SQLite ${m.sqlite}, PostgreSQL ${m.postgres} (127.0.0.1, default durable commit).`,
    'Events are 1 KiB of JSON. Write figures are medians of three alternating rounds (Sinho, then the raw reference); read figures are medians of three runs each, in fresh processes.',
    '',
    '### SQLite (WAL, `synchronous=FULL`)',
    '',
    '| scenario | events/s | p50 ms | p99 ms |',
    '|---|---:|---:|---:|',
    row('(a) one awaited append at a time', s.sequential),
    row(`(b) ${CONCURRENCY} concurrent appenders, group commit`, s.groupCommit),
    row(`raw better-sqlite3, batches of ${BATCH} (per-batch latency)`, s.rawBatchedInsert),
    row(`(c) readAll, ${s.read.sinho.events.toLocaleString('en-US')} events`, s.read.sinho),
    row('raw read-back (iterate + JSON.parse)', s.read.raw),
    '',
    `Group commit reaches **${ratio(s.groupCommit.eventsPerSecond, s.rawBatchedInsert.eventsPerSecond)}×** the raw batched insert rate (target ≥ 0.5); readAll **${ratio(s.read.sinho.eventsPerSecond, s.read.raw.eventsPerSecond)}×** the raw read-back (target ≥ 0.7). Peak RSS of the process reading ${s.read.sinho.events.toLocaleString('en-US')} events with readAll: **${s.read.sinho.peakRssMB} MB** (limit 200 MB; raw iterate: ${s.read.raw.peakRssMB} MB).`,
    '',
    '### PostgreSQL',
    '',
    '| scenario | events/s | p50 ms | p99 ms |',
    '|---|---:|---:|---:|',
    row('(a) one awaited append at a time', p.sequential),
    row(`(b) ${CONCURRENCY} concurrent appenders, group commit`, p.groupCommit),
    row(`raw pg multi-row INSERT of ${BATCH} (per-batch latency)`, p.rawBatchedInsert),
    row(`(c) readAll, ${p.read.sinho.events.toLocaleString('en-US')} events`, p.read.sinho),
    row('raw read-back (keyset pages + JSON.parse)', p.read.raw),
    '',
    `Group commit: **${p.groupCommit.eventsPerSecond.toLocaleString('en-US')} events/s** (target ≥ 30,000), ${ratio(p.groupCommit.eventsPerSecond, p.rawBatchedInsert.eventsPerSecond)}× the raw multi-row insert rate; readAll ${ratio(p.read.sinho.eventsPerSecond, p.read.raw.eventsPerSecond)}× the raw read-back; reader peak RSS ${p.read.sinho.peakRssMB} MB.`,
    '',
    'Raw figures: `bench/results/log.json` (including every round).',
    '<!-- bench:log:end -->',
  ];
  writeDocSection('log', lines.join('\n'));
}

if (process.argv[2] === 'read-child') {
  await readChild(process.argv[3], process.argv[4], process.argv[5]);
} else {
  // BENCH_ONLY=sqlite|postgres runs one adapter and prints its figures without recording them.
  const only = process.env.BENCH_ONLY;
  const results = { date: new Date().toISOString(), quick, machine: machine(), sizes: SIZES };
  if (only !== 'postgres') {
    console.log('sqlite…');
    results.sqlite = await benchSqlite();
    console.log(JSON.stringify(results.sqlite, null, 1));
  }
  if (only !== 'sqlite') {
    console.log('postgres…');
    results.postgres = await benchPostgres();
    console.log(JSON.stringify(results.postgres, null, 1));
  }
  if (!only) writeReport(results);
  rmSync(workDir, { recursive: true, force: true });
  if (!only) console.log('wrote bench/results/log.json and docs/benchmarks.md');
}
