import { partitionOf } from '../subscription/partitioning.js';

/**
 * Which of `nodes` gateway nodes owns `userId`: `userId % nodes` for decimal
 * integer ids (the seeds' scheme), a stable hash (FNV-1a) for any other id.
 */
export function gatewayNodeOf(userId: string, nodes: number): number {
  if (nodes <= 1) return 0;
  if (/^[0-9]{1,15}$/.test(userId)) return Number(userId) % nodes;
  if (/^[0-9]+$/.test(userId)) return Number(BigInt(userId) % BigInt(nodes));
  return partitionOf(userId, nodes);
}
