/**
 * `sinho/realtime`: durable user notification feeds, fan-out from the log,
 * and the WebSocket gateway. Feed stores come with the adapters:
 * `openSqliteFeedStore` from `sinho/sqlite`, `openMemoryFeedStore` from
 * `sinho/memory`. See docs/realtime.md.
 */
export type * from './feed-store.js';
export { notificationJson } from './feed-store.js';
export { Gateway, type GatewayOptions, type GatewaySession, type GatewayStats, type GatewayEventMap } from './gateway.js';
export { FanOut, runFanOut, undeliveredStream, undeliveredEventId, type FanOutOptions, type FanOutRoute, type FanOutEventMap } from './fan-out.js';
export { gatewayNodeOf } from './sharding.js';
export { CLOSE_CODES, FATAL_CLOSE_CODES, parseClientFrame, type ClientFrame, type ServerFrame, type RealtimeErrorCode } from './protocol.js';
