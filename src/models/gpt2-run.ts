/**
 * A GPT-2 model run whose KV cache stays in the runtime for the whole run:
 * `feed` calls the onnxruntime session directly (not transformers.js'
 * `forward`) and hands the cache back as the next call's past without
 * turning all of it into fresh JS arrays per token. Three ways to hold it,
 * picked by what the session offers:
 *
 *   gpu      (WebGPU) present.* come back as GPU buffers (transformers.js
 *            sets `preferredOutputLocation` for them) and are fed back as
 *            past_key_values.* as they are; step t's buffers are released
 *            once step t+1 has run. `state()` reads back only the rows it
 *            has not read before (one copy per row range and head into one
 *            mappable buffer), once.
 *   rows     (WASM, CPU; graphs with new_key.N / new_value.N outputs, see
 *            gpt2-onnx.ts) each call fetches the logits and only the new
 *            tokens' rows, and appends them in place to one buffer per
 *            tensor owned by the run. The next past is a view of it.
 *   present  (any other graph, e.g. the Hub's exports) each call fetches
 *            present.* and feeds those arrays back: the runtime copies the
 *            whole cache out per call, as transformers.js' forward did.
 *
 * What stays on WASM: onnxruntime-web copies every CPU input into its heap
 * per run (no CPU IO binding), so the past is still copied in once per call,
 * and the graph's Concat makes present.* (run whether fetched or not).
 *
 * All three give the same numbers on one device: rows and present feed the
 * runtime the very same past arrays (bit for bit), gpu keeps the runtime's
 * own buffers.
 */
import { float16ToFloat32, float32ToFloat16 } from '../formats/fp16.ts';
import { ContextOverflow, InvalidInput, ModelNotLoaded, throwIfAborted } from '../core/errors.ts';
import type { ModelRun, ModelState, RunOptions, StateTensor } from './types.ts';

/** The slice of an onnxruntime tensor used here (onnxruntime-web and -node both fit). */
export interface OrtTensorLike {
  readonly type: string;
  readonly dims: readonly number[];
  /** CPU data; throws for a tensor on the GPU. */
  readonly data: unknown;
  readonly location?: string;
  readonly gpuBuffer?: unknown;
  getData?(releaseData?: boolean): Promise<unknown>;
  dispose?(): void;
}

export interface OrtSessionLike {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata?: readonly { name: string; type?: string }[];
  run(feeds: Record<string, OrtTensorLike>, fetches?: readonly string[]): Promise<Record<string, OrtTensorLike>>;
}

/** The WebGPU calls that read rows of a GPU buffer (a GPUDevice fits). */
export interface GpuDeviceLike {
  createBuffer(d: { size: number; usage: number }): GpuBufferLike;
  createCommandEncoder(): { copyBufferToBuffer(src: unknown, srcOffset: number, dst: GpuBufferLike, dstOffset: number, size: number): void; finish(): unknown };
  queue: { submit(buffers: unknown[]): void };
  /** Settles once the device is lost (destroyed, reset, …). */
  lost?: Promise<unknown>;
}
interface GpuBufferLike {
  mapAsync(mode: number): Promise<void>;
  getMappedRange(): ArrayBuffer;
  unmap(): void;
  destroy(): void;
}
// GPUBufferUsage.MAP_READ | COPY_DST, GPUMapMode.READ (numbers: the WebGPU globals exist only in browsers).
const MAP_READ_COPY_DST = 0x0001 | 0x0008;
const MAP_MODE_READ = 0x0001;

export type KvType = 'float32' | 'float16';
type KvArray = Float32Array | Uint16Array;
export type CacheMode = 'gpu' | 'rows' | 'present';

export interface Gpt2Dims {
  n_layer: number;
  n_head: number;
  n_embd: number;
  n_positions: number;
  vocab_size: number;
}

