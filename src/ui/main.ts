import { createStatecart, type DeviceChoice, type StatecartClient } from '../lib/index.ts';
import { testing, type DebugApi } from '../lib/testing.ts';
import { app, refresh } from './app.ts';
import { initBases } from './bases.ts';
import { initCartridges, openLinkedCartridge } from './cartridges.ts';
import { $, errorText } from './dom.ts';
import { initGraph } from './graph.ts';
import { hubUrlFrom, initModelPicker, loadModel, setStatus } from './model-picker.ts';
import { initSavings } from './savings.ts';
import { initStateActions } from './state-actions.ts';
import { initStorage } from './storage.ts';
import { watchStore } from './store-events.ts';

declare global {
  interface Window {
    statecart?: StatecartClient;
    statecartReady?: Promise<StatecartClient>;
    statecartTesting?: DebugApi;
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
  const client = await createStatecart({ device: $<HTMLSelectElement>('device').value as DeviceChoice, ...(hubUrl ? { hubUrl } : {}) });
  app.client = client;
  window.statecart = client;
  // The testing entry's hooks (fault injection, counters) for the browser tests; not in a built site.
  if (import.meta.env.DEV) window.statecartTesting = testing(client);
  initCartridges();
  watchStore(client);
  if (params.get('autoload') !== '0' && (await loadModel())) openLinkedCartridge();
  await refresh();
  return client;
})();
window.statecartReady.catch((e) => setStatus(errorText(e), true));
