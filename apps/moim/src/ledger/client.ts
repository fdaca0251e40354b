/** moim's client of the ledger service. Errors and timeouts throw, so the consumer group retries them. */
export type LedgerStatus = { status: 'pending' } | { status: 'confirmed' } | { status: 'failed'; reason: string };

export class LedgerClient {
  constructor(
    private readonly baseUrl: string,
    private readonly timeoutMs = 2000,
  ) {}

  async submit(tx: { id: string; from: string; to: string; amount: number }, signal?: AbortSignal): Promise<void> {
    const res = await fetch(`${this.baseUrl}/transactions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(tx),
      signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(this.timeoutMs)]) : AbortSignal.timeout(this.timeoutMs),
    });
    if (res.status !== 202) throw new Error(`ledger refused the submission: HTTP ${res.status}`);
  }

  async status(id: string, signal?: AbortSignal): Promise<LedgerStatus> {
    const res = await fetch(`${this.baseUrl}/transactions/${encodeURIComponent(id)}`, {
      signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(this.timeoutMs)]) : AbortSignal.timeout(this.timeoutMs),
    });
    if (res.status !== 200) throw new Error(`ledger status check failed: HTTP ${res.status}`);
    const body = (await res.json()) as { status: string; reason?: string };
    if (body.status === 'confirmed') return { status: 'confirmed' };
    if (body.status === 'failed') return { status: 'failed', reason: body.reason ?? 'failed' };
    return { status: 'pending' };
  }
}
