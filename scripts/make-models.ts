/**
 * Builds the offline models (DESIGN.md, "Models, offline first").
 *
 *   npx tsx scripts/make-models.ts                       # tiny-gpt2 + tiny-mamba → public/models/
 *   npx tsx scripts/make-models.ts --models tiny-gpt2,gpt2-shape [--out DIR] [--force]
 *   npx tsx scripts/make-models.ts --from-safetensors path/model.safetensors --id NAME [--out DIR] [--n-head 12]
 *
 * Small models go to public/models/<id>/, big ones (gpt2-shape, mamba-130m-shape,
 * --from-safetensors) to .cache/models/<id>/ (git-ignored) unless --out says
 * otherwise. A model is skipped when its stamp (hash of the generator's source
 * files and parameters, plus the size of every file written) still matches.
 *
 * Exported: ensureModels(ids, outRoot?, {force?, log?}), buildModel(id, outDir, {force?}),
 * buildFromSafetensors(path, id, outDir, {n_head?, force?}), writeGpt2Model(outDir, id, weights, weightSource),
 * gpt2HfConfig(config), PRESETS, MODEL_IDS, defaultModelIds(), defaultModelDir(id, outRoot?),
 * PUBLIC_MODELS, CACHE_MODELS, STAMP_FILE.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildGpt2Onnx } from './lib/gpt2-onnx.ts';
import { buildGpt2TokenizerFiles, gpt2TokenizerSourceFiles, GPT2_EOS_ID } from './lib/tokenizer-json.ts';
import { writeMambaModel } from './lib/mamba-model.ts';
import { seededGpt2Weights, seededSourceInfo, gpt2WeightsFromSafetensors, type GPT2Config, type GPT2Weights } from './lib/weights.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const PUBLIC_MODELS = join(REPO_ROOT, 'public', 'models');
export const CACHE_MODELS = join(REPO_ROOT, '.cache', 'models');
export const STAMP_FILE = 'statecart-stamp.json';

// ------------------------------------------------------------------ registry

interface Gpt2Preset {
  arch: 'gpt2';
  config: GPT2Config;
  seed: number;
  scale: number;
  big: boolean;
}
interface MambaPreset {
  arch: 'mamba';
  preset: 'tiny-mamba' | 'mamba-130m-shape';
  big: boolean;
}
type Preset = Gpt2Preset | MambaPreset;

const GPT2_BASE = { vocab_size: 50257, n_positions: 1024, layer_norm_epsilon: 1e-5 };

/**
 * Model ids → how to build them. Scale 15 (std 0.3): logits stay finite
 * (max |logit| ≈ 13 for tiny-gpt2, ONNX vs reference ≈ 2e-5) and greedy continuations vary (20 distinct
 * tokens in 20); at the real init scale (1) greedy repeats one token.
 */
export const PRESETS: Record<string, Preset> = {
  'tiny-gpt2': { arch: 'gpt2', config: { ...GPT2_BASE, n_layer: 2, n_head: 4, n_embd: 64 }, seed: 1, scale: 15, big: false },
  'gpt2-shape': { arch: 'gpt2', config: { ...GPT2_BASE, n_layer: 12, n_head: 12, n_embd: 768 }, seed: 2, scale: 15, big: true },
  // ---- MAMBA HOOK ----------------------------------------------------------
  // Built by scripts/lib/mamba-model.ts (another helper's file):
  //   writeMambaModel(outDir, { preset, safetensorsPath? })  (see buildMamba below).
  // Its own defaults apply (seed, scale); add fields here to override them.
  'tiny-mamba': { arch: 'mamba', preset: 'tiny-mamba', big: false },
  'mamba-130m-shape': { arch: 'mamba', preset: 'mamba-130m-shape', big: true },
  // ---------------------------------------------------------------------------
};

export const MODEL_IDS = Object.keys(PRESETS);

/** Built by default (`npx tsx scripts/make-models.ts`, npm pre-scripts). */
export function defaultModelIds(): string[] {
  return ['tiny-gpt2', 'tiny-mamba'];
}

export function defaultModelDir(id: string, outRoot?: string): string {
  if (outRoot) return join(resolve(outRoot), id);
  const big = PRESETS[id]?.big ?? true;
  return join(big ? CACHE_MODELS : PUBLIC_MODELS, id);
}

