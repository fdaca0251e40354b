#!/usr/bin/env node
/**
 * The moim command line: `moim start` (all roles, or one with --role),
 * `moim groups` (consumer groups and their lag).
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { consumerGroups } from 'sinho';
import { configFromEnv, openStore, startApi, startWorker } from './moim.js';

const program = new Command('moim').description('moim, the reference community service built on Sinho');

const port = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port is an integer from 0 to 65535');
  return n;
};

program
  .command('start')
  .description('run moim: the HTTP API and, in a child process, the worker (projections and policies)')
  .option('--role <role>', 'all | api | worker', 'all')
  .option('--port <port>', 'HTTP port (env PORT)', port, Number(process.env.PORT ?? 3000))
  .option('--host <host>', 'address to listen on', process.env.HOST ?? '127.0.0.1')
  .action(async (options: { role: string; port: number; host: string }) => {
    if (!['all', 'api', 'worker'].includes(options.role)) throw new InvalidArgumentError(`unknown role ${options.role}`);
    const config = configFromEnv();
    const stops: (() => Promise<void>)[] = [];
    if (options.role === 'all') {
      // Background work in its own process: it never delays a request.
      const child = fork(fileURLToPath(import.meta.url), ['start', '--role', 'worker'], { stdio: 'inherit' });
      stops.push(
        () =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
          }),
      );
      child.on('exit', (code, signal) => {
        if (!shuttingDown) {
          console.error(`moim: the worker stopped (${signal ?? code}); stopping.`);
          void shutdown(1);
        }
      });
    }
    if (options.role === 'worker') {
      const worker = await startWorker(config);
      stops.push(worker.close);
      console.log(`moim worker: projections and policies running on ${config.dataDir}`);
    } else {
      const api = await startApi(config, { logger: process.env.MOIM_LOG === 'off' ? false : { level: process.env.MOIM_LOG ?? 'info' } });
      stops.push(api.close);
      const address = await api.app.listen({ port: options.port, host: options.host });
      console.log(`moim API listening on ${address} (data in ${config.dataDir}); try: curl ${address}/healthz`);
    }
    let shuttingDown = false;
    const shutdown = async (code = 0) => {
      if (shuttingDown) return;
      shuttingDown = true;
      for (const stop of stops.reverse()) await stop().catch((error: Error) => console.error(`moim: ${error.message}`));
      process.exit(code);
    };
    process.on('SIGTERM', () => void shutdown());
    process.on('SIGINT', () => void shutdown());
  });

program
  .command('groups')
  .description('list consumer groups with their checkpoint, lag and dead letters')
  .action(async () => {
    const { log, readModels } = openStore(configFromEnv());
    try {
      for (const g of await consumerGroups(log).list()) {
        console.log(`${g.name}\tcheckpoint ${g.checkpoint}\tlag ${g.lag}\tdead letters ${g.deadLetters}\tpending ${g.pending}`);
      }
    } finally {
      readModels.close();
      await log.close();
    }
  });

await program.parseAsync();
