/**
 * Model files from the Hugging Face Hub, or a Hub-shaped mirror
 * (docs/hub-mirror.md): each file is downloaded once, with progress and
 * cancel, into the Cache API (so a later visit downloads nothing), and the
 * runtime (transformers.js) reads it from there through `RuntimeFileCache`,
 * which hashes the bytes as they pass: the fingerprint is the digest of the
 * exact bytes a session was built from, and no file is fetched twice.
 *
 * Works wherever `fetch` and streams do (a worker, a page, Node 20); without
 * the Cache API (Node, an insecure page) the files are kept in memory.
 */
import { createSHA256 } from 'hash-wasm';
import { Aborted, ModelNotLoaded } from '../core/errors.ts';
import { sha256Hex } from '../core/sha256.ts';
import type { HubFile } from './registry.ts';

/** The three methods of the Cache API used here; a `Cache` fits. */
export interface CacheLike {
  match(key: string): Promise<Response | undefined>;
  put(key: string, res: Response): Promise<void>;
  delete(key: string): Promise<boolean>;
}

/** The Cache API caches holding downloaded (and converted) model files, and the record of each one's size and digest. */
export const FILES_CACHE = 'statecart-model-files-v1';
export const FILES_META_CACHE = 'statecart-model-files-v1-meta';

export interface FileInfo {
  size: number;
  /** sha256 hex of the bytes as they were stored. */
  sha256: string;
}

/** A Map with the Cache API's methods, for where there is none. */
export class MemoryCache implements CacheLike {
  private readonly m = new Map<string, { bytes: Uint8Array; headers: [string, string][] }>();

  async match(key: string): Promise<Response | undefined> {
    const e = this.m.get(key);
    return e ? new Response(e.bytes.slice() as Uint8Array<ArrayBuffer>, { headers: e.headers }) : undefined;
  }

  async put(key: string, res: Response): Promise<void> {
    const bytes = new Uint8Array(await res.arrayBuffer());
    this.m.set(key, { bytes, headers: [...res.headers] });
  }

  async delete(key: string): Promise<boolean> {
    return this.m.delete(key);
  }
}

type HashFn = (bytes: Uint8Array) => void;

/** A stream that passes its chunks on and hashes them; `done` gets the hex digest and byte count at the end. */
async function hashingStream(done: (hex: string, bytes: number) => void, onBytes?: (n: number) => void): Promise<TransformStream<Uint8Array, Uint8Array>> {
  const h = await createSHA256();
  h.init();
  let n = 0;
  const update: HashFn = (c) => {
    h.update(c);
    n += c.byteLength;
    onBytes?.(n);
  };
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, ctl) {
      update(chunk);
      ctl.enqueue(chunk);
    },
    flush() {
      done(h.digest('hex'), n);
    },
  });
}

/**
 * Downloaded model files by URL. A file counts as present only when its
 * record (size, digest) was written after its bytes: a download cut short
 * leaves nothing that a later visit would take for the file.
 */
export class ModelFileCache {
  constructor(
    private readonly data: CacheLike,
    private readonly meta: CacheLike,
    /** False when the files live in memory only (no Cache API). */
    readonly persistent: boolean,
  ) {}

  /** The Cache API's caches where there are some, else memory. */
  static async open(): Promise<ModelFileCache> {
    if (typeof caches !== 'undefined') {
      try {
        return new ModelFileCache(await caches.open(FILES_CACHE), await caches.open(FILES_META_CACHE), true);
      } catch {
        // (an opaque origin or a private window may refuse the Cache API)
      }
    }
    return new ModelFileCache(new MemoryCache(), new MemoryCache(), false);
  }

  async info(key: string): Promise<FileInfo | null> {
    const m = await this.meta.match(key);
    if (!m) return null;
    const info = (await m.json()) as FileInfo;
    return (await this.data.match(key)) ? info : null;
  }

  /** The stored file as a response (its body not yet read). */
  async response(key: string): Promise<Response | undefined> {
    if (!(await this.meta.match(key))) return undefined;
    return this.data.match(key);
  }

  async bytes(key: string): Promise<Uint8Array | undefined> {
    const r = await this.response(key);
    return r ? new Uint8Array(await r.arrayBuffer()) : undefined;
  }