// ------------------------------------------------------------------- stamp

function sourceFiles(arch: 'gpt2' | 'mamba'): string[] {
  const tok = gpt2TokenizerSourceFiles();
  const common = [join(REPO_ROOT, 'scripts', 'make-models.ts'), join(REPO_ROOT, 'src', 'formats', 'safetensors.ts'), tok.encoderJson, tok.vocabBpe];
  if (arch === 'gpt2') {
    return [
      ...common,
      ...['gpt2-onnx.ts', 'weights.ts', 'tokenizer-json.ts', 'onnx-util.ts'].map((f) => join(REPO_ROOT, 'scripts', 'lib', f)),
      join(REPO_ROOT, 'src', 'models', 'gpt2-reference.ts'),
    ];
  }
  // Mamba: we do not know which helpers it uses; hash every generator source.
  const lib = join(REPO_ROOT, 'scripts', 'lib');
  const libFiles = readdirSync(lib, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts') || f.endsWith('.js') || f.endsWith('.json'))
    .map((f) => join(lib, f));
  const models = join(REPO_ROOT, 'src', 'models');
  const refs = readdirSync(models)
    .filter((f) => f.endsWith('-reference.ts'))
    .map((f) => join(models, f));
  return [...common, ...libFiles, ...refs];
}

async function generatorHash(arch: 'gpt2' | 'mamba', params: unknown): Promise<string> {
  const h = createHash('sha256');
  for (const f of [...new Set(sourceFiles(arch))].sort()) {
    if (!existsSync(f)) continue;
    const rel = f.startsWith(REPO_ROOT + sep) ? relative(REPO_ROOT, f).split(sep).join('/') : f.split(sep).slice(-2).join('/');
    h.update(rel + '\0');
    h.update(await readFile(f));
    h.update('\0');
  }
  h.update(JSON.stringify(params));
  return h.digest('hex');
}

interface Stamp {
  generator_sha256: string;
  params: unknown;
  /** Relative path → size in bytes of every file the build wrote. */
  files: Record<string, number>;
}

function listFiles(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p, base));
    else if (e.isFile() && e.name !== STAMP_FILE) out.push(relative(base, p).split(sep).join('/'));
  }
  return out.sort();
}

async function stampIsCurrent(dir: string, hash: string): Promise<boolean> {
  const f = join(dir, STAMP_FILE);
  if (!existsSync(f)) return false;
  try {
    const s: Stamp = JSON.parse(await readFile(f, 'utf8'));
    if (s.generator_sha256 !== hash) return false;
    for (const [rel, size] of Object.entries(s.files)) {
      const p = join(dir, rel);
      if (!existsSync(p) || statSync(p).size !== size) return false;
    }
    return Object.keys(s.files).length > 0;
  } catch {
    return false;
  }
}

async function writeStamp(dir: string, hash: string, params: unknown): Promise<void> {
  const files: Record<string, number> = {};
  for (const rel of listFiles(dir)) files[rel] = (await stat(join(dir, rel))).size;
  const s: Stamp = { generator_sha256: hash, params, files };
  await writeFile(join(dir, STAMP_FILE), JSON.stringify(s, null, 2) + '\n');
}

// ------------------------------------------------------------- GPT-2 writer

/** Write to a temporary name, then rename: a reader never sees half a file. */
async function writeAtomic(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

const sha256Hex = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v, null, 2) + '\n');

let tokenizerCache: ReturnType<typeof buildGpt2TokenizerFiles> | undefined;

/** The Hugging Face config.json of a GPT-2 model. */
export function gpt2HfConfig(c: GPT2Config): Record<string, unknown> {
  return {
    activation_function: 'gelu_new',
    architectures: ['GPT2LMHeadModel'],
    attn_pdrop: 0.1,
    bos_token_id: GPT2_EOS_ID,
    embd_pdrop: 0.1,
    eos_token_id: GPT2_EOS_ID,
    initializer_range: 0.02,
    layer_norm_epsilon: c.layer_norm_epsilon,
    model_type: 'gpt2',
    n_ctx: c.n_positions,
    n_embd: c.n_embd,
    n_head: c.n_head,
    n_inner: null,
    n_layer: c.n_layer,
    n_positions: c.n_positions,
    reorder_and_upcast_attn: false,
    resid_pdrop: 0.1,
    scale_attn_by_inverse_layer_idx: false,
    scale_attn_weights: true,
    tie_word_embeddings: true,
    use_cache: true,
    vocab_size: c.vocab_size,
    'transformers.js_config': { dtype: 'fp32' },
  };
}

