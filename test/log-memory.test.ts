import { openMemoryEventLog } from '../src/log/memory/index.js';
import { eventLogConformance } from './conformance/event-log.js';
import { aggregateConformance } from './conformance/aggregate.js';
import { subscriptionConformance } from './conformance/subscription.js';

eventLogConformance('memory', async (options) => openMemoryEventLog(options), 'none');
aggregateConformance('memory', async (options) => openMemoryEventLog(options));
subscriptionConformance('memory', async (options) => openMemoryEventLog(options));
