/**
 * The shipped scenario (apps/moim/loadtest/joins.yaml, `npm run loadtest`)
 * against moim on its embedded default, scaled down: moim started by the
 * runner as a process tree, users registered, logged in and subscribed over
 * the gateway, communities created, joins at a rate, and every notification
 * accounted for.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadScenario, runLoadTest } from '../src/loadtest/index.js';
import { freePort } from './support/services.js';


describe('the seeds scenario against moim', { timeout: 180_000 }, () => {
  it('runs scaled down with every notification delivered once and in order', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sinho-lt-moim-'));
    const [api, ledger, gateway] = [await freePort(), await freePort(), await freePort()];
    try {
      const scenario = await loadScenario('apps/moim/loadtest/joins.yaml', {
        users: 60,
        rateScale: 0.02,
        phaseDuration: '3s',
        http: `http://127.0.0.1:${api}`,
        ws: `ws://127.0.0.1:${gateway}/realtime`,
      });
      // The shipped command, on free ports and a data folder of this test's own.
      scenario.target.start = {
        command: scenario.target.start!.command.replace('.loadtest/moim', join(dir, 'moim')).replace('.loadtest/moim', join(dir, 'moim')).replace('exec node', `PORT=${api} LEDGER_PORT=${ledger} GATEWAY_PORT=${gateway} exec node`),
        ready: `http://127.0.0.1:${api}/readyz`,
      };
      // Few groups at a time, so that each fills up at this low rate (the shipped 1,000 suit 5,000 joins/s).
      scenario.groups!.open = 6;
      scenario.groups!.count = 40;
      scenario.target.metrics = `http://127.0.0.1:${api}/metrics`;
      const summary = await runLoadTest(scenario);
      assert.equal(summary.failure, undefined, summary.failure?.message);
      assert.equal(summary.aborted, undefined);
      const t = summary.totals;
      assert.equal(t.errors, 0, JSON.stringify(summary.errors));
      assert.ok(t.ok >= 400, `about 540 joins at 20 -> 60 -> 100 per second: ${t.ok}`);
      assert.ok(t.expected > t.ok, 'each join notifies the members before it');
      assert.equal(summary.lost, 0, JSON.stringify(summary.lostSample));
      assert.equal(t.delivered, t.expected);
      assert.equal(t.duplicates, 0);
      assert.equal(t.outOfOrder, 0);
      assert.equal(t.unexpected, 0);
      assert.equal(summary.setup.subscriptions, 60);
      const withTarget = summary.monitor.filter((m) => m.target && m.target.processes >= 4);
      assert.ok(withTarget.length >= 5, 'the target process tree (API, worker, gateway, ledger) is monitored');
      assert.ok(summary.monitor.some((m) => m.targetMetrics?.eventLoopLagP99Ms !== undefined), "the target's /metrics are scraped");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
