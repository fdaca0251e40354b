/**
 * A member's account (`account-<memberId>`): deposits, and the money side of
 * transfers. A requested transfer reserves its amount (so concurrent
 * requests cannot overspend); the balance itself changes only when the
 * ledger confirmed the transfer (debit and credit), and a failed transfer
 * releases its reservation.
 */
import type { Decider, DomainEvent } from 'sinho';

export type AccountEvent =
  | DomainEvent<'FundsDeposited', { memberId: string; amount: number }>
  | DomainEvent<'FundsReserved', { transferId: string; amount: number }>
  | DomainEvent<'ReservationReleased', { transferId: string }>
  | DomainEvent<'TransferDebited', { transferId: string; amount: number }>
  | DomainEvent<'TransferCredited', { transferId: string; amount: number }>
  | DomainEvent<'DuesCharged', { communityId: string; period: string; amount: number }>;

export interface AccountState {
  balance: number;
  reserved: Record<string, number>;
}

export const accountStream = (memberId: string): string => `account-${memberId}`;

export const initialAccount: AccountState = { balance: 0, reserved: {} };

export function evolveAccount(state: AccountState, event: AccountEvent): AccountState {
  switch (event.type) {
    case 'FundsDeposited':
      return { ...state, balance: state.balance + event.data.amount };
    case 'FundsReserved':
      return { ...state, reserved: { ...state.reserved, [event.data.transferId]: event.data.amount } };
    case 'ReservationReleased': {
      const { [event.data.transferId]: _released, ...reserved } = state.reserved;
      return { ...state, reserved };
    }
    case 'TransferDebited': {
      const { [event.data.transferId]: _used, ...reserved } = state.reserved;
      return { balance: state.balance - event.data.amount, reserved };
    }
    case 'TransferCredited':
      return { ...state, balance: state.balance + event.data.amount };
    case 'DuesCharged':
      return { ...state, balance: state.balance - event.data.amount };
  }
}

export const available = (state: AccountState): number => state.balance - Object.values(state.reserved).reduce((a, b) => a + b, 0);

/** The account as a decider, for loading (its events are appended together with a transfer's, by transfers.ts). */
export const account: Decider<never, AccountState, AccountEvent> = {
  name: 'account',
  version: 1,
  initialState: initialAccount,
  evolve: evolveAccount,
  decide: () => [],
};
