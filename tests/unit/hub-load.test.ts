// Hub models through the Hub-shaped mirror, in Node: each file downloaded
// once into statecart's cache, transformers.js reading them from there (no
// request of its own), fingerprints over the exact bytes loaded, typed errors,
// cancel. The browser path is tests/e2e/hub.spec.ts.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { startMirror, type Mirror } from '../../scripts/mirror.ts';
import { GPT2_REPO, MAMBA_REPO, makeHubRepos } from '../../scripts/make-hub-repos.ts';
import { REPO_ROOT } from '../../scripts/make-models.ts';
import { Aborted, ModelNotLoaded } from '../../src/core/errors.ts';
import { float16ToFloat32, float32ToFloat16 } from '../../src/formats/fp16.ts';
import { stateKey } from '../../src/core/key-chain.ts';
import { loadGpt2 } from '../../src/models/gpt2.ts';
import { fromRuntimeError, HubRepo, ModelFileCache, MemoryCache, RuntimeFileCache } from '../../src/models/hub-files.ts';
import { downloadInfo, prepareHubLoad } from '../../src/models/hub-load.ts';
import { convertMambaCheckpoint } from '../../src/models/mamba-build.ts';
import { createMambaModel, type OrtLike } from '../../src/models/mamba.ts';
import { resolveModelId } from '../../src/models/registry.ts';
import { configureTransformers } from '../../src/models/transformers-env.ts';
import type { StateModel } from '../../src/models/types.ts';

let tmp: string;
let root: string;
let mirror: Mirror;

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const fresh = () => new ModelFileCache(new MemoryCache(), new MemoryCache(), false);
/** The mirror's log as `METHOD path status`, resolve paths shortened to the file. */
const requests = () => mirror.log.map((e) => `${e.method} ${e.path.replace(/^\/[^/]+\/[^/]+\/resolve\/main\//, '')} ${e.status}`);

beforeAll(async () => {
  mkdirSync(join(REPO_ROOT, '.cache'), { recursive: true });
  tmp = mkdtempSync(join(REPO_ROOT, '.cache', 'test-hub-load-'));
  root = join(tmp, 'hub');
  await makeHubRepos({ out: root });
  // A Hub GPT-2 the registry does not know: its architecture comes from config.json.
  cpSync(join(root, GPT2_REPO), join(root, 'acme', 'my-gpt2'), { recursive: true });
  mirror = await startMirror({ root });
}, 120_000);

afterAll(async () => {
  await mirror?.close();
  rmSync(tmp, { recursive: true, force: true });
});

async function hubModel(
  model: string,
  dtype: 'fp32' | 'fp16' | 'q8' | undefined,
  files: ModelFileCache,
  runtime = new RuntimeFileCache(files),
): Promise<StateModel> {
  const ref = resolveModelId(model);
  if (ref.kind !== 'hub') throw new Error('not a hub id');
  const hub = await prepareHubLoad({ model, repo: ref.repo, revision: ref.revision, entry: ref.entry, dtype, hubUrl: mirror.url, files, runtime });
  configureTransformers({ hubUrl: mirror.url, runtime, local: null });
  try {
    return await loadGpt2({ ...hub.context, device: 'cpu', deviceReason: 'Node test' });
  } catch (e) {
    throw fromRuntimeError(e, model);
  }
}

