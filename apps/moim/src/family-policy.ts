/**
 * The family module's own policy: when a member's identity is reset, that
 * member leaves every family account. The member module publishes the fact
 * (`IdentityReset`) and knows nothing of this.
 */
import { handleCommand, subscribe, type ConsumerGroup, type EventLog, type Projection } from 'sinho';
import { family, familyStream } from './domain/family.js';
import type { ReadModels } from './read-models.js';

export function startFamilyPolicy(log: EventLog, readModels: ReadModels, readModelProjection: Projection, options: { standby?: boolean } = {}): Promise<ConsumerGroup> {
  return subscribe(log, 'family-identity-policy', {
    standby: options.standby,
    bindings: [{ kind: 'direct', key: 'member.IdentityReset' }],
    retry: { initialDelayMs: 500, maxDelayMs: 30_000, maxAttempts: 10 },
    handler: async (event) => {
      // The family list must include every join committed before the reset.
      await readModelProjection.group.waitForCheckpoint(event.position, 60_000);
      const { memberId } = event.data as { memberId: string };
      for (const familyId of await readModels.familiesOf(memberId)) {
        await handleCommand(
          log,
          family,
          familyStream(familyId),
          { kind: 'remove', memberId, by: null, reason: 'identity-reset' },
          // Deterministic: a redelivered reset removes nothing twice.
          { commandId: `${event.id}:${familyId}`, metadata: { correlationId: event.metadata.correlationId ?? event.id, causationId: event.id } },
        );
      }
    },
  });
}
