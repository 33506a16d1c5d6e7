import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { AutoConfig, AutoTokenizer, env } from '@huggingface/transformers';
import { lfsPointer, parseRange, startMirror, type Mirror } from '../../scripts/mirror.ts';
import { GPT2_REPO, MAMBA_REPO, makeHubRepos } from '../../scripts/make-hub-repos.ts';
import { readSafetensors } from '../../src/formats/safetensors.ts';
import { buildMambaModel, convertMambaCheckpoint } from '../../src/models/mamba-build.ts';

let tmp: string;
let root: string;
let mirror: Mirror;

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const gitOid = (b: Uint8Array) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) & 255);

/** A request with the path exactly as given (fetch would normalise `..` away). */
function raw(path: string, method = 'GET'): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  const u = new URL(mirror.url);
  return new Promise((ok, fail) => {
    const req = request({ host: u.hostname, port: u.port, path, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => ok({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', fail);
    req.end();
  });
}

const small = bytes(1000, 1);
const big = bytes(5000, 2);
const weights = bytes(3000, 3);
const v1 = bytes(700, 4);

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'statecart-mirror-'));
  root = join(tmp, 'hub');
  // A hand-made repository for the edge cases, and the generated Hub-layout ones.
  const repo = join(root, 'acme', 'small');
  mkdirSync(join(repo, 'sub', 'dir'), { recursive: true });
  writeFileSync(join(repo, 'a.txt'), small);
  writeFileSync(join(repo, 'big.dat'), big); // over the test's LFS threshold
  writeFileSync(join(repo, 'weights.safetensors'), weights); // LFS by .gitattributes
  writeFileSync(join(repo, 'empty.json'), new Uint8Array(0));
  writeFileSync(join(repo, 'sub', 'dir', 'file.json'), '{"x": 1}\n');
  mkdirSync(join(root, 'acme', 'small@v1'), { recursive: true });
  writeFileSync(join(root, 'acme', 'small@v1', 'a.txt'), v1);
  writeFileSync(join(tmp, 'secret.txt'), 'do not serve');
  writeFileSync(join(root, 'secret.txt'), 'do not serve either');
  await makeHubRepos({ out: root });
  mirror = await startMirror({ root, lfsMinBytes: 4096 });
});

afterAll(async () => {
  await mirror?.close();
  rmSync(tmp, { recursive: true, force: true });
});

const url = (p: string) => mirror.url + p;

