import type { Health, ModelInfo, StateInfo } from '../lib/index.ts';
import type { StatecartClient as Client } from '../lib/index.ts';

export interface Snapshot {
  states: StateInfo[];
  health: Health;
}

type Listener = (s: Snapshot) => void | Promise<void>;

/**
 * What the panels share: the client, the loaded model, the selected state,
 * and the token ids of states made in this session (the page needs them to
 * measure a real recompute; states from before a reload have none, and their
 * recompute is shown as not measured rather than guessed).
 */
export const app = {
  client: null as unknown as Client,
  model: null as ModelInfo | null,
  selected: null as string | null,
  tokensOf: new Map<string, number[]>(),
  last: null as Snapshot | null,
};

const listeners = new Set<Listener>();
const selectListeners = new Set<(key: string | null) => void>();

export function onRefresh(fn: Listener): void {
  listeners.add(fn);
}

export function onSelect(fn: (key: string | null) => void): void {
  selectListeners.add(fn);
}

let queue: Promise<unknown> = Promise.resolve();

/** Reads the store and hands the same snapshot to every panel; calls run one after another, so none shows older data than the action before it. */
export function refresh(): Promise<Snapshot> {
  const run = queue.then(async () => {
    const [states, health] = await Promise.all([app.client.listStates(), app.client.health()]);
    const snap = { states, health };
    app.last = snap;
    if (app.selected && !states.some((s) => s.key === app.selected)) app.selected = null;
    for (const fn of listeners) await fn(snap);
    return snap;
  });
  queue = run.catch(() => undefined);
  return run;
}

export function select(key: string | null): void {
  app.selected = key;
  for (const fn of selectListeners) fn(key);
}
