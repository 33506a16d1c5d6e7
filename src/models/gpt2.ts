import { AutoModelForCausalLM, AutoTokenizer, DynamicCache, Tensor } from '@huggingface/transformers';
import { prefillByRun, type Device, type ModelRun, type ModelState, type RunOptions, type StateModel, type StateTensor } from './types.ts';
import { modelFingerprint, type Dtype, type ModelIdentity } from '../core/model-fingerprint.ts';
import { hubWeightsFile, pendingDtype } from './registry.ts';
import { sha256Hex } from '../core/sha256.ts';
import { ContextOverflow, InvalidInput, ModelNotLoaded, throwIfAborted } from '../core/errors.ts';

export interface Gpt2Config {
  n_layer: number;
  n_head: number;
  n_embd: number;
  n_positions: number;
  vocab_size: number;
}

export interface LoadOptions {
  /** statecart's id of the model (what states and errors name). */
  modelId: string;
  /** What transformers.js loads: a local folder name or a Hub repository (default: modelId). */
  source?: string;
  /** Hub revision (default main). */
  revision?: string;
  /** fp32 (default) or q8; their KV caches are float32. */
  dtype?: Dtype;
  device: Device;
  adapter?: string | null;
  deviceReason?: string;
  /** Reads a file of the model by its path inside the model folder (config.json; the others when `digestOf` does not know them). */
  readFile: (path: string) => Promise<Uint8Array>;
  /** sha256 hex of a file as transformers.js read it, when statecart's cache saw it (src/models/hub-files.ts). */
  digestOf?: (path: string) => string | undefined;
  onLoadProgress?: (p: { file: string; loaded: number; total: number }) => void;
}

/** Tokens per forward call during prefill: bounds logits memory and gives progress and cancel points. */
const PREFILL_CHUNK = 128;

type AnyTensor = Tensor & { ort_tensor?: { getData?: (release?: boolean) => Promise<unknown> }; location?: string; dispose?: () => void };

async function readTensor(t: AnyTensor): Promise<Float32Array> {
  // On WebGPU, present.* stay on the GPU and are freed on the next step, so
  // they are copied out now; a state is always plain typed arrays.
  const loc = (t as { location?: string }).location ?? (t.ort_tensor as { location?: string } | undefined)?.location;
  if (loc === 'gpu-buffer' && t.ort_tensor?.getData) {
    const d = (await t.ort_tensor.getData(true)) as Float32Array;
    return d instanceof Float32Array ? d : new Float32Array(d as ArrayLike<number>);
  }
  return t.data as Float32Array;
}

