/**
 * The load-test report in a real browser: headless Chromium (Debian's
 * `chromium`, driven by playwright-core) opens a generated report from disk,
 * offline, and finds every chart drawn with the run's data.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { loadScenario, runLoadTest, renderReport } from '../src/loadtest/index.js';
import { startFaultyTarget } from './fixtures/faulty-target.js';
import { requireServices } from './support/services.js';

const CHROMIUM = process.env.SINHO_CHROMIUM ?? '/usr/bin/chromium';
let skip: string | undefined;
if (!existsSync(CHROMIUM)) {
  skip = `Chromium is not installed at ${CHROMIUM} (apt-get install chromium; .ci/run installs it)`;
  if (requireServices) throw new Error(`${skip} (SINHO_REQUIRE_SERVICES=1, so this is a failure, not a skip)`);
}

describe('load-test report in Chromium', { skip, timeout: 120_000 }, () => {
  it('opens offline and draws every chart with data', async () => {
    const target = await startFaultyTarget();
    const dir = mkdtempSync(join(tmpdir(), 'sinho-report-'));
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const scenario = await loadScenario('test/fixtures/loadtest/faulty.yaml', { http: `http://127.0.0.1:${target.port}`, ws: `ws://127.0.0.1:${target.port}`, phaseDuration: '3s' });
      // The target runs in this process: monitor it as the target.
      scenario.target.pids = [process.pid];
      const summary = await runLoadTest(scenario);
      assert.equal(summary.failure, undefined);
      const file = join(dir, 'report.html');
      writeFileSync(file, renderReport(summary, summary));
      const context = await browser.newContext({ offline: true });
      const page = await context.newPage();
      const failures: string[] = [];
      page.on('pageerror', (e) => failures.push(e.message));
      page.on('requestfailed', (r) => failures.push(`request ${r.url()}`));
      await page.goto(pathToFileURL(file).href);
      // Runs in the page (a string: this project's types have no DOM).
      const charts = (await page.evaluate(`window.__charts.map((u) => {
        const canvas = u.root.querySelector('canvas');
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
        return { title: u.root.dataset.title, points: u.data[0].length, values: u.data.slice(1).flat().filter((v) => typeof v === 'number').length, painted };
      })`)) as { title?: string; points: number; values: number; painted: number }[];
      assert.deepEqual(failures, [], 'no script error and no network request');
      assert.ok(charts.length >= 11, `every chart is there: ${charts.map((c) => c.title).join(', ')}`);
      for (const c of charts) {
        assert.ok(c.points >= 3, `${c.title}: a point per second`);
        assert.ok(c.values > 0, `${c.title}: data`);
        assert.ok(c.painted > 1000, `${c.title}: drawn`);
      }
      assert.ok(charts.some((c) => c.title?.startsWith('Deliveries')));
      const text = await page.textContent('body');
      assert.match(text ?? '', /lost/);
      assert.match(text ?? '', /Compared with the previous run/);
      await page.screenshot({ path: join(dir, 'report.png'), fullPage: true });
    } finally {
      await browser.close();
      await target.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
