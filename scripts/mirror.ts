/**
 * A small server that answers like the Hugging Face Hub for the requests
 * transformers.js, huggingface_hub and our loaders make, from a folder of
 * repositories (docs/hub-mirror.md). Used by the tests, and by a person
 * behind a firewall as a mirror:
 *
 *   npm run mirror -- <folder> [--port 8080] [--host 127.0.0.1]
 *
 * The folder holds `<owner>/<name>/<files…>` (revision `main`); a folder
 * `<owner>/<name>@<rev>/` is revision `<rev>` of the same repository. Each
 * repository also answers to its commit id, a hash of its file listing and
 * contents (stable while the files are).
 *
 *   GET|HEAD /{owner}/{name}/resolve/{rev}/{path}   a file, as the Hub's resolve URL
 *   GET|HEAD /cdn-lfs/repos/{owner}/{name}/{sha256}  an LFS file's bytes (the redirect target)
 *   GET|HEAD /api/models/{owner}/{name}[/revision/{rev}]  repo info: sha and siblings
 *   OPTIONS  *                                          CORS preflight
 *
 * Exported: startMirror({ root, port?, host?, bytesPerSecond? }) → { url, close(), log, reset() }.
 * Plain node:http, no dependencies.
 */
import { createHash } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface MirrorOptions {
  /** The folder of `<owner>/<name>/` repositories. */
  root: string;
  /** 0 (the default) picks a free port. */
  port?: number;
  host?: string;
  /** Files at least this big are LFS files whatever .gitattributes says (the Hub refuses plain git files over 10 MB). */
  lfsMinBytes?: number;
  /** Called with one line per request (the CLI prints them). */
  onRequest?: (e: MirrorLogEntry) => void;
  /** Sends file bodies at most this fast (tests of progress and cancel; a slow link). Default: as fast as it goes. */
  bytesPerSecond?: number;
}

export interface MirrorLogEntry {
  method: string;
  /** The URL path, without the query. */
  path: string;
  status: number;
  /** The Range header, when there was one. */
  range?: string;
  /** Body bytes sent. */
  bytes: number;
}

export interface Mirror {
  /** `http://host:port/`, with the trailing slash transformers.js' env.remoteHost has. */
  url: string;
  close(): Promise<void>;
  /** Every request answered since start (or the last reset), in order. */
  log: MirrorLogEntry[];
  reset(): void;
}

const MiB = 1024 * 1024;
export const LFS_MIN_BYTES = 10 * MiB;

/**
 * The `.gitattributes` a new Hub repository starts with (the LFS patterns of
 * huggingface_hub's template); used when a repository has none.
 */
export const DEFAULT_GITATTRIBUTES = [
  '*.7z',
  '*.arrow',
  '*.bin',
  '*.bz2',
  '*.ckpt',
  '*.ftz',
  '*.gz',
  '*.h5',
  '*.joblib',
  '*.lfs',
  '*.mlmodel',
  '*.model',
  '*.msgpack',
  '*.npy',
  '*.npz',
  '*.onnx',
  '*.ot',
  '*.parquet',
  '*.pb',
  '*.pickle',
  '*.pkl',
  '*.pt',
  '*.pth',
  '*.rar',
  '*.safetensors',
  'saved_model/**/*',
  '*.tar.*',
  '*.tar',
  '*.tflite',
  '*.tgz',
  '*.wasm',
  '*.xz',
  '*.zip',
  '*.zst',
  '*tfevents*',
]
  .map((p) => `${p} filter=lfs diff=lfs merge=lfs -text\n`)
  .join('');

/** Headers a browser page may read from a cross-origin answer (the Hub's own list). */
const EXPOSE =
  'X-Repo-Commit,X-Request-Id,X-Error-Code,X-Error-Message,X-Total-Count,ETag,Link,Accept-Ranges,Content-Range,X-Linked-Size,X-Linked-ETag,X-Xet-Hash,Content-Length,Content-Disposition';

// ---------------------------------------------------------------- hashing

