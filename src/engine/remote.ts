import { concatBytes } from '../core/bytes.ts';
import { InvalidCartridge, StatecartError } from '../core/errors.ts';
import type { KeyChain } from '../core/key-chain.ts';
import { cartridgeUrl, indexUrl, isStateKey, parseRemoteIndex, remoteBase, type RemoteIndexEntry } from '../formats/remote-layout.ts';
import type { StateModel } from '../models/types.ts';
import type { Manifest } from '../store/records.ts';
import { StateStore } from '../store/store.ts';
import type { RemoteNotice, RemoteReport, RemoteSource } from './api.ts';
import { importCartridge } from './cartridges.ts';
import type { Found } from './lookup.ts';

/**
 * The remote tier: states read through from static hosts (the layout of
 * src/formats/remote-layout.ts), after the hot tier and the local store.
 *
 * Where it comes in:
 * - a state key missing from the local store (createState's whole text,
 *   infer's and compact's input state): RemoteStateStore.lookup asks the
 *   remotes' indexes for that exact key;
 * - a request whose longest local prefix is shorter than the request:
 *   findPrefix (src/engine/lookup.ts) hands its answer to improveFromRemote,
 *   which looks for a longer prefix among the remotes' keys.
 *
 * A hit is downloaded (the browser's HTTP cache may answer: the file's
 * address never changes), checked by the strict importer (a tampered file is
 * refused with InvalidCartridge and nothing is written) and stored, so the
 * next request finds it locally with no network at all. A remote that does
 * not answer costs one timeout, then is skipped for a while: the call is
 * computed locally and its result carries a notice.
 */

export interface RemoteOptions {
  /** Base URLs of remote state hosts, tried in order (absolute, or relative to `base`). */
  remotes: (string | URL)[];
  base?: string;
  /** How long an index.json is used before it is fetched again (ms). */
  indexTtlMs?: number;
  /** A remote that sends nothing for this long is taken as unreachable (ms). */
  timeoutMs?: number;
  /** After a remote failed to answer, how long it is skipped (ms). */
  retryMs?: number;
  fetch?: typeof fetch;
}

export interface RemoteStatus {
  remote: string;
  /** null: not asked yet. */
  reachable: boolean | null;
  /** States its index lists for the model last asked about (null: unknown). */
  states: number | null;
  message?: string;
  checkedAt: number | null;
}

export interface RemoteCounters {
  indexFetches: number;
  cartridgeFetches: number;
  imports: number;
  refused: number;
  unreachable: number;
}

interface IndexCache {
  at: number;
  entries: Map<string, RemoteIndexEntry>;
  /** Set when the remote answered with something that is not an index. */
  notice?: RemoteNotice;
}

interface Hit {
  remote: string;
  entry: RemoteIndexEntry;
  url: string;
}

interface Pending {
  at: number;
  from: RemoteSource | null;
  notices: RemoteNotice[];
}

const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());
const EVENT_TTL_MS = 5 * 60_000;

export class RemoteTier {
  readonly remotes: string[];
  readonly counters: RemoteCounters = { indexFetches: 0, cartridgeFetches: 0, imports: 0, refused: 0, unreachable: 0 };
  private readonly ttl: number;
  readonly timeoutMs: number;
  private readonly retryMs: number;
  private readonly fetchFn: typeof fetch;
  private readonly indexes = new Map<string, IndexCache>();
  private readonly loading = new Map<string, Promise<IndexCache>>();
  private readonly down = new Map<string, { until: number; notice: RemoteNotice }>();
  private readonly refusedUrls = new Map<string, RemoteNotice>();
  private readonly imports = new Map<string, Promise<RemoteSource | null>>();
  private readonly status = new Map<string, RemoteStatus>();
  /** What happened per request, by the request's key, until the call's result takes it (reportRemote). */
  private readonly pending = new Map<string, Pending>();

  constructor(o: RemoteOptions) {
    this.remotes = [...new Set(o.remotes.map((r) => remoteBase(r, o.base)))];
    for (const r of this.remotes) {
      const u = new URL(r);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError(`a remote is an http(s) URL, not ${r}`);
    }
    this.ttl = o.indexTtlMs ?? 60_000;
    this.timeoutMs = o.timeoutMs ?? 8000;
    this.retryMs = o.retryMs ?? 30_000;
    this.fetchFn = o.fetch ?? ((...a) => fetch(...a));
  }

  get active(): boolean {
    return this.remotes.length > 0;
  }

  /** Each remote: reachable, how many states it lists, the last problem. */
  statuses(): RemoteStatus[] {
    return this.remotes.map((r) => ({ ...(this.status.get(r) ?? { remote: r, reachable: null, states: null, checkedAt: null }) }));
  }

  // ------------------------------------------------------------ lookups

