/**
 * A test's child process running a fixture script under tsx: its stdout
 * lines are collected, and it can be SIGKILLed (a real crash).
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface Child {
  process: ChildProcess;
  lines: string[];
  waitFor(prefix: string, timeoutMs?: number): Promise<string>;
  kill(): Promise<void>;
  /** What it wrote to stderr so far. */
  stderr(): string;
}

export function startChild(script: string, args: string[]): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let buffer = '';
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.on('data', (d: Buffer) => {
    buffer += d.toString();
    let nl: number;
    while ((nl = buffer.indexOf('\n')) !== -1) {
      lines.push(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
    }
  });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  return {
    process: child,
    lines,
    async waitFor(prefix, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const line = lines.find((l) => l.startsWith(prefix));
        if (line) return line;
        if (child.exitCode !== null) throw new Error(`child exited (${child.exitCode}) before "${prefix}"; stderr: ${stderr}`);
        if (Date.now() > deadline) throw new Error(`timed out waiting for "${prefix}"; last lines: ${lines.slice(-3).join(" / ")}; stderr: ${stderr}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    stderr: () => stderr,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