interface Digest {
  size: number;
  mtimeMs: number;
  sha256: string;
  /** git's blob id of the content: sha1("blob <size>\0" + bytes). */
  gitOid: string;
}

/** One read of the file gives both digests; cached by path + size + mtime. */
class DigestCache {
  private readonly done = new Map<string, Digest>();
  private readonly pending = new Map<string, Promise<Digest>>();

  async get(path: string, st: Stats): Promise<Digest> {
    const hit = this.done.get(path);
    if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs) return hit;
    const key = `${path}\0${st.size}\0${st.mtimeMs}`;
    let p = this.pending.get(key);
    if (!p) {
      p = new Promise<Digest>((ok, fail) => {
        const s256 = createHash('sha256');
        const s1 = createHash('sha1').update(`blob ${st.size}\0`);
        createReadStream(path)
          .on('data', (c) => {
            s256.update(c);
            s1.update(c);
          })
          .on('error', fail)
          .on('end', () => ok({ size: st.size, mtimeMs: st.mtimeMs, sha256: s256.digest('hex'), gitOid: s1.digest('hex') }));
      }).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    const d = await p;
    this.done.set(path, d);
    return d;
  }
}

const gitBlobOid = (text: string): string => {
  const b = Buffer.from(text);
  return createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
};

/** The pointer file git-lfs stores in git for an LFS file; the Hub's ETag for the resolve URL is its blob id. */
export function lfsPointer(sha256: string, size: number): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`;
}

// ---------------------------------------------------------------- repositories

/** A repository id part as the Hub allows it (and never '.', '..' or a dotfile). */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

interface RepoFile {
  path: string;
  abs: string;
  st: Stats;
}

interface Snapshot {
  dir: string;
  files: Map<string, RepoFile>;
  lfs: (path: string, size: number) => boolean;
}

function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        i++;
        if (glob[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else re += '.*';
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** The `filter=lfs` patterns of a .gitattributes, as git matches them (no slash: any basename; with one: the whole path). */
export function lfsMatcher(gitattributes: string, minBytes = LFS_MIN_BYTES): (path: string, size: number) => boolean {
  const rules: { re: RegExp; base: boolean }[] = [];
  for (const line of gitattributes.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const [pat, ...attrs] = t.split(/\s+/);
    if (!attrs.includes('filter=lfs')) continue;
    const p = pat!.replace(/^\//, '');
    rules.push({ re: globToRegExp(p), base: !p.includes('/') });
  }
  return (path, size) => size >= minBytes || rules.some((r) => r.re.test(r.base ? path.slice(path.lastIndexOf('/') + 1) : path));
}

async function walk(dir: string, prefix = ''): Promise<RepoFile[]> {
  const out: RepoFile[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name === '.git') continue;
    const abs = join(dir, e.name);
    const path = prefix + e.name;
    const st = await stat(abs).catch(() => null);
    if (!st) continue;
    if (st.isDirectory()) out.push(...(await walk(abs, `${path}/`)));
    else if (st.isFile()) out.push({ path, abs, st });
  }
  return out;
}

// ---------------------------------------------------------------- HTTP helpers

interface Range {
  start: number;
  end: number;
}

/**
 * One `bytes=` range against a file of `size` bytes: a Range, 'unsatisfiable'
 * (416), or null to answer with the whole file (no header, several ranges, or
 * a form we do not parse: ignoring a Range is always allowed).
 */
export function parseRange(header: string | undefined, size: number): Range | 'unsatisfiable' | null {
  if (!header) return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return null;
  const [, a, b] = m;
  if (a === '' && b === '') return null;
  if (a === '') {
    const n = Number(b);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  if (start >= size) return 'unsatisfiable';
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (end < start) return null; // invalid: ignore it
  return { start, end };
}

function contentType(path: string): string {
  if (path.endsWith('.json')) return 'application/json; charset=utf-8';
  if (/\.(txt|md|py|gitattributes)$/.test(path) || path.endsWith('/.gitattributes') || path === '.gitattributes') return 'text/plain; charset=utf-8';
  return 'application/octet-stream';
}

function disposition(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return `inline; filename*=UTF-8''${encodeURIComponent(base)}; filename="${base.replace(/["\\]/g, '_')}";`;
}