describe('the mirror answers like the Hub', () => {
  it('HEAD and GET of a small file: 200, content-length, the git blob id as ETag, the commit', async () => {
    const h = await fetch(url('acme/small/resolve/main/a.txt'), { method: 'HEAD' });
    expect(h.status).toBe(200);
    expect(h.headers.get('content-length')).toBe('1000');
    expect(h.headers.get('etag')).toBe(`"${gitOid(small)}"`);
    expect(h.headers.get('accept-ranges')).toBe('bytes');
    expect(h.headers.get('x-repo-commit')).toMatch(/^[0-9a-f]{40}$/);
    expect((await h.arrayBuffer()).byteLength).toBe(0);
    const g = await fetch(url('acme/small/resolve/main/sub/dir/file.json'));
    expect(g.status).toBe(200);
    expect(g.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await g.text()).toBe('{"x": 1}\n');
    expect(g.headers.get('x-repo-commit')).toBe(h.headers.get('x-repo-commit'));
  });

  it('an LFS file: 302 to a content-addressed URL with X-Linked-Size / X-Linked-ETag, as the Hub redirects to its CDN', async () => {
    for (const [file, data] of [
      ['weights.safetensors', weights],
      ['big.dat', big],
    ] as const) {
      const h = await fetch(url(`acme/small/resolve/main/${file}`), { method: 'HEAD', redirect: 'manual' });
      expect(h.status, file).toBe(302);
      expect(h.headers.get('x-linked-size')).toBe(String(data.length));
      expect(h.headers.get('x-linked-etag')).toBe(`"${sha256(data)}"`);
      // The resolve URL's own ETag is the LFS pointer's blob id, as on the Hub.
      expect(h.headers.get('etag')).toBe(`"${gitOid(new TextEncoder().encode(lfsPointer(sha256(data), data.length)))}"`);
      expect(h.headers.get('location')).toContain(`/cdn-lfs/repos/acme/small/${sha256(data)}?`);
      // fetch follows the redirect for HEAD too and ends on the bytes' size.
      const f = await fetch(url(`acme/small/resolve/main/${file}`), { method: 'HEAD' });
      expect(f.status).toBe(200);
      expect(f.headers.get('content-length')).toBe(String(data.length));
      expect(f.url).toContain('/cdn-lfs/');
      const g = await fetch(url(`acme/small/resolve/main/${file}`));
      expect(new Uint8Array(await g.arrayBuffer())).toEqual(data);
      expect(g.headers.get('etag')).toBe(`"${sha256(data)}"`);
    }
    // The generated repositories' weights are LFS files too (*.onnx, *.safetensors).
    const onnx = await fetch(url(`${GPT2_REPO}/resolve/main/onnx/model_quantized.onnx`), { method: 'HEAD', redirect: 'manual' });
    expect(onnx.status).toBe(302);
    const cfg = await fetch(url(`${GPT2_REPO}/resolve/main/config.json`), { method: 'HEAD', redirect: 'manual' });
    expect(cfg.status).toBe(200);
  });

  it('Range: 206 with content-range, suffix and open ranges, 416 when unsatisfiable, ignored for HEAD', async () => {
    const get = (p: string, range: string, init: RequestInit = {}) => fetch(url(p), { ...init, headers: { Range: range } });
    let r = await get('acme/small/resolve/main/a.txt', 'bytes=0-0');
    expect(r.status).toBe(206);
    expect(r.headers.get('content-range')).toBe('bytes 0-0/1000');
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(small.subarray(0, 1));
    r = await get('acme/small/resolve/main/a.txt', 'bytes=10-19');
    expect(r.headers.get('content-length')).toBe('10');
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(small.subarray(10, 20));
    r = await get('acme/small/resolve/main/a.txt', 'bytes=-5');
    expect(r.headers.get('content-range')).toBe('bytes 995-999/1000');
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(small.subarray(995));
    r = await get('acme/small/resolve/main/a.txt', 'bytes=990-');
    expect(r.headers.get('content-range')).toBe('bytes 990-999/1000');
    r = await get('acme/small/resolve/main/a.txt', 'bytes=990-5000');
    expect(r.headers.get('content-range')).toBe('bytes 990-999/1000');
    await r.arrayBuffer();
    for (const bad of ['bytes=1000-', 'bytes=5000-6000', 'bytes=-0']) {
      r = await get('acme/small/resolve/main/a.txt', bad);
      expect(r.status, bad).toBe(416);
      expect(r.headers.get('content-range')).toBe('bytes */1000');
      await r.arrayBuffer();
    }
    // An empty file has no byte 0: what transformers.js' metadata probe expects.
    r = await get('acme/small/resolve/main/empty.json', 'bytes=0-0');
    expect(r.status).toBe(416);
    // Several ranges, or none we parse: the whole file.
    r = await get('acme/small/resolve/main/a.txt', 'bytes=0-1,5-6');
    expect(r.status).toBe(200);
    expect((await r.arrayBuffer()).byteLength).toBe(1000);
    r = await get('acme/small/resolve/main/a.txt', 'bytes=0-1', { method: 'HEAD' });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-length')).toBe('1000');
    // Through the LFS redirect the Range reaches the bytes.
    mirror.reset();
    r = await get('acme/small/resolve/main/big.dat', 'bytes=-3');
    expect(r.status).toBe(206);
    expect(r.headers.get('content-range')).toBe('bytes 4997-4999/5000');
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(big.subarray(4997));
    expect(mirror.log.map((e) => [e.status, e.range])).toEqual([
      [302, 'bytes=-3'],
      [206, 'bytes=-3'],
    ]);
    expect(parseRange('bytes=5-2', 10)).toBeNull();
    expect(parseRange('items=0-1', 10)).toBeNull();
  });

  it('If-None-Match with the current ETag: 304', async () => {
    const h = await fetch(url('acme/small/resolve/main/a.txt'), { method: 'HEAD' });
    const r = await fetch(url('acme/small/resolve/main/a.txt'), { headers: { 'If-None-Match': h.headers.get('etag')! } });
    expect(r.status).toBe(304);
  });

  it('404 with the Hub error code: a missing file, repository or revision', async () => {
    let r = await fetch(url('acme/small/resolve/main/nope.json'));
    expect(r.status).toBe(404);
    expect(r.headers.get('x-error-code')).toBe('EntryNotFound');
    expect(r.headers.get('x-error-message')).toBe('Entry not found');
    expect(r.headers.get('x-repo-commit')).toMatch(/^[0-9a-f]{40}$/);
    expect(await r.text()).toBe('Entry not found');
    r = await fetch(url('acme/small/resolve/main/sub'), { method: 'HEAD' }); // a folder is no file
    expect(r.status).toBe(404);
    expect(r.headers.get('x-error-code')).toBe('EntryNotFound');
    r = await fetch(url('acme/missing/resolve/main/config.json'));
    expect(r.status).toBe(404);
    expect(r.headers.get('x-error-code')).toBe('RepoNotFound');
    expect(await r.json()).toEqual({ error: 'Repository not found' });
    r = await fetch(url('acme/small/resolve/v2/a.txt'));
    expect(r.status).toBe(404);
    expect(r.headers.get('x-error-code')).toBe('RevisionNotFound');
    expect(r.headers.get('x-error-message')).toBe('Invalid rev id: v2');
    await r.arrayBuffer();
  });

  it('revisions: a <name>@<rev> folder, and the commit id in place of the branch', async () => {
    const main = await fetch(url('acme/small/resolve/main/a.txt'), { method: 'HEAD' });
    const commit = main.headers.get('x-repo-commit')!;
    const r = await fetch(url('acme/small/resolve/v1/a.txt'));
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(v1);
    expect(r.headers.get('x-repo-commit')).not.toBe(commit);
    const byCommit = await fetch(url(`acme/small/resolve/${commit}/a.txt`));
    expect(new Uint8Array(await byCommit.arrayBuffer())).toEqual(small);
    const info = await (await fetch(url('api/models/acme/small'))).json();
    expect(info.sha).toBe(commit);
    expect(info.siblings.map((s: { rfilename: string }) => s.rfilename)).toEqual([
      'a.txt',
      'big.dat',
      'empty.json',
      'sub/dir/file.json',
      'weights.safetensors',
    ]);
    const at = await (await fetch(url('api/models/acme/small/revision/v1'))).json();
    expect(at.siblings).toEqual([{ rfilename: 'a.txt' }]);
  });

  it('never leaves its folder: `..`, encoded dots and slashes, bad repository ids', async () => {
    for (const p of [
      '/acme/small/resolve/main/../../../secret.txt',
      '/acme/small/resolve/main/../../../../secret.txt',
      '/acme/small/resolve/main/%2e%2e/%2e%2e/%2e%2e/secret.txt',
      '/acme/small/resolve/main/..%2f..%2f..%2fsecret.txt',
      '/acme/small/resolve/main/sub%2fdir%2ffile.json',
      '/acme/small/resolve/main/a.txt%00',
      '/../hub/resolve/main/secret.txt',
      '/acme/..%2f..%2f/resolve/main/secret.txt',
      '/.stamps/x/resolve/main/a.txt',
    ]) {
      const r = await raw(p);
      expect([400, 404], p).toContain(r.status);
      expect(r.body.toString()).not.toContain('do not serve');
    }
    expect((await raw('/acme/small/resolve/main/../../../secret.txt')).status).toBe(400);
    // The log keeps the path as sent.
    expect(mirror.log.some((e) => e.path === '/acme/small/resolve/main/../../../secret.txt' && e.status === 400)).toBe(true);
  });

  it('CORS: readable from another origin, preflight answered, resources usable under COEP', async () => {
    for (const p of ['acme/small/resolve/main/a.txt', 'acme/small/resolve/main/nope', 'acme/small/resolve/main/big.dat']) {
      const r = await fetch(url(p), { headers: { Origin: 'http://127.0.0.1:5173' } });
      expect(r.headers.get('access-control-allow-origin'), p).toBe('*');
      expect(r.headers.get('cross-origin-resource-policy')).toBe('cross-origin');
      const expose = r.headers.get('access-control-expose-headers')!.toLowerCase().split(',');
      for (const h of ['x-repo-commit', 'x-error-code', 'x-linked-size', 'x-linked-etag', 'etag', 'content-range', 'accept-ranges'])
        expect(expose).toContain(h);
      await r.arrayBuffer();
    }
    const pre = await fetch(url('acme/small/resolve/main/big.dat'), {
      method: 'OPTIONS',
      headers: { Origin: 'http://127.0.0.1:5173', 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'range' },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('*');
    expect(pre.headers.get('access-control-allow-methods')).toContain('GET');
    expect(pre.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('range');
  });

  it('logs every request (method, path, status, range) until reset', async () => {
    mirror.reset();
    expect(mirror.log).toEqual([]);
    await (await fetch(url('acme/small/resolve/main/a.txt'), { headers: { Range: 'bytes=1-2' } })).arrayBuffer();
    await (await fetch(url('acme/small/resolve/main/weights.safetensors'), { method: 'HEAD' })).arrayBuffer();
    await (await fetch(url('acme/small/resolve/main/nope'))).arrayBuffer();
    expect(mirror.log.map(({ method, path, status, range }) => ({ method, path, status, range }))).toEqual([
      { method: 'GET', path: '/acme/small/resolve/main/a.txt', status: 206, range: 'bytes=1-2' },
      { method: 'HEAD', path: '/acme/small/resolve/main/weights.safetensors', status: 302, range: undefined },
      { method: 'HEAD', path: `/cdn-lfs/repos/acme/small/${sha256(weights)}`, status: 200, range: undefined },
      { method: 'GET', path: '/acme/small/resolve/main/nope', status: 404, range: undefined },
    ]);
    expect(mirror.log[0]!.bytes).toBe(2);
  });

  it('a missing file or repository reaches transformers.js as its typed ModelFileNotFoundError naming both', async () => {
    env.remoteHost = mirror.url;
    env.allowRemoteModels = true;
    env.allowLocalModels = false;
    env.useBrowserCache = false;
    env.cacheDir = join(tmp, 'tjs-cache');
    for (const repo of ['acme/small', 'acme/missing']) {
      mirror.reset();
      const err = await AutoConfig.from_pretrained(repo).then(
        () => null,
        (e: unknown) => e as Error & { status?: number },
      );
      expect(err).toBeInstanceOf(Error);
      expect(err!.name).toBe('ModelFileNotFoundError');
      expect(err!.status).toBe(404);
      expect(err!.message).toContain(`${repo}/resolve/main/config.json`);
      expect(mirror.log.map((e) => e.status)).toEqual([404]);
    }
    // transformers.js 4.3.1 treats a missing tokenizer_config.json as optional and then fails with a
    // TypeError (reading tokenizer_class of undefined): a loader should ask for config.json first.
    const tokErr = await AutoTokenizer.from_pretrained('acme/missing').catch((e: unknown) => e as Error);
    expect(tokErr).toBeInstanceOf(TypeError);
  });
});

describe('Hub-layout test repositories (scripts/make-hub-repos.ts)', () => {
  const list = (dir: string) =>
    readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => relative(dir, join(e.parentPath, e.name)))
      .sort();

  it('have the real repositories’ file names, are byte-identical when rebuilt, and are skipped when up to date', async () => {
    expect(list(join(root, GPT2_REPO))).toEqual(
      [
        '.gitattributes',
        'README.md',
        'config.json',
        'generation_config.json',
        'merges.txt',
        'onnx/model.onnx',
        'onnx/model_fp16.onnx',
        'onnx/model_quantized.onnx',
        'quantize_config.json',
        'special_tokens_map.json',
        'tokenizer.json',
        'tokenizer_config.json',
        'vocab.json',
      ].sort(),
    );
    expect(list(join(root, MAMBA_REPO))).toEqual(
      [
        '.gitattributes',
        'README.md',
        'config.json',
        'generation_config.json',
        'model.safetensors',
        'special_tokens_map.json',
        'tokenizer.json',
        'tokenizer_config.json',
      ].sort(),
    );
    const again = await makeHubRepos({ out: root });
    expect(again.repos.map((r) => r.built)).toEqual([false, false]);
    const other = join(tmp, 'hub2');
    const b = await makeHubRepos({ out: other });
    expect(b.repos.map((r) => r.built)).toEqual([true, true]);
    for (const id of [GPT2_REPO, MAMBA_REPO]) {
      for (const f of list(join(root, id))) expect(Buffer.compare(readFileSync(join(root, id, f)), readFileSync(join(other, id, f))), `${id}/${f}`).toBe(0);
    }
    // A file that changed size is rebuilt.
    writeFileSync(join(other, GPT2_REPO, 'config.json'), '{}');
    expect((await makeHubRepos({ out: other })).repos.map((r) => r.built)).toEqual([true, false]);
  });

  it('Mamba through the mirror: MambaConfig, the Hub’s tensor names, the same weights as the offline tiny-mamba', async () => {
    const config = await (await fetch(url(`${MAMBA_REPO}/resolve/main/config.json`))).json();
    expect(config).toMatchObject({
      model_type: 'mamba',
      architectures: ['MambaForCausalLM'],
      hidden_size: 64,
      num_hidden_layers: 2,
      state_size: 16,
      vocab_size: 50257,
    });
    const st = new Uint8Array(await (await fetch(url(`${MAMBA_REPO}/resolve/main/model.safetensors`))).arrayBuffer());
    const names = [...readSafetensors(st).tensors.keys()];
    expect(names).toContain('backbone.embeddings.weight');
    expect(names).toContain('backbone.layers.1.mixer.in_proj.weight');
    expect(names).toContain('backbone.norm_f.weight');
    const converted = await convertMambaCheckpoint(st, { id: MAMBA_REPO });
    const offline = await buildMambaModel({ preset: 'tiny-mamba' });
    expect(converted.statecart.weights_sha256).toBe(offline.statecart.weights_sha256);
    env.remoteHost = mirror.url;
    env.allowRemoteModels = true;
    env.allowLocalModels = false;
    env.useBrowserCache = false;
    env.cacheDir = join(tmp, 'tjs-cache-mamba');
    const tok = await AutoTokenizer.from_pretrained(MAMBA_REPO);
    expect(tok.encode('Hello world')).toEqual([15496, 995]);
  });
});
