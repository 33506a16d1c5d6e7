/// <reference lib="webworker" />
import * as Comlink from 'comlink';
import { hashStats } from '../core/key-chain.ts';
import { env } from '@huggingface/transformers';
import { InvalidInput, ModelNotLoaded, StatecartError } from '../core/errors.ts';
import type { LoadModelRequest, ModelInfo, Statecart, STATECART_METHODS } from '../engine/api.ts';
import type { LocalStatecart } from '../engine/statecart.ts';
import { reportRemote, type RemoteCounters, type RemoteStatus } from '../engine/remote.ts';
import { readStats } from '../store/records.ts';
import type { WriteQueueStats } from '../store/store.ts';
import { hostStats, type InitOptions } from './host.ts';
import type { ReceivedOptions } from './wire.ts';
import { deviceLostWithin, reportDeviceLost } from './device-lost.ts';
import { Engines, setRemotes, type EngineSlot } from './engines.ts';

export type StatecartMethod = (typeof STATECART_METHODS)[number];

/** Fault injection and counters, for tests (the library's testing entry, src/lib/testing.ts). */
export interface DebugApi {
  /**
   * 'throw' (uncaught error), 'close' (the worker exits: in a shared worker, for every tab), 'hang' (busy forever),
   * 'device-lost' (reports a loss without one), 'destroy-device' (destroys
   * onnxruntime's WebGPU device, so the real `lost` path runs).
   */
  fault(kind: 'throw' | 'close' | 'hang' | 'device-lost' | 'destroy-device'): Promise<void>;
  /** The next store write closes this worker after its n-th IndexedDB request. */
  storeFault(afterRequests: number): Promise<void>;
  /** Lets queued writes land, then drops the hot tier, so the next read comes from IndexedDB. */
  dropHot(): Promise<void>;
  /** Holds queued writes before they start (true), so a test can act between a call's return and its write landing; false lets them go. */
  holdWrites(on: boolean): Promise<void>;
  /** Last-position logits after `tokens` (on top of a stored state when given); stores nothing. */
  probe(req: { tokens: number[]; stateKey?: string }): Promise<Float32Array>;
  /**
   * Work counted since the worker started: tokens hashed, digests, manifest and blob reads, the requests of the
   * last write transaction, the write queue's counts and times, models loaded (by every tab of a shared worker),
   * engines and pages connected, and what the remote tier fetched.
   */
  counters(): Promise<{
    hashTokens: number;
    hashDigests: number;
    manifestReads: number;
    blobReads: number;
    lastWriteRequests: number;
    modelLoads: number;
    engines: number;
    pages: number;
    shared: boolean;
    /** Identifies the worker instance (a new one after a restart). */
    workerId: string;
    remote: RemoteCounters | null;
    writes: WriteQueueStats | null;
  }>;
}

/** What every handler of one worker shares: its engines, and how many pages are connected. */
export interface WorkerContext {
  engines: Engines;
  shared: boolean;
  pages: number;
}

const WORKER_ID = Math.random().toString(36).slice(2, 10);
let lifeLock: Promise<string | null> | null = null;

/**
 * The worker's side for one page: the engine behind comlink, and little else
 * (web-llm's WebWorkerMLCEngineHandler). The client calls `call(method,
 * request, options)` for every method of the Statecart interface. A dedicated
 * worker has one handler; a shared worker one per connected page, all on the
 * same engines (src/worker/engines.ts).
 */
export class WorkerHandler {
  private slot: EngineSlot | null = null;
  private options: InitOptions | null = null;
  private released = false;

  constructor(private readonly ctx: WorkerContext = { engines: new Engines(), shared: false, pages: 1 }) {}

  ping(): number {
    return Date.now();
  }

  /** Sets up this page's engine: a shared worker's page with the same settings as another gets the same engine (nothing is made or loaded again). */
  async init(o: InitOptions): Promise<void> {
    if (this.slot) this.ctx.engines.release(this.slot);
    this.slot = null;
    this.options = o;
    this.slot = await this.ctx.engines.open(o);
  }

  async call<M extends StatecartMethod>(method: M, req: Parameters<Statecart[M]>[0], opts?: ReceivedOptions): Promise<Awaited<ReturnType<Statecart[M]>>> {
    try {
      let slot = this.need(method);
      if (method === 'loadModel') {
        const lm = req as LoadModelRequest;
        if (lm && typeof lm.model === 'string' && lm.model) {
          slot = await this.ctx.engines.forModel(slot, lm, this.options!);
          this.slot = slot;
        }
        const load = slot.sc.loadModel.bind(slot.sc) as (r: unknown, o?: unknown) => Promise<ModelInfo>;
        return (await this.ctx.engines.load(slot, () => load(lm, opts))) as Awaited<ReturnType<Statecart[M]>>;
      }
      const sc = slot.sc;
      const fn = sc[method] as (r: unknown, o?: unknown) => Promise<Awaited<ReturnType<Statecart[M]>>>;
      let r: Awaited<ReturnType<Statecart[M]>>;
      try {
        r = await fn.call(sc, req, opts);
      } catch (e) {
        // The runtime's error from a lost device is not the answer: this worker is
        // ending (the supervisor fails every pending call with WorkerCrashed and
        // starts one on WASM), so the call is left unanswered.
        if (!(e instanceof StatecartError) && (await deviceLostWithin(500))) return new Promise<never>(() => undefined);
        throw e;
      }
      reportRemote(slot.store.remote, method, req, r);
      return r;
    } finally {
      opts?.close();
    }
  }

