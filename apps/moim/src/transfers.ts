/**
 * Transfers, orchestrated over three aggregates: the transfer, the payer's
 * account and the payee's. Each step appends to the streams it changes in
 * one atomic `appendMulti`, with expected revisions, so that money is never
 * reserved, debited or credited twice, even when a step is redelivered.
 */
import { domainError, loadAggregate, WrongExpectedRevision, type EventLog, type EventMetadata } from 'sinho';
import { account, accountStream, available } from './domain/account.js';
import { member, memberStream } from './domain/member.js';
import { transfer, transferStream } from './domain/transfer.js';

/** Requests a transfer, reserving the amount on the payer's account. Returns nothing new when `transferId` exists. */
export async function requestTransfer(log: EventLog, request: { transferId: string; from: string; to: string; amount: number }, metadata: EventMetadata): Promise<void> {
  const { transferId, from, to, amount } = request;
  if (from === to) throw domainError('SAME_ACCOUNT', 'A transfer needs a payee other than the payer.');
  const payee = await loadAggregate(log, member, memberStream(to));
  if (!payee.state.memberId) throw domainError('UNKNOWN_PAYEE', 'The payee is not a member.');
  for (let attempt = 1; ; attempt++) {
    const payer = await loadAggregate(log, account, accountStream(from));
    if (available(payer.state) < amount) throw domainError('INSUFFICIENT_FUNDS', `The available balance is ${available(payer.state)}.`, { available: available(payer.state) });
    try {
      await log.appendMulti([
        { stream: transferStream(transferId), events: [{ type: 'TransferRequested', data: { transferId, from, to, amount }, metadata }], expectedRevision: 'noStream' },
        { stream: accountStream(from), events: [{ type: 'FundsReserved', data: { transferId, amount }, metadata }], expectedRevision: payer.revision },
      ]);
      return;
    } catch (error) {
      // Another request moved the account meanwhile: check the funds again.
      if (error instanceof WrongExpectedRevision && error.stream === accountStream(from) && attempt < 10) continue;
      throw error;
    }
  }
}

export async function deposit(log: EventLog, memberId: string, amount: number, metadata: EventMetadata): Promise<number> {
  await log.append(accountStream(memberId), [{ type: 'FundsDeposited', data: { memberId, amount }, metadata }]);
  return (await loadAggregate(log, account, accountStream(memberId))).state.balance;
}

/** Records the ledger's confirmation: the transfer, the debit and the credit in one commit; a repeat changes nothing. */
export async function confirmTransfer(log: EventLog, transferId: string, metadata: EventMetadata): Promise<void> {
  const t = await loadAggregate(log, transfer, transferStream(transferId));
  if (t.state.status !== 'submitted') return;
  const { from, to, amount } = t.state;
  try {
    await log.appendMulti([
      { stream: transferStream(transferId), events: [{ type: 'TransferConfirmed', data: { transferId, from, to, amount }, metadata }], expectedRevision: t.revision },
      { stream: accountStream(from), events: [{ type: 'TransferDebited', data: { transferId, amount }, metadata }] },
      { stream: accountStream(to), events: [{ type: 'TransferCredited', data: { transferId, amount }, metadata }] },
    ]);
  } catch (error) {
    if (!(error instanceof WrongExpectedRevision)) throw error; // else: a redelivery already recorded it
  }
}

/** Records a failure: the transfer fails and the payer's reservation is released, in one commit. */
export async function failTransfer(log: EventLog, transferId: string, reason: string, metadata: EventMetadata): Promise<void> {
  const t = await loadAggregate(log, transfer, transferStream(transferId));
  if (t.state.status !== 'submitted' && t.state.status !== 'requested') return;
  try {
    await log.appendMulti([
      { stream: transferStream(transferId), events: [{ type: 'TransferFailed', data: { transferId, from: t.state.from, reason }, metadata }], expectedRevision: t.revision },
      { stream: accountStream(t.state.from), events: [{ type: 'ReservationReleased', data: { transferId }, metadata }] },
    ]);
  } catch (error) {
    if (!(error instanceof WrongExpectedRevision)) throw error;
  }
}
