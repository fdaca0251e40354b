/**
 * The realtime gateway: a WebSocket server (on `ws`) that delivers each
 * connected user's notification feed, durably numbered, with resume.
 *
 * Delivery per connection keeps one number, `sent` (the last cursor written to
 * the socket). Live notifications come from the gateway node's outbox in the
 * feed store (only the node's own users); one whose cursor is `sent + 1` is
 * written at once, anything else is either a duplicate (dropped) or the sign of
 * a hole, which the connection fills by reading its feed from the store. A
 * resume is the same pump: read the feed after the client's cursor until the
 * store has nothing newer, then continue live. So the seam between stored and
 * live has neither holes nor duplicates, whatever order the two arrive in.
 */
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import { InvalidInput } from '../errors.js';
import type { FeedStore } from './feed-store.js';
import { CLOSE_CODES, parseClientFrame, type RealtimeErrorCode, type ServerFrame } from './protocol.js';
import { gatewayNodeOf } from './sharding.js';

export interface GatewaySession {
  userId: string;
  /** Epoch ms the session ends; the connection is closed then. */
  expiresAt?: number;
}

export interface GatewayOptions {
  feed: FeedStore;
  /** Resolves a session token (the HTTP API's) to its user, or undefined when unknown or expired. */
  authenticate(token: string): Promise<GatewaySession | undefined>;
  /** This gateway's node number, 0 <= node < nodes. Default 0. */
  node?: number;
  /** How many gateway nodes share the users. Default 1. */
  nodes?: number;
  /** Which node owns a user. Default `gatewayNodeOf` (id % nodes for integer ids, FNV-1a otherwise). */
  nodeOf?: (userId: string, nodes: number) => number;
  /** WebSocket URLs of the nodes, by node number, so a client at the wrong node is told where to go. */
  nodeUrls?: readonly string[];
  /** Attach to this HTTP server (on `path`) instead of listening on its own. */
  server?: Server;
  /** Own server: port (0 picks a free one). Default 0. */
  port?: number;
  /** Own server: host. Default 127.0.0.1. */
  host?: string;
  /** Upgrade path. Default `/realtime`. */
  path?: string;
  /** Server pings this often; a connection that did not answer the previous ping is closed, ms. Default 25,000. */
  heartbeatMs?: number;
  /** A connection must authenticate within this time, ms. Default 5,000. */
  helloTimeoutMs?: number;
  /** Largest accepted client frame, bytes (close 1009 above). Default 4,096. */
  maxFrameBytes?: number;
  /** Send buffer per connection, bytes; a connection over it is closed with a resume hint (slow consumer). Default 1 MiB. */
  maxBufferedBytes?: number;
  /** While resuming from the store, how long a client may take to read a full send buffer before it counts as slow, ms. Default 10,000. */
  slowConsumerGraceMs?: number;
  /** Client frames per second per connection (bursts of twice that); more closes the connection. Default 50. */
  maxFramesPerSecond?: number;
  /** Open connections at most; more are refused (HTTP 503). Default 10,000. */
  maxConnections?: number;
  /** Feed entries read per store query when resuming. Default 500. */
  resumePageSize?: number;
  /** Presence lasts this long without a refresh (a crashed node's users go offline after it), ms. Default 30,000. */
  presenceTtlMs?: number;
  /** Sessions are checked again this often (a logout closes the connection), ms. Default 60,000. */
  sessionRecheckMs?: number;
  /** Acknowledgements and presence are written in batches this often, ms (each batch is one write transaction on the feed store, which the fan-out shares). Default 1,000. */
  flushIntervalMs?: number;
  /** The clock, epoch ms. Default Date.now. */
  now?: () => number;
}

export interface GatewayStats {
  node: number;
  connections: number;
  users: number;
  /** Notification frames written since start. */
  delivered: number;
  /** Feed entries read from the store to resume or fill holes. */
  readFromStore: number;
  slowConsumersClosed: number;
}