export interface Gpt2RunnerOptions {
  modelId: string;
  session: OrtSessionLike;
  /** Makes a CPU tensor of the session's runtime. */
  tensor: (type: 'int64' | KvType, data: BigInt64Array | KvArray, dims: number[]) => OrtTensorLike;
  config: Gpt2Dims;
  /** The device the session runs on: on WebGPU the cache stays in GPU buffers. */
  device: 'webgpu' | 'wasm' | 'cpu';
  /** The GPUDevice the session's buffers live on (WebGPU); without it, rows are read with getData(). */
  gpuDevice?: () => Promise<GpuDeviceLike | undefined>;
  /** 'auto' (default): by what the session offers; 'present': the path for graphs without new rows (tests compare the two). */
  cache?: 'auto' | 'present';
}

export interface Gpt2Runner {
  readonly mode: CacheMode;
  readonly kvType: KvType;
  /** GPU read-backs so far: of new rows only, or of whole buffers (no device to copy rows with). */
  readonly reads: { rows: number; whole: number };
  open(from?: ModelState): ModelRun;
}

/** Tokens per session run during prefill: bounds logits memory and gives progress and cancel points. */
export const PREFILL_CHUNK = 128;

/**
 * After a run fails on WebGPU, how long the next run waits for the device's
 * `lost` promise before taking the failure as the run's own. onnxruntime-web's
 * WebGPU backend blocks the thread for good in a run started on a destroyed
 * device (no task runs again: the `lost` handler and the supervisor's pings
 * included), and a run in flight when the device goes fails (mapAsync aborted)
 * before `lost` settles, so a queued run must not start until that is known.
 */
export const LOST_WAIT_MS = 1000;

const isGpu = (t: OrtTensorLike): boolean => t.location === 'gpu-buffer';

/** A float16 output may come back as a Float16Array (where the runtime has one): its bits as a Uint16Array. */
function halfBits(d: unknown): Uint16Array {
  const a = d as ArrayBufferView & { length: number };
  return d instanceof Uint16Array ? d : new Uint16Array(a.buffer, a.byteOffset, a.length);
}

function kvData(t: OrtTensorLike, type: KvType): KvArray {
  return type === 'float16' ? halfBits(t.data) : (t.data as Float32Array);
}

function toFloat32(a: KvArray, type: KvType): Float32Array {
  return type === 'float16' ? float16ToFloat32(a as Uint16Array) : (a as Float32Array);
}

function fromFloat32(a: Float32Array, type: KvType): KvArray {
  return type === 'float16' ? float32ToFloat16(a) : a;
}

/**
 * One [n_head, T, head_dim] tensor of a run, grown in place: appending S rows
 * moves heads 1.. back by h·S rows (last head first, memmove) and writes each
 * head's new rows after its old ones, so `view()` is always the contiguous
 * [n_head, T, head_dim] array the next run's past needs. Capacity grows by a
 * quarter (at least 64 rows) up to `max`, so re-allocations are rare.
 *
 * It starts on `start` (the start state's [n_head, T, head_dim] array) without
 * copying it and never writes to it: the first append copies it, laid out for
 * the new length, into a buffer of its own.
 */
export class RowBuffer {
  private buf: KvArray;
  private cap: number;
  T: number;

  constructor(
    private readonly H: number,
    private readonly D: number,
    private readonly type: KvType,
    private readonly max: number,
    start?: KvArray,
  ) {
    this.T = start ? start.length / (H * D) : 0;
    this.cap = this.T;
    this.buf = start ?? this.alloc(0);
  }

  private alloc(rows: number): KvArray {
    return this.type === 'float16' ? new Uint16Array(this.H * rows * this.D) : new Float32Array(this.H * rows * this.D);
  }

  /** The first [n_head, T, head_dim] elements: the run's cache of this tensor. */
  view(): KvArray {
    return this.buf.subarray(0, this.H * this.T * this.D);
  }

  /** Appends `rows` ([n_head, S, head_dim]). */
  append(rows: KvArray, S: number): void {
    const { H, D, T } = this;
    if (rows.length !== H * S * D) throw new Error(`internal: ${rows.length} values for ${S} rows of [${H}, ${D}]`);
    const need = T + S;
    if (need > this.cap) {
      const cap = Math.min(Math.max(need, this.max), need + Math.max(64, need >> 2));
      const next = this.alloc(cap);
      for (let h = 0; h < H; h++) next.set(this.buf.subarray(h * T * D, (h + 1) * T * D), h * need * D);
      this.buf = next;
      this.cap = cap;
    } else {
      for (let h = H - 1; h >= 1; h--) this.buf.copyWithin(h * need * D, h * T * D, (h + 1) * T * D);
    }
    for (let h = 0; h < H; h++) this.buf.set(rows.subarray(h * S * D, (h + 1) * S * D), (h * need + T) * D);
    this.T = need;
  }
}