export async function loadGpt2(opts: LoadOptions): Promise<StateModel> {
  const dtype = opts.dtype ?? 'fp32';
  const pending = pendingDtype('gpt2', dtype);
  if (pending) throw new ModelNotLoaded({ model: opts.modelId, reason: pending });
  const source = opts.source ?? opts.modelId;
  const onnxFile = hubWeightsFile('gpt2', dtype);
  // config.json first: a missing repository or file is named before anything large is asked for.
  const cfgBytes = await opts.readFile('config.json');
  const from = { ...(opts.revision ? { revision: opts.revision } : {}) };
  const [model, tokenizer] = await Promise.all([
    AutoModelForCausalLM.from_pretrained(source, {
      ...from,
      dtype,
      device: opts.device as 'webgpu' | 'wasm' | 'cpu',
      progress_callback: (p: { status: string; file?: string; loaded?: number; total?: number }) => {
        if (p.status === 'progress' && p.file) opts.onLoadProgress?.({ file: p.file, loaded: p.loaded ?? 0, total: p.total ?? 0 });
      },
    } as Record<string, unknown>),
    AutoTokenizer.from_pretrained(source, from),
  ]);
  // The digest of the bytes the session was built from, as transformers.js read
  // them; read again only where no cache of ours saw them (Node's file system).
  const digest = async (p: string): Promise<string> => opts.digestOf?.(p) ?? sha256Hex(await opts.readFile(p));
  const raw = JSON.parse(new TextDecoder().decode(cfgBytes)) as Record<string, number>;
  const config: Gpt2Config = {
    n_layer: raw.n_layer!,
    n_head: raw.n_head!,
    n_embd: raw.n_embd!,
    n_positions: raw.n_positions ?? raw.n_ctx!,
    vocab_size: raw.vocab_size!,
  };
  const identity: ModelIdentity = {
    arch: 'gpt2',
    config: { ...config },
    weights_sha256: await digest(onnxFile),
    tokenizer_sha256: await digest('tokenizer.json'),
    dtype,
  };
  const fingerprint = await modelFingerprint(identity);
  const headDim = config.n_embd / config.n_head;

  const emptyState = (): StateTensor[] => {
    const out: StateTensor[] = [];
    for (let l = 0; l < config.n_layer; l++) {
      for (const kind of ['key', 'value'])
        out.push({ name: `layers.${l}.${kind}`, dims: [config.n_head, 0, headDim], tokenAxis: 1, data: new Float32Array(0) });
    }
    return out;
  };

  async function forward(ids: number[], past: StateTensor[]): Promise<{ logits: Float32Array; present: StateTensor[] }> {
    const pastLen = past[0]!.dims[1]!;
    const L = ids.length;
    const entries: Record<string, Tensor> = {};
    for (let l = 0; l < config.n_layer; l++) {
      const k = past[2 * l]!;
      const v = past[2 * l + 1]!;
      entries[`past_key_values.${l}.key`] = new Tensor('float32', k.data, [1, config.n_head, pastLen, headDim]);
      entries[`past_key_values.${l}.value`] = new Tensor('float32', v.data, [1, config.n_head, pastLen, headDim]);
    }
    const inputs = {
      input_ids: new Tensor(
        'int64',
        BigInt64Array.from(ids, (x) => BigInt(x)),
        [1, L],
      ),
      attention_mask: new Tensor('int64', new BigInt64Array(pastLen + L).fill(1n), [1, pastLen + L]),
      position_ids: new Tensor(
        'int64',
        BigInt64Array.from({ length: L }, (_, i) => BigInt(pastLen + i)),
        [1, L],
      ),
      past_key_values: new DynamicCache(entries),
      // Only the last position's logits: a prefill needs no more, and the LM head
      // over every position was ~30% of a gpt2-shape prefill.
      num_logits_to_keep: new Tensor('int64', BigInt64Array.from([1n]), []),
    };
    const out = (await (model as unknown as { forward: (x: unknown) => Promise<Record<string, AnyTensor>> }).forward(inputs)) as Record<string, AnyTensor>;
    const logitsT = out.logits!;
    const all = await readTensor(logitsT);
    const V = config.vocab_size;
    const logits = all.slice(all.length - V);
    const present: StateTensor[] = [];
    for (let l = 0; l < config.n_layer; l++) {
      for (const kind of ['key', 'value']) {
        const t = out[`present.${l}.${kind}`]!;
        const data = await readTensor(t);
        // Outputs are fresh arrays copied out of the WASM heap (or the GPU): no copy
        // is needed, and one here cost a whole KV cache per generated token.
        present.push({ name: `layers.${l}.${kind}`, dims: [config.n_head, pastLen + L, headDim], tokenAxis: 1, data });
      }
    }
    for (const t of Object.values(out)) (t as AnyTensor).dispose?.();
    return { logits, present };
  }

  /** A run keeps the whole KV cache as arrays and feeds it back each call (see docs/DESIGN.md on what this costs). */
  function open(from?: ModelState): ModelRun {
    const tokens = [...(from?.tokens ?? [])];
    let past = from ? from.tensors : emptyState();
    return {
      tokens,
      async feed(ids: number[], ro: RunOptions = {}) {
        if (ids.length === 0) throw new InvalidInput('a run needs at least one new token');
        if (tokens.length + ids.length > config.n_positions) {
          throw new ContextOverflow({ modelId: opts.modelId, limit: config.n_positions, wanted: tokens.length + ids.length });
        }
        let logits: Float32Array = new Float32Array(0);
        for (let i = 0; i < ids.length; i += PREFILL_CHUNK) {
          throwIfAborted(ro.signal);
          const r = await forward(ids.slice(i, i + PREFILL_CHUNK), past);
          past = r.present;
          logits = r.logits;
          ro.onProgress?.({ done: Math.min(i + PREFILL_CHUNK, ids.length), total: ids.length });
          // A cancel arrives as a message: without a macrotask turn between chunks
          // a worker would only see it after the whole prefill.
          if (ro.signal && i + PREFILL_CHUNK < ids.length) await new Promise((r) => setTimeout(r, 0));
        }
        throwIfAborted(ro.signal);
        tokens.push(...ids);
        return logits;
      },
      async state() {
        return { tokens: [...tokens], tensors: past };
      },
      close() {
        past = emptyState();
      },
    };
  }

  const m: StateModel = {
    id: opts.modelId,
    arch: 'gpt2',
    fingerprint,
    identity,
    device: opts.device,
    adapter: opts.adapter ?? null,
    deviceReason: opts.deviceReason ?? '',
    maxTokens: config.n_positions,
    vocabSize: config.vocab_size,
    stateSpecs: emptyState().map((t) => ({ name: t.name, dims: t.dims, tokenAxis: 1 })),
    sliceable: true,
    keepsLastLogits: false,
    async tokenize(text: string) {
      return Array.from((tokenizer as unknown as { encode: (t: string) => number[] }).encode(text));
    },
    decode(tokens: number[]) {
      return (tokenizer as unknown as { decode: (t: number[], o?: object) => string }).decode(tokens, { skip_special_tokens: false });
    },
    open,
    prefill: (tokens, from, ro) => prefillByRun(m, tokens, from, ro),
    async dispose() {
      await (model as unknown as { dispose: () => Promise<void> }).dispose();
    },
  };
  return m;
}
