/** Community: created by an owner, joined and left by members. */
import { domainError, type Decider } from 'sinho';

export type CommunityCommand =
  | { kind: 'create'; communityId: string; name: string; description: string; owner: string }
  | { kind: 'join'; memberId: string }
  | { kind: 'leave'; memberId: string }
  | { kind: 'set-dues'; amount: number; by: string };

export type CommunityEvent =
  | { type: 'CommunityCreated'; data: { communityId: string; name: string; description: string; owner: string } }
  | { type: 'MemberJoined'; data: { communityId: string; memberId: string } }
  | { type: 'MemberLeft'; data: { communityId: string; memberId: string } }
  | { type: 'CommunityDuesSet'; data: { communityId: string; amount: number } };

export interface CommunityState {
  communityId: string | null;
  owner: string;
  members: string[];
  /** Monthly dues per member (0: none). */
  dues: number;
}

export const communityStream = (communityId: string): string => `community-${communityId}`;

export const community: Decider<CommunityCommand, CommunityState, CommunityEvent> = {
  name: 'community',
  version: 1,
  initialState: { communityId: null, owner: '', members: [], dues: 0 },
  evolve: (state, event) => {
    switch (event.type) {
      case 'CommunityCreated':
        return { communityId: event.data.communityId, owner: event.data.owner, members: [event.data.owner], dues: 0 };
      case 'MemberJoined':
        return { ...state, members: [...state.members, event.data.memberId] };
      case 'MemberLeft':
        return { ...state, members: state.members.filter((m) => m !== event.data.memberId) };
      case 'CommunityDuesSet':
        return { ...state, dues: event.data.amount };
    }
  },
  decide: (command, state) => {
    if (command.kind === 'create') {
      if (state.communityId) throw domainError('COMMUNITY_EXISTS', 'This community already exists.');
      const { communityId, name, description, owner } = command;
      return { type: 'CommunityCreated', data: { communityId, name, description, owner } };
    }
    const communityId = state.communityId;
    if (!communityId) throw domainError('COMMUNITY_NOT_FOUND', 'No such community.');
    switch (command.kind) {
      case 'join':
        if (state.members.includes(command.memberId)) return [];
        return { type: 'MemberJoined', data: { communityId, memberId: command.memberId } };
      case 'leave':
        if (!state.members.includes(command.memberId)) return [];
        if (command.memberId === state.owner) throw domainError('OWNER_CANNOT_LEAVE', 'The owner cannot leave their own community.');
        return { type: 'MemberLeft', data: { communityId, memberId: command.memberId } };
      case 'set-dues':
        if (command.by !== state.owner) throw domainError('NOT_COMMUNITY_OWNER', 'Only the owner sets the dues.');
        return command.amount === state.dues ? [] : { type: 'CommunityDuesSet', data: { communityId, amount: command.amount } };
    }
  },
};
