import { createStatecart, type DeviceChoice, type StatecartClient } from '../lib/index.ts';
import { app, refresh } from './app.ts';
import { initBases } from './bases.ts';
import { initCartridges, openLinkedCartridge } from './cartridges.ts';
import { $, errorText } from './dom.ts';
import { initGraph } from './graph.ts';
import { initModelPicker, loadModel, setStatus } from './model-picker.ts';
import type { Client } from './optional-api.ts';
import { initSavings } from './savings.ts';
import { initStateActions } from './state-actions.ts';
import { initStorage } from './storage.ts';

declare global {
  interface Window {
    statecart?: StatecartClient;
    statecartReady?: Promise<StatecartClient>;
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
  const client = await createStatecart({ device: $<HTMLSelectElement>('device').value as DeviceChoice });
  app.client = client as Client;
  window.statecart = client;
  initCartridges();
  if (params.get('autoload') !== '0' && (await loadModel())) openLinkedCartridge();
  await refresh();
  return client;
})();
window.statecartReady.catch((e) => setStatus(errorText(e), true));
