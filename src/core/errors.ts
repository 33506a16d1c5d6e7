// Every error statecart throws is one of these classes, with a stable `name`
// that callers match on, `details` (the facts, machine-readable), and a message
// that each class writes from those facts, once, in words a person can act on.
// Across the worker boundary they travel as { name, message, details } and are
// revived as the same classes (src/worker/wire.ts).

export type ErrorName =
  | 'StatecartError'
  | 'StateNotFound'
  | 'CorruptBlob'
  | 'ModelMismatch'
  | 'ModelNotLoaded'
  | 'ContextOverflow'
  | 'InvalidInput'
  | 'InvalidCartridge'
  | 'MissingParent'
  | 'QuotaExceeded'
  | 'Aborted'
  | 'WorkerCrashed'
  | 'StateNotStored';

export class StatecartError extends Error {
  override name: ErrorName = 'StatecartError';
  /** The facts the message was written from (a key, a byte offset, a model id). */
  readonly details: Record<string, unknown>;
  constructor(message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.details = details;
  }
  toJSON(): SerializedError {
    return { name: this.name, message: this.message, details: this.details };
  }
}

export interface SerializedError {
  name: string;
  message: string;
  details?: Record<string, unknown>;
}

const short = (fp: string): string => (fp.length > 16 ? fp.slice(0, 16) + '…' : fp);

/** No stored state has this key. `what` names the call, when that helps ("merge"). */
export class StateNotFound extends StatecartError {
  override name = 'StateNotFound' as const;
  constructor(key: string, what?: string) {
    super(`${what ? `${what}: no` : 'No'} stored state has the key ${key}. Create it with createState, or import its cartridge.`, { key });
  }
}

export interface CorruptBlockFacts {
  /** The state whose block is damaged. */
  key: string;
  /** The blob's key. */
  block: string;
  start: number;
  end: number;
  reason: 'missing' | 'digest mismatch' | 'replaced' | 'undecodable';
  expected?: string;
  actual?: string;
  /** For 'undecodable': what the decoder found. */
  problem?: string;
}

/** Stored bytes that are not what their digest or format says. Never served; the state is recomputed from its tokens. */
export class CorruptBlob extends StatecartError {
  override name = 'CorruptBlob' as const;
  constructor(f: CorruptBlockFacts | { problem: string }) {
    super(corruptMessage(f), { ...f });
  }
}

function corruptMessage(f: CorruptBlockFacts | { problem: string }): string {
  if (!('key' in f)) return `Damaged data: ${f.problem}`;
  const where = `block ${f.block} (tokens ${f.start}–${f.end})`;
  const after = 'It was not used; infer or createState with the same tokens recomputes it.';
  switch (f.reason) {
    case 'missing':
      return `State ${f.key} is damaged: its ${where} is missing. ${after}`;
    case 'replaced':
      return `State ${f.key}: ${where} was rewritten with other bytes (digest ${f.actual}, this state expects ${f.expected}). ${after}`;
    case 'undecodable':
      return `State ${f.key}: ${where} cannot be decoded: ${f.problem}. ${after}`;
    default:
      return `State ${f.key} is damaged: ${where} has digest ${f.actual}, expected ${f.expected}. ${after}`;
  }
}

export type ModelMismatchFacts =
  /** A stored state made by another build of its model. */
  | { kind: 'state'; key: string; modelId: string; stateFp: string; loadedFp: string }
  /** A cartridge of another model. */
  | { kind: 'cartridge'; cartridgeModelId: string; cartridgeArch: string; cartridgeFp: string; loadedModelId: string; loadedArch: string; loadedFp: string }
  /** A state whose tensors do not fit the model (its specs name the tensor). */
  | { kind: 'tensor'; modelId: string; tensor: string; expected: string; got: string }
  /** Model files that are not the model asked for. */
  | { kind: 'files'; url: string; holds: string; wanted: string };

export class ModelMismatch extends StatecartError {
  override name = 'ModelMismatch' as const;
  constructor(f: ModelMismatchFacts) {
    super(mismatchMessage(f), { ...f });
  }
}