export interface GatewayEventMap {
  'gateway:connected': [{ userId: string; connectionId: string; cursor: number }];
  'gateway:disconnected': [{ userId: string; connectionId: string; code: number; sent: number }];
  'gateway:slow-consumer': [{ userId: string; connectionId: string; bufferedBytes: number; resumeCursor: number }];
  'gateway:error': [{ error: Error }];
}

interface Connection {
  id: string;
  ws: WebSocket;
  state: 'new' | 'open' | 'closed';
  token?: string;
  userId?: string;
  /** Last cursor written to the socket. */
  sent: number;
  /** Highest cursor known to exist for the user. */
  target: number;
  pumping: boolean;
  alive: boolean;
  tokens: number;
  tokensAt: number;
  timers: NodeJS.Timeout[];
}

/** A corked socket is flushed once it holds this much of one batch. */
const CORK_FLUSH_BYTES = 16 * 1024;

const DEFAULTS = {
  path: '/realtime',
  heartbeatMs: 25_000,
  helloTimeoutMs: 5_000,
  maxFrameBytes: 4096,
  maxBufferedBytes: 1024 * 1024,
  maxFramesPerSecond: 50,
  slowConsumerGraceMs: 10_000,
  maxConnections: 10_000,
  resumePageSize: 500,
  presenceTtlMs: 30_000,
  sessionRecheckMs: 60_000,
  flushIntervalMs: 1000,
};

function positiveInteger(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < min) throw new InvalidInput('INVALID_ARGUMENT', `Gateway option ${name} must be an integer >= ${min}, got ${JSON.stringify(value)}.`);
  return value;
}

export class Gateway extends EventEmitter<GatewayEventMap> {
  readonly node: number;
  readonly nodes: number;
  private readonly o: typeof DEFAULTS;
  private readonly feed: FeedStore;
  private readonly authenticate: GatewayOptions['authenticate'];
  private readonly nodeOf: (userId: string) => number;
  private readonly nodeUrls: readonly string[];
  private readonly now: () => number;
  private readonly wss: WebSocketServer;
  private readonly ownServer: Server | undefined;
  private readonly attachedServer: Server | undefined;
  private readonly connections = new Set<Connection>();
  private readonly users = new Map<string, Set<Connection>>();
  private readonly pendingAcks = new Map<string, number>();
  private readonly presenceOn = new Set<string>();
  private readonly presenceOff = new Set<string>();
  private readonly presenceNode: string;
  private readonly intervals: NodeJS.Timeout[] = [];
  private unwatch: (() => void) | undefined;
  private outboxSeq = 0;
  /** Hellos being authenticated and registered (the outbox is not skipped meanwhile). */
  private hellos = 0;
  /** Sockets corked while one outbox batch is written (their frames leave in one write each), with the bytes held. */
  private readonly corked = new Map<{ cork(): void; uncork(): void }, number>();
  private batching = false;
  private polling = false;
  private pollAgain = false;
  private accepting = true;
  private closed = false;
  private readonly counters = { delivered: 0, readFromStore: 0, slowConsumersClosed: 0 };
  private readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => this.handleUpgrade(req, socket, head);

