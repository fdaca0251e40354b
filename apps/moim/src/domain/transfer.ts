/**
 * A transfer (`transfer-<id>`): requested, submitted to the external ledger,
 * checked after a delay (up to `MAX_CHECKS` times), then confirmed or failed.
 */
import { domainError, type Decider, type DomainEvent } from 'sinho';

export const MAX_CHECKS = 3;

export type TransferStatus = 'none' | 'requested' | 'submitted' | 'confirmed' | 'failed';

export type TransferEvent =
  | DomainEvent<'TransferRequested', { transferId: string; from: string; to: string; amount: number }>
  | DomainEvent<'TransferSubmitted', { transferId: string }>
  | DomainEvent<'TransferCheckedPending', { transferId: string; check: number }>
  | DomainEvent<'TransferConfirmed', { transferId: string; from: string; to: string; amount: number }>
  | DomainEvent<'TransferFailed', { transferId: string; from: string; reason: string }>;

export type TransferCommand = { kind: 'submit' } | { kind: 'still-pending' };

export interface TransferState {
  transferId: string | null;
  status: TransferStatus;
  from: string;
  to: string;
  amount: number;
  checks: number;
  reason?: string;
}

export const transferStream = (transferId: string): string => `transfer-${transferId}`;

export const transfer: Decider<TransferCommand, TransferState, TransferEvent> = {
  name: 'transfer',
  version: 1,
  initialState: { transferId: null, status: 'none', from: '', to: '', amount: 0, checks: 0 },
  evolve: (state, event) => {
    switch (event.type) {
      case 'TransferRequested':
        return { ...state, ...event.data, status: 'requested' };
      case 'TransferSubmitted':
        return { ...state, status: 'submitted' };
      case 'TransferCheckedPending':
        return { ...state, checks: event.data.check };
      case 'TransferConfirmed':
        return { ...state, status: 'confirmed' };
      case 'TransferFailed':
        return { ...state, status: 'failed', reason: event.data.reason };
    }
  },
  decide: (command, state) => {
    if (!state.transferId) throw domainError('TRANSFER_NOT_FOUND', 'No such transfer.');
    switch (command.kind) {
      case 'submit':
        return state.status === 'requested' ? { type: 'TransferSubmitted', data: { transferId: state.transferId } } : [];
      case 'still-pending':
        return state.status === 'submitted' ? { type: 'TransferCheckedPending', data: { transferId: state.transferId, check: state.checks + 1 } } : [];
    }
  },
};