function mismatchMessage(f: ModelMismatchFacts): string {
  switch (f.kind) {
    case 'state':
      return `State ${f.key} belongs to another build of ${f.modelId} (fingerprint ${short(f.stateFp)}, loaded ${short(f.loadedFp)}). Load the model it was made with, or create the state again on this one.`;
    case 'cartridge':
      return `This cartridge holds a state of model "${f.cartridgeModelId}" (${f.cartridgeArch}, fingerprint ${short(f.cartridgeFp)}), but the loaded model is "${f.loadedModelId}" (${f.loadedArch}, fingerprint ${short(f.loadedFp)}). Load the cartridge's model, or recreate the state on this one.`;
    case 'tensor':
      return `State tensor ${f.tensor} is ${f.got}; ${f.modelId} needs ${f.expected}. The state belongs to another model.`;
    default:
      return `${f.url} holds ${f.holds}, not ${f.wanted}. Check the model id and the models folder.`;
  }
}

/** No model is loaded yet, or a model's files could not be loaded. */
export class ModelNotLoaded extends StatecartError {
  override name = 'ModelNotLoaded' as const;
  constructor(f: { model?: string; reason: string; file?: string; repo?: string; status?: number; url?: string }) {
    super(f.model ? `Model ${f.model} could not be loaded: ${f.reason}` : f.reason, { ...f });
  }
}

/** More tokens than the model's context holds. */
export class ContextOverflow extends StatecartError {
  override name = 'ContextOverflow' as const;
  constructor(f: {
    modelId: string;
    limit: number;
    wanted: number;
    state?: number;
    delta?: number;
    maxNewTokens?: number;
    op?: 'createState' | 'infer' | 'compact';
  }) {
    super(overflowMessage(f), { ...f });
  }
}

function overflowMessage(f: ConstructorParameters<typeof ContextOverflow>[0]): string {
  const head = `${f.modelId} holds at most ${f.limit} tokens`;
  if (f.op === 'infer') {
    return `${head}: the state has ${f.state}, the delta ${f.delta}, and ${f.maxNewTokens} new tokens were asked for. Call compact({ stateKey, keep }) to fold the state into a shorter one, then infer from it.`;
  }
  if (f.op === 'compact') return `${head}; keeping ${f.wanted} tokens still exceeds it. Keep fewer.`;
  return `${head}; this would make ${f.wanted}. Shorten the text, or create a shorter base and compact.`;
}

/** A request that cannot be carried out as asked; `problem` says what is wrong with it. */
export class InvalidInput extends StatecartError {
  override name = 'InvalidInput' as const;
  constructor(problem: string, details: Record<string, unknown> = {}) {
    super(problem, details);
  }
}

/** A cartridge file that fails validation; nothing was written. */
export class InvalidCartridge extends StatecartError {
  override name = 'InvalidCartridge' as const;
  constructor(problem: string, details: Record<string, unknown> = {}) {
    super(`Invalid cartridge: ${problem}`, { problem, ...details });
  }
}

export type MissingParentFacts =
  /** A delta cartridge whose parent is not stored here. */
  | { kind: 'not-stored'; parentStateKey: string; parentTokens: number }
  /** The state stored under the parent's key is not the one the delta was made from. */
  | { kind: 'other-bits'; parentStateKey: string; parentTokens?: number; problem?: string }
  /** A Mamba delta export needs its parent stored. */
  | { kind: 'export'; parentStateKey: string; parentTokens: number }
  /** A decoder was handed the wrong parent. */
  | { kind: 'decode'; problem: string; parentStateKey?: string };

export class MissingParent extends StatecartError {
  override name = 'MissingParent' as const;
  constructor(f: MissingParentFacts) {
    super(parentMessage(f), { ...f });
  }
}

function parentMessage(f: MissingParentFacts): string {
  switch (f.kind) {
    case 'not-stored':
      return `This is a delta cartridge: it continues state ${f.parentStateKey} (its first ${f.parentTokens} tokens), which is not in this store. Import the parent's cartridge first (or create the parent from its text), then import this one again. Nothing was written.`;
    case 'other-bits':
      return `This delta cartridge continues state ${f.parentStateKey}, but the state stored under that key is not the one it was made from${f.problem ? ` (${f.problem})` : ''}. Delete that state and import the parent's own cartridge (fp32), then this one. Nothing was written.`;
    case 'export':
      return `A delta cartridge of a fixed-size state is computed against its parent's stored state, and ${f.parentStateKey} (the first ${f.parentTokens} tokens) is not stored. Export the state whole, or create the parent first.`;
    default:
      return `${f.problem}${f.parentStateKey ? ` (parent ${f.parentStateKey})` : ''}`;
  }
}

