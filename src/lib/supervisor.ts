import * as Comlink from 'comlink';
import { DEVICE_LOST, WORKER_ERROR } from '../worker/device-lost.ts';
import type { WorkerHandler } from '../worker/handler.ts';
import { WorkerCrashed } from '../core/errors.ts';

export interface SupervisorOptions {
  /** How often the worker is pinged (ms). */
  heartbeatMs?: number;
  /** A worker that has not answered a ping for this long is taken as hung, and replaced (ms). */
  hangMs?: number;
  /** Called after a replacement worker is up (reason, count of restarts so far). */
  onRestart?: (reason: string, restarts: number) => void;
}

export type AnyWorker = Worker | SharedWorker;

const isShared = (w: AnyWorker): w is SharedWorker => typeof SharedWorker !== 'undefined' && w instanceof SharedWorker;

/**
 * Keeps one worker alive for the client. If the worker dies (an uncaught
 * error, out of memory, WebGPU device lost) or hangs, every pending call is
 * rejected with WorkerCrashed, a new worker is started and set up again, and
 * later calls go to it. The store is in IndexedDB, so nothing stored is lost;
 * a write cut off by the crash never became visible (one transaction).
 *
 * The worker may be the origin's shared worker (one for every tab). A page
 * cannot terminate one, and cannot see it die, so: the worker holds a Web
 * Lock for its whole life and each page asks for the same lock — granted the
 * moment the worker is gone, in every tab at once. Each tab then connects to
 * a new one under the same name, and the tabs meet in it again. A shared
 * worker that hangs cannot be ended from a page: the tabs move to the next
 * *generation* of its name (`make(generation)`), agreed through
 * localStorage, and the hung one ends when no page holds it any more.
 */
export class WorkerSupervisor {
  worker!: AnyWorker;
  remote!: Comlink.Remote<WorkerHandler>;
  restarts = 0;
  /** Set when the last crash was a lost WebGPU device: setup should fall back to WASM. */
  deviceLost = false;
  /** The shared worker's name generation this client uses. */
  generation = currentGeneration();
  private pending = new Set<(e: Error) => void>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private pingSince = 0;
  private ready: Promise<void> = Promise.resolve();
  private closed = false;
  /** Between a crash and the replacement's spawn: no heartbeat, no second crash. */
  private replacing = false;
  /** While a worker starts and loads its model it may not answer pings for a while: a longer limit applies. */
  private settingUp = false;
  /** Ends the wait of a replacement that a later crash made pointless (its worker is gone). */
  private supersede: () => void = () => undefined;
  private port: MessagePort | null = null;
  /** Lets go of the wait on the current worker's life lock. */
  private unwatch: AbortController | null = null;
  /** Resolves when the current worker is known to be gone (its life lock was granted to us). */
  private gone: Promise<void> = new Promise(() => undefined);

  constructor(
    private make: (generation: number) => AnyWorker,
    private setup: (remote: Comlink.Remote<WorkerHandler>, sup: WorkerSupervisor) => Promise<void>,
    private opts: SupervisorOptions = {},
  ) {}

  get shared(): boolean {
    return this.port !== null;
  }

  async start(): Promise<void> {
    this.spawn();
    this.ready = this.setUp();
    await this.settled();
    this.beat();
  }

  /** Waits until a worker is set up, following replacements made meanwhile. */
  private async settled(): Promise<void> {
    for (;;) {
      const r = this.ready;
      try {
        await r;
      } catch (e) {
        if (r === this.ready) throw e;
        continue;
      }
      if (r === this.ready) return;
    }
  }

  private spawn(): void {
    const w = this.make(this.generation);
    this.worker = w;
    const onNotice = (ev: MessageEvent) => {
      if (this.worker !== w) return;
      if (ev.data?.type === DEVICE_LOST) {
        this.deviceLost = true;
        this.crash(`the WebGPU device was lost (${ev.data.message ?? 'no reason given'}); continuing on WASM`);
      } else if (ev.data?.type === WORKER_ERROR) {
        this.crash(`the worker stopped with an error: ${ev.data.message || 'unknown error'}`);
      }
    };
    w.addEventListener('error', (ev) => {
      ev.preventDefault?.();
      if (this.worker === w) this.crash(`the worker stopped with an error: ${(ev as ErrorEvent).message || 'unknown error'}`);
    });
    if (isShared(w)) {
      this.port = w.port;
      this.port.addEventListener('message', onNotice);
      this.port.start();
      this.remote = Comlink.wrap<WorkerHandler>(this.port);
    } else {
      this.port = null;
      w.addEventListener('message', onNotice);
      this.remote = Comlink.wrap<WorkerHandler>(w);
    }
  }

  /** Setup, then the watch on the worker's life lock. */
  private async setUp(): Promise<void> {
    const w = this.worker;
    this.settingUp = true;
    try {
      await this.setup(this.remote, this);
    } finally {
      if (this.worker === w) this.settingUp = false;
    }
    await this.watchLife(w);
  }