  /** Stores a stream, hashing it as it goes; `size`, when known, is checked. */
  async store(
    key: string,
    body: ReadableStream<Uint8Array>,
    o: { size?: number; contentType?: string; onBytes?: (n: number) => void } = {},
  ): Promise<FileInfo> {
    let got: { sha256: string; size: number } | null = null;
    const t = await hashingStream((sha256, size) => (got = { sha256, size }), o.onBytes);
    const headers: Record<string, string> = { 'content-type': o.contentType ?? 'application/octet-stream' };
    if (o.size !== undefined) headers['content-length'] = String(o.size);
    await this.meta.delete(key);
    await this.data.put(key, new Response(body.pipeThrough(t), { headers }));
    const done = got as { sha256: string; size: number } | null;
    if (!done) throw new Error('internal: the stored stream was not read to its end');
    if (o.size !== undefined && done.size !== o.size) {
      await this.data.delete(key);
      throw new Error(`got ${done.size} bytes of ${key}, the server announced ${o.size}`);
    }
    const info: FileInfo = { size: done.size, sha256: done.sha256 };
    await this.meta.put(key, new Response(JSON.stringify(info), { headers: { 'content-type': 'application/json' } }));
    return info;
  }

  async putBytes(key: string, bytes: Uint8Array, contentType?: string): Promise<FileInfo> {
    return this.store(key, new Response(bytes as Uint8Array<ArrayBuffer>).body!, { size: bytes.byteLength, contentType });
  }

  async remove(key: string): Promise<void> {
    await this.meta.delete(key);
    await this.data.delete(key);
  }
}

/** Progress of one file's download (bytes). */
export type FileProgressFn = (p: { file: string; loaded: number; total: number }) => void;

export interface HubRepoOptions {
  /** The Hub or a mirror: `https://huggingface.co/`, `http://127.0.0.1:8080/`. */
  hubUrl: string;
  /** `owner/name`. */
  repo: string;
  revision?: string;
  cache: ModelFileCache;
  /** The model id errors name (`hf:owner/name`). */
  model: string;
  fetch?: typeof fetch;
}

const isAbort = (e: unknown, signal?: AbortSignal): boolean => Boolean(signal?.aborted) || (e instanceof Error && e.name === 'AbortError');

/** One repository at one revision: its files' URLs (as transformers.js forms them), sizes, downloads and cached bytes. */
export class HubRepo {
  readonly hubUrl: string;
  readonly repo: string;
  readonly revision: string;
  /** `<hub>/<repo>/resolve/<revision>/`: transformers.js' remote URL of a file is this plus its path. */
  readonly base: string;
  private readonly fetch: typeof fetch;

  constructor(private readonly o: HubRepoOptions) {
    this.hubUrl = o.hubUrl.endsWith('/') ? o.hubUrl : `${o.hubUrl}/`;
    this.repo = o.repo;
    this.revision = o.revision ?? 'main';
    // transformers.js: pathJoin(remoteHost, '{model}/resolve/{revision}/', file), revision URI-encoded.
    this.base = `${this.hubUrl}${this.repo}/resolve/${encodeURIComponent(this.revision)}/`;
    this.fetch = o.fetch ?? ((...a) => fetch(...a));
  }

  url(path: string): string {
    return this.base + path;
  }

  /** A stored file's size and digest, or null. */
  cached(path: string): Promise<FileInfo | null> {
    return this.o.cache.info(this.url(path));
  }

  /**
   * How many bytes a file is, and whether it is already here: from the cache,
   * else a HEAD (the Hub and the mirror follow an LFS file's redirect to its
   * bytes, whose Content-Length is the size). null: an optional file the
   * repository does not have.
   */
  async size(f: HubFile, signal?: AbortSignal): Promise<{ bytes: number | null; cached: boolean } | null> {
    const c = await this.cached(f.path);
    if (c) return { bytes: c.size, cached: true };
    const res = await this.request(f.path, 'HEAD', signal);
    if (!res.ok) {
      if (f.optional && res.status === 404) return null;
      throw this.failure(f.path, res);
    }
    const n = Number(res.headers.get('x-linked-size') ?? res.headers.get('content-length') ?? Number.NaN);
    return { bytes: Number.isFinite(n) ? n : null, cached: false };
  }

