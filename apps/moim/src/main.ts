#!/usr/bin/env node
/**
 * The moim command line: `moim start` (all roles, or one with --role),
 * `moim groups` (consumer groups and their lag).
 */
import { fork } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { pino } from 'pino';
import { consumerGroups } from 'sinho';
import { buildLedger, ledgerOptionsFromEnv } from './ledger/service.js';
import { configFromEnv, openStore, startApi, startGateway, startWorker, transferTopologyOf } from './moim.js';
import { verifyHistory } from './verify.js';

const program = new Command('moim').description('moim, the reference community service built on Sinho');

const port = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port is an integer from 0 to 65535');
  return n;
};

type Stop = () => Promise<void>;

/** Forks this CLI as a child (another role); resolves with the message it sends once it is up. */
function forkRole(args: string[], env: NodeJS.ProcessEnv, onExit: (code: number | null, signal: NodeJS.Signals | null) => void): Promise<{ stop: Stop; message: { url?: string } }> {
  const child = fork(fileURLToPath(import.meta.url), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env });
  child.on('exit', onExit);
  const stop: Stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  return new Promise((resolve, reject) => {
    child.once('message', (message) => resolve({ stop, message: message as { url?: string } }));
    child.once('exit', (code) => reject(new Error(`moim ${args.join(' ')} exited (${code}) before it was up`)));
  });
}

