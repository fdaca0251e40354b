/**
 * The upcaster chain is type-checked: each step receives the previous step's
 * output type. The @ts-expect-error lines below fail `npm run typecheck` if a
 * broken chain ever compiles.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { createUpcasters, eventSchema, type LatestData } from '../src/index.js';

it('chains upcasters version by version with checked types', () => {
  const schema = eventSchema('MemberRegistered')
    .initial<{ name: string }>()
    .then((v1) => ({ displayName: v1.name }))
    .then((v2) => ({ ...v2, locale: 'ko-KR' }));
  const latest: LatestData<typeof schema> = { displayName: 'Jiwoo', locale: 'ko-KR' };
  // @ts-expect-error version 2 has no `name`: a step sees only the previous shape
  schema.then((v3) => v3.name.toUpperCase());
  // @ts-expect-error the latest shape has no `name`
  const wrong: LatestData<typeof schema> = { name: 'x' };
  void wrong;
  assert.equal(schema.latestVersion, 3);
  assert.deepEqual(schema.upcast({ name: 'Jiwoo' }, 1), latest);
  assert.deepEqual(schema.upcast({ displayName: 'Jiwoo' }, 2), latest);
  const upcasters = createUpcasters([schema]);
  assert.equal(upcasters.latestVersion('MemberRegistered'), 3);
  assert.equal(upcasters.latestVersion('Unknown'), 1);
  assert.throws(() => createUpcasters([schema, schema]), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => schema.upcast({}, 4), { code: 'UNKNOWN_SCHEMA_VERSION' });
});
