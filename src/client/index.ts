/**
 * `sinho/client`: a small typed client for the realtime gateway, for browsers
 * and Node (no Node-only imports). It authenticates in the first frame,
 * resumes from its last cursor after every disconnect (backoff with full
 * jitter), drops duplicates by cursor, acknowledges in batches, follows
 * go-away (draining, wrong node) and surfaces gaps, so that an application
 * sees each notification once, in order, or an explicit gap.
 */
import { CLOSE_CODES, FATAL_CLOSE_CODES, type ClientFrame, type ServerFrame } from '../realtime/protocol.js';

export type { ClientFrame, ServerFrame, RealtimeErrorCode } from '../realtime/protocol.js';
export { CLOSE_CODES } from '../realtime/protocol.js';

/** The part of the WebSocket API the client uses (browser WebSocket and the `ws` package both fit). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export type WebSocketFactory = new (url: string) => WebSocketLike;

export interface FeedClientOptions {
  /** Gateway URL, e.g. wss://example.com/realtime (never put the token in it). */
  url: string;
  /** The session token, or a function returning the current one (called at every connect). */
  token: string | (() => string | Promise<string>);
  /** Resume after this cursor. Default: where the server last saw this user acknowledge. */
  cursor?: number;
  /** WebSocket implementation. Default `globalThis.WebSocket` (browsers; Node 22+). In Node 20 pass `ws`'s WebSocket. */
  WebSocket?: WebSocketFactory;
  /** Acknowledge received notifications automatically. Default true. */
  autoAck?: boolean;
  /** Acknowledgements are sent at most this often, ms. Default 200. */
  ackIntervalMs?: number;
  /** First reconnect delay ceiling, ms (doubles per failed attempt, full jitter). Default 250. */
  reconnectInitialMs?: number;
  /** Reconnect delay ceiling, ms. Default 10,000. */
  reconnectMaxMs?: number;
}

export interface NotificationMessage {
  cursor: number;
  type: string;
  data: unknown;
  /** Epoch ms the notification was stored. */
  at: number;
}

export interface FeedClientEvents {
  open: { user: string; node: number; head: number; oldest: number };
  notification: NotificationMessage;
  gap: { after: number; oldest: number };
  goaway: { reason: string; cursor: number; retryAfterMs: number };
  error: { code: string; message: string };
  close: { code: number; reason: string; reconnecting: boolean };
}

type Listener<T> = (event: T) => void;

export class FeedClient {
  /** The last cursor received (or resumed from). */
  cursor: number | undefined;
  /** Duplicates dropped (a notification at or below `cursor`). */
  duplicates = 0;
  private ws: WebSocketLike | undefined;
  private url: string;
  private attempts = 0;
  private stopped = false;
  private acked = 0;
  private ackTimer: ReturnType<typeof setTimeout> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private minDelayMs = 0;
  /** Set when reconnecting cannot help (wrong node and no URL to go to). */
  private fatal = false;
  private readonly listeners = new Map<keyof FeedClientEvents, Set<Listener<never>>>();
  private readonly WebSocketImpl: WebSocketFactory;

