/**
 * Assembling moim's roles over one store:
 * - `api`: the HTTP API (requests only: no consumer group runs here);
 * - `worker`: the read-model projection, the policies and the notification
 *   fan-out (background work);
 * - `gateway`: the realtime WebSocket gateway (one process per node).
 * `npm start` runs them all, each in its own process (main.ts), so background
 * work never shares an event loop with requests.
 */
import { mkdirSync } from 'node:fs';
import { pino, type Logger } from 'pino';
import { join } from 'node:path';
import { AggregateStateCache, type EventLog, type Projection, type ConsumerGroup, type Subscription } from 'sinho';
import { openSqliteEventLog, openSqliteFeedStore } from 'sinho/sqlite';
import { openPostgresEventLog, openPostgresFeedStore } from 'sinho/postgres';
import { Gateway, type FanOut, type FeedStore } from 'sinho/realtime';
import { startNotifications } from './notifications.js';
import { buildApp, type App, type AppOptions } from './http/app.js';
import { startFamilyPolicy } from './family-policy.js';
import { LedgerClient } from './ledger/client.js';
import { startTransferProcessor } from './transfer-processor.js';
import { startSettlementWorker } from './settlement.js';
import { PostgresReadModels, READ_MODEL_VERSION, SqliteReadModels, startReadModels, type ReadModels, type ReadModelStore } from './read-models.js';
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
  /** Gateway processes the users are spread over (user -> node by a hash of the id). Default 1. */
  gateways?: number;
  /** A notification not acknowledged within this time is reported (NotificationUndelivered), ms. Default 60,000. */
  undeliveredAfterMs?: number;
  /** Keep sessions in Redis (shared by every API and gateway process) instead of SQLite. */
  redisUrl?: string;
  /** Transfer checks through RabbitMQ's retry topology and an external checker (MOIM_RABBITMQ_URL), instead of Sinho's delayed deliveries. */
  rabbitmqUrl?: string;
  /** Prefix of the RabbitMQ exchange and queues. Default `moim`. */
  rabbitmqPrefix?: string;
  /** Keep the log, the read models and the notification feeds in PostgreSQL (MOIM_POSTGRES_URL) instead of SQLite files: for several processes and machines. */
  postgresUrl?: string;
  /** The PostgreSQL schema of the log and read models (the feeds use `<schema>_feed`). Default `moim`. */
  postgresSchema?: string;
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): MoimConfig {
  return {
    dataDir: env.MOIM_DATA_DIR ?? './data',
    sessionTtlMs: Number(env.MOIM_SESSION_TTL_MS ?? 7 * 24 * 3600 * 1000),
    ledgerUrl: env.LEDGER_URL ?? `http://127.0.0.1:${env.LEDGER_PORT ?? 3001}`,
    confirmationDelayMs: Number(env.MOIM_CONFIRMATION_DELAY_MS ?? 5000),
    gateways: Number(env.MOIM_GATEWAYS ?? 1),
    undeliveredAfterMs: Number(env.MOIM_UNDELIVERED_AFTER_MS ?? 60_000),
    redisUrl: env.MOIM_REDIS_URL || undefined,
    rabbitmqUrl: env.MOIM_RABBITMQ_URL || undefined,
    rabbitmqPrefix: env.MOIM_RABBITMQ_PREFIX || undefined,
    postgresUrl: env.MOIM_POSTGRES_URL || undefined,
    postgresSchema: env.MOIM_POSTGRES_SCHEMA || undefined,
  };
}

export function logPath(config: MoimConfig): string {
  return join(config.dataDir, 'moim.sqlite');
}

/** The PostgreSQL schema of the log and read models (the feeds use `<schema>_feed`). */
const postgresSchemaOf = (config: MoimConfig): string => config.postgresSchema ?? 'moim';

/** Where the read models live, beside the log. */
export function readModelStoreOf(config: MoimConfig): ReadModelStore {
  return config.postgresUrl ? { kind: 'postgres', schema: postgresSchemaOf(config) } : { kind: 'sqlite' };
}