  /**
   * The file, downloaded unless it is stored (with progress, and cancel
   * through `signal`); null for an optional file the repository lacks.
   */
  async ensure(f: HubFile, o: { signal?: AbortSignal; onProgress?: FileProgressFn } = {}): Promise<FileInfo | null> {
    const have = await this.cached(f.path);
    if (have) return have;
    if (o.signal?.aborted) throw new Aborted();
    const res = await this.request(f.path, 'GET', o.signal);
    if (!res.ok) {
      await res.body?.cancel().catch(() => undefined);
      if (f.optional && res.status === 404) return null;
      throw this.failure(f.path, res);
    }
    const len = res.headers.get('content-length');
    // A compressed answer's Content-Length counts compressed bytes, but the stream gives them decoded.
    const total = len && !res.headers.get('content-encoding') ? Number(len) : undefined;
    o.onProgress?.({ file: f.path, loaded: 0, total: total ?? 0 });
    try {
      return await this.o.cache.store(this.url(f.path), res.body!, {
        size: total,
        contentType: res.headers.get('content-type') ?? undefined,
        onBytes: (n) => o.onProgress?.({ file: f.path, loaded: n, total: total ?? n }),
      });
    } catch (e) {
      if (isAbort(e, o.signal)) throw new Aborted();
      throw new ModelNotLoaded({
        model: this.o.model,
        repo: this.repo,
        file: f.path,
        url: this.url(f.path),
        reason: `the download of ${f.path} from ${this.repo} broke off: ${e instanceof Error ? e.message : String(e)}`,
      });
    }
  }

  /** A stored file's bytes (after `ensure`). */
  async read(path: string): Promise<Uint8Array> {
    const b = await this.o.cache.bytes(this.url(path));
    if (!b) throw new ModelNotLoaded({ model: this.o.model, repo: this.repo, file: path, reason: `${path} of ${this.repo} is not downloaded` });
    return b;
  }

  private async request(path: string, method: 'GET' | 'HEAD', signal?: AbortSignal): Promise<Response> {
    try {
      // no-store: the file is kept in our cache; the HTTP cache would hold a second copy (and could resume a cut one behind our back).
      return await this.fetch(this.url(path), { method, signal, cache: 'no-store' });
    } catch (e) {
      if (isAbort(e, signal)) throw new Aborted();
      throw new ModelNotLoaded({
        model: this.o.model,
        repo: this.repo,
        file: path,
        url: this.url(path),
        reason:
          `${this.hubUrl} could not be reached (${e instanceof Error ? e.message : String(e)}). ` +
          'Behind a firewall, serve the files from a Hub mirror (`npm run mirror`, docs/hub-mirror.md) and pass its address as hubUrl (the page: ?hub=<url>).',
      });
    }
  }

  /** A typed error for an answer that is not the file, naming the file and the repository. */
  failure(path: string, res: Response): ModelNotLoaded {
    const code = res.headers.get('x-error-code');
    const url = this.url(path);
    let why: string;
    if (code === 'RepoNotFound' || res.status === 401) why = `${this.hubUrl} has no repository ${this.repo} (or it is private or gated)`;
    else if (code === 'RevisionNotFound') why = `the repository ${this.repo} has no revision ${this.revision}`;
    else if (res.status === 404) why = `the repository ${this.repo} has no file ${path}`;
    else why = `the Hub answered HTTP ${res.status} for ${path} of ${this.repo}`;
    return new ModelNotLoaded({ model: this.o.model, repo: this.repo, file: path, status: res.status, url, reason: `${why} (HTTP ${res.status} for ${url})` });
  }
}

/**
 * The cache transformers.js is given (`env.customCache`): it finds the files
 * `HubRepo` downloaded, and records the sha256 of every file it hands out or
 * is given, as the runtime reads it. A page's own model files (paths, not
 * URLs) are hashed but not kept: the page serves them, and a kept copy would
 * go stale when they are rebuilt.
 */
