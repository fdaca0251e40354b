import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface Ack {
  stream: string;
  n: number;
  positions: number[];
}

/**
 * Runs the crash-appender child until it has acknowledged at least `minAcks`
 * appends (and at least `minMs` passed), SIGKILLs it mid-flight, and returns
 * every acknowledgement it printed.
 */
export async function runAndKill(args: string[], minAcks: number, minMs: number): Promise<Ack[]> {
  const script = fileURLToPath(new URL('../fixtures/crash-appender.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const acks: Ack[] = [];
  let buffer = '';
  let stderr = '';
  const started = Date.now();
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const timeout = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`crash child made too little progress (${acks.length} acks); stderr: ${stderr}`));
    }, 60_000);
    child.stdout.on('data', (d: Buffer) => {
      buffer += d.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) !== -1) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        const [kind, stream, n, positions] = line.split(' ');
        if (kind === 'ack') acks.push({ stream: stream!, n: Number(n), positions: positions!.split(',').map(Number) });
      }
      if (acks.length >= minAcks && Date.now() - started >= minMs && child.exitCode === null && !child.killed) child.kill('SIGKILL');
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timeout);
      if (signal !== 'SIGKILL') reject(new Error(`crash child exited on its own (code ${code}); stderr: ${stderr}`));
      else resolve(acks);
    });
  });
}