/** The store may hold no more: its budget or the browser's quota is full. Nothing was written. */
export class QuotaExceeded extends StatecartError {
  override name = 'QuotaExceeded' as const;
  constructor(f: {
    key?: string;
    needed?: number;
    storeBytes?: number;
    limit?: number;
    budget?: number | null;
    afterEviction?: number;
    planned?: boolean;
    browser?: boolean;
  }) {
    super(quotaMessage(f), { ...f });
  }
}

function quotaMessage(f: ConstructorParameters<typeof QuotaExceeded>[0]): string {
  if (f.browser) {
    return `The browser refused to store more: the storage quota is full${f.needed !== undefined ? ` (${f.needed} new bytes were needed; evicting every unpinned state could not make room)` : ''}. Delete or evict states, or request persistent storage, then try again. Nothing was written.`;
  }
  const lim = f.limit !== undefined && Number.isFinite(f.limit) ? f.limit : 'no more';
  return `Storing state ${f.key} needs ${f.needed} more bytes; the store holds ${f.storeBytes} bytes and may hold ${lim}${f.budget !== null && f.budget !== undefined ? ` (budget ${f.budget})` : ''}. Even evicting every unpinned state leaves ${f.afterEviction} bytes. Unpin or delete states, or raise the budget. Nothing was written.`;
}

/** The call was cancelled (its AbortSignal fired). Nothing was written. */
export class Aborted extends StatecartError {
  override name = 'Aborted' as const;
  constructor(f: { before?: boolean } = {}) {
    super(`The request was cancelled${f.before ? ' before it started' : ''}; nothing was written.`, { ...f });
  }
}

/** The worker died or hung and was replaced; the call did not complete and wrote nothing. */
export class WorkerCrashed extends StatecartError {
  override name = 'WorkerCrashed' as const;
  constructor(f: { reason: string }) {
    super(`The statecart worker was restarted: ${f.reason}. The request was not completed and wrote nothing; try it again.`, { ...f });
  }
}

/**
 * States that earlier calls returned were not stored: their writes, queued
 * behind the calls (write-behind), failed. Reported once, to the next
 * flush(). Each failed write left the store as it was.
 */
export class StateNotStored extends StatecartError {
  override name = 'StateNotStored' as const;
  constructor(f: { keys: string[]; reason: string; cause?: string }) {
    const what = f.keys.length === 1 ? `State ${f.keys[0]} was` : `${f.keys.length} states (the first ${f.keys[0]}) were`;
    super(
      `${what} returned by an earlier call but not stored: its write failed (${f.reason.replace(/\.$/, '')}). The store is as it was without it; create it again (createState with its text) where it is needed, after making room if the store was full.`,
      { ...f },
    );
  }
}

/** A write that did not commit (the transaction was aborted); nothing was written. */
export class WriteInterrupted extends StatecartError {
  constructor() {
    super('The write was interrupted before it committed; nothing was written.');
  }
}

const classes: Record<string, { prototype: StatecartError }> = {
  StatecartError,
  StateNotFound,
  CorruptBlob,
  ModelMismatch,
  ModelNotLoaded,
  ContextOverflow,
  InvalidInput,
  InvalidCartridge,
  MissingParent,
  QuotaExceeded,
  Aborted,
  WorkerCrashed,
  StateNotStored,
};

export function serializeError(e: unknown): SerializedError {
  if (e instanceof StatecartError) return e.toJSON();
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: 'Error', message: String(e) };
}

/**
 * The typed error again, from what crossed a boundary: the same class, the
 * same message and details (the constructor is not run again, so the message
 * is the one written where the error happened).
 */
export function reviveError(s: SerializedError): Error {
  const C = classes[s.name];
  if (!C) {
    const e = new Error(s.message);
    e.name = s.name;
    return e;
  }
  const e = Object.create(C.prototype) as StatecartError & { message: string; details: Record<string, unknown> };
  Object.defineProperty(e, 'message', { value: s.message, writable: true, configurable: true });
  Object.defineProperty(e, 'details', { value: s.details ?? {}, writable: true, configurable: true });
  Object.defineProperty(e, 'stack', { value: `${s.name}: ${s.message}`, writable: true, configurable: true });
  // `name` is a class field, set by the constructor that is skipped here.
  Object.defineProperty(e, 'name', { value: s.name, writable: true, configurable: true, enumerable: true });
  return e;
}

export function throwIfAborted(signal?: AbortSignal | { aborted: boolean }): void {
  if (signal?.aborted) throw new Aborted();
}