export class RuntimeFileCache {
  private readonly digests = new Map<string, string>();
  /** Files held in memory for one load (a page's own model files, fetched once by the host). */
  private readonly held = new Map<string, Uint8Array>();

  constructor(private readonly files: ModelFileCache) {}

  /** Serves `bytes` under `key` until `release`. */
  hold(key: string, bytes: Uint8Array): void {
    this.held.set(key, bytes);
  }

  release(key: string): void {
    this.held.delete(key);
  }

  async match(key: string): Promise<Response | undefined> {
    const mem = this.held.get(key);
    const r = mem
      ? new Response(mem as Uint8Array<ArrayBuffer>, { headers: { 'content-length': String(mem.byteLength) } })
      : /^https?:/.test(key)
        ? await this.files.response(key)
        : undefined;
    if (!r?.body) return r;
    const t = await hashingStream((hex) => this.digests.set(key, hex));
    return new Response(r.body.pipeThrough(t), { status: r.status, headers: r.headers });
  }

  /** A file transformers.js fetched itself: a page's model file, or a Hub file nobody downloaded first (kept). */
  async put(key: string, res: Response): Promise<void> {
    const bytes = new Uint8Array(await res.arrayBuffer());
    this.digests.set(key, await sha256Hex(bytes));
    if (/^https?:/.test(key)) await this.files.putBytes(key, bytes, res.headers.get('content-type') ?? undefined);
  }

  async delete(key: string): Promise<boolean> {
    if (/^https?:/.test(key)) await this.files.remove(key);
    return this.digests.delete(key);
  }

  /** sha256 hex of the bytes of `key` as the runtime last read them; undefined if it did not read them through here. */
  digest(key: string): string | undefined {
    return this.digests.get(key);
  }
}

/**
 * transformers.js' `ModelFileNotFoundError` (a file it fetched itself was
 * missing) as statecart's typed error, naming the file and the repository.
 */
export function fromRuntimeError(e: unknown, model: string): unknown {
  if (!(e instanceof Error) || e.name !== 'ModelFileNotFoundError') return e;
  const url = /"([^"]+)"/.exec(e.message)?.[1];
  const m = url ? /\/([^/]+\/[^/]+)\/resolve\/[^/]+\/(.+)$/.exec(url) : null;
  const status = (e as { status?: number }).status ?? undefined;
  return new ModelNotLoaded({
    model,
    reason: m ? `the repository ${m[1]} has no file ${m[2]} (${e.message})` : e.message,
    ...(m ? { repo: m[1]!, file: m[2]! } : {}),
    ...(url ? { url } : {}),
    ...(status ? { status } : {}),
  });
}

/**
 * A file of the page's own (a local model), fetched once with progress and
 * cancel; the host holds it in `RuntimeFileCache` for transformers.js, which
 * would otherwise fetch it itself, twice when asked for progress (once for
 * its size, once for the bytes).
 */
export async function fetchWithProgress(
  url: string,
  o: { signal?: AbortSignal; onProgress?: (loaded: number, total: number) => void; optional?: boolean; fetch?: typeof fetch } = {},
): Promise<Uint8Array | null> {
  let res: Response;
  try {
    res = await (o.fetch ?? fetch)(url, { signal: o.signal });
  } catch (e) {
    if (isAbort(e, o.signal)) throw new Aborted();
    throw new ModelNotLoaded({ url, reason: `could not fetch ${url}: ${e instanceof Error ? e.message : String(e)}` });
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    if (o.optional && res.status === 404) return null;
    throw new ModelNotLoaded({
      url,
      status: res.status,
      reason: `could not fetch ${url} (HTTP ${res.status}). Run \`npm run models\` to generate the local models.`,
    });
  }
  const total = Number(res.headers.get('content-length') ?? 0) || 0;
  const chunks: Uint8Array[] = [];
  let n = 0;
  const reader = res.body!.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      n += value.byteLength;
      o.onProgress?.(n, total || n);
    }
  } catch (e) {
    if (isAbort(e, o.signal)) throw new Aborted();
    throw new ModelNotLoaded({ url, reason: `the download of ${url} broke off: ${e instanceof Error ? e.message : String(e)}` });
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