  private async watchLife(w: AnyWorker): Promise<void> {
    const locks = typeof navigator !== 'undefined' ? (navigator as Navigator & { locks?: LockManager }).locks : undefined;
    if (!locks) return;
    const name = await this.remote.lifeLock().catch(() => null);
    if (!name || this.worker !== w) return;
    this.unwatch?.abort();
    const ac = new AbortController();
    this.unwatch = ac;
    this.gone = locks
      .request(name, { signal: ac.signal }, () => undefined)
      .then(() => {
        if (this.worker === w && !this.replacing) this.crash('the worker stopped');
      });
    this.gone.catch(() => undefined);
  }

  private beat(): void {
    if (this.timer) clearInterval(this.timer);
    const every = this.opts.heartbeatMs ?? 2000;
    const hang = this.opts.hangMs ?? 120_000;
    this.pingSince = 0;
    this.timer = setInterval(() => {
      // (a replacement compiling its model can be busy for seconds: setUp gives it a longer limit, not a hang)
      if (this.closed || this.replacing) return;
      if (this.pingSince) {
        const limit = this.settingUp ? Math.max(hang, 60_000) : hang;
        if (Date.now() - this.pingSince > limit) this.crash(`the worker did not answer for ${Math.round(limit / 1000)} s`, true);
        return;
      }
      const w = this.worker;
      this.pingSince = Date.now();
      this.remote.ping().then(
        () => {
          if (this.worker === w) this.pingSince = 0;
        },
        () => undefined,
      );
    }, every);
  }

  /** Runs one call on the current worker; rejects with WorkerCrashed if that worker dies first. */
  async run<T>(fn: (remote: Comlink.Remote<WorkerHandler>) => Promise<T>): Promise<T> {
    await this.settled().catch(() => undefined);
    return new Promise<T>((resolve, reject) => {
      const fail = (e: Error) => reject(e);
      this.pending.add(fail);
      fn(this.remote).then(
        (v) => {
          this.pending.delete(fail);
          resolve(v);
        },
        (e) => {
          this.pending.delete(fail);
          // Typed errors arrive revived (src/worker/wire.ts); anything else as it came.
          reject(e);
        },
      );
    });
  }

  /** Replaces a dead or hung worker. Pending calls fail; the next calls go to the new worker. */
  crash(reason: string, hung = false): void {
    if (this.closed || this.replacing) return;
    // A replacement still setting up talks to a worker that is gone now: its wait ends here.
    this.supersede();
    let superseded!: () => void;
    const gaveUp = new Promise<void>((r) => (superseded = r));
    this.supersede = superseded;
    const old = this.worker;
    const oldPort = this.port;
    const gone = this.gone;
    const unwatch = this.unwatch;
    this.unwatch = null;
    this.gone = new Promise(() => undefined);
    this.replacing = true;
    this.pingSince = 0;
    const err = new WorkerCrashed({ reason });
    for (const fail of this.pending) fail(err);
    this.pending.clear();
    this.restarts++;
    const replace = async () => {
      try {
        if (isShared(old)) {
          oldPort?.close();
          // The same name reaches a new worker only once the old one is gone: wait for its
          // life lock (granted at once when it closed itself); a hung one moves everyone to a new name.
          const dead = hung ? false : await Promise.race([gone.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 3000))]);
          this.generation = dead ? currentGeneration() : retireGeneration(this.generation);
        } else {
          try {
            (old as Worker).terminate();
          } catch {
            /* already gone */
          }
        }
      } finally {
        unwatch?.abort();
      }
      if (this.closed) return;
      this.spawn();
      this.replacing = false;
      let done = false;
      await Promise.race([this.setUp().then(() => (done = true)), gaveUp]);
      if (done) this.opts.onRestart?.(reason, this.restarts);
    };
    this.ready = replace().finally(() => {
      this.replacing = false;
    });
    this.ready.catch(() => undefined);
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.unwatch?.abort();
    const w = this.worker;
    if (!w) return;
    if (isShared(w)) {
      const port = this.port;
      // The page's engine is released (the last page out closes it), then the port.
      void this.remote
        .release()
        .catch(() => undefined)
        .finally(() => port?.close());
    } else w.terminate();
  }
}

const GENERATION_KEY = 'statecart:shared-worker-generation';
let memoryGeneration = 0;

/** The generation of the shared worker's name that the tabs of this origin use now. */
export function currentGeneration(): number {
  try {
    return Number(globalThis.localStorage?.getItem(GENERATION_KEY) ?? memoryGeneration) || 0;
  } catch {
    return memoryGeneration;
  }
}

/** The worker of generation `g` is hung: the first tab to notice moves everyone to the next one. */
export function retireGeneration(g: number): number {
  const cur = currentGeneration();
  if (cur !== g) return cur;
  memoryGeneration = g + 1;
  try {
    globalThis.localStorage?.setItem(GENERATION_KEY, String(g + 1));
  } catch {
    /* no storage: this tab alone moves on */
  }
  return g + 1;
}
