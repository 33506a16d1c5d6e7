/**
 * State Pack v0.2's HTTP protocol over statecart: the seed's routes and JSON
 * field names (`base_text`, `state_hash`, `delta_text`, `new_state_hash`,
 * `output`, `savings`, `steps_folded`, `tokens`, `bytes`, `hot`,
 * `states_hot`, `states_cached`), plus statecart's receipts. A pure function
 * of a request and a Statecart: the Service Worker (src/sw/statepack-sw.ts)
 * hands requests to a page, which answers them here with its client; Node
 * tests answer them with the in-thread engine.
 *
 *   POST /statepack/states         { base_text | tokens, label?, model? }           → { state_hash, tokens, bytes, … }
 *   POST /statepack/infer          { state_hash, delta_text | delta_tokens, max_new_tokens?, sampling? }
 *                                                                                  → { new_state_hash, output, savings, … }
 *   POST /statepack/merge          { state_hashes }                                 → { new_state_hash, … }
 *   POST /statepack/compact        { state_hash, keep?: { first_tokens?, last_tokens? } }
 *                                | { state_hash, accumulated_deltas: [text, …] }  → { new_state_hash, steps_folded, … }
 *   GET  /statepack/states/{hash}                                                  → { state_hash, tokens, bytes, hot, … }
 *   GET  /statepack/health                                                         → { states_hot, states_cached, … }
 *
 * Errors: `{ "error": "<TypedErrorName>", "message": "…" }` with 404 for an
 * unknown state, 400 for bad input (bad JSON included), 409 for a context
 * overflow (its message names compact) or another model's state, 507 when the
 * store is full, 503 when no engine can take the request.
 */
import type { SignedReceipt } from '../core/receipts.ts';
import type { RemoteReport, Sampling, Savings, Statecart } from '../engine/api.ts';

export interface HttpRequest {
  method: string;
  /** The path after `statepack/` (e.g. `states/sha256:…`), without the query. */
  path: string;
  /** The body as text ('' for none). */
  body: string;
}

export interface HttpResponse {
  status: number;
  body: Record<string, unknown>;
}

/** The HTTP status of each typed error. */
export const ERROR_STATUS: Record<string, number> = {
  InvalidInput: 400,
  StateNotFound: 404,
  ContextOverflow: 409,
  ModelMismatch: 409,
  MissingParent: 409,
  QuotaExceeded: 507,
  InvalidCartridge: 502,
  CorruptBlob: 500,
  ModelNotLoaded: 503,
  WorkerCrashed: 503,
  Aborted: 503,
};

export const ROUTES = [
  'POST /statepack/states',
  'POST /statepack/infer',
  'POST /statepack/merge',
  'POST /statepack/compact',
  'GET /statepack/states/{hash}',
  'GET /statepack/health',
];

/** A client error found before the engine was asked (400, or 404/405 for the route). */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    message: string,
  ) {
    super(message);
  }
}

const bad = (message: string) => new HttpError(400, 'InvalidInput', message);

export async function statePackRoute(sc: Statecart, req: HttpRequest): Promise<HttpResponse> {
  try {
    return { status: 200, body: await route(sc, req) };
  } catch (e) {
    if (e instanceof HttpError) return { status: e.status, body: { error: e.error, message: e.message } };
    const name = (e as Error)?.name ?? 'Error';
    const message = (e as Error)?.message ?? String(e);
    return { status: ERROR_STATUS[name] ?? 500, body: { error: name, message } };
  }
}

async function route(sc: Statecart, req: HttpRequest): Promise<Record<string, unknown>> {
  const path = req.path.replace(/^\/+|\/+$/g, '');
  const method = req.method.toUpperCase();
  const only = (m: string) => {
    if (method !== m) throw new HttpError(405, 'MethodNotAllowed', `${method} /statepack/${path}: this route takes ${m}.`);
  };
  if (path === 'health') {
    only('GET');
    return health(sc);
  }
  if (path.startsWith('states/')) {
    only('GET');
    return getState(sc, hashOf(decodeURIComponent(path.slice('states/'.length)), 'the path'));
  }
  const post = { states: createState, infer, merge, compact }[path as 'states'];
  if (!post) throw new HttpError(404, 'NotFound', `No route /statepack/${path}. The routes are: ${ROUTES.join(', ')}.`);
  only('POST');
  return post(sc, bodyOf(req.body));
}

