import { createStatecart, type DeviceChoice, type StatecartClient } from '../lib/index.ts';
import { registerStatePack, type StatePackWorker } from '../lib/statepack-host.ts';
import { testing, type DebugApi } from '../lib/testing.ts';
import { app, refresh } from './app.ts';
import { initBases } from './bases.ts';
import { initCartridges, openLinkedCartridge } from './cartridges.ts';
import { $, errorText } from './dom.ts';
import { initGraph } from './graph.ts';
import { hubUrlFrom, initModelPicker, loadModel, setStatus } from './model-picker.ts';
import { initialRemotes, initRemotes } from './remotes.ts';
import { initSavings } from './savings.ts';
import { initStateActions } from './state-actions.ts';
import { initStorage } from './storage.ts';
import { watchStore } from './store-events.ts';

declare global {
  interface Window {
    statecart?: StatecartClient;
    statecartReady?: Promise<StatecartClient>;
    statecartTesting?: DebugApi;
    /** Resolves once the State Pack Service Worker controls the page (its HTTP routes answer under `statepack/`). */
    statepackReady?: Promise<StatePackWorker>;
  }
}

const params = new URLSearchParams(location.search);
initModelPicker(params);
initBases();
initGraph();
initStateActions();
initSavings();
initStorage();

// Resolves once the worker is up and (unless ?autoload=0) the model has loaded;
// the tests and embedding examples wait on it.
window.statecartReady = (async () => {
  const hubUrl = hubUrlFrom(params);
  // One engine for every tab of this site (a SharedWorker where the browser has one).
  const [client, remotes] = await Promise.all([
    createStatecart({ device: $<HTMLSelectElement>('device').value as DeviceChoice, shared: params.get('shared') !== '0', ...(hubUrl ? { hubUrl } : {}) }),
    initialRemotes(),
  ]);
  if (remotes.length) await client.setRemotes(remotes);
  app.client = client;
  window.statecart = client;
  initRemotes(remotes);
  $('engineText').textContent = client.shared
    ? 'Engine: shared by every tab of this site (one model load, one hot tier).'
    : 'Engine: this tab’s own worker (this browser has no SharedWorker, or ?shared=0).';
  // State Pack's HTTP routes on this origin (statepack/…), answered by this engine.
  window.statepackReady = registerStatePack(client);
  window.statepackReady.then(
    (w) => ($('engineText').textContent += ` HTTP: ${w.base}health, states, infer, merge, compact.`),
    (e) => ($('engineText').textContent += ` HTTP routes unavailable: ${errorText(e)}`),
  );
  // The testing entry's hooks (fault injection, counters) for the browser tests; not in a built site.
  if (import.meta.env.DEV) window.statecartTesting = testing(client);
  initCartridges();
  watchStore(client);
  if (params.get('autoload') !== '0' && (await loadModel())) openLinkedCartridge();
  await refresh();
  return client;
})();
window.statecartReady.catch((e) => setStatus(errorText(e), true));
