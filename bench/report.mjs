/**
 * Where every benchmark writes its figures: bench/results/<name>.json, and
 * its own marked section (`<!-- bench:<name>:start -->` … `end -->`) of
 * docs/benchmarks.md, replaced in place (appended the first time).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The machine a run happened on, as every section names it. */
export function machine() {
  return { cpu: `${os.cpus()[0]?.model ?? 'unknown'} × ${os.cpus().length}`, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version };
}

// Quick runs (BENCH_QUICK=1, reduced sizes) are for exploring: they print their figures and record nothing,
// so they never replace a full run's results; BENCH_RECORD=1 records them anyway.
const recording = process.env.BENCH_QUICK !== '1' || process.env.BENCH_RECORD === '1';

export function writeResults(name, results) {
  if (!recording) {
    console.log(`quick run: bench/results/${name}.json left as it is (BENCH_RECORD=1 records quick runs)`);
    return;
  }
  mkdirSync(join(root, 'bench', 'results'), { recursive: true });
  writeFileSync(join(root, 'bench', 'results', `${name}.json`), `${JSON.stringify(results, null, 2)}\n`);
}

/** `section` starts with `<!-- bench:<name>:start -->` and ends with `<!-- bench:<name>:end -->`. */
export function writeDocSection(name, section) {
  if (!recording) return;
  const docPath = join(root, 'docs', 'benchmarks.md');
  let doc;
  try {
    doc = readFileSync(docPath, 'utf8');
  } catch {
    doc = '# Benchmarks\n\nEvery figure here was produced by the command named in its section, on the machine it names. This machine is shared and noisy: quote medians and ratios, not single runs.\n\n';
  }
  const re = new RegExp(`<!-- bench:${name}:start -->[\\s\\S]*<!-- bench:${name}:end -->`);
  doc = re.test(doc) ? doc.replace(re, () => section) : `${doc.trimEnd()}\n\n${section}\n`;
  mkdirSync(dirname(docPath), { recursive: true });
  writeFileSync(docPath, doc);
}

/** The median of the finite values (the mean of the middle two for an even count); NaN when there is none. */
export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
