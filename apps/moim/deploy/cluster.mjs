#!/usr/bin/env node
/**
 * moim as a multi-process deployment on one machine (docs/moim.md, "Deployment"):
 * the log, read models and notification feeds in PostgreSQL; sessions and the
 * membership cache in Redis; transfer checks through RabbitMQ (the relay, the
 * retry topology and the external checker); 2 API processes, 2 workers (each
 * consumer group runs in one of them, the other is its hot standby), 3 gateway
 * nodes, the ledger simulator and the checker.
 *
 *   node apps/moim/deploy/cluster.mjs             run until Ctrl-C (npm run moim:cluster)
 *   node apps/moim/deploy/cluster.mjs --check     run the end-to-end story against it, with a worker
 *                                                 killed (SIGKILL) midway, then stop and clean up; exit 0 when it passed
 * Options: --base-port N (default 4100: APIs N and N+1, ledger N+2, gateways N+10..N+12),
 * --schema NAME (default moim_cluster; --check uses a fresh one and drops it).
 * Environment: MOIM_POSTGRES_URL, MOIM_REDIS_URL, MOIM_RABBITMQ_URL (defaults: the local servers).
 */
import { fork, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const main = join(root, 'apps', 'moim', 'dist', 'main.js');
const { values: args } = parseArgs({ options: { check: { type: 'boolean', default: false }, 'base-port': { type: 'string', default: '4100' }, schema: { type: 'string' } } });
const base = Number(args['base-port']);
if (!Number.isInteger(base) || base < 1024 || base > 65000) throw new Error('--base-port must be an integer from 1024 to 65000');
const suffix = randomBytes(4).toString('hex');
const schema = args.schema ?? (args.check ? `moim_cluster_${suffix}` : 'moim_cluster');
if (!/^[a-z_][a-z0-9_]{0,40}$/.test(schema)) throw new Error('--schema must be a lower-case SQL identifier');
const dataDir = mkdtempSync(join(tmpdir(), 'moim-cluster-'));
const env = {
  ...process.env,
  MOIM_POSTGRES_URL: process.env.MOIM_POSTGRES_URL ?? 'postgres://root@127.0.0.1:5432/test',
  MOIM_POSTGRES_SCHEMA: schema,
  MOIM_REDIS_URL: process.env.MOIM_REDIS_URL ?? 'redis://127.0.0.1:6379',
  MOIM_RABBITMQ_URL: process.env.MOIM_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
  MOIM_RABBITMQ_PREFIX: args.check ? `moim_${suffix}` : (process.env.MOIM_RABBITMQ_PREFIX ?? 'moim'),
  MOIM_GATEWAYS: '3',
  MOIM_DATA_DIR: dataDir,
  MOIM_LOG: process.env.MOIM_LOG ?? 'warn',
  LEDGER_URL: `http://127.0.0.1:${base + 2}`,
  ...(args.check ? { MOIM_CONFIRMATION_DELAY_MS: '300', LEDGER_FINALITY_MS: '200', LEDGER_FAILURE_RATE: '0' } : {}),
};

const processes = [];
/** How long a role may take to come up, and a check request to answer: past that the cluster fails, naming what hung, instead of hanging. */
const ROLE_START_MS = 60_000;
const REQUEST_MS = 30_000;
/** Starts `moim start --role ...` and resolves with its first IPC message (the role is up) unless `wait` is false. */
function role(name, argv, wait = true) {
  const child = fork(main, ['start', ...argv], { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const entry = { name, child, exited: false };
  processes.push(entry);
  child.on('exit', (code, signal) => {
    entry.exited = true;
    if (!stopping && !entry.killedOnPurpose) console.error(`cluster: ${name} exited (${signal ?? code})`);
  });
  if (!wait) return Promise.resolve(entry);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} was not up within ${ROLE_START_MS / 1000} s`)), ROLE_START_MS);
    child.once('message', (message) => (clearTimeout(timer), resolve({ ...entry, message, entry })));
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`${name} exited (${code}) before it was up`))));
  });
}

let stopping = false;
async function stopAll() {
  stopping = true;
  await Promise.all(
    processes.map(
      (p) =>
        new Promise((resolve) => {
          if (p.exited) return resolve();
          const timer = setTimeout(() => p.child.kill('SIGKILL'), 15_000);
          p.child.once('exit', () => (clearTimeout(timer), resolve()));
          p.child.kill('SIGTERM');
        }),
    ),
  );
}

async function cleanUp() {
  rmSync(dataDir, { recursive: true, force: true });
  if (!args.check) return;
  const pg = (await import('pg')).default;
  const client = new pg.Client({ connectionString: env.MOIM_POSTGRES_URL });
  await client.connect();
  for (const s of [schema, `${schema}_feed`]) await client.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  await client.end();
  const amqp = await import('amqplib');
  const connection = await amqp.connect(env.MOIM_RABBITMQ_URL);
  const channel = await connection.createChannel();
  const p = env.MOIM_RABBITMQ_PREFIX;
  for (const q of [`${p}.transfer-checks`, `${p}.transfer-checks.retry.${env.MOIM_CONFIRMATION_DELAY_MS}`, `${p}.transfer-checks.dead`, `${p}.transfer-results`, `${p}.transfer-results.dead`]) await channel.deleteQueue(q).catch(() => {});
  for (const x of [`${p}.transfers`, `${p}.transfers.dead`, `${p}.transfer-checks.retry`, `${p}.transfer-checks.dead`, `${p}.transfer-results.dead`]) await channel.deleteExchange(x).catch(() => {});
  await connection.close().catch(() => {});
}

async function start() {
  console.log(`cluster: PostgreSQL schema ${schema}, Redis ${env.MOIM_REDIS_URL}, RabbitMQ prefix ${env.MOIM_RABBITMQ_PREFIX}`);
  await role('ledger', ['--role', 'ledger', '--ledger-port', String(base + 2)]);
  // The first worker takes every group; the second waits as their hot standby (it reports nothing until it takes over).
  const workerA = await role('worker 1', ['--role', 'worker']);
  const workerB = await role('worker 2', ['--role', 'worker'], false);
  await role('checker', ['--role', 'checker']);
  const gateways = [];
  for (let node = 0; node < 3; node++) gateways.push((await role(`gateway ${node}`, ['--role', 'gateway', '--node', String(node), '--gateway-port', String(base + 10)])).message.url);
  const apis = [];
  for (let i = 0; i < 2; i++) apis.push((await role(`api ${i + 1}`, ['--role', 'api', '--port', String(base + i)])).message.url);
  console.log(`cluster: APIs ${apis.join(', ')}; gateways ${gateways.join(', ')}; ledger ${env.LEDGER_URL}; workers pid ${workerA.child.pid} (active) and ${workerB.child.pid} (standby)`);
  return { apis, gateways, workerA, workerB };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The seeds' story across the processes, with the active worker killed midway. */
async function check({ apis, gateways, workerA }) {
  const { WebSocket } = await import('ws');
  const { FeedClient } = await import(join(root, 'dist', 'client', 'index.js'));
  const deadline = Date.now() + 120_000;
  const until = async (probe, ok, what) => {
    for (;;) {
      const v = await probe();
      if (ok(v)) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`);
      await sleep(50);
    }
  };
  const http = async (api, method, path, token, body) => {
    const res = await fetch(`${apis[api]}${path}`, {
      method,
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_MS),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : {} };
  };
  const expect = (cond, what) => {
    if (!cond) throw new Error(`check failed: ${what}`);
    console.log(`check: ${what}`);
  };

  // Members register on one API and sign in on the other: sessions are shared through Redis.
  const members = [];
  for (const [i, name] of ['minji', 'jun', 'seo', 'hana'].entries()) {
    const email = `${name}-${suffix}@example.com`;
    const reg = await http(i % 2, 'POST', '/members', undefined, { email, displayName: name, password: 'long enough' });
    const login = await http((i + 1) % 2, 'POST', '/sessions', undefined, { email, password: 'long enough' });
    members.push({ id: reg.body.memberId, token: login.body.token });
  }
  const [minji, jun, seo, hana] = members;
  expect((await http(0, 'GET', '/me', minji.token)).body.memberId === minji.id && (await http(1, 'GET', '/me', minji.token)).body.memberId === minji.id, 'a session works on both API processes');

  // A community; joins through either API reach minji over the gateway she is sharded to (any node redirects her there).
  const community = (await http(1, 'POST', '/communities', minji.token, { name: `Runners ${suffix}` })).body.communityId;
  const feed = [];
  const client = new FeedClient({ url: gateways[0], token: minji.token, WebSocket });
  client.on('notification', (m) => feed.push(m)).start();
  try {
    await until(() => http(0, 'GET', `/communities/${community}/online`, minji.token), (r) => r.body.online?.includes(minji.id), 'minji online');
    await http(0, 'POST', `/communities/${community}/members`, jun.token);
    await http(1, 'POST', `/communities/${community}/members`, seo.token);
    await until(async () => feed.length, (n) => n === 2, 'two join notifications');
    expect(feed.map((m) => m.data.memberId).join() === [jun.id, seo.id].join(), 'joins on both APIs notified minji in order, through the gateways');

    // A transfer, confirmed through RabbitMQ's retry topology and the external checker.
    await http(0, 'POST', '/me/deposits', jun.token, { amount: 500 });
    const settled = (id) => until(() => http(1, 'GET', `/transfers/${id}`, jun.token), (r) => r.body.status === 'confirmed' || r.body.status === 'failed', 'the transfer');
    const t1 = (await http(1, 'POST', '/transfers', jun.token, { to: seo.id, amount: 200 })).body.transferId;
    expect((await settled(t1)).body.status === 'confirmed', 'a transfer is confirmed through RabbitMQ and the checker');

    // The active worker dies; the standby takes every group over and the story goes on.
    workerA.entry.killedOnPurpose = true;
    workerA.child.kill('SIGKILL');
    console.log('check: worker 1 killed (SIGKILL); worker 2 takes over within the lease (10 s)');
    await http(0, 'POST', `/communities/${community}/members`, hana.token);
    await until(async () => feed.length, (n) => n === 3, "hana's join after the takeover");
    expect(feed[2].data.memberId === hana.id && feed.map((m) => m.cursor).join() === '1,2,3', 'after the takeover: notified once, no hole, no duplicate');
    const t2 = (await http(0, 'POST', '/transfers', jun.token, { to: hana.id, amount: 100 })).body.transferId;
    expect((await settled(t2)).body.status === 'confirmed', 'a transfer after the takeover is confirmed');
    expect((await http(1, 'GET', '/me/account', jun.token)).body.balance === 200, "jun's balance is 500 - 200 - 100");
  } finally {
    client.close();
  }

  // Logout on one API is seen by the other at once (Redis revocation), and by the gateways.
  expect((await http(1, 'DELETE', '/sessions/current', seo.token)).status === 204, 'seo logs out on API 2');
  expect((await http(0, 'GET', '/me', seo.token)).status === 401, "API 1 refuses seo's token at once");

  // The read models caught up; the history verifies against them.
  await until(async () => (await fetch(`${apis[0]}/metrics`, { signal: AbortSignal.timeout(REQUEST_MS) })).text(), (m) => /sinho_consumer_group_lag\{group="moim-read-models@v2"\} 0/.test(m), 'the read models to catch up');
  const verify = spawn(process.execPath, [main, 'verify'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let report = '';
  verify.stdout.on('data', (d) => (report += d));
  const code = await new Promise((r) => verify.on('exit', r));
  expect(code === 0 && /0 discrepancies/.test(report), `moim verify: ${report.trim().split('\n').at(-1)}`);
}

let cluster;
try {
  cluster = await start();
} catch (error) {
  console.error(`cluster: could not start: ${error.message}`);
  await stopAll();
  await cleanUp().catch(() => {});
  process.exit(1);
}
if (args.check) {
  let ok = false;
  try {
    await check(cluster);
    ok = true;
  } catch (error) {
    console.error(error.stack ?? error.message);
  } finally {
    await stopAll();
    await cleanUp().catch((error) => console.error(`cluster: clean-up failed: ${error.message}`));
  }
  console.log(ok ? 'cluster check passed' : 'cluster check FAILED');
  process.exit(ok ? 0 : 1);
} else {
  console.log('cluster: running; Ctrl-C stops every process');
  const stop = async () => {
    await stopAll();
    await cleanUp();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