  /** Whether a remote lists this exact state; if so it is downloaded, checked and stored. */
  async fetchExact(store: StateStore, model: StateModel, key: string, signal?: AbortSignal): Promise<boolean> {
    if (!isStateKey(key)) return false;
    const hit = await this.longest(model, key, [key], null);
    if (!hit) return false;
    return (await this.fetchInto(store, model, hit, key, signal)) !== null;
  }

  /**
   * The longest prefix a remote holds among `keys` (keys[i] is the key of
   * `from + i` tokens; `from` null: lengths unknown), null when no remote lists any.
   */
  async longest(model: StateModel, requestKey: string, keys: string[], from: number | null): Promise<Hit | null> {
    const notices: RemoteNotice[] = [];
    const all = await Promise.all(this.remotes.map((r) => this.index(r, model.fingerprint, notices)));
    let best: { i: number; hit: Hit } | null = null;
    all.forEach((entries, ri) => {
      if (!entries?.size) return;
      const remote = this.remotes[ri]!;
      for (let i = keys.length - 1; i >= 0 && (!best || i > best.i); i--) {
        const e = entries.get(keys[i]!);
        // The index must agree with the key's length: a key names exactly `from + i` tokens.
        if (!e || (from !== null && e.tokens !== from + i)) continue;
        const url = cartridgeUrl(remote, model.fingerprint, e.key);
        const refused = this.refusedUrls.get(url);
        if (refused) {
          notices.push(refused);
          continue;
        }
        best = { i, hit: { remote, entry: e, url } };
        break;
      }
    });
    this.note(requestKey, { notices });
    return (best as { i: number; hit: Hit } | null)?.hit ?? null;
  }

  /**
   * Downloads a listed state and stores it through the strict importer. A
   * remote that fails to answer gives null (and a notice); a file that fails
   * a check throws InvalidCartridge and is not asked for again.
   */
  fetchInto(store: StateStore, model: StateModel, hit: Hit, requestKey: string, signal?: AbortSignal): Promise<RemoteSource | null> {
    let p = this.imports.get(hit.url);
    if (!p) {
      p = this.download(store, model, hit, signal).finally(() => this.imports.delete(hit.url));
      this.imports.set(hit.url, p);
    }
    return p.then(
      (src) => {
        if (src) this.note(requestKey, { from: src });
        return src;
      },
      (e: unknown) => {
        if (e instanceof Unreachable) {
          this.note(requestKey, { notices: [e.notice] });
          return null;
        }
        throw e;
      },
    );
  }

  // ------------------------------------------------------------ reports

  /** What the remote tier did for the request whose key this is (and forgets it). */
  take(...keys: string[]): RemoteReport | undefined {
    let from: RemoteSource | null = null;
    const notices: RemoteNotice[] = [];
    for (const k of keys) {
      const p = this.pending.get(k);
      if (!p) continue;
      this.pending.delete(k);
      from ??= p.from;
      for (const n of p.notices) if (!notices.some((x) => x.url === n.url && x.error === n.error)) notices.push(n);
    }
    return from || notices.length ? { from, notices } : undefined;
  }

  private note(key: string, p: Partial<Omit<Pending, 'at'>>): void {
    if (!p.from && !p.notices?.length) return;
    const t = Date.now();
    for (const [k, v] of this.pending) if (t - v.at > EVENT_TTL_MS) this.pending.delete(k);
    const cur = this.pending.get(key) ?? { at: t, from: null, notices: [] };
    cur.at = t;
    if (p.from) cur.from = p.from;
    for (const n of p.notices ?? []) if (!cur.notices.some((x) => x.url === n.url && x.error === n.error)) cur.notices.push(n);
    this.pending.set(key, cur);
  }

  // ------------------------------------------------------------ network

  /** A remote's index for one model: cached for indexTtlMs; null when the remote did not answer. */
  private async index(remote: string, fp: string, notices: RemoteNotice[]): Promise<Map<string, RemoteIndexEntry> | null> {
    const down = this.down.get(remote);
    if (down && down.until > Date.now()) {
      notices.push(down.notice);
      return null;
    }
    const k = `${remote}\n${fp}`;
    let c = this.indexes.get(k);
    if (!c || Date.now() - c.at >= this.ttl) {
      let p = this.loading.get(k);
      if (!p) {
        p = this.loadIndex(remote, fp).finally(() => this.loading.delete(k));
        this.loading.set(k, p);
      }
      try {
        c = await p;
      } catch (e) {
        if (e instanceof Unreachable) {
          notices.push(e.notice);
          return null;
        }
        throw e;
      }
    }
    if (c.notice) notices.push(c.notice);
    return c.entries;
  }

