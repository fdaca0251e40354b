/**
 * Sinho: an event backbone for TypeScript services. This entry point holds the
 * core (no driver is loaded from here); adapters are imported separately:
 * `sinho/sqlite` (embedded default), `sinho/postgres`, `sinho/memory`.
 */
export * from './errors.js';
export type * from './log/types.js';
export { DEFAULT_LOG_LIMITS, categoryOf } from './log/validation.js';
export { eventSchema, createUpcasters, type EventSchema, type LatestData, type Upcasters } from './log/upcasting.js';
export type { EventLogOptions } from './log/stored-event-log.js';
export { snapshotKey, type Decider, type DomainEvent } from './aggregate/decider.js';
export { AggregateStateCache, type CachedState } from './aggregate/state-cache.js';
export {
  handleCommand,
  loadAggregate,
  truncateToSnapshot,
  commandEventId,
  type HandleCommandOptions,
  type CommandResult,
  type LoadedAggregate,
} from './aggregate/handle-command.js';
export { matchBinding, matchHeaders, matchTopic, routingKeyOf, topicWords, validateBindings, ROUTING_KEY_HEADER, type Binding } from './subscription/routing.js';
export { subscribe, consumerGroups, ConsumerGroup, PartitionedGroup, type ConsumerGroupAdmin, type GroupInfo, type Subscription } from './subscription/index.js';
export { partitionOf } from './subscription/partitioning.js';
export {
  runProjection,
  liveProjectionVersion,
  projectionGroupName,
  Projection,
  type ProjectionOptions,
  type ProjectionProgress,
  type ProjectionEventMap,
} from './subscription/projection.js';
export type {
  SubscribeOptions,
  DeliveryContext,
  ProjectionTransaction,
  EventHandler,
  ProjectionHandler,
  GroupStats,
  DeadLetter,
  SubscriptionEventMap,
} from './subscription/consumer-group.js';
export type { RetryPolicy } from './subscription/retry.js';
