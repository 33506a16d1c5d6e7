/**
 * The page's side of the State Pack Service Worker (src/sw/statepack-sw.ts):
 * registers it, and answers the requests it forwards with this page's client
 * (src/lib/statepack-http.ts), so `fetch('statepack/infer', …)` from this
 * page, another tab or a same-origin iframe reaches the origin's engine.
 */
import type { Statecart } from '../engine/api.ts';
import { statePackRoute, type HttpRequest } from './statepack-http.ts';

// (the same names as in src/sw/statepack-sw.ts)
const HELLO = 'statepack:hello';
const REQUEST = 'statepack:request';

/** Answers the Service Worker's requests with this client; returns a function that stops. */
export function serveStatePack(client: Statecart): () => void {
  const c = navigator.serviceWorker;
  const onMessage = (ev: MessageEvent) => {
    const port = ev.ports[0];
    const d = ev.data as { type?: string; req?: HttpRequest } | null;
    if (!port || !d) return;
    if (d.type === HELLO) port.postMessage({ host: true });
    else if (d.type === REQUEST && d.req) {
      void statePackRoute(client, d.req).then((r) => port.postMessage({ status: r.status, body: JSON.stringify(r.body) }));
    }
  };
  c.addEventListener('message', onMessage);
  c.startMessages();
  return () => c.removeEventListener('message', onMessage);
}

export interface StatePackWorker {
  registration: ServiceWorkerRegistration;
  /** The URL prefix the routes answer under (`<scope>statepack/`). */
  base: string;
  stop(): void;
}

/**
 * Registers the Service Worker (the built site ships it as `statepack-sw.js`
 * at its root), waits until it controls this page, and serves its requests.
 */
export async function registerStatePack(client: Statecart, o: { url?: string | URL; scope?: string | URL } = {}): Promise<StatePackWorker> {
  if (!('serviceWorker' in navigator))
    throw new Error('This browser has no Service Workers (or the page is not in a secure context): the HTTP routes are unavailable.');
  const stop = serveStatePack(client);
  const scope = new URL(o.scope ?? './', document.baseURI).href;
  const registration = await navigator.serviceWorker.register(new URL(o.url ?? 'statepack-sw.js', document.baseURI).href, { scope });
  if (!navigator.serviceWorker.controller) {
    // The worker claims open pages when it activates.
    await new Promise<void>((resolve) => {
      const done = () => {
        navigator.serviceWorker.removeEventListener('controllerchange', done);
        resolve();
      };
      navigator.serviceWorker.addEventListener('controllerchange', done);
      if (navigator.serviceWorker.controller) done();
    });
  }
  return { registration, base: new URL('statepack/', scope).href, stop };
}
