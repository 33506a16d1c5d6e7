/// <reference lib="webworker" />
import * as Comlink from 'comlink';
import { hashStats } from '../core/key-chain.ts';
import { env } from '@huggingface/transformers';
import { InvalidInput, ModelNotLoaded, StatecartError } from '../core/errors.ts';
import type { Statecart, STATECART_METHODS } from '../engine/api.ts';
import { LocalStatecart } from '../engine/statecart.ts';
import { readStats } from '../store/records.ts';
import { StateStore, type WriteQueueStats } from '../store/store.ts';
import { BrowserModelHost, type InitOptions } from './host.ts';
import type { ReceivedOptions } from './wire.ts';
import { deviceLostWithin, reportDeviceLost } from './device-lost.ts';

export type StatecartMethod = (typeof STATECART_METHODS)[number];

/** Fault injection and counters, for tests (the library's testing entry, src/lib/testing.ts). */
export interface DebugApi {
  /**
   * 'throw' (uncaught error), 'close' (the worker exits), 'hang' (busy forever),
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
  /** Work counted since the worker started: tokens hashed, digests, manifest and blob reads, the requests of the last write transaction, and the write queue's counts and times. */
  counters(): Promise<{
    hashTokens: number;
    hashDigests: number;
    manifestReads: number;
    blobReads: number;
    lastWriteRequests: number;
    writes: WriteQueueStats | null;
  }>;
}

/**
 * The worker's side: the engine behind comlink, and little else (web-llm's
 * WebWorkerMLCEngineHandler). The client calls `call(method, request, options)`
 * for every method of the Statecart interface.
 */
export class WorkerHandler {
  private sc: LocalStatecart | null = null;

  ping(): number {
    return Date.now();
  }

  async init(o: InitOptions): Promise<void> {
    this.sc?.store.close();
    const store = new StateStore({ dbName: o.dbName, hotBytes: o.hotBytes, budgetBytes: o.budgetBytes ?? null });
    // The open-time check (orphans, damaged states) runs before any request.
    await store.ready;
    this.sc = new LocalStatecart(store, new BrowserModelHost(o));
  }

  async call<M extends StatecartMethod>(method: M, req: Parameters<Statecart[M]>[0], opts?: ReceivedOptions): Promise<Awaited<ReturnType<Statecart[M]>>> {
    try {
      const sc = this.need(method);
      const fn = sc[method] as (r: unknown, o?: unknown) => Promise<Awaited<ReturnType<Statecart[M]>>>;
      try {
        return await fn.call(sc, req, opts);
      } catch (e) {
        // The runtime's error from a lost device is not the answer: this worker is
        // ending (the supervisor fails every pending call with WorkerCrashed and
        // starts one on WASM), so the call is left unanswered.
        if (!(e instanceof StatecartError) && (await deviceLostWithin(500))) return new Promise<never>(() => undefined);
        throw e;
      }
    } finally {
      opts?.close();
    }
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
    storeFault: async (n) => this.need('storeFault').store.faultAfterRequests(n, () => self.close()),
    dropHot: async () => this.need('dropHot').store.dropHot(),
    holdWrites: async (on) => this.need('holdWrites').store.holdWrites(on),
    probe: async (req) => {
      const sc = this.need('probe');
      const model = await sc.getModel();
      const from = req.stateKey ? (await sc.store.getState(req.stateKey)).state : undefined;
      const { logits } = await model.prefill(req.tokens, from);
      return Comlink.transfer(logits, [logits.buffer as ArrayBuffer]);
    },
    counters: async () => ({
      hashTokens: hashStats.tokens,
      hashDigests: hashStats.digests,
      manifestReads: readStats.manifests,
      blobReads: this.sc?.store.stats().blobReads ?? 0,
      lastWriteRequests: this.sc?.store.stats().lastWriteRequests ?? 0,
      writes: this.sc?.store.stats().writes ?? null,
    }),
  };

  private need(what: string): LocalStatecart {
    if (!this.sc) throw new ModelNotLoaded({ reason: `${what}: the worker was not initialised (call init() first).` });
    return this.sc;
  }
}
