/**
 * The README's examples run for real, against the built package (imported as
 * `sinho`, exactly as a user would), so the documentation cannot rot.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const cwd = mkdtempSync(join(tmpdir(), 'sinho-examples-'));
after(() => rmSync(cwd, { recursive: true, force: true }));

async function example(name: string): Promise<string> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', join(root, 'examples', name)], { cwd: root, env: { ...process.env, SINHO_EXAMPLE_DIR: cwd }, timeout: 30_000 });
  return stdout;
}

describe('examples', () => {
  it('log-quickstart appends, reads and follows', async () => {
    const out = await example('log-quickstart.ts');
    assert.match(out, /created at revision 0, position \d+, durable/);
    assert.match(out, /1 MemberJoined \{ memberId: 'm-1' \}/);
    assert.match(out, /followed \d+ MemberLeft/);
  });

  it('aggregate decides, repeats a command idempotently and refuses a rule violation', async () => {
    const out = await example('aggregate.ts');
    assert.match(out, /\[ 'm-1', 'm-2' \] revision 1 repeated command appended nothing: true/);
    assert.match(out, /refused: DOMAIN_RULE_VIOLATED NOT_VERIFIED/);
  });
});