function bodyOf(text: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw bad(`The body is not JSON (${(e as Error).message}). Send a JSON object, e.g. {"base_text": "…"}.`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw bad('The body must be a JSON object.');
  return v as Record<string, unknown>;
}

/** A state hash as the seed writes it ("sha256:" + 64 hex); the bare 64 hex is taken too. */
function hashOf(v: unknown, what: string): string {
  if (typeof v === 'string' && /^[0-9a-f]{64}$/.test(v)) return `sha256:${v}`;
  if (typeof v !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(v)) throw bad(`${what}: a state hash is "sha256:" followed by 64 lowercase hex digits.`);
  return v;
}

function optInt(v: unknown, what: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Number.isInteger(v) || (v as number) < 0) throw bad(`${what} is a whole number ≥ 0.`);
  return v as number;
}

function tokensOf(v: unknown, what: string): number[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((t) => !Number.isInteger(t))) throw bad(`${what} is a list of token ids.`);
  return v as number[];
}

function textOf(v: unknown, what: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw bad(`${what} is a string.`);
  return v;
}

function receiptFields(r: SignedReceipt): Record<string, unknown> {
  return { receipt: r.receipt, receipt_hash: r.hash };
}

function remoteFields(r: RemoteReport | undefined): Record<string, unknown> {
  return r ? { remote: r } : {};
}

function savingsOf(s: Savings): Record<string, unknown> {
  return { tokens_reused: s.tokensReused, tokens_processed: s.tokensProcessed, naive_tokens: s.naiveTokens, fraction: s.fraction };
}

/**
 * An HTTP answer names a stored state: each route waits for its own write
 * (write-behind would otherwise answer before IndexedDB has it, and a full
 * quota would surface only at the next flush instead of as this call's 507).
 */
const DURABLE = { durable: true } as const;

async function createState(sc: Statecart, b: Record<string, unknown>): Promise<Record<string, unknown>> {
  const text = textOf(b.base_text, 'base_text');
  const tokens = tokensOf(b.tokens, 'tokens');
  if (text === undefined && tokens === undefined) throw bad('POST /statepack/states needs base_text (or tokens).');
  const label = textOf(b.label, 'label');
  const model = textOf(b.model, 'model');
  const r = await sc.createState({ ...(tokens ? { tokens } : { text: text! }), ...(label ? { label } : {}), ...(model ? { model } : {}) }, DURABLE);
  return {
    state_hash: r.stateKey,
    tokens: r.tokens,
    bytes: r.bytes,
    tokens_reused: r.reused,
    tokens_processed: r.processed,
    ...receiptFields(r.receipt),
    ...remoteFields(r.remote),
  };
}

async function infer(sc: Statecart, b: Record<string, unknown>): Promise<Record<string, unknown>> {
  const stateKey = hashOf(b.state_hash, 'state_hash');
  const delta = textOf(b.delta_text, 'delta_text');
  const deltaTokens = tokensOf(b.delta_tokens, 'delta_tokens');
  const maxNewTokens = optInt(b.max_new_tokens, 'max_new_tokens');
  if (b.sampling !== undefined && (typeof b.sampling !== 'object' || b.sampling === null)) throw bad('sampling is { temperature, top_k, top_p, seed }.');
  const s = b.sampling as Record<string, unknown> | undefined;
  const sampling: Sampling | undefined = s
    ? {
        ...(s.temperature !== undefined ? { temperature: s.temperature as number } : {}),
        ...(s.top_k !== undefined ? { topK: s.top_k as number } : {}),
        ...(s.top_p !== undefined ? { topP: s.top_p as number } : {}),
        ...(s.seed !== undefined ? { seed: s.seed as number } : {}),
      }
    : undefined;
  const r = await sc.infer(
    {
      stateKey,
      ...(deltaTokens ? { deltaTokens } : { delta: delta ?? '' }),
      ...(maxNewTokens !== undefined ? { maxNewTokens } : {}),
      ...(sampling ? { sampling } : {}),
    },
    DURABLE,
  );
  return {
    new_state_hash: r.newStateKey,
    output: r.output,
    output_tokens: r.outputTokens,
    savings: savingsOf(r.savings),
    tier: r.tier,
    ...receiptFields(r.receipt),
    ...remoteFields(r.remote),
  };
}

