// Errors cross the worker boundary as plain objects (comlink keeps no
// classes), so every error carries a stable `name` that callers match on.

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
  | 'WorkerCrashed';

export class StatecartError extends Error {
  override name: ErrorName = 'StatecartError';
  /** Extra machine-readable facts (a key, a byte offset, a model id). */
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

export class StateNotFound extends StatecartError {
  override name = 'StateNotFound' as const;
}
export class CorruptBlob extends StatecartError {
  override name = 'CorruptBlob' as const;
}
export class ModelMismatch extends StatecartError {
  override name = 'ModelMismatch' as const;
}
export class ModelNotLoaded extends StatecartError {
  override name = 'ModelNotLoaded' as const;
}
export class ContextOverflow extends StatecartError {
  override name = 'ContextOverflow' as const;
}
export class InvalidInput extends StatecartError {
  override name = 'InvalidInput' as const;
}
export class InvalidCartridge extends StatecartError {
  override name = 'InvalidCartridge' as const;
}
export class MissingParent extends StatecartError {
  override name = 'MissingParent' as const;
}
export class QuotaExceeded extends StatecartError {
  override name = 'QuotaExceeded' as const;
}
export class Aborted extends StatecartError {
  override name = 'Aborted' as const;
}
export class WorkerCrashed extends StatecartError {
  override name = 'WorkerCrashed' as const;
}

const classes: Record<string, new (m: string, d?: Record<string, unknown>) => StatecartError> = {
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
};

export function serializeError(e: unknown): SerializedError {
  if (e instanceof StatecartError) return e.toJSON();
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: 'Error', message: String(e) };
}

/** Rebuilds a typed error on the page side from what crossed the boundary. */
export function reviveError(s: SerializedError): Error {
  const C = classes[s.name];
  if (C) return new C(s.message, s.details ?? {});
  const e = new Error(s.message);
  e.name = s.name;
  return e;
}

export function throwIfAborted(signal?: AbortSignal | { aborted: boolean }): void {
  if (signal?.aborted) throw new Aborted('The request was cancelled; nothing was written.');
}