/** The log and the read models: SQLite files in the data folder by default, PostgreSQL with `postgresUrl`. */
export async function openStore(config: MoimConfig): Promise<{ log: EventLog; readModels: ReadModels }> {
  mkdirSync(config.dataDir, { recursive: true });
  if (config.postgresUrl) {
    const schema = postgresSchemaOf(config);
    const log = await openPostgresEventLog({ connectionString: config.postgresUrl, schema });
    try {
      return { log, readModels: await PostgresReadModels.open(log, { connectionString: config.postgresUrl, schema }) };
    } catch (error) {
      await log.close();
      throw error;
    }
  }
  // Another process (the other role) commits to the same file: notice its commits quickly.
  const log = openSqliteEventLog({ path: logPath(config), externalCommitCheckMs: 20 });
  return { log, readModels: new SqliteReadModels(log, logPath(config)) };
}

/**
 * Sessions: Redis with MOIM_REDIS_URL; otherwise beside the log, in PostgreSQL (MOIM_POSTGRES_URL, so that several
 * API processes share them) or in SQLite. Cached 2 s per process; revocations are evicted at once on Redis.
 */
export async function openSessions(config: MoimConfig): Promise<CachedSessionStore> {
  if (!config.redisUrl && config.postgresUrl) {
    const { PostgresSessionStore } = await import('./sessions-postgres.js');
    return new CachedSessionStore(await PostgresSessionStore.open({ connectionString: config.postgresUrl, schema: postgresSchemaOf(config) }));
  }
  if (!config.redisUrl) return new CachedSessionStore(new SqliteSessionStore(join(config.dataDir, 'sessions.sqlite')));
  let cached: CachedSessionStore | undefined;
  const { RedisSessionStore } = await import('./sessions-redis.js');
  const store = await RedisSessionStore.connect(config.redisUrl, { onRevoked: (hash) => cached?.evict(hash) });
  cached = new CachedSessionStore(store);
  return cached;
}

/** The notification feeds, shared by the worker, the gateways and the API: their own SQLite file beside the log, or a PostgreSQL schema. */
export async function openFeed(config: MoimConfig): Promise<FeedStore> {
  if (config.postgresUrl) return openPostgresFeedStore({ connectionString: config.postgresUrl, schema: `${postgresSchemaOf(config)}_feed` });
  return openSqliteFeedStore({ path: join(config.dataDir, 'feed.sqlite') });
}

export interface ApiRole {
  app: App;
  sessions: SessionStore;
  /** Readiness false, in-flight requests finish, then everything closes. */
  close(): Promise<void>;
}

export async function startApi(config: MoimConfig, options: AppOptions = {}): Promise<ApiRole & { log: EventLog; readModels: ReadModels }> {
  const { log, readModels } = await openStore(config);
  const sessions = await openSessions(config);
  const feed = await openFeed(config);
  let ready = true;
  const app = await buildApp({ log, sessions, readModels, feed, stateCache: new AggregateStateCache(50_000), sessionTtlMs: config.sessionTtlMs, ready: () => ready }, options);
  return {
    app,
    sessions,
    log,
    readModels,
    close: async () => {
      ready = false;
      await app.close();
      await sessions.close();
      await feed.close();
      await readModels.close();
      await log.close();
    },
  };
}

export interface WorkerRole {
  readModels: Projection;
  /** The Redis membership cache, with MOIM_REDIS_URL. */
  membershipCache: import('./membership-cache.js').MembershipCache | undefined;
  notifications: FanOut;
  familyPolicy: ConsumerGroup;
  transfers: ConsumerGroup;
  settlements: ConsumerGroup;
  close(): Promise<void>;
}

