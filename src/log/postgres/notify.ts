import pg from 'pg';

/**
 * Wake-ups through LISTEN/NOTIFY: every append transaction calls
 * `pg_notify(channel, head)`, delivered at commit to every listener, whichever
 * process wrote. One dedicated connection listens; when it drops it reconnects
 * with backoff, and meanwhile the core's slow head re-check keeps readers
 * moving (behind a transaction-mode pooler, where LISTEN does not work, that
 * re-check is the only wake-up: set `listen: false` there).
 */
export function watchExternalCommits(
  clientConfig: pg.ClientConfig,
  channel: string,
  onCommit: (head: number) => void,
  onError: (error: Error) => void,
  options: {
    /**
     * Whether a backend process id is one of this log's own connections. Their commits are reported when the append
     * returns, with the rows in hand; their notification often arrives first, and a follower woken by it would read
     * from the store the rows it is about to be given.
     */
    isOwnBackend?: (processId: number) => boolean;
    /**
     * Reads the head on the listening connection. Called each time LISTEN takes effect, so that commits made before
     * (while connecting, or while a dropped connection was being replaced) are reported too, not only the next one.
     */
    readHead?: (db: pg.Client) => Promise<number>;
    /** Called once, when the first attempt to listen succeeded (head read and reported) or failed. */
    onFirstAttempt?: () => void;
  } = {},
): () => void {
  let stopped = false;
  let client: pg.Client | undefined;
  let attempt = 0;
  let retryTimer: NodeJS.Timeout | undefined;
  let firstAttempt = options.onFirstAttempt;
  const attempted = (): void => {
    firstAttempt?.();
    firstAttempt = undefined;
  };

  const connect = async (): Promise<void> => {
    if (stopped) return;
    const c = new pg.Client(clientConfig);
    client = c;
    c.on('notification', (msg) => {
      if (options.isOwnBackend?.(msg.processId)) return;
      const head = Number(msg.payload);
      if (Number.isSafeInteger(head)) onCommit(head);
    });
    c.on('error', (error) => {
      onError(error);
      scheduleReconnect(c);
    });
    c.on('end', () => scheduleReconnect(c));
    try {
      await c.connect();
      await c.query(`LISTEN "${channel}"`);
      attempt = 0;
      if (options.readHead) onCommit(await options.readHead(c));
    } catch (error) {
      onError(error as Error);
      scheduleReconnect(c);
    } finally {
      attempted();
    }
  };
  const scheduleReconnect = (c: pg.Client): void => {
    if (stopped || client !== c || retryTimer) return;
    client = undefined;
    c.end().catch(() => {});
    const delay = Math.min(30_000, 200 * 2 ** attempt++) * (0.5 + Math.random() / 2);
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void connect();
    }, delay);
    retryTimer.unref();
  };
  void connect();
  return () => {
    stopped = true;
    attempted();
    if (retryTimer) clearTimeout(retryTimer);
    client?.end().catch(() => {});
    client = undefined;
  };
}
