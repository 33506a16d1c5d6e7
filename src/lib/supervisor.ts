import * as Comlink from 'comlink';
import { DEVICE_LOST } from '../worker/device-lost.ts';
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

/**
 * Keeps one worker alive for the client. If the worker dies (an uncaught
 * error, out of memory, WebGPU device lost) or hangs, every pending call is
 * rejected with WorkerCrashed, a new worker is started and set up again, and
 * later calls go to it. The store is in IndexedDB, so nothing stored is lost;
 * a write cut off by the crash never became visible (one transaction).
 */
export class WorkerSupervisor {
  worker!: Worker;
  remote!: Comlink.Remote<WorkerHandler>;
  restarts = 0;
  /** Set when the last crash was a lost WebGPU device: setup should fall back to WASM. */
  deviceLost = false;
  private pending = new Set<(e: Error) => void>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private pingSince = 0;
  private ready: Promise<void> = Promise.resolve();
  private closed = false;
  /** A replacement worker is being set up (loading its model): it is not pinged until it is ready. */
  private starting = false;

  constructor(
    private make: () => Worker,
    private setup: (remote: Comlink.Remote<WorkerHandler>, sup: WorkerSupervisor) => Promise<void>,
    private opts: SupervisorOptions = {},
  ) {}

  async start(): Promise<void> {
    this.spawn();
    this.ready = this.setup(this.remote, this);
    await this.ready;
    this.beat();
  }

  private spawn(): void {
    const w = this.make();
    this.worker = w;
    this.remote = Comlink.wrap<WorkerHandler>(w);
    w.addEventListener('error', (ev) => {
      ev.preventDefault?.();
      this.crash(`the worker stopped with an error: ${(ev as ErrorEvent).message || 'unknown error'}`);
    });
    w.addEventListener('message', (ev: MessageEvent) => {
      if (ev.data?.type === DEVICE_LOST) {
        this.deviceLost = true;
        this.crash(`the WebGPU device was lost (${ev.data.message ?? 'no reason given'}); continuing on WASM`);
      }
    });
  }

  private beat(): void {
    if (this.timer) clearInterval(this.timer);
    const every = this.opts.heartbeatMs ?? 2000;
    const hang = this.opts.hangMs ?? 120_000;
    this.pingSince = 0;
    this.timer = setInterval(() => {
      // (a worker compiling its model can be busy for seconds: not a hang)
      if (this.closed || this.starting) return;
      if (this.pingSince) {
        if (Date.now() - this.pingSince > hang) this.crash(`the worker did not answer for ${Math.round(hang / 1000)} s`);
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
    await this.ready.catch(() => undefined);
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
  crash(reason: string): void {
    if (this.closed) return;
    const old = this.worker;
    this.pingSince = 0;
    const err = new WorkerCrashed({ reason });
    for (const fail of this.pending) fail(err);
    this.pending.clear();
    try {
      old.terminate();
    } catch {
      /* already gone */
    }
    this.restarts++;
    this.spawn();
    this.starting = true;
    const ready = this.setup(this.remote, this).then(() => this.opts.onRestart?.(reason, this.restarts));
    this.ready = ready;
    ready.then(
      () => {
        if (this.ready === ready) this.starting = false;
      },
      () => {
        if (this.ready === ready) this.starting = false;
      },
    );
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.worker.terminate();
  }
}
