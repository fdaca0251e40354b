/**
 * Which partition an ordering key belongs to. Every node of a partitioned
 * group must agree on it, forever (a key that moved would lose its order), so
 * it is a fixed, documented function: FNV-1a (32-bit) over the key's UTF-8
 * bytes, modulo the partition count.
 */
const encoder = new TextEncoder();

export function partitionOf(key: string, count: number): number {
  let hash = 0x811c9dc5;
  for (const byte of encoder.encode(key)) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % count;
}
