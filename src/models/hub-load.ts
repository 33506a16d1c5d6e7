/**
 * Loading a model from the Hub (or a mirror): which files, in what order,
 * downloaded once with progress and cancel, then handed to the architecture's
 * loader with a context whose reads never reach the network again. Also what
 * a page shows before it loads: each file's size, or that it is kept already.
 */
import type { Dtype } from '../core/model-fingerprint.ts';
import { Aborted } from '../core/errors.ts';
import { type FileProgressFn, HubRepo, type ModelFileCache, type RuntimeFileCache } from './hub-files.ts';
import type { LoadContext } from './load.ts';
import { type Arch, archFromConfig, hubDtype, hubFiles, type ModelEntry, resolveModelId } from './registry.ts';

export interface HubTarget {
  /** statecart's id (`hf:owner/name`). */
  model: string;
  repo: string;
  revision?: string;
  entry?: ModelEntry;
  dtype?: Dtype;
  hubUrl: string;
  files: ModelFileCache;
  fetch?: typeof fetch;
}

/** The repository, and the architecture and dtype of the load (config.json read first: a missing repository is named before anything large is asked for). */
async function plan(t: HubTarget, o: { signal?: AbortSignal; onProgress?: FileProgressFn }): Promise<{ repo: HubRepo; arch: Arch; dtype: Dtype }> {
  const repo = new HubRepo({ hubUrl: t.hubUrl, repo: t.repo, revision: t.revision, cache: t.files, model: t.model, fetch: t.fetch });
  let arch = t.entry?.arch;
  if (!arch) {
    await repo.ensure({ path: 'config.json' }, o);
    arch = archFromConfig(t.model, JSON.parse(new TextDecoder().decode(await repo.read('config.json'))) as { model_type?: unknown });
  }
  return { repo, arch, dtype: hubDtype(t.model, arch, t.dtype, t.entry) };
}

export interface HubLoad {
  arch: Arch;
  dtype: Dtype;
  repo: HubRepo;
  /** The loader's context, less the device. */
  context: Omit<LoadContext, 'device' | 'adapter' | 'deviceReason'>;
}

/**
 * Downloads what is not kept yet (config.json first, then the rest side by
 * side), and returns the loader's context: files read from the cache, the
 * digests the runtime saw, converted files kept beside the downloads.
 */
export async function prepareHubLoad(t: HubTarget & { runtime: RuntimeFileCache; signal?: AbortSignal; onProgress?: FileProgressFn }): Promise<HubLoad> {
  const o = { signal: t.signal, onProgress: t.onProgress };
  const { repo, arch, dtype } = await plan(t, o);
  const files = hubFiles(arch, dtype);
  await repo.ensure(files[0]!, o);
  await Promise.all(files.slice(1).map((f) => repo.ensure(f, o)));
  if (t.signal?.aborted) throw new Aborted();
  const derivedKey = (name: string) => `https://statecart.invalid/derived/${name}`;
  return {
    arch,
    dtype,
    repo,
    context: {
      modelId: t.model,
      source: t.repo,
      revision: repo.revision,
      base: repo.base,
      dtype,
      readFile: (p) => repo.read(p),
      digestOf: (p) => t.runtime.digest(repo.url(p)),
      knownDigest: async (p) => (await repo.cached(p))?.sha256,
      derived: { get: (n) => t.files.bytes(derivedKey(n)), put: async (n, b) => void (await t.files.putBytes(derivedKey(n), b)) },
      signal: t.signal,
      onProgress: t.onProgress,
    },
  };
}

export interface DownloadInfo {
  model: string;
  /** 'local': served with the page (nothing to download from the Hub). */
  source: 'local' | 'hub';
  arch: Arch;
  dtype: Dtype;
  /** Each file, its size (null when the server did not say) and whether it is kept already. */
  files: { path: string; bytes: number | null; cached: boolean }[];
  /** Bytes still to download (files of unknown size not counted). */
  downloadBytes: number;
  /** Nothing to download. */
  cached: boolean;
}

/** What loading `model` would download: HEAD requests for the files not kept yet, none for those that are. */
export async function downloadInfo(
  model: string,
  o: { dtype?: Dtype; hubUrl: string; files: ModelFileCache; signal?: AbortSignal; fetch?: typeof fetch },
): Promise<DownloadInfo> {
  const ref = resolveModelId(model);
  if (ref.kind === 'local') return { model, source: 'local', arch: ref.entry.arch, dtype: 'fp32', files: [], downloadBytes: 0, cached: true };
  const { repo, arch, dtype } = await plan(
    { model, repo: ref.repo, revision: ref.revision, entry: ref.entry, dtype: o.dtype, hubUrl: o.hubUrl, files: o.files, fetch: o.fetch },
    {
      signal: o.signal,
    },
  );
  const out: DownloadInfo['files'] = [];
  for (const f of hubFiles(arch, dtype)) {
    const s = await repo.size(f, o.signal);
    if (s) out.push({ path: f.path, bytes: s.bytes, cached: s.cached });
  }
  const downloadBytes = out.filter((f) => !f.cached).reduce((a, f) => a + (f.bytes ?? 0), 0);
  return { model, source: 'hub', arch, dtype, files: out, downloadBytes, cached: out.every((f) => f.cached) };
}
