/**
 * statecart's testing entry: fault injection and counters of a client's
 * worker, for tests of recovery and of how much work a call does. Not part of
 * the public client (import it from `statecart/testing`).
 */
import type * as Comlink from 'comlink';
import type { DebugApi, WorkerHandler } from '../worker/handler.ts';
import { DEBUG } from './debug.ts';
import type { StatecartClient } from './index.ts';
import type { WorkerSupervisor } from './supervisor.ts';

export type { DebugApi };

export function testing(client: StatecartClient): DebugApi {
  const sup = (client as unknown as Record<symbol, WorkerSupervisor>)[DEBUG];
  if (!sup) throw new TypeError('testing(): not a statecart client made by createStatecart');
  return {
    fault: (kind) => sup.run((r) => dbg(r).fault(kind)),
    storeFault: (n) => sup.run((r) => dbg(r).storeFault(n)),
    dropHot: () => sup.run((r) => dbg(r).dropHot()),
    holdWrites: (on) => sup.run((r) => dbg(r).holdWrites(on)),
    probe: (req) => sup.run((r) => dbg(r).probe(req)),
    counters: () => sup.run((r) => dbg(r).counters()),
  };
}

/** comlink reaches a nested object by path; its types do not say so. */
const dbg = (r: Comlink.Remote<WorkerHandler>): Comlink.Remote<DebugApi> => r.debug as unknown as Comlink.Remote<DebugApi>;