  private async loadIndex(remote: string, fp: string): Promise<IndexCache> {
    const url = indexUrl(remote, fp);
    this.counters.indexFetches++;
    const r = await this.get(remote, url, 'no-cache');
    let entries = new Map<string, RemoteIndexEntry>();
    let problem: string | null = null;
    if (r.status === 404 || r.status === 410) {
      // The host answered: it holds nothing for this model.
      await r.body?.cancel().catch(() => undefined);
    } else if (!r.ok) {
      await r.body?.cancel().catch(() => undefined);
      throw this.unreachable(remote, url, `HTTP ${r.status}${r.statusText ? ' ' + r.statusText : ''}`);
    } else {
      let json: unknown;
      try {
        json = JSON.parse(new TextDecoder().decode(await this.readBody(remote, url, r, 64 * 1024 * 1024)));
      } catch (e) {
        if (e instanceof Unreachable) throw e;
        json = undefined;
      }
      const parsed = parseRemoteIndex(json, fp);
      if ('problem' in parsed) problem = `${url} is not a statecart remote index: ${parsed.problem}`;
      else entries = parsed.entries;
    }
    this.status.set(remote, { remote, reachable: true, states: entries.size, checkedAt: Date.now(), ...(problem ? { message: problem } : {}) });
    // A bad index is not an outage: the remote answered, it just offers nothing usable.
    const c: IndexCache = {
      at: Date.now(),
      entries,
      ...(problem ? { notice: { remote, url, error: 'BadIndex', message: `${problem}; computed locally instead.` } } : {}),
    };
    this.indexes.set(`${remote}\n${fp}`, c);
    return c;
  }

  private async download(store: StateStore, model: StateModel, hit: Hit, signal?: AbortSignal): Promise<RemoteSource | null> {
    const t0 = now();
    this.counters.cartridgeFetches++;
    // Immutable by address: the browser's HTTP cache may answer without asking.
    const r = await this.get(hit.remote, hit.url, 'force-cache', signal);
    if (!r.ok) {
      await r.body?.cancel().catch(() => undefined);
      // Listed but not there: the index is newer or older than the files. Compute locally.
      throw this.unreachable(hit.remote, hit.url, `HTTP ${r.status} for a state its index lists`, 'BadIndex');
    }
    const bytes = await this.readBody(hit.remote, hit.url, r, hit.entry.bytes, signal);
    const fetchMs = now() - t0;
    const t1 = now();
    try {
      const res = await importCartridge({ store, getModel: async () => model }, new Blob([bytes as BlobPart]), {
        ...(signal ? { signal } : {}),
        expectKey: hit.entry.key,
      });
      this.counters.imports++;
      return {
        remote: hit.remote,
        url: hit.url,
        stateKey: res.stateKey,
        tokens: res.tokens,
        bytes: bytes.byteLength,
        fetchMs,
        importMs: now() - t1,
      };
    } catch (e) {
      if (e instanceof StatecartError && (e.name === 'InvalidCartridge' || e.name === 'ModelMismatch' || e.name === 'MissingParent')) {
        // Refused: remembered, so that later requests compute locally instead of failing again.
        this.counters.refused++;
        this.refusedUrls.set(hit.url, {
          remote: hit.remote,
          url: hit.url,
          error: e.name,
          message: `${hit.url} was refused earlier (${e.message}); computed locally instead.`,
        });
        e.details.url = hit.url;
        e.details.remote = hit.remote;
        throw e;
      }
      throw e;
    }
  }

  /** A GET with a timeout until the headers arrive; a network error or timeout is Unreachable. */
  private async get(remote: string, url: string, cache: RequestCache, signal?: AbortSignal): Promise<Response> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const s = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      return await this.fetchFn(url, { signal: s, cache, credentials: 'omit' });
    } catch (e) {
      if (signal?.aborted) throw e;
      const why = timeout.aborted ? `no answer within ${this.timeoutMs} ms` : ((e as Error)?.message ?? String(e));
      throw this.unreachable(remote, url, why);
    }
  }

  /**
   * The body, read as a stream: refused past `limit` bytes (more than the index
   * says the file holds), and taken as unreachable when it stalls.
   */
  private async readBody(remote: string, url: string, r: Response, limit: number, signal?: AbortSignal): Promise<Uint8Array> {
    const len = Number(r.headers.get('content-length') ?? NaN);
    if (Number.isFinite(len) && len > limit && !r.headers.get('content-encoding')) {
      await r.body?.cancel().catch(() => undefined);
      throw new InvalidCartridge(`${url} is ${len} bytes, more than the ${limit} its remote's index lists; nothing was read.`, { url, remote });
    }
    if (!r.body) return new Uint8Array(await r.arrayBuffer());
    const reader = r.body.getReader();
    const parts: Uint8Array[] = [];
    let total = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stall!: (e: unknown) => void;
    const stalled = new Promise<never>((_, reject) => (stall = reject));
    stalled.catch(() => undefined);
    // Re-armed on every chunk: a slow download is fine, a silent one is not.
    const arm = () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => stall(this.unreachable(remote, url, `the download stalled for ${this.timeoutMs} ms`)), this.timeoutMs);
    };
    arm();
    try {
      for (;;) {
        if (signal?.aborted) throw signal.reason ?? new Error('aborted');
        const { done, value } = await Promise.race([reader.read(), stalled]);
        if (done) break;
        arm();
        total += value.byteLength;
        if (total > limit) {
          throw new InvalidCartridge(`${url} holds more than the ${limit} bytes its remote's index lists; nothing was written.`, { url, remote });
        }
        parts.push(value);
      }
    } catch (e) {
      await reader.cancel().catch(() => undefined);
      throw e;
    } finally {
      if (timer) clearTimeout(timer);
    }
    return concatBytes(parts);
  }

  private unreachable(remote: string, url: string, why: string, kind: 'Unreachable' | 'BadIndex' = 'Unreachable'): Unreachable {
    const notice: RemoteNotice = { remote, url, error: kind, message: `The remote ${remote} could not be used (${why}); computed locally instead.` };
    if (kind === 'Unreachable') {
      this.counters.unreachable++;
      this.down.set(remote, { until: Date.now() + this.retryMs, notice });
      this.status.set(remote, { remote, reachable: false, states: null, message: why, checkedAt: Date.now() });
    }
    return new Unreachable(notice);
  }
}

