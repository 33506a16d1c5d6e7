import { AutoModelForCausalLM, AutoTokenizer, env, Tensor } from '@huggingface/transformers';
import { prefillByRun, type Device, type StateModel, type StateTensor } from './types.ts';
import { modelFingerprint, type Dtype, type ModelIdentity } from '../core/model-fingerprint.ts';
import { hubWeightsFile, pendingDtype } from './registry.ts';
import { sha256Hex } from '../core/sha256.ts';
import { ModelNotLoaded } from '../core/errors.ts';
import { createGpt2Runner, type GpuDeviceLike, type OrtSessionLike, type OrtTensorLike } from './gpt2-run.ts';

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

  // Runs call the onnxruntime session directly and keep the KV cache in the
  // runtime between feeds (gpt2-run.ts); transformers.js' forward() would
  // read every present.* out per call.
  const runner = createGpt2Runner({
    modelId: opts.modelId,
    session: (model as unknown as { sessions: Record<string, OrtSessionLike> }).sessions.model!,
    tensor: (type, data, dims) => (new Tensor(type, data, dims) as unknown as { ort_tensor: OrtTensorLike }).ort_tensor,
    config,
    device: opts.device,
    gpuDevice: async () => (await (env.backends.onnx as { webgpu?: { device?: unknown } }).webgpu?.device) as GpuDeviceLike | undefined,
  });

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
    open: (from) => runner.open(from),
    prefill: (tokens, from, ro) => prefillByRun(m, tokens, from, ro),
    async dispose() {
      await (model as unknown as { dispose: () => Promise<void> }).dispose();
    },
  };
  return m;
}