export function createGpt2Runner(o: Gpt2RunnerOptions): Gpt2Runner {
  const { session, config: c } = o;
  const L = c.n_layer;
  const H = c.n_head;
  const D = c.n_embd / c.n_head;
  const V = c.vocab_size;
  const names = (prefix: string, a: string, b: string) => Array.from({ length: L }, (_, l) => [`${prefix}.${l}.${a}`, `${prefix}.${l}.${b}`]).flat();
  const pastNames = names('past_key_values', 'key', 'value');
  const presentNames = names('present', 'key', 'value');
  const rowNames = Array.from({ length: L }, (_, l) => [`new_key.${l}`, `new_value.${l}`]).flat();

  const inputs = new Set(session.inputNames);
  const outputs = new Set(session.outputNames);
  const known = new Set(['input_ids', 'attention_mask', 'position_ids', 'num_logits_to_keep', ...pastNames]);
  const missing = [...pastNames, 'input_ids', 'attention_mask'].filter((n) => !inputs.has(n));
  const unknown = session.inputNames.filter((n) => !known.has(n));
  const noOut = ['logits', ...presentNames].filter((n) => !outputs.has(n));
  if (missing.length || unknown.length || noOut.length) {
    throw new ModelNotLoaded({
      model: o.modelId,
      reason: `its ONNX graph is not a GPT-2 decoder with a KV cache in transformers.js' layout (${[
        missing.length ? `missing inputs ${missing.join(', ')}` : '',
        unknown.length ? `unexpected inputs ${unknown.join(', ')}` : '',
        noOut.length ? `missing outputs ${noOut.join(', ')}` : '',
      ]
        .filter(Boolean)
        .join('; ')})`,
    });
  }
  const metaType = session.inputMetadata?.find((m) => m.name === pastNames[0])?.type;
  const kvType: KvType = metaType === 'float16' ? 'float16' : 'float32';
  const hasRows = rowNames.every((n) => outputs.has(n));
  const mode: CacheMode = o.device === 'webgpu' ? 'gpu' : hasRows && o.cache !== 'present' ? 'rows' : 'present';

  // One session run at a time (onnxruntime-web's sessions are not re-entrant;
  // transformers.js chains its own runs the same way).
  let chain: Promise<unknown> = Promise.resolve();
  // Set by a failed WebGPU run: whether its device is lost (and that run's error).
  let lostCheck: Promise<Error | null> | null = null;
  const serial = <T>(f: () => Promise<T>): Promise<T> => {
    const p = chain.then(async () => {
      const gone = lostCheck && (await lostCheck);
      // The device is gone: no run again (it would never return); the worker is being replaced.
      if (gone) throw gone;
      lostCheck = null;
      try {
        return await f();
      } catch (e) {
        if (mode === 'gpu') lostCheck = lostAfter(e as Error);
        throw e;
      }
    });
    chain = p.catch(() => undefined);
    return p;
  };

  const i64 = (xs: ArrayLike<number>, dims: number[]) =>
    o.tensor(
      'int64',
      BigInt64Array.from(xs as number[], (x) => BigInt(x)),
      dims,
    );
  const ones = (n: number) => o.tensor('int64', new BigInt64Array(n).fill(1n), [1, n]);
  const emptyKv = () => (kvType === 'float16' ? new Uint16Array(0) : new Float32Array(0));
  let gpuDevice: Promise<GpuDeviceLike | undefined> | null = null;
  const device = (): Promise<GpuDeviceLike | undefined> => {
    gpuDevice ??= o.gpuDevice ? o.gpuDevice().catch(() => undefined) : Promise.resolve(undefined);
    return gpuDevice;
  };
  const reads = { rows: 0, whole: 0 };

  /** `error` when the device turns out lost within LOST_WAIT_MS, else null. */
  async function lostAfter(error: Error): Promise<Error | null> {
    const lost = (await device())?.lost;
    if (!lost) return null;
    return Promise.race([lost.then(() => error), new Promise<null>((r) => setTimeout(() => r(null), LOST_WAIT_MS))]);
  }

  function lastLogits(t: OrtTensorLike): Float32Array {
    const rows = t.dims[1] ?? 1;
    const raw = t.type === 'float16' ? float16ToFloat32(halfBits(t.data)) : (t.data as Float32Array);
    return rows === 1 && raw.length === V ? raw : raw.slice((rows - 1) * V, rows * V);
  }

  /** Rows [t0, t1) of each [1, H, T, D] GPU tensor, as one [H, t1 − t0, D] array per tensor. */
  async function readRows(ts: OrtTensorLike[], T: number, t0: number, t1: number): Promise<KvArray[]> {
    const n = t1 - t0;
    const bpe = kvType === 'float16' ? 2 : 4;
    const rowBytes = D * bpe;
    const dev = await device();
    if (!dev || rowBytes % 4 !== 0 || ts.some((t) => !t.gpuBuffer)) {
      // No device to copy with: the whole buffers, then the rows.
      reads.whole++;
      return Promise.all(
        ts.map(async (t) => {
          const all = kvType === 'float16' ? halfBits(await t.getData!()) : ((await t.getData!()) as Float32Array);
          const out = kvType === 'float16' ? new Uint16Array(H * n * D) : new Float32Array(H * n * D);
          for (let h = 0; h < H; h++) out.set(all.subarray((h * T + t0) * D, (h * T + t1) * D), h * n * D);
          return out;
        }),
      );
    }
    reads.rows++;
    const per = H * n * rowBytes;
    const staging = dev.createBuffer({ size: per * ts.length, usage: MAP_READ_COPY_DST });
    try {
      const enc = dev.createCommandEncoder();
      ts.forEach((t, i) => {
        for (let h = 0; h < H; h++) enc.copyBufferToBuffer(t.gpuBuffer, (h * T + t0) * rowBytes, staging, i * per + h * n * rowBytes, n * rowBytes);
      });
      dev.queue.submit([enc.finish()]);
      await staging.mapAsync(MAP_MODE_READ);
      const bytes = staging.getMappedRange().slice(0);
      staging.unmap();
      return ts.map((_, i) => (kvType === 'float16' ? new Uint16Array(bytes, i * per, H * n * D) : new Float32Array(bytes, i * per, H * n * D)));
    } finally {
      staging.destroy();
    }
  }

  function open(from?: ModelState): ModelRun {
    const tokens = [...(from?.tokens ?? [])];
    const n0 = tokens.length;
    if (from) {
      if (from.tensors.length !== 2 * L) throw new InvalidInput(`a ${o.modelId} state has ${2 * L} tensors, not ${from.tensors.length}`);
      for (const t of from.tensors) {
        if (t.data.length !== H * n0 * D) throw new InvalidInput(`state tensor ${t.name} holds ${t.data.length} values, not ${H * n0 * D} (${n0} tokens)`);
      }
    }
    // JS copies of the first `baseT` tokens' cache (the start state's, then what state() has read).
    let base: KvArray[] = from ? from.tensors.map((t) => fromFloat32(t.data, kvType)) : pastNames.map(emptyKv);
    let baseT = n0;
    /** rows: the run's buffers. */
    let rows: RowBuffer[] | null = null;
    /** gpu / present: the last run's present.* (GPU buffers or CPU arrays). */
    let held: OrtTensorLike[] | null = null;
    let closed = false;

    const release = (ts: OrtTensorLike[] | null) => {
      for (const t of ts ?? []) if (isGpu(t)) t.dispose?.();
    };

    function pastFeeds(feeds: Record<string, OrtTensorLike>, P: number): void {
      if (rows) {
        rows.forEach((r, i) => (feeds[pastNames[i]!] = o.tensor(kvType, r.view(), [1, H, P, D])));
      } else if (held) {
        held.forEach((t, i) => (feeds[pastNames[i]!] = t));
      } else {
        base.forEach((a, i) => (feeds[pastNames[i]!] = o.tensor(kvType, a, [1, H, P, D])));
      }
    }

    async function step(ids: number[]): Promise<Float32Array> {
      const P = tokens.length;
      const S = ids.length;
      const feeds: Record<string, OrtTensorLike> = {
        input_ids: i64(ids, [1, S]),
        attention_mask: ones(P + S),
      };
      if (inputs.has('position_ids'))
        feeds.position_ids = i64(
          Array.from({ length: S }, (_, i) => P + i),
          [1, S],
        );
      // Only the last position's logits: a prefill needs no more, and the LM
      // head over every position was ~30% of a gpt2-shape prefill.
      if (inputs.has('num_logits_to_keep')) feeds.num_logits_to_keep = o.tensor('int64', BigInt64Array.from([1n]), []);
      if (mode === 'rows' && !rows) rows = base.map((a) => new RowBuffer(H, D, kvType, c.n_positions, a));
      pastFeeds(feeds, P);
      const fetches = ['logits', ...(mode === 'rows' ? rowNames : presentNames)];
      const out = await serial(() => session.run(feeds, fetches));
      if (mode === 'rows') {
        rows!.forEach((r, i) => r.append(kvData(out[rowNames[i]!]!, kvType), S));
      } else {
        const before = held;
        held = presentNames.map((n) => out[n]!);
        // Step t's buffers were step t+1's past: released only now that it has run.
        release(before);
      }
      tokens.push(...ids);
      return lastLogits(out.logits!);
    }

    return {
      tokens,
      async feed(ids: number[], ro: RunOptions = {}) {
        if (closed) throw new InvalidInput('this model run was closed');
        if (ids.length === 0) throw new InvalidInput('a run needs at least one new token');
        if (tokens.length + ids.length > c.n_positions) {
          throw new ContextOverflow({ modelId: o.modelId, limit: c.n_positions, wanted: tokens.length + ids.length });
        }
        let logits: Float32Array = new Float32Array(0);
        for (let i = 0; i < ids.length; i += PREFILL_CHUNK) {
          throwIfAborted(ro.signal);
          logits = await step(ids.slice(i, i + PREFILL_CHUNK));
          ro.onProgress?.({ done: Math.min(i + PREFILL_CHUNK, ids.length), total: ids.length });
          // A cancel arrives as a message: without a macrotask turn between chunks
          // a worker would only see it after the whole prefill.
          if (ro.signal && i + PREFILL_CHUNK < ids.length) await new Promise((r) => setTimeout(r, 0));
        }
        throwIfAborted(ro.signal);
        return logits;
      },
      async state() {
        if (closed) throw new InvalidInput('this model run was closed');
        const T = tokens.length;
        let data: KvArray[];
        if (rows) {
          // The buffers keep growing if the run goes on: the state gets its own copy.
          data = rows.map((r) => (kvType === 'float16' ? r.view() : r.view().slice()));
        } else if (held && !held.some(isGpu)) {
          // Fresh arrays from the runtime, never written to: no copy.
          data = held.map((t) => kvData(t, kvType));
        } else {
          if (held && T > baseT) {
            // A read-back that fails as the device goes: no run may start until that is known either.
            const fresh = await readRows(held, T, baseT, T).catch((e: Error) => {
              lostCheck ??= lostAfter(e);
              throw e;
            });
            base = base.map((b, i) => {
              const all = kvType === 'float16' ? new Uint16Array(H * T * D) : new Float32Array(H * T * D);
              for (let h = 0; h < H; h++) {
                all.set(b.subarray(h * baseT * D, (h + 1) * baseT * D), h * T * D);
                all.set(fresh[i]!.subarray(h * (T - baseT) * D, (h + 1) * (T - baseT) * D), (h * T + baseT) * D);
              }
              return all;
            });
            baseT = T;
          }
          data = base;
        }
        const tensors: StateTensor[] = data.map((d, i) => ({
          name: `layers.${i >> 1}.${i & 1 ? 'value' : 'key'}`,
          dims: [H, T, D],
          tokenAxis: 1,
          data: toFloat32(d, kvType),
        }));
        return { tokens: [...tokens], tensors };
      },
      close() {
        if (closed) return;
        closed = true;
        release(held);
        held = null;
        rows = null;
        base = [];
      },
    };
  }

  return { mode, kvType, reads, open };
}
