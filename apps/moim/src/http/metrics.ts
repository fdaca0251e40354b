/**
 * `/metrics` in Prometheus format: HTTP latency per route, the process's
 * default metrics (event-loop lag included), and every consumer group's lag,
 * dead letters and pending retries, read from the store at scrape time (the
 * groups run in the worker process; the store is shared).
 */
import { collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { consumerGroups, type EventLog } from 'sinho';
import type { App } from './context.js';

export function registerMetrics(app: App, log: EventLog): void {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });
  const http = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request latency by route and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const groups = () => consumerGroups(log).list();
  let scrape: ReturnType<typeof groups> | undefined;
  // One store query per scrape for all three gauges.
  const listed = () => (scrape ??= groups().finally(() => setTimeout(() => (scrape = undefined), 0)));
  for (const [name, help, pick] of [
    ['sinho_consumer_group_lag', 'Positions between the group checkpoint and the log head', (g: { lag: number }) => g.lag],
    ['sinho_consumer_group_dead_letters', 'Dead letters of the group', (g: { deadLetters: number }) => g.deadLetters],
    ['sinho_consumer_group_pending', 'Events of the group waiting for a retry or a delayed delivery', (g: { pending: number }) => g.pending],
  ] as const) {
    new Gauge({
      name,
      help,
      labelNames: ['group'],
      registers: [registry],
      async collect() {
        this.reset();
        for (const g of await listed()) this.set({ group: g.name }, pick(g as never));
      },
    });
  }
  app.addHook('onResponse', async (request, reply) => {
    http.observe({ method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) }, reply.elapsedTime / 1000);
  });
  app.get('/metrics', { schema: { hide: true } as object }, async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()));
}
