import type { HotEntry } from './context.ts';
import type { PutResult } from './write.ts';

/**
 * Write-behind: the order of a store's writes, and the states whose writes
 * have not landed yet.
 *
 * Every operation that writes to the store's IndexedDB — a state's write,
 * and the maintenance writes (delete, evict, pin, clear, repair) — runs
 * through one FIFO here, so they commit in the order they were asked for: a
 * state continued from a parent whose write is still queued is written after
 * it, and a delete asked after a write deletes what that write stored.
 *
 * A queued state is held in memory (`entry`) from the moment it is queued
 * until its write has landed (then the hot tier has it) or failed: lookups
 * find it like a hot state, and nothing evicts it before it is stored. Each
 * write is still one transaction (src/store/write.ts), so a crash loses the
 * states still queued and never leaves a partial one.
 *
 * A queued write that fails is remembered until someone is told: the caller
 * that waited for it (a durable call), or else the next flush().
 */

export interface WriteFailure {
  key: string;
  error: Error;
  at: number;
}

export interface WriteQueueStats {
  /** Writes queued behind calls that returned, not yet landed. */
  queued: number;
  /** Bytes of the states those writes hold in memory. */
  queuedBytes: number;
  /** Queued writes that landed (committed, or found their state already stored). */
  landed: number;
  /** Queued writes that failed: their states were not stored. */
  failed: number;
  /** The last landed write's own duration: its transaction(s), not counted in any call's time. */
  lastWriteMs: number | null;
  /** Sum of every landed write's own duration. */
  writeMsTotal: number;
  lastError: string | null;
}

interface Waiting {
  entry: HotEntry;
  bytes: number;
  /** Queued writes of this key not yet settled (a replace can follow a first write). */
  jobs: number;
  /** The latest of them. */
  landed: Promise<PutResult>;
}

export class WriteQueue {
  private chain: Promise<unknown> = Promise.resolve();
  private readonly waiting = new Map<string, Waiting>();
  private unreported: WriteFailure[] = [];
  private bytes = 0;
  private jobs = 0;
  private readonly counts = { landed: 0, failed: 0, lastWriteMs: null as number | null, writeMsTotal: 0, lastError: null as string | null };
  private oldest: Promise<unknown>[] = [];
  /** While set, queued operations wait before they start (tests: a window between a call's return and its write). */
  private gate: { opened: Promise<void>; open: () => void } | null = null;

  /** Runs `fn` after every operation queued before it; its result or error is the caller's. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(async () => {
      while (this.gate) await this.gate.opened;
      return fn();
    });
    this.chain = p.catch(() => undefined);
    return p;
  }

  /** Tests: holds queued operations before they start (true) or lets them go (false). */
  hold(on: boolean): void {
    if (on && !this.gate) {
      let open: () => void = () => undefined;
      const opened = new Promise<void>((r) => {
        open = r;
      });
      this.gate = { opened, open };
    } else if (!on && this.gate) {
      const g = this.gate;
      this.gate = null;
      g.open();
    }
  }

  /** Resolves once everything queued so far has settled (landed or failed). */
  settled(): Promise<void> {
    return this.chain.then(() => undefined);
  }

  /**
   * Queues a state's write: `entry` is what lookups serve until it lands.
   * `write` runs in queue order; `onLand` moves the state into the hot tier
   * before it leaves the waiting set, so it is never in neither.
   */
  add(key: string, entry: HotEntry, bytes: number, write: () => Promise<PutResult>): Promise<PutResult> {
    const w = this.waiting.get(key);
    const landed = this.run(async () => {
      const t0 = performance.now();
      try {
        const r = await write();
        const ms = performance.now() - t0;
        this.counts.landed++;
        this.counts.lastWriteMs = ms;
        this.counts.writeMsTotal += ms;
        return r;
      } finally {
        this.release(key, bytes);
      }
    });
    this.bytes += bytes;
    this.jobs++;
    if (w) {
      // The newest entry is what this key's state now is (a replace).
      w.entry = entry;
      w.jobs++;
      w.bytes += bytes;
      w.landed = landed;
    } else this.waiting.set(key, { entry, bytes, jobs: 1, landed });
    const settled = landed.catch(() => undefined);
    this.oldest.push(settled);
    void settled.then(() => {
      this.oldest.splice(this.oldest.indexOf(settled), 1);
    });
    return landed;
  }

  private release(key: string, bytes: number): void {
    this.bytes -= bytes;
    this.jobs--;
    const w = this.waiting.get(key);
    if (!w) return;
    w.bytes -= bytes;
    if (--w.jobs <= 0) this.waiting.delete(key);
  }

  /** A queued state (the newest entry for its key), if its write has not landed. */
  entry(key: string): HotEntry | undefined {
    return this.waiting.get(key)?.entry;
  }

  /** The landing of a queued state's latest write. */
  landing(key: string): Promise<PutResult> | undefined {
    return this.waiting.get(key)?.landed;
  }

  has(key: string): boolean {
    return this.waiting.has(key);
  }

  keys(): string[] {
    return [...this.waiting.keys()];
  }

  entries(): HotEntry[] {
    return [...this.waiting.values()].map((w) => w.entry);
  }

  get size(): number {
    return this.waiting.size;
  }

  get queuedBytes(): number {
    return this.bytes;
  }

  /** Waits for the oldest queued write to settle (back-pressure: memory held by queued states is bounded). */
  async waitOldest(): Promise<void> {
    await this.oldest[0];
  }

  /** A queued write failed: remembered until a durable caller or flush() is told. */
  fail(key: string, error: Error): WriteFailure {
    const f = { key, error, at: Date.now() };
    this.counts.failed++;
    this.counts.lastError = error.message;
    this.unreported.push(f);
    return f;
  }

  /** A caller that waited for this key's write was told it failed: flush() will not report it again. */
  reported(key: string): void {
    this.unreported = this.unreported.filter((x) => x.key !== key);
  }

  /** Failures nobody was told of yet; they count as told from now on. */
  takeFailures(): WriteFailure[] {
    const out = this.unreported;
    this.unreported = [];
    return out;
  }

  stats(): WriteQueueStats {
    return { queued: this.jobs, queuedBytes: this.bytes, ...this.counts };
  }
}
