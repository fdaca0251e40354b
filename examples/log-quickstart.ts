// The event log in a few lines: append, read a stream, follow the whole log.
// Run: npx tsx examples/log-quickstart.ts
import { openSqliteEventLog } from 'sinho/sqlite';

const log = openSqliteEventLog({ path: `${process.env.SINHO_EXAMPLE_DIR ?? './data'}/quickstart.sqlite` });
const stream = `community-${Date.now()}`;

// Append atomically, expecting the stream not to exist yet.
const created = await log.append(stream, [{ type: 'CommunityCreated', data: { name: 'Hiking club' } }], { expectedRevision: 'noStream' });
console.log(`created at revision ${created.revision}, position ${created.events[0]!.position}, ${created.durability}`);

// Optimistic concurrency: the next append expects exactly that revision.
await log.append(stream, [{ type: 'MemberJoined', data: { memberId: 'm-1' } }], { expectedRevision: created.revision });

for await (const event of log.readStream(stream)) console.log(event.revision, event.type, event.data);

// Follow the log from a position: catch up, then wake up on each new commit.
const controller = new AbortController();
const following = (async () => {
  for await (const event of log.follow({ fromPosition: created.events[0]!.position, filter: { categories: ['community'] }, signal: controller.signal })) {
    console.log('followed', event.position, event.type);
    if (event.type === 'MemberLeft') controller.abort();
  }
})();
await log.append(stream, [{ type: 'MemberLeft', data: { memberId: 'm-1' } }]);
await following;
await log.close();