// ---------------------------------------------------------------- server

export async function startMirror(o: MirrorOptions): Promise<Mirror> {
  const root = resolve(o.root);
  const rootStat = await stat(root).catch(() => null);
  if (!rootStat?.isDirectory()) throw new Error(`mirror: ${root} is not a folder`);
  const minBytes = o.lfsMinBytes ?? LFS_MIN_BYTES;
  const digests = new DigestCache();
  const log: MirrorLogEntry[] = [];
  let requestNo = 0;

  async function snapshotAt(dir: string): Promise<Snapshot> {
    const list = await walk(dir);
    const files = new Map(list.map((f) => [f.path, f]));
    const ga = files.get('.gitattributes');
    const lfs = lfsMatcher(ga ? await readFile(ga.abs, 'utf8') : DEFAULT_GITATTRIBUTES, minBytes);
    return { dir, files, lfs };
  }

  /** The commit id: sha1 over every path and its git object id (an LFS file's is its pointer's), in path order. */
  async function commitOf(s: Snapshot): Promise<string> {
    const h = createHash('sha1');
    for (const path of [...s.files.keys()].sort()) {
      const f = s.files.get(path)!;
      const d = await digests.get(f.abs, f.st);
      h.update(`${path}\0${s.lfs(path, f.st.size) ? gitBlobOid(lfsPointer(d.sha256, d.size)) : d.gitOid}\n`);
    }
    return h.digest('hex');
  }

  async function revisions(owner: string, name: string): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const entries = await readdir(join(root, owner), { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      if (e.name === name) out.set('main', join(root, owner, name));
      else if (e.name.startsWith(`${name}@`)) out.set(e.name.slice(name.length + 1), join(root, owner, e.name));
    }
    return out;
  }

  type Resolved = { kind: 'ok'; snap: Snapshot; commit: string } | { kind: 'repo' } | { kind: 'rev' };

  async function resolveRev(owner: string, name: string, rev: string): Promise<Resolved> {
    const revs = await revisions(owner, name);
    if (revs.size === 0) return { kind: 'repo' };
    const named = revs.get(rev);
    if (named) {
      const snap = await snapshotAt(named);
      return { kind: 'ok', snap, commit: await commitOf(snap) };
    }
    if (/^[0-9a-f]{40}$/.test(rev)) {
      for (const dir of revs.values()) {
        const snap = await snapshotAt(dir);
        const commit = await commitOf(snap);
        if (commit === rev) return { kind: 'ok', snap, commit };
      }
    }
    return { kind: 'rev' };
  }

  function baseHeaders(res: ServerResponse): void {
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Expose-Headers', EXPOSE);
    res.setHeader('Cross-Origin-Resource-Policy', 'cross-origin');
    res.setHeader('X-Request-Id', `Root=1-mirror-${(++requestNo).toString(16).padStart(8, '0')}`);
  }

  /** Logs a request; `streaming` entries are logged before their first byte leaves, and their `bytes` grow as they are sent. */
  function finish(req: IncomingMessage, path: string, status: number, bytes: number, streaming = false): MirrorLogEntry {
    const e: MirrorLogEntry = { method: req.method ?? 'GET', path, status, bytes };
    if (req.headers.range) e.range = req.headers.range;
    log.push(e);
    if (!streaming) o.onRequest?.(e);
    return e;
  }

  function sendBody(req: IncomingMessage, res: ServerResponse, path: string, status: number, headers: Record<string, string>, body: string | Buffer): void {
    const b = typeof body === 'string' ? Buffer.from(body) : body;
    res.writeHead(status, { ...headers, 'Content-Length': String(b.length) });
    const head = req.method === 'HEAD';
    res.end(head ? undefined : b);
    finish(req, path, status, head ? 0 : b.length);
  }

  const hubError = (code: string, message: string, status = 404) => ({
    status,
    headers: { 'X-Error-Code': code, 'X-Error-Message': message },
  });

  function sendError(req: IncomingMessage, res: ServerResponse, path: string, e: ReturnType<typeof hubError>, body: string, type: string): void {
    sendBody(req, res, path, e.status, { ...e.headers, 'Content-Type': type }, body);
  }

  const entryNotFound = (req: IncomingMessage, res: ServerResponse, path: string, commit?: string) => {
    if (commit) res.setHeader('X-Repo-Commit', commit);
    // The Hub's answer: 404, these two headers, and the 15-byte text body.
    sendError(req, res, path, hubError('EntryNotFound', 'Entry not found'), 'Entry not found', 'text/plain; charset=utf-8');
  };
  const repoNotFound = (req: IncomingMessage, res: ServerResponse, path: string) =>
    sendError(
      req,
      res,
      path,
      hubError('RepoNotFound', 'Repository not found'),
      JSON.stringify({ error: 'Repository not found' }),
      'application/json; charset=utf-8',
    );
  const revisionNotFound = (req: IncomingMessage, res: ServerResponse, path: string, rev: string) =>
    sendError(
      req,
      res,
      path,
      hubError('RevisionNotFound', `Invalid rev id: ${rev}`),
      JSON.stringify({ error: `Invalid rev id: ${rev}` }),
      'application/json; charset=utf-8',
    );
  const badRequest = (req: IncomingMessage, res: ServerResponse, path: string, why: string) =>
    sendBody(req, res, path, 400, { 'Content-Type': 'application/json; charset=utf-8' }, JSON.stringify({ error: why }));

  /** Streams a file (or the asked range of it) with the validators of `etag`. */
  function sendFile(req: IncomingMessage, res: ServerResponse, path: string, f: RepoFile, etag: string, headers: Record<string, string>): void {
    const size = f.st.size;
    res.setHeader('ETag', etag);
    res.setHeader('Accept-Ranges', 'bytes');
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    if (req.headers['if-none-match']?.split(/\s*,\s*/).includes(etag)) {
      res.writeHead(304);
      res.end();
      finish(req, path, 304, 0);
      return;
    }
    // Range is defined for GET only (RFC 9110 §14.2): a HEAD gets the whole file's headers.
    const r = req.method === 'GET' ? parseRange(req.headers.range, size) : null;
    if (r === 'unsatisfiable') {
      res.setHeader('Content-Range', `bytes */${size}`);
      sendBody(req, res, path, 416, { 'Content-Type': 'text/plain; charset=utf-8' }, 'Range Not Satisfiable');
      return;
    }
    const start = r ? r.start : 0;
    const end = r ? r.end : size - 1;
    const n = size === 0 ? 0 : end - start + 1;
    const status = r ? 206 : 200;
    if (r) res.setHeader('Content-Range', `bytes ${start}-${end}/${size}`);
    res.writeHead(status, { 'Content-Length': String(n) });
    if (req.method === 'HEAD' || n === 0) {
      res.end();
      finish(req, path, status, 0);
      return;
    }
    const s = createReadStream(f.abs, { start, end });
    // Logged now, so that a client that has read the whole body always finds its request in the log.
    const entry = finish(req, path, status, 0, true);
    s.on('data', (c) => {
      entry.bytes += c.length;
    });
    s.on('error', () => res.destroy());
    res.on('close', () => {
      s.destroy();
      o.onRequest?.(entry);
    });
    const rate = o.bytesPerSecond;
    if (!rate) {
      s.pipe(res);
      return;
    }
    // Paced: each chunk, then a pause as long as it takes to send at `rate`.
    s.on('data', (c) => {
      s.pause();
      res.write(c);
      setTimeout(() => s.resume(), (1000 * c.length) / rate);
    });
    s.on('end', () => res.end());
  }

  async function handleResolve(req: IncomingMessage, res: ServerResponse, path: string, seg: string[]): Promise<void> {
    const [owner, name, , revRaw, ...rest] = seg as [string, string, string, string, ...string[]];
    let rev: string;
    let parts: string[];
    try {
      rev = decodeURIComponent(revRaw);
      parts = rest.map((p) => decodeURIComponent(p));
    } catch {
      return badRequest(req, res, path, 'Invalid URL encoding');
    }
    if (parts.length === 0 || parts.some((p) => p === '' || p === '.' || p === '..' || /[\\/\0]/.test(p))) {
      return badRequest(req, res, path, 'Invalid path');
    }
    const r = await resolveRev(owner, name, rev);
    if (r.kind === 'repo') return repoNotFound(req, res, path);
    if (r.kind === 'rev') return revisionNotFound(req, res, path, rev);
    const file = parts.join('/');
    const f = r.snap.files.get(file);
    // The listing never leaves the folder, but check the real path anyway.
    if (!f || !resolve(f.abs).startsWith(resolve(r.snap.dir) + sep)) return entryNotFound(req, res, path, r.commit);
    res.setHeader('X-Repo-Commit', r.commit);
    const d = await digests.get(f.abs, f.st);
    if (r.snap.lfs(file, f.st.size)) {
      // As the Hub does for an LFS file: a 302 to the bytes elsewhere, with the
      // file's size and sha256 in X-Linked-*, and the pointer's blob id as ETag.
      const host = req.headers.host ?? `${o.host ?? '127.0.0.1'}`;
      const q = `response-content-disposition=${encodeURIComponent(disposition(file))}`;
      const location = `http://${host}/cdn-lfs/repos/${owner}/${name}/${d.sha256}?${q}`;
      res.setHeader('Location', location);
      res.setHeader('ETag', `"${gitBlobOid(lfsPointer(d.sha256, d.size))}"`);
      res.setHeader('X-Linked-Size', String(d.size));
      res.setHeader('X-Linked-ETag', `"${d.sha256}"`);
      res.setHeader('Accept-Ranges', 'bytes');
      return sendBody(req, res, path, 302, { 'Content-Type': 'text/plain; charset=utf-8', Vary: 'Origin, Accept' }, `Found. Redirecting to ${location}`);
    }
    sendFile(req, res, path, f, `"${d.gitOid}"`, { 'Content-Type': contentType(file), 'Content-Disposition': disposition(file) });
  }

  async function handleLfs(req: IncomingMessage, res: ServerResponse, path: string, url: URL, seg: string[]): Promise<void> {
    const [, , owner, name, sha] = seg as [string, string, string, string, string];
    if (!NAME.test(owner) || !NAME.test(name) || !/^[0-9a-f]{64}$/.test(sha))
      return sendBody(req, res, path, 404, { 'Content-Type': 'text/plain' }, 'Not Found');
    for (const dir of (await revisions(owner, name)).values()) {
      const snap = await snapshotAt(dir);
      for (const f of snap.files.values()) {
        if (!snap.lfs(f.path, f.st.size)) continue;
        const d = await digests.get(f.abs, f.st);
        if (d.sha256 !== sha) continue;
        const cd = url.searchParams.get('response-content-disposition');
        const headers: Record<string, string> = {
          'Content-Type': 'application/octet-stream',
          'Cache-Control': 'public, max-age=604800, immutable, s-maxage=604800',
          'Last-Modified': f.st.mtime.toUTCString(),
        };
        if (cd) headers['Content-Disposition'] = cd;
        return sendFile(req, res, path, f, `"${sha}"`, headers);
      }
    }
    sendBody(req, res, path, 404, { 'Content-Type': 'text/plain' }, 'Not Found');
  }

  async function handleApi(req: IncomingMessage, res: ServerResponse, path: string, seg: string[]): Promise<void> {
    const [, , owner, name, kw, revRaw] = seg as [string, string, string, string, string | undefined, string | undefined];
    if (kw !== undefined && (kw !== 'revision' || revRaw === undefined || seg.length !== 6))
      return sendBody(req, res, path, 404, { 'Content-Type': 'text/plain' }, 'Not Found');
    let rev = 'main';
    try {
      if (revRaw !== undefined) rev = decodeURIComponent(revRaw);
    } catch {
      return badRequest(req, res, path, 'Invalid URL encoding');
    }
    const r = await resolveRev(owner, name, rev);
    if (r.kind === 'repo') return repoNotFound(req, res, path);
    if (r.kind === 'rev') return revisionNotFound(req, res, path, rev);
    const id = `${owner}/${name}`;
    const siblings = [...r.snap.files.keys()].sort().map((rfilename) => ({ rfilename }));
    const body = JSON.stringify({
      _id: r.commit.slice(0, 24),
      id,
      modelId: id,
      author: owner,
      sha: r.commit,
      private: false,
      gated: false,
      disabled: false,
      siblings,
    });
    res.setHeader('X-Repo-Commit', r.commit);
    sendBody(req, res, path, 200, { 'Content-Type': 'application/json; charset=utf-8' }, body);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://mirror.invalid');
    // The raw path, as the client sent it (URL() would resolve `..` away), for the log and the routing.
    const path = (req.url ?? '/').split('?')[0]!;
    baseHeaders(res);
    if (req.method === 'OPTIONS') {
      res.setHeader('Access-Control-Allow-Methods', 'GET, HEAD, OPTIONS');
      res.setHeader(
        'Access-Control-Allow-Headers',
        req.headers['access-control-request-headers'] ?? 'Range, Authorization, Content-Type, If-None-Match, User-Agent',
      );
      res.setHeader('Access-Control-Max-Age', '86400');
      res.writeHead(204);
      res.end();
      finish(req, path, 204, 0);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD, OPTIONS');
      return sendBody(req, res, path, 405, { 'Content-Type': 'text/plain' }, 'Method Not Allowed');
    }
    // A client that does not normalise `..` must not reach outside the root: each segment is checked.
    const seg = path.split('/').slice(1);
    if (seg.length >= 5 && seg[2] === 'resolve') {
      if (!NAME.test(seg[0]!) || !NAME.test(seg[1]!)) return badRequest(req, res, path, 'Invalid repository id');
      return handleResolve(req, res, path, seg);
    }
    if (seg[0] === 'cdn-lfs' && seg[1] === 'repos' && seg.length === 5) return handleLfs(req, res, path, url, seg);
    if (seg[0] === 'api' && seg[1] === 'models' && seg.length >= 4) {
      if (!NAME.test(seg[2]!) || !NAME.test(seg[3]!)) return badRequest(req, res, path, 'Invalid repository id');
      return handleApi(req, res, path, seg);
    }
    sendBody(req, res, path, 404, { 'Content-Type': 'text/plain' }, 'Not Found');
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) sendBody(req, res, req.url ?? '/', 500, { 'Content-Type': 'text/plain' }, `mirror: ${e instanceof Error ? e.message : e}`);
      else res.destroy();
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(o.port ?? 0, o.host ?? '127.0.0.1', () => ok());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}/`,
    log,
    reset: () => void log.splice(0),
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

// --------------------------------------------------------------------- CLI

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  let root: string | undefined;
  let port = 8080;
  let host = '127.0.0.1';
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const v = () => {
      const x = args[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--port') port = Number(v());
    else if (a === '--host') host = v();
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: npm run mirror -- <folder> [--port 8080] [--host 127.0.0.1]\nThe folder holds <owner>/<name>/<files> (revision main) and optionally <owner>/<name>@<rev>/.',
      );
      return;
    } else if (a.startsWith('-')) throw new Error(`unknown option ${a}`);
    else root = a;
  }
  if (!root) throw new Error('usage: npm run mirror -- <folder> [--port 8080] [--host 127.0.0.1]');
  const m = await startMirror({
    root,
    port,
    host,
    onRequest: (e) => console.log(`${e.status} ${e.method} ${e.path}${e.range ? ` (${e.range})` : ''} ${e.bytes} B`),
  });
  console.log(`[mirror] serving ${resolve(root)} at ${m.url}`);
  console.log(`[mirror] transformers.js: env.remoteHost = '${m.url}'; huggingface_hub: HF_ENDPOINT=${m.url.replace(/\/$/, '')}`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`[mirror] ${e instanceof Error ? e.message : e}`);
    process.exit(1);
  });
}
