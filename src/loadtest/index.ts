/** `sinho/loadtest`: the load-test runner, its monitor and its report, for use from code. */
export { loadScenario, compileScenario, defineScenario, parseDuration, ScenarioError, type ScenarioInput, type Scenario, type ScenarioOverrides, type ScenarioProblem } from './scenario.js';
export { runLoadTest, type RunLoadTestOptions } from './run.js';
export { LoadRun, LoadTestError, arrivals, type GeneratorResult, type Progress, type Shard } from './load-run.js';
export { startAgent } from './agent.js';
export { renderReport, compareRuns, type Comparison } from './report.js';
export { exitCodeOf, mergeResults, type RunSummary, type SecondSummary, type MonitorSample } from './summary.js';
export { checkThresholds, type ThresholdResult } from './thresholds.js';
export { ProcSampler, GeneratorSampler, scrapeMetrics, processTree } from './monitor.js';
export { Latency } from './stats.js';