program
  .command('start')
  .description('run moim: the HTTP API, and in child processes the worker (projections, policies, transfers, notification fan-out), the realtime gateways and the ledger simulator')
  .option('--role <role>', 'all | api | worker | gateway | ledger | checker (the external ledger checker, with MOIM_RABBITMQ_URL)', 'all')
  .option('--port <port>', 'HTTP port of the API (env PORT)', port, Number(process.env.PORT ?? 3000))
  .option('--ledger-port <port>', 'HTTP port of the ledger simulator (env LEDGER_PORT)', port, Number(process.env.LEDGER_PORT ?? 3001))
  .option('--gateway-port <port>', 'WebSocket port of gateway node 0; node k listens on this + k (env GATEWAY_PORT)', port, Number(process.env.GATEWAY_PORT ?? 3002))
  .option('--node <n>', 'gateway role: which node this is, from 0 to MOIM_GATEWAYS - 1 (env MOIM_GATEWAY_NODE)', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('a node is an integer >= 0');
    return n;
  }, Number(process.env.MOIM_GATEWAY_NODE ?? 0))
  .option('--host <host>', 'address to listen on', process.env.HOST ?? '127.0.0.1')
  .action(async (options: { role: string; port: number; ledgerPort: number; gatewayPort: number; node: number; host: string }) => {
    if (!['all', 'api', 'worker', 'gateway', 'ledger', 'checker'].includes(options.role)) throw new InvalidArgumentError(`unknown role ${options.role}`);
    const config = configFromEnv();
    const stops: Stop[] = [];
    let shuttingDown = false;
    const shutdown = async (code = 0) => {
      if (shuttingDown) return;
      shuttingDown = true;
      for (const stop of stops.reverse()) await stop().catch((error: Error) => console.error(`moim: ${error.message}`));
      process.exit(code);
    };
    process.on('SIGTERM', () => void shutdown());
    process.on('SIGINT', () => void shutdown());
    const childDied = (role: string) => (code: number | null, signal: NodeJS.Signals | null) => {
      if (shuttingDown) return;
      console.error(`moim: the ${role} stopped (${signal ?? code}); stopping.`);
      void shutdown(1);
    };
    const up = (message: { url?: string; gateways?: string[] }): void => void process.send?.(message);
    const gatewayUrls: string[] = [];

    if (options.role === 'ledger') {
      const ledger = await buildLedger(ledgerOptionsFromEnv());
      stops.push(() => ledger.close());
      const url = await ledger.listen({ port: options.ledgerPort, host: options.host });
      console.log(`ledger simulator listening on ${url}`);
      return up({ url });
    }
    if (options.role === 'checker') {
      if (!config.rabbitmqUrl) throw new InvalidArgumentError('the checker role needs MOIM_RABBITMQ_URL');
      const { startLedgerChecker } = await import('./ledger/checker.js');
      const { LedgerClient } = await import('./ledger/client.js');
      const checker = await startLedgerChecker(config.rabbitmqUrl, transferTopologyOf(config), new LedgerClient(config.ledgerUrl ?? 'http://127.0.0.1:3001'));
      stops.push(checker.close);
      console.log(`moim ledger checker: consuming ${transferTopologyOf(config).checks} (ledger ${config.ledgerUrl})`);
      return up({});
    }
    if (options.role === 'gateway') {
      // With fixed ports every node knows where the others are, and redirects a client that reached the wrong one.
      const nodeUrls = options.gatewayPort === 0 ? undefined : Array.from({ length: config.gateways ?? 1 }, (_, k) => `ws://${options.host}:${options.gatewayPort + k}/realtime`);
      const role = await startGateway(config, { node: options.node, port: options.gatewayPort === 0 ? 0 : options.gatewayPort + options.node, host: options.host, nodeUrls });
      stops.push(() => role.close(Number(process.env.MOIM_DRAIN_WINDOW_MS ?? 5000)));
      const url = `ws://${options.host}:${role.gateway.port}/realtime`;
      console.log(`moim gateway node ${options.node} of ${config.gateways ?? 1} listening on ${url}`);
      return up({ url });
    }
    if (options.role === 'worker') {
      // Background work yields the CPU to requests: the worker runs at a lower scheduling priority (invariant 8).
      const nice = Number(process.env.MOIM_WORKER_NICE ?? 10);
      try {
        if (nice !== 0) lowerPriority(Math.min(19, Math.max(-20, nice)));
      } catch (error) {
        console.error(`moim worker: could not lower its priority (${(error as Error).message}); running at normal priority.`);
      }
      const worker = await startWorker(config, process.env.MOIM_LOG === 'off' ? undefined : pino({ level: process.env.MOIM_LOG ?? 'info', base: { role: 'worker' } }));
      stops.push(worker.close);
      console.log(`moim worker: projections, policies and transfers running on ${config.dataDir} (ledger ${config.ledgerUrl})`);
      return up({});
    }
    if (options.role === 'all') {
      // Background work and the ledger in processes of their own: they never delay a request.
      const ledger = await forkRole(['start', '--role', 'ledger', '--ledger-port', String(options.ledgerPort), '--host', options.host], process.env, childDied('ledger'));
      stops.push(ledger.stop);
      const worker = await forkRole(['start', '--role', 'worker'], { ...process.env, LEDGER_URL: ledger.message.url }, childDied('worker'));
      stops.push(worker.stop);
      if (config.rabbitmqUrl) {
        // The RabbitMQ style of transfer checks: the external checker, as its own process.
        const checker = await forkRole(['start', '--role', 'checker'], { ...process.env, LEDGER_URL: ledger.message.url }, childDied('checker'));
        stops.push(checker.stop);
      }
      for (let node = 0; node < (config.gateways ?? 1); node++) {
        const gateway = await forkRole(['start', '--role', 'gateway', '--node', String(node), '--gateway-port', String(options.gatewayPort), '--host', options.host], process.env, childDied(`gateway ${node}`));
        stops.push(gateway.stop);
        gatewayUrls.push(gateway.message.url ?? '');
      }
    }
    const api = await startApi(config, {
      logger: process.env.MOIM_LOG === 'off' ? false : { level: process.env.MOIM_LOG ?? 'info' },
      loginAttemptsPerMinute: Number(process.env.MOIM_LOGIN_LIMIT_PER_EMAIL ?? 10),
      loginAttemptsPerMinutePerAddress: Number(process.env.MOIM_LOGIN_LIMIT_PER_ADDRESS ?? 100),
    });
    stops.push(api.close);
    const address = await api.app.listen({ port: options.port, host: options.host });
    console.log(`moim API listening on ${address} (data in ${config.dataDir}); try: curl ${address}/healthz`);
    if (gatewayUrls.length > 0) console.log(`moim notifications: WebSocket ${gatewayUrls.join(', ')}`);
    up({ url: address, gateways: gatewayUrls });
  });

/** Opens the store for one CLI command and closes it afterwards. */
async function withStore<T>(work: (store: Awaited<ReturnType<typeof openStore>>) => Promise<T>): Promise<T> {
  const store = await openStore(configFromEnv());
  try {
    return await work(store);
  } finally {
    await store.readModels.close();
    await store.log.close();
  }
}

const position = (value: string): number => {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('a position is an integer >= 1');
  return n;
};

program
  .command('migrate')
  .description("create or upgrade the store's schema (every start does this too), then exit")
  .action(() => withStore(async ({ log }) => console.log(`store ready: head position ${await log.headPosition()}`)));

