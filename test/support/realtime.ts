/** Helpers for realtime tests: a raw protocol client that records frames. */
import { WebSocket } from 'ws';
import type { ServerFrame } from '../../src/realtime/index.js';
import { until } from './wait.js';

export interface RawClient {
  ws: WebSocket;
  frames: ServerFrame[];
  closed: Promise<{ code: number; reason: string }>;
  /** Notification cursors received, in order. */
  cursors(): number[];
  send(frame: unknown): void;
  waitFor(predicate: (frame: ServerFrame) => boolean, timeoutMs?: number): Promise<ServerFrame>;
}

/** Opens a WebSocket, optionally with headers, and records every frame. Resolves once open (or rejects on refusal). */
export async function rawClient(url: string, options: { headers?: Record<string, string> } = {}): Promise<RawClient> {
  const ws = new WebSocket(url, { headers: options.headers });
  const frames: ServerFrame[] = [];
  ws.on('message', (data) => frames.push(JSON.parse(data.toString()) as ServerFrame));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
    ws.once('error', reject);
  });
  ws.on('error', () => {});
  return {
    ws,
    frames,
    closed,
    cursors: () => frames.flatMap((f) => (f.type === 'notification' ? [f.cursor] : [])),
    send: (frame) => ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame)),
    waitFor: async (predicate, timeoutMs = 10_000) => {
      let found: ServerFrame | undefined;
      await until(() => (found = frames.find(predicate)) !== undefined, timeoutMs, 'a frame');
      return found!;
    },
  };
}