  private constructor(options: GatewayOptions) {
    super();
    this.nodes = positiveInteger('nodes', options.nodes, 1);
    this.node = positiveInteger('node', options.node, 0, 0);
    if (this.node >= this.nodes) throw new InvalidInput('INVALID_ARGUMENT', `Gateway option node must be below nodes (${this.nodes}), got ${this.node}.`);
    this.o = {
      path: options.path ?? DEFAULTS.path,
      heartbeatMs: positiveInteger('heartbeatMs', options.heartbeatMs, DEFAULTS.heartbeatMs),
      helloTimeoutMs: positiveInteger('helloTimeoutMs', options.helloTimeoutMs, DEFAULTS.helloTimeoutMs),
      maxFrameBytes: positiveInteger('maxFrameBytes', options.maxFrameBytes, DEFAULTS.maxFrameBytes),
      maxBufferedBytes: positiveInteger('maxBufferedBytes', options.maxBufferedBytes, DEFAULTS.maxBufferedBytes),
      maxFramesPerSecond: positiveInteger('maxFramesPerSecond', options.maxFramesPerSecond, DEFAULTS.maxFramesPerSecond),
      slowConsumerGraceMs: positiveInteger('slowConsumerGraceMs', options.slowConsumerGraceMs, DEFAULTS.slowConsumerGraceMs),
      maxConnections: positiveInteger('maxConnections', options.maxConnections, DEFAULTS.maxConnections),
      resumePageSize: positiveInteger('resumePageSize', options.resumePageSize, DEFAULTS.resumePageSize),
      presenceTtlMs: positiveInteger('presenceTtlMs', options.presenceTtlMs, DEFAULTS.presenceTtlMs),
      sessionRecheckMs: positiveInteger('sessionRecheckMs', options.sessionRecheckMs, DEFAULTS.sessionRecheckMs),
      flushIntervalMs: positiveInteger('flushIntervalMs', options.flushIntervalMs, DEFAULTS.flushIntervalMs),
    };
    this.feed = options.feed;
    this.authenticate = options.authenticate;
    const nodeOf = options.nodeOf ?? gatewayNodeOf;
    this.nodeOf = (userId) => nodeOf(userId, this.nodes);
    this.nodeUrls = options.nodeUrls ?? [];
    this.now = options.now ?? Date.now;
    this.presenceNode = `gateway-${this.node}-${randomUUID().slice(0, 8)}`;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: this.o.maxFrameBytes, clientTracking: false });
    this.attachedServer = options.server;
    this.ownServer = options.server ? undefined : createServer((_req, res) => res.writeHead(426, { 'content-type': 'text/plain' }).end('WebSocket upgrade required.\n'));
    (this.attachedServer ?? this.ownServer)!.on('upgrade', this.onUpgrade);
  }

  /** Starts a gateway: listens (unless attached to a server), follows the node's outbox. */
  static async start(options: GatewayOptions): Promise<Gateway> {
    const gateway = new Gateway(options);
    await gateway.begin(options);
    return gateway;
  }

  private async begin(options: GatewayOptions): Promise<void> {
    // Live delivery starts at the outbox's current end: anything older reaches clients through their resume.
    this.outboxSeq = await this.feed.nodeHead(this.node);
    this.unwatch = this.feed.watch(() => this.pollOutbox());
    if (this.ownServer) {
      await new Promise<void>((resolve, reject) => {
        this.ownServer!.once('error', reject);
        this.ownServer!.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
          this.ownServer!.off('error', reject);
          resolve();
        });
      });
    }
    this.intervals.push(setInterval(() => this.heartbeat(), this.o.heartbeatMs));
    this.intervals.push(setInterval(() => void this.flush(), this.o.flushIntervalMs));
    this.intervals.push(setInterval(() => this.refreshPresence(), Math.max(1000, Math.floor(this.o.presenceTtlMs / 3))));
    this.intervals.push(setInterval(() => void this.recheckSessions(), this.o.sessionRecheckMs));
    for (const interval of this.intervals) interval.unref();
    this.pollOutbox();
  }

  /** The port of the gateway's own server. */
  get port(): number {
    const address = (this.ownServer ?? this.attachedServer)!.address() as AddressInfo | null;
    return address?.port ?? 0;
  }

  /** The URL clients connect to (own server), e.g. ws://127.0.0.1:PORT/realtime. */
  get url(): string {
    return `ws://127.0.0.1:${this.port}${this.o.path}`;
  }

  stats(): GatewayStats {
    return { node: this.node, connections: this.connections.size, users: this.users.size, ...this.counters };
  }

  // ---------------------------------------------------------------- connections

  private handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://gateway');
    if (url.pathname !== this.o.path) {
      if (this.ownServer) refuse(socket, 404, 'Not Found', 'No WebSocket endpoint here.');
      return; // attached: another upgrade handler of the server may own this path
    }
    // Tokens in URLs end up in access logs and browser history: refused outright, never read.
    for (const name of ['token', 'access_token', 'session']) {
      if (url.searchParams.has(name)) return refuse(socket, 400, 'Bad Request', 'Send the session token in the Authorization header or the hello frame, never in the URL.');
    }
    if (!this.accepting) return refuse(socket, 503, 'Service Unavailable', 'This gateway is draining; connect again shortly.');
    if (this.connections.size >= this.o.maxConnections) return refuse(socket, 503, 'Service Unavailable', 'Too many connections on this gateway.');
    const auth = req.headers.authorization;
    const token = auth && /^Bearer\s+/i.test(auth) ? auth.replace(/^Bearer\s+/i, '').trim() : undefined;
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, token));
  }

  private accept(ws: WebSocket, token: string | undefined): void {
    const conn: Connection = {
      id: randomUUID(),
      ws,
      state: 'new',
      token,
      sent: 0,
      target: 0,
      pumping: false,
      alive: true,
      tokens: this.o.maxFramesPerSecond * 2,
      tokensAt: this.now(),
      timers: [],
    };
    this.connections.add(conn);
    conn.timers.push(setTimeout(() => conn.state === 'new' && this.fail(conn, 'HELLO_TIMEOUT', 'No hello frame in time.', CLOSE_CODES.helloTimeout), this.o.helloTimeoutMs));
    ws.on('pong', () => (conn.alive = true));
    ws.on('message', (data, isBinary) => this.onMessage(conn, data, isBinary));
    ws.on('error', (error: Error & { code?: string }) => {
      // ws reports protocol violations (oversized frames: 1009) and closes the socket itself.
      if (error.code !== 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' && !/payload|frame|opcode|utf-8|mask/i.test(error.message)) this.emit('gateway:error', { error });
    });
    ws.on('close', (code) => this.forget(conn, code));
  }

  private onMessage(conn: Connection, data: RawData, isBinary: boolean): void {
    if (conn.state === 'closed') return;
    conn.alive = true;
    const now = this.now();
    conn.tokens = Math.min(this.o.maxFramesPerSecond * 2, conn.tokens + ((now - conn.tokensAt) / 1000) * this.o.maxFramesPerSecond);
    conn.tokensAt = now;
    if (conn.tokens < 1) return this.fail(conn, 'RATE_LIMITED', `More than ${this.o.maxFramesPerSecond} frames per second.`, CLOSE_CODES.rateLimited);
    conn.tokens -= 1;
    if (isBinary) return this.fail(conn, 'BAD_FRAME', 'Frames are JSON text, not binary.', CLOSE_CODES.badFrame);
    const parsed = parseClientFrame(data.toString());
    if ('error' in parsed) return this.fail(conn, 'BAD_FRAME', parsed.error, CLOSE_CODES.badFrame);
    const frame = parsed.frame;
    if (conn.state === 'new') {
      if (frame.type !== 'hello') return this.fail(conn, 'BAD_FRAME', 'The first frame must be hello.', CLOSE_CODES.badFrame);
      conn.state = 'open'; // no second hello; authentication follows
      this.hellos += 1;
      void this.hello(conn, frame)
        .catch((error: Error) => {
          this.emit('gateway:error', { error });
          this.fail(conn, 'NOT_ACCEPTING', 'The gateway could not open your feed; try again.', 1011);
        })
        .finally(() => (this.hellos -= 1));
      return;
    }
    switch (frame.type) {
      case 'hello':
        return this.fail(conn, 'BAD_FRAME', 'hello was already sent on this connection.', CLOSE_CODES.badFrame);
      case 'ping':
        return this.send(conn, { type: 'pong' });
      case 'ack':
        if (!conn.userId) return; // still authenticating
        if (frame.cursor > conn.sent) return this.fail(conn, 'BAD_FRAME', `ack.cursor ${frame.cursor} is past the last cursor sent (${conn.sent}).`, CLOSE_CODES.badFrame);
        if (frame.cursor > (this.pendingAcks.get(conn.userId) ?? 0)) this.pendingAcks.set(conn.userId, frame.cursor);
    }
  }

  private async hello(conn: Connection, frame: { token?: string; cursor?: number; user?: string }): Promise<void> {
    const token = frame.token ?? conn.token;
    if (!token) return this.fail(conn, 'UNAUTHORIZED', 'No session token: send it in the Authorization header or in hello.token.', CLOSE_CODES.unauthorized);
    const session = await this.authenticate(token);
    if (conn.state === 'closed') return;
    if (!session || (session.expiresAt !== undefined && session.expiresAt <= this.now())) {
      return this.fail(conn, 'UNAUTHORIZED', 'The session token is unknown or expired.', CLOSE_CODES.unauthorized);
    }
    if (frame.user !== undefined && frame.user !== session.userId) {
      return this.fail(conn, 'FORBIDDEN', 'A connection can only receive its own user\'s feed.', CLOSE_CODES.forbidden);
    }
    const owner = this.nodeOf(session.userId);
    if (owner !== this.node) {
      const url = this.nodeUrls[owner];
      this.send(conn, { type: 'goaway', reason: 'wrong-node', resume: { cursor: frame.cursor ?? 0, node: owner, ...(url ? { url } : {}) }, retryAfterMs: 0 });
      return this.fail(conn, 'WRONG_NODE', `User belongs to gateway node ${owner}; this is node ${this.node}.`, CLOSE_CODES.wrongNode, { node: owner, ...(url ? { url } : {}) });
    }
    conn.token = token;
    conn.userId = session.userId;
    // Registered before the bounds are read, with the pump flag up: a live notification arriving meanwhile only
    // raises `target`, and the pump started below reads it from the store. No hole at the seam.
    conn.pumping = true;
    let users = this.users.get(session.userId);
    if (!users) this.users.set(session.userId, (users = new Set()));
    users.add(conn);
    this.presenceOff.delete(session.userId);
    this.presenceOn.add(session.userId);
    const bounds = await this.feed.bounds(session.userId);
    conn.pumping = false;
    if (isClosed(conn)) return;
    const cursor = frame.cursor ?? bounds.acked;
    if (cursor > bounds.head) {
      return this.fail(conn, 'CURSOR_AHEAD', `Cursor ${cursor} is past the newest notification (${bounds.head}).`, CLOSE_CODES.cursorAhead, { head: bounds.head });
    }
    if (session.expiresAt !== undefined) {
      const ms = Math.min(session.expiresAt - this.now(), 2_147_000_000);
      conn.timers.push(setTimeout(() => this.expire(conn), ms));
    }
    this.send(conn, { type: 'welcome', user: session.userId, node: this.node, head: bounds.head, oldest: bounds.oldest, acked: bounds.acked, heartbeatMs: this.o.heartbeatMs });
    conn.sent = cursor;
    if (cursor < bounds.oldest - 1) {
      this.send(conn, { type: 'gap', after: cursor, oldest: bounds.oldest });
      conn.sent = bounds.oldest - 1;
    }
    conn.target = Math.max(conn.target, bounds.head);
    this.emit('gateway:connected', { userId: session.userId, connectionId: conn.id, cursor });
    void this.pump(conn);
  }

  /** Writes feed entries from the store until the connection has everything the store has. */
  private async pump(conn: Connection): Promise<void> {
    if (conn.pumping) return;
    conn.pumping = true;
    try {
      while (conn.state === 'open' && conn.sent < conn.target) {
        const entries = await this.feed.read(conn.userId!, conn.sent, this.o.resumePageSize);
        if (conn.state !== 'open') return;
        this.counters.readFromStore += entries.length;
        if (entries.length === 0) {
          // The store has nothing after `sent` (pruned past it meanwhile): say so rather than wait.
          const bounds = await this.feed.bounds(conn.userId!);
          if (bounds.head <= conn.sent) break;
          if (bounds.oldest > conn.sent + 1) {
            this.send(conn, { type: 'gap', after: conn.sent, oldest: bounds.oldest });
            conn.sent = bounds.oldest - 1;
          }
          continue;
        }
        for (const e of entries) {
          if (e.cursor <= conn.sent) continue;
          if (e.cursor > conn.sent + 1) {
            this.send(conn, { type: 'gap', after: conn.sent, oldest: e.cursor });
          }
          // Reading from the store, the gateway sets the pace: it waits for the client to take what it was
          // sent (up to the slow-consumer grace) instead of filling the send buffer and closing the client.
          if (conn.ws.bufferedAmount > this.o.maxBufferedBytes / 2 && !(await this.drained(conn))) return this.slowConsumer(conn);
          if (conn.state !== 'open') return;
          if (!this.writeNotification(conn, e.cursor, JSON.stringify({ type: e.type, data: e.data, at: e.at }))) return;
        }
      }
    } catch (error) {
      this.emit('gateway:error', { error: error as Error });
      this.fail(conn, 'NOT_ACCEPTING', 'The gateway could not read your feed; resume shortly.', 1011);
    } finally {
      conn.pumping = false;
    }
  }

  /** Waits until the connection's send buffer is below half its limit; false after the grace period. */
  private async drained(conn: Connection): Promise<boolean> {
    const deadline = Date.now() + this.o.slowConsumerGraceMs;
    while (conn.state === 'open' && conn.ws.bufferedAmount > this.o.maxBufferedBytes / 2) {
      if (Date.now() > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return true;
  }

  /** Sends one notification (`json`: its JSON text); false when the connection was closed (slow consumer). */
  private writeNotification(conn: Connection, cursor: number, json: string): boolean {
    // Built by concatenation: the notification's JSON is shared by all its recipients, only the cursor differs.
    const text = `{"type":"notification","cursor":${cursor},"notification":${json}}`;
    // ws keeps its socket private; corking it (when reachable) merges one outbox batch's frames into few syscalls.
    const socket = this.batching ? (conn.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket : undefined;
    const held = socket ? (this.corked.get(socket) ?? 0) : 0;
    // Bytes held by our own cork are not the client's backlog: only what the socket could not write counts.
    if (conn.ws.bufferedAmount - held + text.length > this.o.maxBufferedBytes) {
      this.slowConsumer(conn);
      return false;
    }
    if (socket) {
      if (!this.corked.has(socket)) socket.cork();
      else if (held > CORK_FLUSH_BYTES) {
        socket.uncork(); // a big batch for one client: let it go in parts
        socket.cork();
        this.corked.set(socket, 0);
      }
      this.corked.set(socket, (this.corked.get(socket) ?? 0) + text.length);
    }
    conn.ws.send(text);
    conn.sent = cursor;
    this.counters.delivered += 1;
    return true;
  }

  private deliverLive(conn: Connection, cursor: number, json: string): void {
    if (conn.state !== 'open') return;
    if (cursor > conn.target) conn.target = cursor;
    if (conn.pumping || cursor <= conn.sent) return; // the pump reads it from the store, or it was sent
    if (cursor === conn.sent + 1) {
      this.writeNotification(conn, cursor, json);
      return;
    }
    void this.pump(conn); // a hole: fill it from the store
  }

  // ---------------------------------------------------------------- live path

  private pollOutbox(): void {
    if (this.closed) return;
    if (this.polling) {
      this.pollAgain = true;
      return;
    }
    this.polling = true;
    void (async () => {
      try {
        do {
          this.pollAgain = false;
          for (;;) {
            if (this.users.size === 0 && this.hellos === 0) {
              // Nobody connected here: skip what is queued (a user who connects later resumes from the feed).
              // Checked again after the read: a hello that began since then reads its bounds after this head.
              const head = await this.feed.nodeHead(this.node);
              if (this.users.size === 0 && this.hellos === 0) {
                this.outboxSeq = Math.max(this.outboxSeq, head);
                break;
              }
            }
            const batch = await this.feed.readNode(this.node, this.outboxSeq, 1000);
            this.batching = true;
            try {
              for (const delivery of batch) {
                this.outboxSeq = delivery.seq;
                for (const { userId, cursor } of delivery.recipients) {
                  const conns = this.users.get(userId);
                  if (conns) for (const conn of conns) this.deliverLive(conn, cursor, delivery.json);
                }
              }
            } finally {
              this.batching = false;
              for (const socket of this.corked.keys()) socket.uncork();
              this.corked.clear();
            }
            if (batch.length < 1000 || this.closed) break;
          }
        } while (this.pollAgain && !this.closed);
      } catch (error) {
        if (!this.closed) this.emit('gateway:error', { error: error as Error });
      } finally {
        this.polling = false;
      }
    })();
  }

  // ---------------------------------------------------------------- closing

  private send(conn: Connection, frame: ServerFrame): void {
    if (conn.state === 'closed' || conn.ws.readyState !== conn.ws.OPEN) return;
    conn.ws.send(JSON.stringify(frame));
  }

  private fail(conn: Connection, code: RealtimeErrorCode, message: string, closeCode: number, details?: Record<string, unknown>): void {
    if (conn.state === 'closed') return;
    this.send(conn, { type: 'error', code, message, ...(details ? { details } : {}) });
    this.closeConnection(conn, closeCode, code);
  }

  private closeConnection(conn: Connection, code: number, reason: string): void {
    if (conn.state === 'closed') return;
    conn.state = 'closed';
    conn.ws.close(code, reason.slice(0, 120));
    // A peer that does not read cannot receive the close frame either: cut it after a grace period.
    const kill = setTimeout(() => conn.ws.terminate(), 2000);
    kill.unref();
    conn.timers.push(kill);
  }

  private slowConsumer(conn: Connection): void {
    this.counters.slowConsumersClosed += 1;
    const resumeCursor = conn.userId ? Math.min(conn.sent, this.pendingAcks.get(conn.userId) ?? conn.sent) : 0;
    this.emit('gateway:slow-consumer', { userId: conn.userId ?? '', connectionId: conn.id, bufferedBytes: conn.ws.bufferedAmount, resumeCursor });
    // The goaway frame queues behind what the client has not read; the close code says the same on its own.
    this.send(conn, { type: 'goaway', reason: 'slow-consumer', resume: { cursor: resumeCursor }, retryAfterMs: 1000 });
    this.closeConnection(conn, CLOSE_CODES.slowConsumer, JSON.stringify({ code: 'SLOW_CONSUMER', resume: resumeCursor }));
  }

  private expire(conn: Connection): void {
    if (conn.state !== 'open') return;
    this.send(conn, { type: 'goaway', reason: 'session-expired', resume: { cursor: conn.sent }, retryAfterMs: 0 });
    this.fail(conn, 'SESSION_EXPIRED', 'The session expired; log in again.', CLOSE_CODES.sessionExpired);
  }

  private forget(conn: Connection, code: number): void {
    conn.state = 'closed';
    for (const timer of conn.timers) clearTimeout(timer);
    this.connections.delete(conn);
    if (!conn.userId) return;
    const users = this.users.get(conn.userId);
    users?.delete(conn);
    if (users && users.size === 0) {
      this.users.delete(conn.userId);
      this.presenceOn.delete(conn.userId);
      this.presenceOff.add(conn.userId);
    }
    this.emit('gateway:disconnected', { userId: conn.userId, connectionId: conn.id, code, sent: conn.sent });
  }

  private heartbeat(): void {
    for (const conn of this.connections) {
      if (!conn.alive) {
        conn.ws.terminate(); // idle: missed a whole heartbeat interval
        continue;
      }
      conn.alive = false;
      if (conn.ws.readyState === conn.ws.OPEN) conn.ws.ping();
    }
  }

  private async recheckSessions(): Promise<void> {
    for (const conn of this.connections) {
      if (conn.state !== 'open' || !conn.userId || !conn.token) continue;
      try {
        const session = await this.authenticate(conn.token);
        if (!session || session.userId !== conn.userId) this.expire(conn);
      } catch (error) {
        this.emit('gateway:error', { error: error as Error });
      }
    }
  }

  private refreshPresence(): void {
    for (const userId of this.users.keys()) this.presenceOn.add(userId);
  }

  /** Writes batched acknowledgements and presence changes. */
  private async flush(): Promise<void> {
    const acks = [...this.pendingAcks].map(([userId, cursor]) => ({ userId, cursor }));
    this.pendingAcks.clear();
    const on = [...this.presenceOn];
    const off = [...this.presenceOff];
    this.presenceOn.clear();
    this.presenceOff.clear();
    try {
      if (acks.length > 0) await this.feed.ack(acks);
      if (on.length > 0) await this.feed.setOnline(this.presenceNode, on, this.now() + this.o.presenceTtlMs);
      if (off.length > 0) await this.feed.setOffline(this.presenceNode, off);
    } catch (error) {
      if (!this.closed) this.emit('gateway:error', { error: error as Error });
    }
  }

  /**
   * Zero-downtime deploys: stops accepting, then over a randomised window sends
   * each connection `goaway` (reason `draining`, with its resume cursor and a
   * jittered retry delay) and closes it (1001), so clients do not all reconnect
   * at the same instant. Resolves when every connection is closed.
   */
  async drain(options: { windowMs?: number } = {}): Promise<void> {
    this.accepting = false;
    const windowMs = options.windowMs ?? 5000;
    const all = [...this.connections];
    await Promise.all(
      all.map(
        (conn) =>
          new Promise<void>((resolve) => {
            if (conn.state === 'closed' && !this.connections.has(conn)) return resolve();
            conn.ws.once('close', () => resolve());
            const at = Math.floor(Math.random() * windowMs);
            setTimeout(() => {
              this.send(conn, { type: 'goaway', reason: 'draining', resume: { cursor: conn.sent }, retryAfterMs: Math.floor(Math.random() * 1000) });
              if (conn.state !== 'closed') this.closeConnection(conn, CLOSE_CODES.goingAway, 'draining');
            }, at);
          }),
      ),
    );
  }

  /** Closes every connection (after `drain`, none is left) and stops. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.accepting = false;
    for (const conn of this.connections) conn.ws.terminate();
    this.connections.clear();
    const online = [...this.users.keys()];
    this.users.clear();
    this.closed = true;
    for (const interval of this.intervals) clearInterval(interval);
    this.unwatch?.();
    await this.flush();
    if (online.length > 0) await this.feed.setOffline(this.presenceNode, online).catch(() => {});
    (this.attachedServer ?? this.ownServer)!.off('upgrade', this.onUpgrade);
    this.wss.close();
    if (this.ownServer) {
      this.ownServer.closeAllConnections();
      await new Promise<void>((resolve) => this.ownServer!.close(() => resolve()));
    }
    while (this.polling) await new Promise((r) => setTimeout(r, 5));
  }
}

/** The state is changed by callbacks during awaits; this reads it afresh (no narrowing). */
function isClosed(conn: Connection): boolean {
  return conn.state === 'closed';
}

function refuse(socket: Duplex, status: number, statusText: string, message: string): void {
  socket.end(`HTTP/1.1 ${status} ${statusText}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(message)}\r\n\r\n${message}`);
}