describe('GPT-2 from the Hub (hf:Xenova/gpt2) through the mirror', () => {
  it('downloads each file once, config first; a second load asks nothing; transformers.js reads only from our cache', async () => {
    const files = fresh();
    mirror.reset();
    const a = await hubModel('hf:Xenova/gpt2', 'q8', files);
    const first = requests();
    expect(first[0]).toBe('GET config.json 200');
    for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json'])
      expect(
        first.filter((r) => r === `GET ${f} 200`),
        f,
      ).toHaveLength(1);
    // The LFS file: one redirect, one body; never the fp32 graph; no Range probe, no HEAD.
    expect(first.filter((r) => r === 'GET onnx/model_quantized.onnx 302')).toHaveLength(1);
    expect(first.filter((r) => r.startsWith('GET /cdn-lfs/'))).toHaveLength(1);
    expect(first).toHaveLength(6);
    expect(mirror.log.every((e) => e.method === 'GET' && !e.range)).toBe(true);
    expect(first.some((r) => r.includes('onnx/model.onnx'))).toBe(false);
    // The fingerprint hashes the bytes the session was built from: those of the repository's file.
    const onDisk = readFileSync(join(root, GPT2_REPO, 'onnx/model_quantized.onnx'));
    expect(a.identity).toMatchObject({
      dtype: 'q8',
      weights_sha256: sha256(onDisk),
      tokenizer_sha256: sha256(readFileSync(join(root, GPT2_REPO, 'tokenizer.json'))),
    });
    await a.dispose();

    mirror.reset();
    const b = await hubModel('hf:Xenova/gpt2', 'q8', files);
    expect(requests()).toEqual([]);
    expect(b.fingerprint).toBe(a.fingerprint);
    await b.dispose();
  }, 120_000);

  it('fp32 and q8 of the same repository have different fingerprints and state keys; each runs', async () => {
    const files = fresh();
    const f32 = await hubModel('hf:Xenova/gpt2', 'fp32', files);
    const q8 = await hubModel('hf:Xenova/gpt2', 'q8', files);
    try {
      expect(f32.identity.dtype).toBe('fp32');
      expect(f32.identity.weights_sha256).toBe(sha256(readFileSync(join(root, GPT2_REPO, 'onnx/model.onnx'))));
      expect(f32.identity.tokenizer_sha256).toBe(q8.identity.tokenizer_sha256);
      expect(f32.fingerprint).not.toBe(q8.fingerprint);
      const toks = await f32.tokenize('The cache keys every state by its model and its tokens.');
      expect(await stateKey(f32.fingerprint, toks)).not.toBe(await stateKey(q8.fingerprint, toks));
      const [l32, l8] = [(await f32.prefill(toks)).logits, (await q8.prefill(toks)).logits];
      expect(l32.length).toBe(50257);
      expect(l8.length).toBe(50257);
      // Different numbers (int8 weights), the same model: close, not equal.
      let maxd = 0;
      for (let i = 0; i < l32.length; i++) maxd = Math.max(maxd, Math.abs(l32[i]! - l8[i]!));
      expect(maxd).toBeGreaterThan(0);
      expect(maxd).toBeLessThan(5);
    } finally {
      await f32.dispose();
      await q8.dispose();
    }
  }, 120_000);

  it('fp16 runs: its float16 KV cache is stored as float32, continued exactly, under its own keys', async () => {
    const files = fresh();
    const f32 = await hubModel('hf:Xenova/gpt2', 'fp32', files);
    const f16 = await hubModel('hf:Xenova/gpt2', 'fp16', files);
    try {
      expect(f16.identity.dtype).toBe('fp16');
      expect(f16.identity.weights_sha256).toBe(sha256(readFileSync(join(root, GPT2_REPO, 'onnx/model_fp16.onnx'))));
      expect(f16.fingerprint).not.toBe(f32.fingerprint);
      const toks = await f16.tokenize('The cache keys every state by its model and its tokens, and the same text twice is one state.');
      const whole = await f16.prefill(toks);
      // A stored fp16 state is plain float32 arrays (every value a float16 one).
      const t0 = whole.state.tensors[0]!;
      expect(t0.data).toBeInstanceOf(Float32Array);
      expect(Array.from(float16ToFloat32(float32ToFloat16(t0.data)))).toEqual(Array.from(t0.data));
      // Continuing from the first part's state equals computing it all.
      const part = await f16.prefill(toks.slice(0, 9));
      const rest = await f16.prefill(toks.slice(9), part.state);
      let d = 0;
      for (let i = 0; i < whole.logits.length; i++) d = Math.max(d, Math.abs(whole.logits[i]! - rest.logits[i]!));
      expect(d).toBeLessThan(0.05);
      // Close to fp32, not equal.
      const l32 = (await f32.prefill(toks)).logits;
      let e = 0;
      for (let i = 0; i < l32.length; i++) e = Math.max(e, Math.abs(l32[i]! - whole.logits[i]!));
      expect(e).toBeGreaterThan(0);
      expect(e).toBeLessThan(0.5);
    } finally {
      await f32.dispose();
      await f16.dispose();
    }
  }, 120_000);

  it('an unknown hf: repository whose config.json says gpt2 loads too, with the same fingerprint as the same files elsewhere', async () => {
    const files = fresh();
    const known = await hubModel('hf:Xenova/gpt2', 'fp32', files);
    const other = await hubModel('hf:acme/my-gpt2', undefined, files);
    expect(other.id).toBe('hf:acme/my-gpt2');
    expect(other.fingerprint).toBe(known.fingerprint);
    await known.dispose();
    await other.dispose();
  }, 120_000);
});

