/**
 * `sinho/rabbitmq`: the log published to RabbitMQ exchanges (the relay, with
 * publisher confirms), RabbitMQ messages turned into commands (inbound), and
 * topology from configuration, with retry tiers for downstream consumers.
 * amqplib is loaded only when one of these is used (an optional peer).
 */
export { RabbitRelay, startRabbitRelay, relayMessage, type RabbitRelayOptions, type RelayStats, type RelayEventMap } from './relay.js';
export { declareTopology, validateTopology, retryQueueName, deadQueueName, retryOrDeadLetter, RETRY_COUNT_HEADER, type Topology, type ExchangeSpec, type QueueSpec, type BindingSpec, type RetryTopologySpec, type ExchangeType } from './topology.js';
export { RabbitInbound, startRabbitInbound, type RabbitInboundOptions, type InboundMessage, type InboundStats, type InboundEventMap } from './inbound.js';
