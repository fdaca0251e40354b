/**
 * Member: registers, verifies identity, resets identity. It publishes facts
 * only (`IdentityReset`) and knows nothing of the modules that react to them.
 */
import { domainError, type Decider } from 'sinho';

export type MemberCommand =
  | { kind: 'register'; memberId: string; email: string; displayName: string; passwordHash: string }
  | { kind: 'verify-identity' }
  | { kind: 'reset-identity' };

export type MemberEvent =
  | { type: 'MemberRegistered'; data: { memberId: string; email: string; displayName: string; passwordHash: string } }
  | { type: 'IdentityVerified'; data: { memberId: string } }
  | { type: 'IdentityReset'; data: { memberId: string } };

export interface MemberState {
  memberId: string | null;
  email: string;
  displayName: string;
  passwordHash: string;
  verified: boolean;
}

export const memberStream = (memberId: string): string => `member-${memberId}`;

export const member: Decider<MemberCommand, MemberState, MemberEvent> = {
  name: 'member',
  version: 1,
  initialState: { memberId: null, email: '', displayName: '', passwordHash: '', verified: false },
  evolve: (state, event) => {
    switch (event.type) {
      case 'MemberRegistered':
        return { ...event.data, verified: false };
      case 'IdentityVerified':
        return { ...state, verified: true };
      case 'IdentityReset':
        return { ...state, verified: false };
    }
  },
  decide: (command, state) => {
    if (command.kind === 'register') {
      if (state.memberId) throw domainError('MEMBER_EXISTS', 'This member is already registered.');
      const { memberId, email, displayName, passwordHash } = command;
      return { type: 'MemberRegistered', data: { memberId, email, displayName, passwordHash } };
    }
    if (!state.memberId) throw domainError('MEMBER_NOT_FOUND', 'No such member.');
    switch (command.kind) {
      case 'verify-identity':
        return state.verified ? [] : { type: 'IdentityVerified', data: { memberId: state.memberId } };
      case 'reset-identity':
        return { type: 'IdentityReset', data: { memberId: state.memberId } };
    }
  },
};