async function merge(sc: Statecart, b: Record<string, unknown>): Promise<Record<string, unknown>> {
  if (!Array.isArray(b.state_hashes) || b.state_hashes.length === 0)
    throw bad('POST /statepack/merge needs state_hashes: a chain of state hashes, oldest first.');
  const stateKeys = b.state_hashes.map((h, i) => hashOf(h, `state_hashes[${i}]`));
  const r = await sc.merge({ stateKeys }, DURABLE);
  return {
    new_state_hash: r.newStateKey,
    tokens: r.tokens,
    bytes: r.bytes,
    released: r.released,
    kept_pinned: r.keptPinned,
    ...receiptFields(r.receipt),
  };
}

/**
 * Two forms. statecart's: a fresh state from the kept part of a long one
 * (`keep`: the system prompt and a recent window). The seed's: the deltas
 * accumulated since `state_hash`, folded onto it into one fresh base (each
 * delta run as a step, then the steps merged: the intermediates are released).
 */
async function compact(sc: Statecart, b: Record<string, unknown>): Promise<Record<string, unknown>> {
  const stateKey = hashOf(b.state_hash, 'state_hash');
  if (b.accumulated_deltas !== undefined) {
    const deltas = b.accumulated_deltas;
    if (!Array.isArray(deltas) || deltas.length === 0 || deltas.some((d) => typeof d !== 'string'))
      throw bad('accumulated_deltas is a non-empty list of texts, oldest first.');
    const chain: string[] = [];
    let key = stateKey;
    for (const d of deltas as string[]) {
      key = (await sc.infer({ stateKey: key, delta: d, maxNewTokens: 0 }, DURABLE)).newStateKey;
      chain.push(key);
    }
    const m = await sc.merge({ stateKeys: chain }, DURABLE);
    return { new_state_hash: m.newStateKey, steps_folded: deltas.length, tokens: m.tokens, bytes: m.bytes, ...receiptFields(m.receipt) };
  }
  const k = b.keep as Record<string, unknown> | undefined;
  if (k !== undefined && (typeof k !== 'object' || k === null)) throw bad('keep is { first_tokens?, last_tokens? }.');
  const first = optInt(k?.first_tokens, 'keep.first_tokens');
  const last = optInt(k?.last_tokens, 'keep.last_tokens');
  const label = textOf(b.label, 'label');
  const r = await sc.compact(
    {
      stateKey,
      ...(k ? { keep: { ...(first !== undefined ? { firstTokens: first } : {}), ...(last !== undefined ? { lastTokens: last } : {}) } } : {}),
      ...(label ? { label } : {}),
    },
    DURABLE,
  );
  return {
    new_state_hash: r.newStateKey,
    steps_folded: r.stepsFolded,
    tokens: r.tokens,
    tokens_dropped: r.tokensDropped,
    tokens_reused: r.reused,
    tokens_processed: r.processed,
    ...receiptFields(r.receipt),
    ...remoteFields(r.remote),
  };
}

async function getState(sc: Statecart, key: string): Promise<Record<string, unknown>> {
  const s = await sc.getState({ stateKey: key });
  return {
    state_hash: s.key,
    tokens: s.tokens,
    bytes: s.bytes,
    hot: s.tier === 'hot',
    codec: s.codec,
    model: s.model,
    parent: s.parent,
    pinned: s.pinned,
    receipt_hash: s.receipt,
    ...(s.label ? { label: s.label } : {}),
    ...(s.damaged ? { damaged: s.damaged } : {}),
  };
}

async function health(sc: Statecart): Promise<Record<string, unknown>> {
  const h = await sc.health();
  return {
    status: 'ok',
    states_hot: h.statesHot,
    states_cached: h.statesStored,
    bytes_cached: h.bytesStored,
    model: h.model,
    model_fp: h.modelFp,
    device: h.device,
    states_damaged: h.statesDamaged,
    states_pinned: h.statesPinned,
  };
}
