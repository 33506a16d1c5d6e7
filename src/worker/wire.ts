import * as Comlink from 'comlink';
import { reviveError, serializeError, type SerializedError } from '../core/errors.ts';
import type { CallOptions, Progress } from '../engine/api.ts';

/**
 * What crosses the worker boundary besides plain data, as comlink transfer
 * handlers (registered on both sides by importing this module):
 *
 * - errors: every thrown error crosses as { name, message, details } and is
 *   revived as the same typed class, details included;
 * - call options: a call's AbortSignal and progress callback cross as one
 *   MessagePort; the page posts "abort" on it, the worker posts progress;
 *   `durable` crosses with it as a flag.
 */

/** A call's options, marked for the transfer handler. */
export class WireOptions {
  constructor(readonly options: CallOptions) {}
}

/** What the worker side of a call's options is: a signal, a progress function, durable, and close() when the call is done. */
export interface ReceivedOptions {
  signal: AbortSignal;
  onProgress?: (p: Progress) => void;
  durable?: boolean;
  close(): void;
}

type OptionsMessage = { type: 'abort' } | { type: 'progress'; p: Progress };

const optionsHandler: Comlink.TransferHandler<WireOptions | ReceivedOptions, { port: MessagePort; progress: boolean; aborted: boolean; durable: boolean }> = {
  canHandle: (v): v is WireOptions => v instanceof WireOptions,
  serialize(v) {
    const o = (v as WireOptions).options;
    const { port1, port2 } = new MessageChannel();
    const onAbort = () => port1.postMessage({ type: 'abort' } satisfies OptionsMessage);
    o.signal?.addEventListener('abort', onAbort, { once: true });
    port1.onmessage = (ev: MessageEvent<OptionsMessage | { type: 'done' }>) => {
      if (ev.data.type === 'progress') o.onProgress?.(ev.data.p);
      if (ev.data.type === 'done') {
        o.signal?.removeEventListener('abort', onAbort);
        port1.close();
      }
    };
    return [{ port: port2, progress: typeof o.onProgress === 'function', aborted: o.signal?.aborted ?? false, durable: o.durable === true }, [port2]];
  },
  deserialize({ port, progress, aborted, durable }) {
    const ac = new AbortController();
    if (aborted) ac.abort();
    port.onmessage = (ev: MessageEvent<OptionsMessage>) => {
      if (ev.data.type === 'abort') ac.abort();
    };
    return {
      signal: ac.signal,
      ...(progress ? { onProgress: (p: Progress) => port.postMessage({ type: 'progress', p } satisfies OptionsMessage) } : {}),
      ...(durable ? { durable: true } : {}),
      close: () => {
        port.postMessage({ type: 'done' });
        port.close();
      },
    };
  },
};

type ThrownValue = { value: unknown };

/**
 * comlink's own 'throw' handler keeps a name and a message; ours keeps the
 * typed error whole. Registered under the same name, it replaces comlink's
 * (and recognises a thrown value the way comlink's does).
 */
function throwHandler(original: Comlink.TransferHandler<unknown, unknown>): Comlink.TransferHandler<ThrownValue, SerializedError> {
  return {
    canHandle: (v): v is ThrownValue => original.canHandle(v),
    serialize({ value }) {
      return [serializeError(value), []];
    },
    deserialize(s) {
      throw reviveError(s);
    },
  };
}

let registered = false;

/** Registers the handlers (idempotent); both the worker and the client call it. */
export function registerWire(): void {
  if (registered) return;
  registered = true;
  Comlink.transferHandlers.set('statecart-options', optionsHandler as Comlink.TransferHandler<unknown, unknown>);
  const original = Comlink.transferHandlers.get('throw')!;
  Comlink.transferHandlers.set('throw', throwHandler(original) as Comlink.TransferHandler<unknown, unknown>);
}
