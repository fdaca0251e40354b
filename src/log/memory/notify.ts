/**
 * Commit wake-ups from other writers. The memory log lives in one process and
 * has no other writers, so there is nothing to watch: the core already wakes
 * readers after its own commits.
 */
export function watchExternalCommits(_onCommit: (head: number) => void): () => void {
  return () => {};
}