export async function startWorker(config: MoimConfig, logger: Logger = pino({ enabled: false })): Promise<WorkerRole> {
  const { log, readModels } = await openStore(config);
  // On PostgreSQL several workers may run: each group runs in one of them, the others wait as hot standbys.
  const standby = config.postgresUrl !== undefined;
  const projection = await startReadModels(log, READ_MODEL_VERSION, readModelStoreOf(config), { standby });
  const familyPolicy = await startFamilyPolicy(log, readModels, projection, { standby });
  const transfers = await startTransferProcessor(log, new LedgerClient(config.ledgerUrl ?? 'http://127.0.0.1:3001'), {
    confirmationDelayMs: config.confirmationDelayMs,
    logger,
    checks: config.rabbitmqUrl ? 'rabbitmq' : 'sinho',
    standby,
  });
  const rabbitChecks = config.rabbitmqUrl
    ? await (await import('./transfer-checks-rabbitmq.js')).startRabbitTransferChecks(log, config.rabbitmqUrl, transferTopologyOf(config), { standby })
    : undefined;
  const settlements = await startSettlementWorker(log, { standby });
  const feed = await openFeed(config);
  // With Redis, fan-out reads memberships from the Redis cache (shared across machines), the read model as fallback.
  const membershipCache = config.redisUrl
    ? await (await import('./membership-cache.js')).startMembershipCache(log, config.redisUrl, {
        standby,
        fallback: async (communityId, position) => {
          await projection.group.waitForCheckpoint(position, 60_000, { flush: false });
          return readModels.membersBefore(communityId, position, projection.version);
        },
      })
    : undefined;
  const notifications = await startNotifications(log, readModels, projection, feed, { gateways: config.gateways ?? 1, undeliveredAfterMs: config.undeliveredAfterMs, membershipCache, standby });
  notifications.on('fanout:error', (e) => logger.error({ err: e.error }, 'notification fan-out failed'));
  notifications.on('fanout:undelivered', (list) => logger.info({ count: list.length }, 'notifications not acknowledged in time: NotificationUndelivered recorded'));
  for (const group of [projection.group, familyPolicy, transfers, settlements, notifications.group]) observe(group, logger);
  return {
    readModels: projection,
    membershipCache,
    notifications,
    familyPolicy,
    transfers,
    settlements,
    close: async () => {
      await rabbitChecks?.close();
      await notifications.stop();
      await membershipCache?.close();
      await feed.close();
      await settlements.stop();
      await transfers.stop();
      await familyPolicy.stop();
      await projection.stop();
      await readModels.close();
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

/** The RabbitMQ names and delay of the transfer checks (worker and checker must agree). */
export function transferTopologyOf(config: MoimConfig): import('./transfer-checks-rabbitmq.js').RabbitTransferTopology {
  const prefix = config.rabbitmqPrefix ?? 'moim';
  const delayMs = config.confirmationDelayMs ?? 5000;
  return { exchange: `${prefix}.transfers`, checks: `${prefix}.transfer-checks`, results: `${prefix}.transfer-results`, delayMs };
}

export interface GatewayRole {
  gateway: Gateway;
  /** Drains (go-away to every client over the window), then closes. */
  close(drainWindowMs?: number): Promise<void>;
}

/** Starts gateway node `node` of `config.gateways`, authenticating with the API's sessions. */
export async function startGateway(config: MoimConfig, options: { node: number; port: number; host: string; nodeUrls?: string[] }): Promise<GatewayRole> {
  const sessions = await openSessions(config);
  const feed = await openFeed(config);
  const gateway = await Gateway.start({
    feed,
    node: options.node,
    nodes: config.gateways ?? 1,
    port: options.port,
    host: options.host,
    nodeUrls: options.nodeUrls,
    authenticate: async (token) => {
      const session = await sessions.get(token);
      return session && { userId: session.memberId, expiresAt: session.expiresAt };
    },
  });
  return {
    gateway,
    close: async (drainWindowMs = 5000) => {
      await gateway.drain({ windowMs: drainWindowMs });
      await gateway.close();
      await feed.close();
      await sessions.close();
    },
  };
}
