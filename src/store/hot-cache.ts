/**
 * The "hot" tier: decoded states in memory, least-recently-used first out,
 * bounded by bytes rather than entries because a 1,024-token GPT-2 state is
 * 72 MiB and a tiny one is a few KiB.
 */
export class HotCache<V> {
  private map = new Map<string, { value: V; bytes: number }>();
  private used = 0;
  constructor(public budgetBytes: number) {}

  get(key: string): V | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    // Re-insert so that Map order stays least-recent first.
    this.map.delete(key);
    this.map.set(key, e);
    return e.value;
  }

  has(key: string): boolean {
    return this.map.has(key);
  }

  set(key: string, value: V, bytes: number): void {
    this.delete(key);
    if (bytes > this.budgetBytes) return; // would evict everything and still not fit
    this.map.set(key, { value, bytes });
    this.used += bytes;
    for (const [k, e] of this.map) {
      if (this.used <= this.budgetBytes) break;
      this.map.delete(k);
      this.used -= e.bytes;
    }
  }

  delete(key: string): void {
    const e = this.map.get(key);
    if (e) {
      this.map.delete(key);
      this.used -= e.bytes;
    }
  }

  clear(): void {
    this.map.clear();
    this.used = 0;
  }

  get size(): number {
    return this.map.size;
  }
  get bytes(): number {
    return this.used;
  }
  keys(): string[] {
    return [...this.map.keys()];
  }
}