program
  .command('groups')
  .description('list consumer groups with their checkpoint, lag, dead letters and pending retries')
  .action(() =>
    withStore(async ({ log }) => {
      for (const g of await consumerGroups(log).list()) {
        console.log(`${g.name}\tcheckpoint ${g.checkpoint}\tlag ${g.lag}\tdead letters ${g.deadLetters}\tpending ${g.pending}${g.partitions ? `\tpartitions ${g.partitions}` : ''}`);
      }
    }),
  );

const deadLetters = program.command('dead-letters').description('inspect and operate dead letters of a consumer group (stop the group first, or run this where it runs)');
deadLetters
  .command('list <group>')
  .description('list the dead letters of a group, with their errors')
  .action((group: string) =>
    withStore(async ({ log }) => {
      const letters = await consumerGroups(log).deadLetters(group);
      for (const l of letters) console.log(`position ${l.position}\tevent ${l.eventId}\tkey ${l.key}\tattempts ${l.attempts}\tlast error: ${l.errors.at(-1)?.message ?? ''}`);
      console.log(`${letters.length} dead letter(s)`);
    }),
  );
deadLetters
  .command('retry <group> [position]')
  .description('deliver one dead letter (or, with --all, every one) again')
  .option('--all', 'every dead letter of the group')
  .action((group: string, at: string | undefined, options: { all?: boolean }) =>
    withStore(async ({ log }) => {
      if (options.all) return console.log(`redelivering ${await consumerGroups(log).redeliverAll(group)} dead letter(s)`);
      if (at === undefined) throw new InvalidArgumentError('give a position or --all');
      await consumerGroups(log).redeliver(group, position(at));
      console.log(`position ${at} will be delivered again`);
    }),
  );
deadLetters
  .command('discard <group> <position>')
  .description('drop a dead letter for good')
  .action((group: string, at: string) =>
    withStore(async ({ log }) => {
      await consumerGroups(log).discard(group, position(at));
      console.log(`position ${at} discarded`);
    }),
  );

program
  .command('replay <group>')
  .description('move a stopped consumer group back, so it handles events again from a position or a time')
  .requiredOption('--from <position|time>', 'a log position (inclusive) or an ISO time')
  .action((group: string, options: { from: string }) =>
    withStore(async ({ log }) => {
      const from = /^\d+$/.test(options.from) ? position(options.from) : { at: new Date(options.from) };
      if (typeof from === 'object' && Number.isNaN(from.at.getTime())) throw new InvalidArgumentError('--from is neither a position nor a time');
      await consumerGroups(log).reset(group, from);
      console.log(`${group} will replay from ${options.from}`);
    }),
  );

program
  .command('verify')
  .description('recompute memberships and balances from the log and compare them with the read models; exits 1 on any discrepancy')
  .action(() =>
    withStore(async ({ log, readModels }) => {
      const report = await verifyHistory(log, readModels);
      console.log(
        `verified read models v${report.readModelVersion} at position ${report.position}: ${report.events} events, ${report.checked.communities} communities, ${report.checked.memberships} memberships, ${report.checked.familyMemberships} family memberships, ${report.checked.balances} balances`,
      );
      for (const d of report.discrepancies) console.log(`DISCREPANCY ${d.kind} ${d.key}: log says ${d.expected}, read model says ${d.actual}`);
      console.log(`${report.discrepancies.length} discrepancies`);
      if (report.discrepancies.length > 0) process.exitCode = 1;
    }),
  );

program.showHelpAfterError();
program.configureOutput({ outputError: (text, write) => write(`moim: ${text}`) });
try {
  await program.parseAsync();
} catch (error) {
  // Typed errors from Sinho (unknown group, group busy, ...) are the user's to read, not a crash.
  const e = error as Error & { code?: string };
  console.error(`moim: ${e.code ? `${e.code}: ` : ''}${e.message}`);
  process.exitCode = 1;
}

/**
 * Lowers the scheduling priority of the whole process. On Linux a priority belongs to a thread, and
 * `setPriority()` changes only the calling one: the threads Node started before any code ran (V8's garbage
 * collector helpers, the libuv pool) would keep competing with the API at full priority, and a draining worker
 * collects a lot of garbage. So every thread listed in /proc/self/task is lowered too; threads started later
 * (SQLite's checkpointer, the libuv pool when it grows) inherit the priority from the thread that starts them.
 */
function lowerPriority(nice: number): void {
  setPriority(nice);
  let threads: string[] = [];
  try {
    threads = readdirSync('/proc/self/task');
  } catch {
    return; // not Linux: the main thread is all that can be lowered
  }
  for (const tid of threads) {
    try {
      setPriority(Number(tid), nice);
    } catch {
      // A thread that ended meanwhile.
    }
  }
}
