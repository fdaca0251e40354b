/**
 * Scenario steps over HTTP, on an undici connection pool (keep-alive,
 * pipelining off: one request per connection at a time, as browsers and
 * most clients do).
 */
import { Pool } from 'undici';
import type { Context } from './template.js';
import type { Step } from './scenario.js';

export interface StepResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** A step that did not meet its expectation, or a request that failed. `kind` groups errors in the report. */
export class StepFailure extends Error {
  constructor(
    readonly kind: string,
    message: string,
  ) {
    super(message);
    this.name = 'StepFailure';
  }
}

export class HttpClient {
  private readonly pool: Pool;
  private readonly base: URL;

  constructor(base: string, options: { connections: number; timeoutMs: number }) {
    this.base = new URL(base);
    this.pool = new Pool(this.base.origin, { connections: options.connections, headersTimeout: options.timeoutMs, bodyTimeout: options.timeoutMs, connectTimeout: Math.min(options.timeoutMs, 10_000) });
  }

  /** Runs one step in `context`; captures go into `into`. Throws StepFailure. */
  async run(step: Step, context: Context, into: Record<string, unknown>): Promise<StepResult> {
    const path = joinPath(this.base.pathname, step.path(context));
    const headers: Record<string, string> = {};
    if (step.headers) for (const [k, v] of Object.entries(step.headers(context) as Record<string, unknown>)) if (v !== undefined && v !== '') headers[k.toLowerCase()] = String(v);
    let body: string | undefined;
    if (step.json) {
      body = JSON.stringify(step.json(context));
      headers['content-type'] ??= 'application/json';
    }
    let status: number;
    let responseHeaders: Record<string, string | string[] | undefined>;
    let text: string;
    try {
      const response = await this.pool.request({ method: step.method as 'GET', path, headers, body });
      status = response.statusCode;
      responseHeaders = response.headers;
      text = await response.body.text();
    } catch (error) {
      const code = (error as { code?: string }).code ?? (error as Error).name;
      throw new StepFailure(code, `${step.label}: ${code}: ${(error as Error).message}`);
    }
    let parsed: unknown = text;
    if (text.length > 0 && String(responseHeaders['content-type'] ?? '').includes('json')) {
      try {
        parsed = JSON.parse(text);
      } catch {
        // kept as text
      }
    }
    const expected = step.status;
    if (expected ? !expected.includes(status) : status >= 400) {
      throw new StepFailure(`HTTP ${status}`, `${step.label}: status ${status}${expected ? ` (expected ${expected.join(' or ')})` : ''}: ${text.slice(0, 300)}`);
    }
    for (const [name, source] of step.capture) {
      let value: unknown;
      if (source[0] === 'status') value = status;
      else if (source[0] === 'header') value = responseHeaders[source[1]!.toLowerCase()];
      else {
        value = parsed;
        for (const key of source.slice(1)) value = value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[key] : undefined;
      }
      if (value === undefined) throw new StepFailure('capture missing', `${step.label}: capture ${name} (${source.join('.')}) is not in the response: ${text.slice(0, 300)}`);
      into[name] = value;
    }
    return { status, headers: responseHeaders, body: parsed };
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}

function joinPath(basePath: string, path: string): string {
  if (/^https?:\/\//.test(path)) {
    const u = new URL(path);
    return u.pathname + u.search;
  }
  const base = basePath.endsWith('/') ? basePath.slice(0, -1) : basePath;
  return base + (path.startsWith('/') ? path : `/${path}`);
}
