/**
 * Assembling moim's roles over one store:
 * - `api`: the HTTP API (requests only: no consumer group runs here);
 * - `worker`: the read-model projection and the policies (background work).
 * `npm start` runs both, each in its own process (main.ts), so background
 * work never shares an event loop with requests.
 */
import { mkdirSync } from 'node:fs';
import { pino, type Logger } from 'pino';
import { join } from 'node:path';
import { AggregateStateCache, type EventLog, type Projection, type ConsumerGroup, type Subscription } from 'sinho';
import { openSqliteEventLog } from 'sinho/sqlite';
import { buildApp, type App, type AppOptions } from './http/app.js';
import { startFamilyPolicy } from './family-policy.js';
import { LedgerClient } from './ledger/client.js';
import { startTransferProcessor } from './transfer-processor.js';
import { startSettlementWorker } from './settlement.js';
import { ReadModels, startReadModels } from './read-models.js';
import { CachedSessionStore, SqliteSessionStore, type SessionStore } from './sessions.js';

export interface MoimConfig {
  /** Folder of the SQLite files. Default ./data. */
  dataDir: string;
  /** Session lifetime, ms. Default 7 days. */
  sessionTtlMs: number;
  /** Where the ledger service answers. Default http://127.0.0.1:3001. */
  ledgerUrl?: string;
  /** Delay before each transfer confirmation check, ms. Default 5,000. */
  confirmationDelayMs?: number;
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): MoimConfig {
  return {
    dataDir: env.MOIM_DATA_DIR ?? './data',
    sessionTtlMs: Number(env.MOIM_SESSION_TTL_MS ?? 7 * 24 * 3600 * 1000),
    ledgerUrl: env.LEDGER_URL ?? `http://127.0.0.1:${env.LEDGER_PORT ?? 3001}`,
    confirmationDelayMs: Number(env.MOIM_CONFIRMATION_DELAY_MS ?? 5000),
  };
}

export function logPath(config: MoimConfig): string {
  return join(config.dataDir, 'moim.sqlite');
}

export function openStore(config: MoimConfig): { log: EventLog; readModels: ReadModels } {
  mkdirSync(config.dataDir, { recursive: true });
  // Another process (the other role) commits to the same file: notice its commits quickly.
  const log = openSqliteEventLog({ path: logPath(config), externalCommitCheckMs: 20 });
  return { log, readModels: new ReadModels(log, logPath(config)) };
}

export interface ApiRole {
  app: App;
  sessions: SessionStore;
  /** Readiness false, in-flight requests finish, then everything closes. */
  close(): Promise<void>;
}

export async function startApi(config: MoimConfig, options: AppOptions = {}): Promise<ApiRole & { log: EventLog; readModels: ReadModels }> {
  const { log, readModels } = openStore(config);
  const sessions = new CachedSessionStore(new SqliteSessionStore(join(config.dataDir, 'sessions.sqlite')));
  let ready = true;
  const app = await buildApp({ log, sessions, readModels, stateCache: new AggregateStateCache(50_000), sessionTtlMs: config.sessionTtlMs, ready: () => ready }, options);
  return {
    app,
    sessions,
    log,
    readModels,
    close: async () => {
      ready = false;
      await app.close();
      await sessions.close();
      readModels.close();
      await log.close();
    },
  };
}

export interface WorkerRole {
  readModels: Projection;
  familyPolicy: ConsumerGroup;
  transfers: ConsumerGroup;
  settlements: ConsumerGroup;
  close(): Promise<void>;
}

export async function startWorker(config: MoimConfig, logger: Logger = pino({ enabled: false })): Promise<WorkerRole> {
  const { log, readModels } = openStore(config);
  const projection = await startReadModels(log);
  const familyPolicy = await startFamilyPolicy(log, readModels, projection);
  const transfers = await startTransferProcessor(log, new LedgerClient(config.ledgerUrl ?? 'http://127.0.0.1:3001'), { confirmationDelayMs: config.confirmationDelayMs, logger });
  const settlements = await startSettlementWorker(log);
  for (const group of [projection.group, familyPolicy, transfers, settlements]) observe(group, logger);
  return {
    readModels: projection,
    familyPolicy,
    transfers,
    settlements,
    close: async () => {
      await settlements.stop();
      await transfers.stop();
      await familyPolicy.stop();
      await projection.stop();
      readModels.close();
      await log.close();
    },
  };
}

/** Logs a group's retries, dead letters and failures (the handlers log their own steps with the correlation id). */
function observe(group: Subscription, logger: Logger): void {
  group.on('subscription:retry', (e) =>
    logger.warn({ group: e.group, position: e.position, key: e.key, attempt: e.attempt, error: e.error, dueAt: new Date(e.dueAt).toISOString(), correlationId: e.correlationId }, 'delivery failed; retry scheduled'),
  );
  group.on('subscription:dead-letter', (e) => logger.error({ group: e.group, position: e.position, key: e.key, attempts: e.attempts, error: e.error, correlationId: e.correlationId }, 'dead letter'));
  group.on('subscription:error', (e) => logger.error({ group: e.group, err: e.error }, 'consumer group failed'));
}
