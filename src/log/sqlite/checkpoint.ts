/**
 * Background WAL checkpoints.
 *
 * In WAL mode SQLite copies committed pages back into the database file in
 * "checkpoints", by default inside the commit that pushes the WAL past 1,000
 * pages: that commit then also writes megabytes and fsyncs the database
 * file, on the thread that committed (here: the main thread, stalling every
 * request meanwhile). Sinho moves that work to a thread of its own, which
 * runs PASSIVE checkpoints (they never wait for or block a writer) every
 * `intervalMs`. The committing connection keeps a high auto-checkpoint limit
 * as a backstop, so the WAL stays bounded even if the thread falls behind.
 * Durability is unchanged: a commit is durable once its WAL frames are
 * fsynced, before and after.
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

/** The committing connection's auto-checkpoint limit, in pages, with a background checkpointer (10,000 pages: 40 MB of WAL). */
export const BACKSTOP_AUTOCHECKPOINT_PAGES = 10_000;

/**
 * The thread's code. It is a script rather than a module file so that it
 * runs the same from dist/ and from the TypeScript sources under a loader;
 * the driver is imported by its resolved URL. Only dynamic imports: the
 * script is evaluated as CommonJS, or as a module when the process runs with
 * `--input-type=module` (workers inherit it), and `import()` works in both.
 */
const THREAD_SOURCE = `
import('node:worker_threads').then(async ({ parentPort, workerData }) => {
  const Database = (await import(workerData.driver)).default;
  const db = new Database(workerData.path);
  db.pragma('synchronous = FULL');
  const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
  const timer = setInterval(() => {
    // Busy or failing now: the committing connection's auto-checkpoint is the backstop.
    try { checkpoint.run(); } catch {}
  }, workerData.intervalMs);
  parentPort.on('message', (message) => {
    if (message !== 'close') return;
    clearInterval(timer);
    db.close();
    parentPort.close();
  });
});
`;

export class BackgroundCheckpointer {
  private readonly worker: Worker;
  private readonly exited: Promise<unknown>;

  constructor(path: string, intervalMs: number) {
    const driver = pathToFileURL(createRequire(import.meta.url).resolve('better-sqlite3')).href;
    this.worker = new Worker(THREAD_SOURCE, { eval: true, workerData: { driver, path, intervalMs } });
    this.exited = new Promise((r) => this.worker.once('exit', r));
    // A failing checkpointer only means checkpoints move back into commits (the backstop).
    this.worker.on('error', () => {});
    this.worker.unref();
  }

  async close(): Promise<void> {
    // Unref'd so that a forgotten log does not keep the process alive; while closing, wait for it.
    this.worker.ref();
    this.worker.postMessage('close');
    await this.exited;
  }
}
