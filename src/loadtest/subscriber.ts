/**
 * A user's WebSocket subscription, held open for the whole run. Messages that
 * match `deliveries.when` are deliveries: their key is rendered and handed to
 * the ledger. A subscription closed by the server (or the network) is
 * reopened after a short jittered pause, with `hello` rendered again, so a
 * protocol that resumes from a cursor (`{{ last.cursor }}`) resumes.
 */
import WebSocket from 'ws';
import type { Subscribe } from './scenario.js';
import type { Context } from './template.js';

export interface SubscriberEvents {
  delivery(user: number, key: string): void;
  message(): void;
  closed(user: number, reason: string): void;
}

function matches(message: unknown, fields: Record<string, unknown> | undefined): boolean {
  if (!fields) return true;
  if (message === null || typeof message !== 'object') return false;
  for (const [k, v] of Object.entries(fields)) if ((message as Record<string, unknown>)[k] !== v) return false;
  return true;
}

export class Subscriber {
  private socket: WebSocket | undefined;
  private closing = false;
  private readyResolve: (() => void) | undefined;
  /** The last delivery message (for acks and resume). */
  last: unknown;
  private acked: unknown;
  open = false;
  reconnects = 0;
  private readonly messageContext: Context;

  constructor(
    readonly user: number,
    private readonly spec: Subscribe,
    private readonly context: Context,
    private readonly events: SubscriberEvents,
    private readonly timeoutMs: number,
  ) {
    this.messageContext = { ...context, message: undefined };
  }

  /** Opens the subscription; resolves when it is ready (the `ready` message, or open). */
  connect(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readyResolve = undefined;
        this.closing = true;
        reject(new Error(`subscription of user ${this.user} was not ready within ${this.timeoutMs} ms`));
        this.socket?.terminate();
      }, this.timeoutMs);
      this.readyResolve = () => {
        clearTimeout(timer);
        resolve();
      };
      this.openSocket((error) => {
        clearTimeout(timer);
        this.closing = true;
        reject(error);
      });
    });
  }

  private render(): Context {
    return { ...this.context, last: this.last };
  }

  private openSocket(onFailure?: (error: Error) => void): void {
    const context = this.render();
    const headers = this.spec.headers ? (this.spec.headers(context) as Record<string, string>) : undefined;
    const socket = new WebSocket(this.spec.url(context), { headers, perMessageDeflate: false, handshakeTimeout: this.timeoutMs });
    this.socket = socket;
    socket.on('open', () => {
      this.open = true;
      if (this.spec.hello) socket.send(JSON.stringify(this.spec.hello(this.render())));
      if (!this.spec.ready) this.ready();
    });
    socket.on('message', (data) => {
      this.events.message();
      let message: unknown;
      try {
        message = JSON.parse(data.toString());
      } catch {
        return;
      }
      if (this.readyResolve && this.spec.ready && matches(message, this.spec.ready)) this.ready();
      if (!matches(message, this.spec.when)) return;
      this.last = message;
      // One context object per subscription, not one per message: this runs for every delivery.
      this.messageContext.message = message;
      this.events.delivery(this.user, this.spec.key(this.messageContext));
    });
    // ws always emits close after error: the close handler decides.
    socket.on('error', () => {});
    socket.on('close', (code, reason) => {
      const wasOpen = this.open;
      this.open = false;
      if (this.closing) return;
      const why = `ws close ${code}${reason.length ? ` ${reason.toString().slice(0, 60)}` : ''}`;
      if (onFailure && this.readyResolve) {
        // The first connection failed before it was ready: setup fails, nothing is retried.
        this.readyResolve = undefined;
        onFailure(new Error(`subscription of user ${this.user} closed before it was ready (${why})`));
        return;
      }
      if (wasOpen) this.events.closed(this.user, why);
      this.reconnects++;
      setTimeout(() => this.closing || this.openSocket(), 100 + Math.random() * 900).unref();
    });
  }

  private ready(): void {
    const resolve = this.readyResolve;
    this.readyResolve = undefined;
    resolve?.();
  }

  /** Sends the ack frame for the last delivery, if there is a new one. */
  ack(): void {
    if (!this.spec.ackFrame || this.last === undefined || this.last === this.acked || !this.open) return;
    this.acked = this.last;
    this.socket?.send(JSON.stringify(this.spec.ackFrame({ ...this.context, message: this.last })));
  }

  close(): Promise<void> {
    this.closing = true;
    const socket = this.socket;
    if (!socket || socket.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        socket.terminate();
        resolve();
      }, 2000);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.close(1000);
    });
  }
}
