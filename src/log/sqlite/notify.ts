import type Database from 'better-sqlite3';

/**
 * Wake-ups for commits made by OTHER connections to the same file (another
 * process sharing the embedded log). SQLite has no LISTEN; `PRAGMA
 * data_version` changes exactly when another connection committed, and
 * reading it touches no table, so a slow, unref'd timer costs next to nothing.
 * Commits of this process wake readers directly, without this timer.
 */
export function watchExternalCommits(
  db: Database.Database,
  readHead: () => number,
  intervalMs: number,
  onCommit: (head: number) => void,
): () => void {
  const version = db.prepare('PRAGMA data_version').pluck();
  let last = version.get() as number;
  const timer = setInterval(() => {
    if (!db.open) return;
    try {
      const now = version.get() as number;
      if (now !== last) {
        onCommit(readHead());
        last = now;
      }
    } catch {
      // The file is momentarily locked (or closing): look again on the next tick.
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