/** A remote that did not answer: the caller computes locally. */
class Unreachable extends Error {
  constructor(readonly notice: RemoteNotice) {
    super(notice.message);
  }
}

/**
 * The state store with the remote tier behind it: a key missing here is
 * looked for in the remotes' indexes (and, when listed, fetched and stored)
 * before the engine is told it is absent.
 */
export class RemoteStateStore extends StateStore {
  remote: RemoteTier | null = null;
  /** The loaded model (a cartridge is checked against it). */
  currentModel: () => StateModel | null = () => null;

  override async lookup(key: string): Promise<{ manifest: Manifest; hot: boolean } | undefined> {
    const local = await super.lookup(key);
    const model = this.currentModel();
    if (local || !this.remote?.active || !model || !isStateKey(key)) return local;
    return (await this.remote.fetchExact(this, model, key)) ? super.lookup(key) : undefined;
  }

  /**
   * Local only: the importer asks it for the state it is writing (a remote
   * import reading through to itself would wait on its own download).
   */
  override async getManifest(key: string): Promise<Manifest | undefined> {
    return (await super.lookup(key))?.manifest;
  }
}

/**
 * findPrefix's remote step: when a remote holds a longer prefix of the
 * request than the local store (hot or stored), that state is fetched,
 * stored, and returned instead. Without remotes, `local` as it is.
 */
export async function improveFromRemote(
  store: StateStore,
  model: StateModel,
  chain: KeyChain,
  minLen: number,
  maxLen: number,
  known: Manifest | undefined,
  local: Found,
): Promise<Found> {
  const tier = store instanceof RemoteStateStore ? store.remote : null;
  if (!tier?.active || local.reused >= maxLen) return local;
  const from = Math.max(minLen, local.reused + 1);
  if (from > maxLen) return local;
  // (keys the local lookup already computed: nothing is hashed again)
  const keys = chain.keysFrom(from, maxLen);
  const requestKey = known?.key ?? chain.keyAt(chain.length);
  const hit = await tier.longest(model, requestKey, keys, from);
  if (!hit) return local;
  const src = await tier.fetchInto(store, model, hit, requestKey);
  if (!src) return local;
  const r = await store.getState(hit.entry.key);
  return { reused: hit.entry.tokens, state: r.state, manifest: r.manifest, tier: 'remote', passed: local.passed };
}

/**
 * Adds to a protocol result what the remote tier did for it (`remote`), and
 * for infer names 'remote' as the tier its state came from. The request's key
 * ties them: the state asked for (infer, compact) or made (createState, compact).
 */
export function reportRemote(tier: RemoteTier | null | undefined, method: string, req: unknown, result: unknown): void {
  if (!tier || !result || typeof result !== 'object') return;
  const r = result as { stateKey?: string; newStateKey?: string; tier?: string; remote?: RemoteReport };
  const asked = (req as { stateKey?: unknown } | null)?.stateKey;
  let rep: RemoteReport | undefined;
  if (method === 'createState' && r.stateKey) rep = tier.take(r.stateKey);
  else if (method === 'infer' && typeof asked === 'string') rep = tier.take(asked);
  else if (method === 'compact') rep = tier.take(...[r.newStateKey, asked].filter((k): k is string => typeof k === 'string'));
  if (!rep) return;
  r.remote = rep;
  if (method === 'infer' && rep.from) r.tier = 'remote';
}