/**
 * Writes a complete GPT-2 model directory (config.json, tokenizer.json,
 * tokenizer_config.json, generation_config.json, onnx/model.onnx,
 * statecart.json). Returns statecart.json's content.
 */
export async function writeGpt2Model(outDir: string, id: string, weights: GPT2Weights, weightSource: Record<string, unknown>) {
  const c = weights.config;
  if (c.vocab_size !== 50257) throw new Error(`${id}: the GPT-2 tokenizer needs vocab_size 50257, got ${c.vocab_size}`);
  tokenizerCache ??= buildGpt2TokenizerFiles(1024);
  const tok = tokenizerCache;
  const onnxBytes = buildGpt2Onnx(weights);
  const statecart = {
    id,
    arch: 'gpt2' as const,
    config: { n_layer: c.n_layer, n_head: c.n_head, n_embd: c.n_embd, n_positions: c.n_positions, vocab_size: c.vocab_size },
    dtype: 'fp32' as const,
    weights_sha256: sha256Hex(onnxBytes),
    tokenizer_sha256: sha256Hex(tok.tokenizerJson),
    weight_source: weightSource,
  };
  await mkdir(join(outDir, 'onnx'), { recursive: true });
  await writeAtomic(join(outDir, 'config.json'), json(gpt2HfConfig(c)));
  await writeAtomic(join(outDir, 'generation_config.json'), json({ bos_token_id: GPT2_EOS_ID, eos_token_id: GPT2_EOS_ID }));
  await writeAtomic(join(outDir, 'tokenizer.json'), tok.tokenizerJson);
  await writeAtomic(join(outDir, 'tokenizer_config.json'), tok.tokenizerConfigJson);
  await writeAtomic(join(outDir, 'onnx', 'model.onnx'), onnxBytes);
  await writeAtomic(join(outDir, 'statecart.json'), json(statecart));
  return statecart;
}

// ------------------------------------------------------------------ builds

async function buildMamba(outDir: string, preset: MambaPreset['preset'], safetensorsPath?: string): Promise<void> {
  await mkdir(outDir, { recursive: true });
  await writeMambaModel(outDir, safetensorsPath ? { preset, safetensorsPath } : { preset });
}

export interface EnsureResult {
  id: string;
  dir: string;
  built: boolean;
  seconds: number;
}

async function ensureOne(id: string, dir: string, params: unknown, arch: 'gpt2' | 'mamba', build: () => Promise<void>, force: boolean): Promise<EnsureResult> {
  const t0 = performance.now();
  const hash = await generatorHash(arch, params);
  if (!force && (await stampIsCurrent(dir, hash))) return { id, dir, built: false, seconds: (performance.now() - t0) / 1000 };
  await rm(join(dir, STAMP_FILE), { force: true });
  await mkdir(dir, { recursive: true });
  await build();
  await writeStamp(dir, hash, params);
  return { id, dir, built: true, seconds: (performance.now() - t0) / 1000 };
}

/** Builds (or finds up to date) one preset model into `outDir`. */
export async function buildModel(id: string, outDir: string, opts: { force?: boolean } = {}): Promise<EnsureResult> {
  const p = PRESETS[id];
  if (!p) throw new Error(`unknown model id "${id}" (known: ${MODEL_IDS.join(', ')})`);
  if (p.arch === 'gpt2') {
    const params = { id, arch: 'gpt2', config: p.config, seed: p.seed, scale: p.scale };
    return ensureOne(
      id,
      outDir,
      params,
      'gpt2',
      async () => {
        const w = seededGpt2Weights(p.config, { seed: p.seed, scale: p.scale });
        await writeGpt2Model(outDir, id, w, seededSourceInfo({ seed: p.seed, scale: p.scale }));
      },
      !!opts.force,
    );
  }
  const params = { id, arch: 'mamba', preset: p.preset };
  return ensureOne(id, outDir, params, 'mamba', () => buildMamba(outDir, p.preset), !!opts.force);
}

