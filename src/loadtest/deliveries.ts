/**
 * Delivery accounting: which deliveries each action must cause, and what the
 * subscribers actually received. An action registers its expected deliveries
 * (a key and the recipients) before it is sent, so a delivery that overtakes
 * the action's own response is still matched. Every received delivery is
 * classified exactly once:
 *  - delivered: expected, first time (late as well when past the deadline);
 *  - duplicate: already received by this recipient;
 *  - out of order: received after a later action of the same group (order
 *    is exact because actions on one group never overlap);
 *  - unexpected: no action expected it for this recipient.
 * What is still pending after the drain is lost.
 */
import type { Counters, Latency } from './stats.js';

interface Recipient {
  pending: Set<number>;
  received: Set<number>;
  /** Highest action sequence received per group. */
  lastSeq: Map<number, number>;
}

/** A lost delivery, for the report (a sample, not all of them). */
export interface LostDelivery {
  user: number;
  key: string;
  action: number;
}

export class DeliveryLedger {
  private readonly keys = new Map<string, number>();
  private readonly keyOf: string[] = [];
  private readonly intendedAt: number[] = [];
  private readonly groupOf: number[] = [];
  private readonly seqOf: number[] = [];
  private readonly voided = new Set<number>();
  private readonly recipients = new Map<number, Recipient>();
  private pendingCount = 0;

  constructor(private readonly deadlineMs: number) {}

  get pending(): number {
    return this.pendingCount;
  }

  private recipient(user: number): Recipient {
    let r = this.recipients.get(user);
    if (!r) {
      r = { pending: new Set(), received: new Set(), lastSeq: new Map() };
      this.recipients.set(user, r);
    }
    return r;
  }

  /**
   * Registers an action's deliveries; returns its id. `group` and `seq` order
   * deliveries within a group (-1: no order). A key seen before is an error of
   * the scenario (two actions must not share a key).
   */
  expect(key: string, intendedAt: number, group: number, seq: number, to: readonly number[], counters: Counters): number {
    if (this.keys.has(key)) throw new Error(`two actions expect deliveries with the same key ${JSON.stringify(key)}; action.deliveries.key must tell actions apart`);
    const id = this.keyOf.length;
    this.keys.set(key, id);
    this.keyOf.push(key);
    this.intendedAt.push(intendedAt);
    this.groupOf.push(group);
    this.seqOf.push(seq);
    for (const user of to) {
      this.recipient(user).pending.add(id);
      this.pendingCount++;
    }
    counters.expected += to.length;
    return id;
  }

  /** The action failed: its deliveries are no longer expected (and not counted when they come). */
  void(id: number, to: readonly number[], counters: Counters): void {
    this.voided.add(id);
    for (const user of to) {
      if (this.recipients.get(user)?.pending.delete(id)) {
        this.pendingCount--;
        counters.expected--;
      }
    }
  }

  /** Classifies one received delivery. `now` is on the same clock as the actions' intended times. */
  receive(user: number, key: string, now: number, counters: Counters, latency: Latency): void {
    const id = this.keys.get(key);
    const r = this.recipients.get(user);
    if (id === undefined) {
      counters.unexpected++;
      return;
    }
    if (this.voided.has(id)) return;
    if (r?.pending.delete(id)) {
      this.pendingCount--;
      r.received.add(id);
      counters.delivered++;
      const ms = now - this.intendedAt[id]!;
      latency.record(ms);
      if (ms > this.deadlineMs) counters.late++;
      const group = this.groupOf[id]!;
      if (group >= 0) {
        const seq = this.seqOf[id]!;
        const last = r.lastSeq.get(group) ?? -1;
        if (seq < last) counters.outOfOrder++;
        else r.lastSeq.set(group, seq);
      }
      return;
    }
    if (r?.received.has(id)) counters.duplicates++;
    else counters.unexpected++;
  }

  /** Every delivery still pending (after the drain: lost), with a sample of them. */
  lost(sample = 20): { count: number; sample: LostDelivery[] } {
    const out: LostDelivery[] = [];
    for (const [user, r] of this.recipients) {
      for (const id of r.pending) {
        if (out.length >= sample) break;
        out.push({ user, key: this.keyOf[id]!, action: id });
      }
    }
    return { count: this.pendingCount, sample: out };
  }
}
