/**
 * Distributed mode. `sinho loadtest agent` serves one generator over HTTP;
 * the controller sends each agent the scenario and its shard (users, groups
 * and 1/N of the rate), lets every agent set up, then starts them all at one
 * wall-clock instant and merges their results exactly (HDR histograms added,
 * counters summed). Each agent accounts the deliveries of its own users for
 * its own actions, so groups never span agents.
 *
 * Agent endpoints: POST /prepare {scenario, shard, runId} -> 204 when set up;
 * POST /load {startAt} -> {result, health}; GET /progress; POST /stop; POST /close.
 *
 * An agent makes whatever load it is told to, at whatever target: one that other hosts can reach must not take
 * orders from anyone. With a token, every request must carry `Authorization: Bearer <token>` (401
 * AGENT_UNAUTHORIZED otherwise, before the body is read); an agent listening beyond loopback refuses to start
 * without one (AGENT_TOKEN_REQUIRED).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { Agent, request } from 'undici';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { LoadRun, LoadTestError, type LoadGenerator, type GeneratorResult, type Progress, type Shard } from './load-run.js';
import { GeneratorSampler, type GeneratorSample } from './monitor.js';
import { compileScenario, ScenarioError, type ScenarioInput } from './scenario.js';

/** Largest request body an agent accepts (a scenario). */
const MAX_BODY = 1024 * 1024;

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw Object.assign(new Error(`request body over ${MAX_BODY} bytes`), { status: 413 });
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown>;
  } catch {
    throw Object.assign(new Error('request body is not JSON'), { status: 400 });
  }
}

function send(res: ServerResponse, status: number, body?: unknown): void {
  res.writeHead(status, body === undefined ? {} : { 'content-type': 'application/json' });
  res.end(body === undefined ? undefined : JSON.stringify(body));
}

/** Shortest token accepted: a guessable one would make the check decorative. */
export const MIN_AGENT_TOKEN_LENGTH = 16;

function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

/** SHA-256 of the token, so that the comparison is constant-time whatever the lengths. */
const digest = (value: string): Buffer => createHash('sha256').update(value).digest();

/** Serves one generator at a time. Resolves with the listening server. */
export async function startAgent(options: { host?: string; port?: number; token?: string; log?: (line: string) => void } = {}): Promise<Server> {
  const log = options.log ?? (() => {});
  const host = options.host ?? '127.0.0.1';
  const token = options.token;
  if (token !== undefined && (typeof token !== 'string' || token.length < MIN_AGENT_TOKEN_LENGTH)) {
    throw new LoadTestError('AGENT_TOKEN_REQUIRED', `the agent token must be a string of at least ${MIN_AGENT_TOKEN_LENGTH} characters`);
  }
  if (token === undefined && !isLoopback(host)) {
    throw new LoadTestError(
      'AGENT_TOKEN_REQUIRED',
      `an agent listening on ${host} can be reached by other hosts: give it a token (--token or SINHO_AGENT_TOKEN) and the controller the same one (--agent-token)`,
    );
  }
  const expected = token === undefined ? undefined : digest(`Bearer ${token}`);
  let run: LoadRun | undefined;
  const server = createServer((req, res) => {
    void (async () => {
      try {
        if (expected && !timingSafeEqual(digest(req.headers.authorization ?? ''), expected)) {
          res.setHeader('www-authenticate', 'Bearer');
          return send(res, 401, { code: 'AGENT_UNAUTHORIZED', message: 'this agent needs the controller\'s token (Authorization: Bearer <token>)' });
        }
        const url = new URL(req.url ?? '/', 'http://agent');
        if (req.method === 'POST' && url.pathname === '/prepare') {
          const body = await readJson(req);
          if (run) await run.close();
          const scenario = compileScenario(body.scenario, 'scenario from the controller');
          run = new LoadRun(scenario, body.shard as Shard, typeof body.runId === 'string' ? body.runId : undefined);
          log(`preparing shard ${(body.shard as Shard).index + 1}/${(body.shard as Shard).count} of ${scenario.name}`);
          await run.prepare();
          return send(res, 204);
        }
        if (req.method === 'POST' && url.pathname === '/load') {
          if (!run) return send(res, 409, { code: 'NOT_PREPARED', message: 'POST /prepare first' });
          const body = await readJson(req);
          const sampler = new GeneratorSampler();
          const health: GeneratorSample[] = [];
          const timer = setInterval(() => health.push(sampler.sample()), 1000);
          try {
            const result = await run.load(typeof body.startAt === 'number' ? body.startAt : undefined);
            return send(res, 200, { result, health });
          } finally {
            clearInterval(timer);
            sampler.stop();
          }
        }
        if (req.method === 'GET' && url.pathname === '/progress') return run ? send(res, 200, run.progress()) : send(res, 404, { code: 'NOT_PREPARED', message: 'no run' });
        if (req.method === 'POST' && url.pathname === '/stop') {
          const body = await readJson(req);
          run?.stop(typeof body.reason === 'string' ? body.reason : 'stopped by the controller');
          return send(res, 204);
        }
        if (req.method === 'POST' && url.pathname === '/close') {
          await run?.close();
          run = undefined;
          return send(res, 204);
        }
        send(res, 404, { code: 'NOT_FOUND', message: `${req.method} ${url.pathname} is not an agent endpoint` });
      } catch (error) {
        const status = (error as { status?: number }).status ?? (error instanceof ScenarioError ? 400 : 500);
        const code = error instanceof LoadTestError ? error.code : error instanceof ScenarioError ? 'INVALID_SCENARIO' : 'AGENT_FAILED';
        send(res, status, { code, message: (error as Error).message });
      }
    })();
  });
  server.requestTimeout = 0; // /load lasts as long as the run
  server.headersTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, resolve);
  });
  return server;
}

