/**
 * The bench page's only contact with statecart's client library: every call
 * to it goes through here, so that a change of the client's signatures is
 * one small edit in this file. What comes back is the few fields the bench
 * reads, in shapes of its own.
 */
import { createStatecart, type DeviceChoice, type StatecartClient } from '../../src/lib/index.ts';
import { testing } from '../../src/lib/testing.ts';

export interface EngineTimings {
  totalMs: number;
  restoreMs: number;
  prefillMs: number;
  generateMs: number;
  storeMs: number;
}

export interface Inferred {
  newStateKey: string;
  outputTokens: number[];
  tier: string;
  tokensProcessed: number;
  tokensReused: number;
  timings: EngineTimings;
}

export interface Created {
  stateKey: string;
  processed: number;
  reused: number;
  bytes: number;
  prefillMs: number;
}

export interface LoadedInfo {
  arch: string;
  sliceable: boolean;
  maxTokens: number;
  device: string;
  adapter: string | null;
  deviceReason: string;
  fingerprint: string;
  loadMs: number;
}

export interface StatecartHandle {
  loadModel(model: string, device: DeviceChoice): Promise<LoadedInfo>;
  createState(tokens: number[]): Promise<Created>;
  infer(o: { stateKey: string; deltaTokens: number[]; maxNewTokens: number }): Promise<Inferred>;
  /** Last-position logits after `tokens`; stores nothing. */
  probe(tokens: number[]): Promise<Float32Array>;
  tokenize(text: string): Promise<number[]>;
  health(): Promise<{ threads: number; crossOriginIsolated: boolean; bytesStored: number; logicalBytes: number; statesStored: number }>;
  stateBytes(key: string): Promise<number>;
  clearStore(): Promise<void>;
  dropHot(): Promise<void>;
  terminate(): void;
}

export async function openStatecart(o: { device: DeviceChoice; dbName: string; numThreads?: number }): Promise<StatecartHandle> {
  const sc: StatecartClient = await createStatecart({
    device: o.device,
    modelsBase: new URL('/models/', location.href).href,
    ortBase: new URL('/ort/', location.href).href,
    dbName: o.dbName,
    ...(o.numThreads ? { numThreads: o.numThreads } : {}),
  });
  return {
    async loadModel(model, device) {
      const i = await sc.loadModel({ model, device });
      return {
        arch: i.arch,
        sliceable: i.sliceable,
        maxTokens: i.maxTokens,
        device: i.device,
        adapter: i.adapter,
        deviceReason: i.deviceReason,
        fingerprint: i.fingerprint,
        loadMs: i.loadMs,
      };
    },
    async createState(tokens) {
      const r = await sc.createState({ tokens });
      return { stateKey: r.stateKey, processed: r.processed, reused: r.reused, bytes: r.bytes, prefillMs: r.timings.prefillMs };
    },
    async infer(q) {
      const r = await sc.infer({ stateKey: q.stateKey, deltaTokens: q.deltaTokens, maxNewTokens: q.maxNewTokens });
      return {
        newStateKey: r.newStateKey,
        outputTokens: r.outputTokens,
        tier: r.tier,
        tokensProcessed: r.savings.tokensProcessed,
        tokensReused: r.savings.tokensReused,
        timings: r.timings,
      };
    },
    probe: (tokens) => testing(sc).probe({ tokens }),
    tokenize: (text) => sc.tokenize({ text }),
    async health() {
      // Writes go behind the calls: the byte counts are of what has landed, so let every write land first.
      await sc.flush();
      const h = await sc.health();
      return {
        threads: h.threads,
        crossOriginIsolated: h.crossOriginIsolated,
        bytesStored: h.bytesStored,
        logicalBytes: h.logicalBytes,
        statesStored: h.statesStored,
      };
    },
    stateBytes: async (key) => (await sc.getState({ stateKey: key })).bytes,
    clearStore: () => sc.clearStore(),
    dropHot: () => testing(sc).dropHot(),
    terminate: () => sc.terminate(),
  };
}
