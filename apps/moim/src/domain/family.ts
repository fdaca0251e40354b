/**
 * FamilyAccount: created by an owner; verified members join and leave; the
 * owner removes members. Its own policy (family-policy.ts) removes a member
 * whose identity was reset.
 */
import { domainError, type Decider } from 'sinho';

export type FamilyCommand =
  | { kind: 'create'; familyId: string; name: string; owner: string }
  | { kind: 'join'; memberId: string; verified: boolean }
  | { kind: 'leave'; memberId: string }
  | { kind: 'remove'; memberId: string; by: string | null; reason: 'owner' | 'identity-reset' };

export type FamilyEvent =
  | { type: 'FamilyAccountCreated'; data: { familyId: string; name: string; owner: string } }
  | { type: 'FamilyMemberJoined'; data: { familyId: string; memberId: string } }
  | { type: 'FamilyMemberLeft'; data: { familyId: string; memberId: string } }
  | { type: 'FamilyMemberRemoved'; data: { familyId: string; memberId: string; reason: 'owner' | 'identity-reset' } };

export interface FamilyState {
  familyId: string | null;
  name: string;
  owner: string;
  members: string[];
}

export const familyStream = (familyId: string): string => `family-${familyId}`;

export const family: Decider<FamilyCommand, FamilyState, FamilyEvent> = {
  name: 'family',
  version: 1,
  initialState: { familyId: null, name: '', owner: '', members: [] },
  evolve: (state, event) => {
    switch (event.type) {
      case 'FamilyAccountCreated':
        return { familyId: event.data.familyId, name: event.data.name, owner: event.data.owner, members: [event.data.owner] };
      case 'FamilyMemberJoined':
        return { ...state, members: [...state.members, event.data.memberId] };
      case 'FamilyMemberLeft':
      case 'FamilyMemberRemoved':
        return { ...state, members: state.members.filter((m) => m !== event.data.memberId) };
    }
  },
  decide: (command, state) => {
    if (command.kind === 'create') {
      if (state.familyId) throw domainError('FAMILY_EXISTS', 'This family account already exists.');
      return { type: 'FamilyAccountCreated', data: { familyId: command.familyId, name: command.name, owner: command.owner } };
    }
    const familyId = state.familyId;
    if (!familyId) throw domainError('FAMILY_NOT_FOUND', 'No such family account.');
    switch (command.kind) {
      case 'join':
        if (!command.verified) throw domainError('IDENTITY_NOT_VERIFIED', 'Only members with a verified identity can join a family account.');
        if (state.members.includes(command.memberId)) return [];
        return { type: 'FamilyMemberJoined', data: { familyId, memberId: command.memberId } };
      case 'leave':
        if (!state.members.includes(command.memberId)) return [];
        if (command.memberId === state.owner) throw domainError('OWNER_CANNOT_LEAVE', 'The owner cannot leave their own family account.');
        return { type: 'FamilyMemberLeft', data: { familyId, memberId: command.memberId } };
      case 'remove':
        if (command.reason === 'owner' && command.by !== state.owner) throw domainError('NOT_FAMILY_OWNER', 'Only the owner can remove members.');
        if (!state.members.includes(command.memberId)) return [];
        if (command.memberId === state.owner && command.reason === 'owner') throw domainError('OWNER_CANNOT_LEAVE', 'The owner cannot remove themselves.');
        return { type: 'FamilyMemberRemoved', data: { familyId, memberId: command.memberId, reason: command.reason } };
    }
  },
};