describe('what a load would download, asked before it', () => {
  it('HEAD requests give each file’s size; once kept, nothing is asked and it says cached', async () => {
    const files = fresh();
    mirror.reset();
    const before = await downloadInfo('hf:Xenova/gpt2', { dtype: 'q8', hubUrl: mirror.url, files });
    expect(requests().every((r) => r.startsWith('HEAD ') || r.startsWith('GET /cdn-lfs') === false)).toBe(true);
    expect(mirror.log.filter((e) => e.method === 'GET')).toHaveLength(0);
    const onnx = before.files.find((f) => f.path === 'onnx/model_quantized.onnx')!;
    expect(onnx).toEqual({ path: 'onnx/model_quantized.onnx', bytes: readFileSync(join(root, GPT2_REPO, 'onnx/model_quantized.onnx')).length, cached: false });
    expect(before.cached).toBe(false);
    expect(before.downloadBytes).toBe(before.files.reduce((a, f) => a + f.bytes!, 0));
    await hubModel('hf:Xenova/gpt2', 'q8', files).then((m) => m.dispose());
    mirror.reset();
    const after = await downloadInfo('hf:Xenova/gpt2', { dtype: 'q8', hubUrl: mirror.url, files });
    expect(requests()).toEqual([]);
    expect(after).toMatchObject({ cached: true, downloadBytes: 0, arch: 'gpt2', dtype: 'q8' });
    const local = await downloadInfo('tiny-gpt2', { hubUrl: mirror.url, files });
    expect(local).toMatchObject({ source: 'local', cached: true, files: [] });
  }, 120_000);
});

describe('errors name the file and the repository', () => {
  const errorOf = (p: Promise<unknown>) =>
    p.then(
      () => null,
      (e: unknown) => e as ModelNotLoaded,
    );

  it('a missing repository, a missing file, a missing dtype file, an unknown id, a pending dtype', async () => {
    const files = fresh();
    const repoErr = await errorOf(hubModel('hf:acme/missing', undefined, files));
    expect(repoErr).toBeInstanceOf(ModelNotLoaded);
    expect(repoErr!.details).toMatchObject({ model: 'hf:acme/missing', repo: 'acme/missing', file: 'config.json', status: 404 });
    expect(repoErr!.message).toContain('has no repository acme/missing');

    // A repository without its q8 graph.
    cpSync(join(root, GPT2_REPO), join(root, 'acme', 'no-q8'), { recursive: true });
    rmSync(join(root, 'acme', 'no-q8', 'onnx', 'model_quantized.onnx'));
    const fileErr = await errorOf(hubModel('hf:acme/no-q8', 'q8', files));
    expect(fileErr).toBeInstanceOf(ModelNotLoaded);
    expect(fileErr!.details).toMatchObject({ repo: 'acme/no-q8', file: 'onnx/model_quantized.onnx', status: 404 });
    expect(fileErr!.message).toContain('acme/no-q8 has no file onnx/model_quantized.onnx');

    const unknown = await errorOf(Promise.resolve().then(() => resolveModelId('Xenova/gpt2')));
    expect(unknown).toBeInstanceOf(ModelNotLoaded);
    expect(unknown!.message).toContain('"hf:Xenova/gpt2"');
    const noDtype = await errorOf(hubModel('hf:Xenova/gpt2', 'q4' as 'q8', files));
    expect(noDtype).toBeInstanceOf(ModelNotLoaded);
    expect(noDtype!.message).toContain('q4');

    // transformers.js' own error for a file it fetched itself, as ours.
    const mapped = fromRuntimeError(
      Object.assign(new Error('Could not locate file: "http://x/Xenova/gpt2/resolve/main/onnx/model_q4.onnx".'), {
        name: 'ModelFileNotFoundError',
        status: 404,
      }),
      'hf:Xenova/gpt2',
    );
    expect(mapped).toBeInstanceOf(ModelNotLoaded);
    expect((mapped as ModelNotLoaded).details).toMatchObject({ repo: 'Xenova/gpt2', file: 'onnx/model_q4.onnx', status: 404 });
  }, 120_000);

  it('a cancelled download throws Aborted and keeps nothing; the next one downloads the whole file', async () => {
    const files = fresh();
    const repo = new HubRepo({ hubUrl: mirror.url, repo: GPT2_REPO, cache: files, model: 'hf:Xenova/gpt2' });
    const ac = new AbortController();
    let seen = 0;
    const err = await repo
      .ensure(
        { path: 'onnx/model.onnx' },
        {
          signal: ac.signal,
          onProgress: (p) => {
            seen = p.loaded;
            if (p.loaded > 0) ac.abort();
          },
        },
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Aborted);
    expect(seen).toBeGreaterThan(0);
    expect(await repo.cached('onnx/model.onnx')).toBeNull();
    const info = await repo.ensure({ path: 'onnx/model.onnx' });
    const disk = readFileSync(join(root, GPT2_REPO, 'onnx/model.onnx'));
    expect(info).toEqual({ size: disk.length, sha256: sha256(disk) });
  }, 120_000);
});