/**
 * Makes sure each model in `ids` exists and is up to date. With `outRoot`,
 * every model goes to `<outRoot>/<id>`; without, small ones to public/models
 * and big ones to .cache/models.
 */
export async function ensureModels(ids: string[], outRoot?: string, opts: { force?: boolean; log?: (s: string) => void } = {}): Promise<EnsureResult[]> {
  const out: EnsureResult[] = [];
  for (const id of ids) {
    const r = await buildModel(id, defaultModelDir(id, outRoot), opts);
    opts.log?.(`${id}: ${r.built ? `built in ${r.seconds.toFixed(1)} s` : 'up to date'} → ${relative(process.cwd(), r.dir) || '.'}`);
    out.push(r);
  }
  return out;
}

async function safetensorsArch(path: string): Promise<'gpt2' | 'mamba'> {
  const { open } = await import('node:fs/promises');
  const fh = await open(path, 'r');
  try {
    const head = new Uint8Array(8);
    await fh.read(head, 0, 8, 0);
    const n = Number(new DataView(head.buffer).getBigUint64(0, true));
    const hdr = new Uint8Array(Math.min(n, 100_000_000));
    await fh.read(hdr, 0, hdr.length, 8);
    const keys = Object.keys(JSON.parse(new TextDecoder().decode(hdr)));
    if (keys.some((k) => k.includes('mixer.') || k.startsWith('backbone.'))) return 'mamba';
    if (keys.some((k) => /(^|\.)wte\.weight$/.test(k))) return 'gpt2';
    throw new Error(`${path}: neither a GPT-2 nor a Mamba checkpoint`);
  } finally {
    await fh.close();
  }
}

/**
 * Builds a model from a Hugging Face layout `model.safetensors` (GPT-2:
 * `h.N.attn.c_attn.weight` …, optional `transformer.` prefix; Mamba:
 * delegated to mamba-model.ts as the mamba-130m-shape preset).
 */
export async function buildFromSafetensors(path: string, id: string, outDir: string, opts: { n_head?: number; force?: boolean } = {}): Promise<EnsureResult> {
  const abs = resolve(path);
  const bytes = await readFile(abs);
  const fileSha = sha256Hex(bytes);
  const arch = await safetensorsArch(abs);
  const params = { id, arch, safetensors_sha256: fileSha, n_head: opts.n_head ?? null };
  if (arch === 'mamba') return ensureOne(id, outDir, params, 'mamba', () => buildMamba(outDir, 'mamba-130m-shape', abs), !!opts.force);
  return ensureOne(
    id,
    outDir,
    params,
    'gpt2',
    async () => {
      const { weights, info } = await gpt2WeightsFromSafetensors(abs, opts.n_head ? { n_head: opts.n_head } : {});
      await writeGpt2Model(outDir, id, weights, info);
    },
    !!opts.force,
  );
}

// --------------------------------------------------------------------- CLI

function parseArgs(argv: string[]) {
  const a: { models?: string[]; out?: string; from?: string; id?: string; nHead?: number; force: boolean } = { force: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === '--models')
      a.models = v()
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    else if (k === '--out') a.out = v();
    else if (k === '--from-safetensors') a.from = v();
    else if (k === '--id') a.id = v();
    else if (k === '--n-head') a.nHead = Number(v());
    else if (k === '--force') a.force = true;
    else if (k === '--help' || k === '-h') {
      console.log('usage: make-models.ts [--models id,id] [--out DIR] [--force] | --from-safetensors FILE --id NAME [--out DIR] [--n-head N]');
      console.log(`models: ${MODEL_IDS.join(', ')}`);
      process.exit(0);
    } else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const log = (s: string) => console.log(`[make-models] ${s}`);
  if (a.from) {
    if (!a.id) throw new Error('--from-safetensors needs --id NAME');
    const dir = join(resolve(a.out ?? CACHE_MODELS), a.id);
    const r = await buildFromSafetensors(a.from, a.id, dir, { n_head: a.nHead, force: a.force });
    log(`${a.id}: ${r.built ? `built in ${r.seconds.toFixed(1)} s` : 'up to date'} → ${relative(process.cwd(), r.dir)}`);
    return;
  }
  await ensureModels(a.models ?? defaultModelIds(), a.out, { force: a.force, log });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`[make-models] ${e instanceof Error ? (e.stack ?? e.message) : e}`);
    process.exit(1);
  });
}