  constructor(private readonly options: FeedClientOptions) {
    this.url = options.url;
    this.cursor = options.cursor;
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketFactory }).WebSocket;
    if (!impl) throw new TypeError('No WebSocket implementation: pass options.WebSocket (e.g. the ws package in Node 20).');
    this.WebSocketImpl = impl;
  }

  on<K extends keyof FeedClientEvents>(event: K, listener: Listener<FeedClientEvents[K]>): this {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener as Listener<never>);
    return this;
  }

  off<K extends keyof FeedClientEvents>(event: K, listener: Listener<FeedClientEvents[K]>): this {
    this.listeners.get(event)?.delete(listener as Listener<never>);
    return this;
  }

  private emit<K extends keyof FeedClientEvents>(event: K, value: FeedClientEvents[K]): void {
    for (const listener of this.listeners.get(event) ?? []) (listener as Listener<FeedClientEvents[K]>)(value);
  }

  /** Connects (and keeps reconnecting until `close`). */
  start(): this {
    this.stopped = false;
    void this.connect();
    return this;
  }

  /** Acknowledges everything up to `cursor` (automatic unless autoAck is false). */
  ack(cursor: number): void {
    if (cursor <= this.acked) return;
    this.acked = cursor;
    if (this.ws?.readyState === 1) this.send({ type: 'ack', cursor });
  }

  /** Stops for good: no reconnect. */
  close(): void {
    this.stopped = true;
    clearTimeout(this.ackTimer);
    clearTimeout(this.retryTimer);
    this.ws?.close(CLOSE_CODES.normal, 'client closed');
  }

  private send(frame: ClientFrame): void {
    this.ws?.send(JSON.stringify(frame));
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    let token: string;
    try {
      token = typeof this.options.token === 'function' ? await this.options.token() : this.options.token;
    } catch (error) {
      this.emit('error', { code: 'TOKEN_UNAVAILABLE', message: String(error) });
      return this.scheduleReconnect();
    }
    const ws = new this.WebSocketImpl(this.url);
    this.ws = ws;
    this.acked = 0;
    ws.onopen = () => this.send({ type: 'hello', token, ...(this.cursor !== undefined ? { cursor: this.cursor } : {}) });
    ws.onmessage = (event) => this.onFrame(ws, typeof event.data === 'string' ? event.data : String(event.data));
    ws.onerror = () => {}; // a close event follows with the code
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      clearTimeout(this.ackTimer);
      this.ackTimer = undefined;
      const reconnecting = !this.stopped && !this.fatal && !FATAL_CLOSE_CODES.has(event.code);
      this.emit('close', { code: event.code, reason: event.reason, reconnecting });
      if (reconnecting) this.scheduleReconnect();
    };
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    const initial = this.options.reconnectInitialMs ?? 250;
    const ceiling = Math.min(this.options.reconnectMaxMs ?? 10_000, initial * 2 ** Math.min(this.attempts, 20));
    this.attempts += 1;
    const delay = Math.max(this.minDelayMs, Math.floor(Math.random() * ceiling));
    this.minDelayMs = 0;
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }

  private onFrame(ws: WebSocketLike, text: string): void {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(text) as ServerFrame;
    } catch {
      return;
    }
    switch (frame.type) {
      case 'welcome':
        this.attempts = 0;
        if (this.cursor === undefined) this.cursor = Math.max(frame.acked, frame.oldest - 1);
        this.emit('open', { user: frame.user, node: frame.node, head: frame.head, oldest: frame.oldest });
        return;
      case 'notification': {
        const cursor = frame.cursor;
        if (this.cursor !== undefined && cursor <= this.cursor) {
          this.duplicates += 1;
          return;
        }
        if (this.cursor !== undefined && cursor !== this.cursor + 1) {
          // Never expected (the server sends a gap first); resume from what we have rather than skip silently.
          this.emit('error', { code: 'HOLE', message: `Expected cursor ${this.cursor + 1}, got ${cursor}; resuming.` });
          ws.close(CLOSE_CODES.normal, 'hole');
          return;
        }
        this.cursor = cursor;
        this.emit('notification', { cursor, type: frame.notification.type, data: frame.notification.data, at: frame.notification.at });
        if (this.options.autoAck !== false) this.scheduleAck();
        return;
      }
      case 'gap':
        this.cursor = frame.oldest - 1;
        this.emit('gap', { after: frame.after, oldest: frame.oldest });
        return;
      case 'goaway':
        if (frame.resume.url) this.url = frame.resume.url;
        else if (frame.reason === 'wrong-node') this.fatal = true;
        this.minDelayMs = frame.retryAfterMs;
        this.emit('goaway', { reason: frame.reason, cursor: frame.resume.cursor, retryAfterMs: frame.retryAfterMs });
        return;
      case 'error':
        this.emit('error', { code: frame.code, message: frame.message });
        return;
      case 'pong':
        return;
    }
  }

  private scheduleAck(): void {
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = undefined;
      if (this.cursor !== undefined) this.ack(this.cursor);
    }, this.options.ackIntervalMs ?? 200);
  }
}

/** Creates a client and starts it. */
export function connectFeed(options: FeedClientOptions): FeedClient {
  return new FeedClient(options).start();
}