describe('Mamba: the fingerprint covers the graphs', () => {
  it('one changed byte of a graph gives another fingerprint and another state key', async () => {
    const st = new Uint8Array(readFileSync(join(root, MAMBA_REPO, 'model.safetensors')));
    const conv = await convertMambaCheckpoint(st, { id: MAMBA_REPO });
    const tokenizerJson = new Uint8Array(readFileSync(join(root, MAMBA_REPO, 'tokenizer.json')));
    const load = (files: Map<string, Uint8Array>) =>
      createMambaModel({
        ort: ort as unknown as OrtLike,
        baseUrl: 'hub:',
        device: 'cpu',
        fetchBytes: async (url) => {
          const p = url.slice('hub:/'.length);
          const f = p === 'tokenizer.json' ? tokenizerJson : files.get(p);
          if (!f) throw new Error(`no ${p}`);
          return f;
        },
        tokenizer: { encode: () => [], decode: () => '' },
        sessionOptions: { intraOpNumThreads: 1 },
      });
    // The producer name ("statecart…") is a string in the graph: one byte of it changes the file, not what it computes.
    const step = conv.files.get('onnx/step.onnx')!;
    const at = Buffer.from(step).indexOf('statecart');
    expect(at).toBeGreaterThan(0);
    const edited = step.slice();
    edited[at] = 'S'.charCodeAt(0);
    const a = await load(conv.files);
    const b = await load(new Map([...conv.files, ['onnx/step.onnx', edited]]));
    try {
      expect(a.identity.graphs_sha256).toMatch(/^[0-9a-f]{64}$/);
      expect(b.identity.weights_sha256).toBe(a.identity.weights_sha256);
      expect(b.identity.graphs_sha256).not.toBe(a.identity.graphs_sha256);
      expect(b.fingerprint).not.toBe(a.fingerprint);
      const toks = [1, 2, 3];
      expect(await stateKey(b.fingerprint, toks)).not.toBe(await stateKey(a.fingerprint, toks));
      // And the same graphs give the same fingerprint (the digest is of the bytes, nothing else).
      const c = await load(new Map(conv.files));
      expect(c.fingerprint).toBe(a.fingerprint);
      await c.dispose();
    } finally {
      await a.dispose();
      await b.dispose();
    }
  }, 120_000);

  it('the checkpoint is downloaded once; its recorded digest is the file’s', async () => {
    const files = fresh();
    const ref = resolveModelId('hf:state-spaces/mamba-130m-hf');
    if (ref.kind !== 'hub') throw new Error('hub id');
    mirror.reset();
    const hub = await prepareHubLoad({
      model: ref.entry!.id,
      repo: ref.repo,
      revision: ref.revision,
      entry: ref.entry,
      hubUrl: mirror.url,
      files,
      runtime: new RuntimeFileCache(files),
    });
    expect(hub.arch).toBe('mamba');
    expect(requests().filter((r) => r.startsWith('GET /cdn-lfs/'))).toHaveLength(1);
    const disk = readFileSync(join(root, MAMBA_REPO, 'model.safetensors'));
    expect(await hub.context.knownDigest!('model.safetensors')).toBe(sha256(disk));
    await hub.context.derived!.put('x/files.json', new TextEncoder().encode('[]'));
    expect(new TextDecoder().decode(await hub.context.derived!.get('x/files.json'))).toBe('[]');
    mirror.reset();
    await prepareHubLoad({
      model: ref.entry!.id,
      repo: ref.repo,
      revision: ref.revision,
      entry: ref.entry,
      hubUrl: mirror.url,
      files,
      runtime: new RuntimeFileCache(files),
    });
    expect(requests()).toEqual([]);
  }, 120_000);
});
