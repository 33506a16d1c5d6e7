import { AutoModelForCausalLM, AutoTokenizer, env, Tensor } from '@huggingface/transformers';
import { prefillByRun, type Device, type StateModel, type StateTensor } from './types.ts';
import { modelFingerprint, type ModelIdentity } from '../core/model-fingerprint.ts';
import { sha256Hex } from '../core/sha256.ts';
import { createGpt2Runner, type GpuDeviceLike, type OrtSessionLike, type OrtTensorLike } from './gpt2-run.ts';

export interface Gpt2Config {
  n_layer: number;
  n_head: number;
  n_embd: number;
  n_positions: number;
  vocab_size: number;
}

export interface LoadOptions {
  /** Model id as transformers.js resolves it (a local folder name or a Hub repo). */
  modelId: string;
  device: Device;
  adapter?: string | null;
  deviceReason?: string;
  /** Reads a file of the model by its path inside the model folder (for the fingerprint). */
  readFile: (path: string) => Promise<Uint8Array>;
  onLoadProgress?: (p: { file: string; loaded: number; total: number }) => void;
}

export async function loadGpt2(opts: LoadOptions): Promise<StateModel> {
  const [model, tokenizer, onnxBytes, tokJson, cfgBytes] = await Promise.all([
    AutoModelForCausalLM.from_pretrained(opts.modelId, {
      dtype: 'fp32',
      device: opts.device as 'webgpu' | 'wasm' | 'cpu',
      progress_callback: (p: { status: string; file?: string; loaded?: number; total?: number }) => {
        if (p.status === 'progress' && p.file) opts.onLoadProgress?.({ file: p.file, loaded: p.loaded ?? 0, total: p.total ?? 0 });
      },
    } as Record<string, unknown>),
    AutoTokenizer.from_pretrained(opts.modelId),
    opts.readFile('onnx/model.onnx'),
    opts.readFile('tokenizer.json'),
    opts.readFile('config.json'),
  ]);
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
    weights_sha256: await sha256Hex(onnxBytes),
    tokenizer_sha256: await sha256Hex(tokJson),
    dtype: 'fp32',
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
