// An event-sourced aggregate as a decider, with idempotent commands and snapshots.
// Run: npx tsx examples/aggregate.ts
import { domainError, handleCommand, type Decider } from 'sinho';
import { openMemoryEventLog } from 'sinho/memory';

type Command = { kind: 'create'; owner: string } | { kind: 'join'; memberId: string; verified: boolean };
type Event = { type: 'FamilyCreated'; data: { owner: string } } | { type: 'MemberJoined'; data: { memberId: string } };
type State = { owner: string | null; members: string[] };

const family: Decider<Command, State, Event> = {
  name: 'family',
  version: 1,
  initialState: { owner: null, members: [] },
  evolve: (state, event) => {
    switch (event.type) {
      case 'FamilyCreated':
        return { owner: event.data.owner, members: [event.data.owner] };
      case 'MemberJoined':
        return { ...state, members: [...state.members, event.data.memberId] };
    }
  },
  decide: (command, state) => {
    switch (command.kind) {
      case 'create':
        if (state.owner) throw domainError('FAMILY_EXISTS', 'This family account already exists.');
        return { type: 'FamilyCreated', data: { owner: command.owner } };
      case 'join':
        if (!command.verified) throw domainError('NOT_VERIFIED', 'Only verified members can join a family account.');
        if (state.members.includes(command.memberId)) return []; // already a member: nothing happens
        return { type: 'MemberJoined', data: { memberId: command.memberId } };
    }
  },
};

const log = openMemoryEventLog();
await handleCommand(log, family, 'family-1', { kind: 'create', owner: 'm-1' });
const joined = await handleCommand(log, family, 'family-1', { kind: 'join', memberId: 'm-2', verified: true }, { commandId: 'req-42', snapshotEvery: 2 });
const again = await handleCommand(log, family, 'family-1', { kind: 'join', memberId: 'm-2', verified: true }, { commandId: 'req-42' });
console.log(joined.state.members, 'revision', joined.revision, 'repeated command appended nothing:', again.alreadyHandled);
try {
  await handleCommand(log, family, 'family-1', { kind: 'join', memberId: 'm-3', verified: false });
} catch (error) {
  console.log('refused:', (error as { code: string; rule: string }).code, (error as { rule: string }).rule);
}
await log.close();