/** The controller's handle on one agent. */
export class RemoteGenerator implements LoadGenerator {
  constructor(
    readonly name: string,
    private readonly scenario: ScenarioInput,
    private readonly shard: Shard,
    /** The agents' token (startAgent's `token`), sent with every request. */
    private readonly token?: string,
  ) {}

  private headers(json: boolean): Record<string, string> {
    return { ...(json ? { 'content-type': 'application/json' } : {}), ...(this.token === undefined ? {} : { authorization: `Bearer ${this.token}` }) };
  }

  private async call(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(new URL(path, this.name), {
        method,
        headers: this.headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        ...(timeoutMs ? { signal: AbortSignal.timeout(timeoutMs) } : {}),
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string } }).cause;
      throw new LoadTestError('AGENT_FAILED', `agent ${this.name} (${method} ${path}) failed: ${cause?.code ?? (error as Error).message}`);
    }
    if (!response.ok) {
      const problem = (await response.json().catch(() => ({}))) as { code?: string; message?: string };
      const code =
        problem.code === 'TARGET_UNREACHABLE' || problem.code === 'SETUP_FAILED' || problem.code === 'INVALID_SCENARIO' || problem.code === 'AGENT_UNAUTHORIZED' ? problem.code : 'AGENT_FAILED';
      throw new LoadTestError(code, `agent ${this.name}: ${problem.message ?? `HTTP ${response.status}`}`);
    }
    return response;
  }

  async prepare(): Promise<void> {
    await this.call('POST', '/prepare', { scenario: this.scenario, shard: this.shard });
  }

  async load(startAt: number): Promise<{ result: GeneratorResult; health: GeneratorSample[] }> {
    // The response comes at the end of the run: no body or headers timeout.
    const dispatcher = new Agent({ headersTimeout: 0, bodyTimeout: 0 });
    try {
      const response = await request(new URL('/load', this.name), { method: 'POST', headers: this.headers(true), body: JSON.stringify({ startAt }), dispatcher });
      const text = await response.body.text();
      if (response.statusCode !== 200) {
        const problem = (JSON.parse(text || '{}') ?? {}) as { message?: string };
        throw new LoadTestError('AGENT_FAILED', `agent ${this.name}: ${problem.message ?? `HTTP ${response.statusCode}`}`);
      }
      return JSON.parse(text) as { result: GeneratorResult; health: GeneratorSample[] };
    } catch (error) {
      if (error instanceof LoadTestError) throw error;
      throw new LoadTestError('AGENT_FAILED', `agent ${this.name} failed during the load: ${(error as { code?: string }).code ?? (error as Error).message}`);
    } finally {
      await dispatcher.close();
    }
  }

  async progress(): Promise<Progress | undefined> {
    const response = await this.call('GET', '/progress', undefined, 900);
    return (await response.json()) as Progress;
  }

  async stop(reason: string): Promise<void> {
    await this.call('POST', '/stop', { reason }, 5000).catch(() => {});
  }

  async close(): Promise<void> {
    await this.call('POST', '/close', undefined, 10_000).catch(() => {});
  }
}