  /** Replaces the remote state hosts of this page's engine (every page sharing it sees them). */
  async setRemotes(remotes: string[], timeoutMs?: number): Promise<void> {
    if (!Array.isArray(remotes) || remotes.some((r) => typeof r !== 'string')) throw new InvalidInput('setRemotes: give a list of URLs');
    const slot = this.need('setRemotes');
    try {
      setRemotes(slot, remotes, timeoutMs);
    } catch (e) {
      throw new InvalidInput(`setRemotes: ${(e as Error).message}`);
    }
    if (this.options) this.options = { ...this.options, remotes, ...(timeoutMs ? { remoteTimeoutMs: timeoutMs } : {}) };
  }

  async remoteStatus(): Promise<RemoteStatus[]> {
    return this.slot?.store.remote?.statuses() ?? [];
  }

  /** The page is done with its engine (terminate()): the last page out closes it. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.ctx.pages = Math.max(0, this.ctx.pages - 1);
    if (this.slot) this.ctx.engines.release(this.slot);
    this.slot = null;
  }

  /**
   * The name of a Web Lock this worker holds until it ends. A page that asks
   * for the same lock is granted it the moment the worker is gone (closed,
   * crashed or killed by the browser), without waiting for a heartbeat.
   */
  lifeLock(): Promise<string | null> {
    lifeLock ??= new Promise((resolve) => {
      const locks = (navigator as Navigator & { locks?: LockManager }).locks;
      if (!locks) return resolve(null);
      const name = `statecart-worker-life-${WORKER_ID}-${Date.now()}`;
      locks
        .request(name, () => {
          resolve(name);
          return new Promise<void>(() => undefined);
        })
        .catch(() => resolve(null));
    });
    return lifeLock;
  }

  readonly debug: DebugApi = {
    fault: async (kind) => {
      if (kind === 'throw')
        setTimeout(() => {
          throw new Error('injected fault');
        });
      else if (kind === 'close') self.close();
      else if (kind === 'device-lost') reportDeviceLost('injected fault');
      else if (kind === 'destroy-device') {
        const dev = (await (env.backends.onnx as { webgpu?: { device?: Promise<unknown> | unknown } }).webgpu?.device) as { destroy?: () => void } | undefined;
        if (!dev?.destroy) throw new InvalidInput('destroy-device: onnxruntime has no WebGPU device here (is the model on WASM?)');
        dev.destroy();
      } else if (kind === 'hang')
        setTimeout(() => {
          for (;;) {
            /* busy forever */
          }
        });
    },
    storeFault: async (n) => this.sc('storeFault').store.faultAfterRequests(n, () => self.close()),
    dropHot: async () => this.sc('dropHot').store.dropHot(),
    holdWrites: async (on) => this.sc('holdWrites').store.holdWrites(on),
    probe: async (req) => {
      const sc = this.sc('probe');
      const model = await sc.getModel();
      const from = req.stateKey ? (await sc.store.getState(req.stateKey)).state : undefined;
      const { logits } = await model.prefill(req.tokens, from);
      return Comlink.transfer(logits, [logits.buffer as ArrayBuffer]);
    },
    counters: async () => ({
      hashTokens: hashStats.tokens,
      hashDigests: hashStats.digests,
      manifestReads: readStats.manifests,
      blobReads: this.slot?.store.stats().blobReads ?? 0,
      lastWriteRequests: this.slot?.store.stats().lastWriteRequests ?? 0,
      writes: this.slot?.store.stats().writes ?? null,
      modelLoads: hostStats.modelLoads,
      engines: this.ctx.engines.size,
      pages: this.ctx.pages,
      shared: this.ctx.shared,
      workerId: WORKER_ID,
      remote: this.slot?.store.remote ? { ...this.slot.store.remote.counters } : null,
    }),
  };

  private need(what: string): EngineSlot {
    if (!this.slot) throw new ModelNotLoaded({ reason: `${what}: the worker was not initialised (call init() first).` });
    return this.slot;
  }

  private sc(what: string): LocalStatecart {
    return this.need(what).sc;
  }
}
