/**
 * The main job as a user runs it: `moim start` (what `npm start` runs, on
 * the built code) on a real port, with the worker role in its own process.
 * A community created over HTTP shows up in search once the worker process
 * projected it; SIGTERM stops both processes cleanly.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';

const main = fileURLToPath(new URL('../apps/moim/dist/main.js', import.meta.url));

describe('moim start', { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'moim-start-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('serves the API on a port, runs the worker in a child process, and stops on SIGTERM', async () => {
    const child = spawn(process.execPath, [main, 'start', '--port', '0', '--ledger-port', '0'], { env: { ...process.env, MOIM_DATA_DIR: dir, MOIM_LOG: 'off' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const deadline = Date.now() + 20_000;
      while (!/API listening on (http:\/\/\S+)/.test(out) || !out.includes('moim worker')) {
        assert.ok(Date.now() < deadline && child.exitCode === null, `moim did not start: ${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const base = /API listening on (http:\/\/\S+)/.exec(out)![1]!;
      const post = (path: string, body: unknown, token?: string) =>
        fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify(body) });
      assert.equal((await fetch(`${base}/readyz`)).status, 200);
      assert.equal((await post('/members', { email: 'start@example.com', displayName: 'S', password: 'long enough' })).status, 201);
      const { token } = (await (await post('/sessions', { email: 'start@example.com', password: 'long enough' })).json()) as { token: string };
      const { communityId } = (await (await post('/communities', { name: 'Started' }, token)).json()) as { communityId: string };
      for (;;) {
        const res = (await (await fetch(`${base}/communities?q=Started`, { headers: { authorization: `Bearer ${token}` } })).json()) as { items: { id: string }[] };
        if (res.items.some((c) => c.id === communityId)) break;
        assert.ok(Date.now() < deadline, 'the worker process did not project the community');
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, out);
    // The history verification over what this run wrote: no discrepancy.
    const verify = spawn(process.execPath, [main, 'verify'], { env: { ...process.env, MOIM_DATA_DIR: dir } });
    let report = '';
    verify.stdout.on('data', (d: Buffer) => (report += d.toString()));
    assert.equal(await new Promise((r) => verify.on('exit', r)), 0, report);
    assert.match(report, /0 discrepancies/);
  });
});
