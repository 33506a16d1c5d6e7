/// <reference lib="webworker" />
/**
 * The Service Worker that answers State Pack v0.2's HTTP routes on the page's
 * origin, under `<scope>/statepack/`. It holds no engine: a Service Worker is
 * stopped when idle, cannot start workers and has no WebGPU, so it forwards
 * each request to a page of the origin that holds a statecart client (the
 * requesting page itself when it holds one, else any other: an iframe or a
 * tab without one is served by the tab that has it). That page answers with
 * src/lib/statepack-http.ts through its client, i.e. through the origin's one
 * engine (the shared worker) where the browser has one.
 *
 * Self-contained (no imports): it is served as a classic script, as is, from
 * the site's root. The message names must match src/lib/statepack-host.ts.
 */
export {};
declare const self: ServiceWorkerGlobalScope;

const HELLO = 'statepack:hello';
const REQUEST = 'statepack:request';
/** How long a page has to say it holds an engine. */
const HELLO_MS = 2000;
/** The longest a request may take (a long prefill on a slow device). */
const REQUEST_MS = 10 * 60_000;

const prefix = () => new URL('statepack/', self.registration.scope).pathname;

self.addEventListener('install', () => {
  void self.skipWaiting();
});
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));
self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (url.origin !== self.location.origin || !url.pathname.startsWith(prefix())) return;
  e.respondWith(forward(e, url));
});

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', 'cache-control': 'no-store' } });
}

/** Posts a message with a reply port and waits for the first answer (null after `ms`). */
function ask<T>(client: Client, msg: unknown, ms: number): Promise<T | null> {
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    const timer = setTimeout(() => {
      ch.port1.close();
      resolve(null);
    }, ms);
    ch.port1.onmessage = (ev) => {
      clearTimeout(timer);
      ch.port1.close();
      resolve(ev.data as T);
    };
    client.postMessage(msg, [ch.port2]);
  });
}

/** A page holding an engine: the requester when it holds one, else the first other page to answer. */
async function findHost(requester: string): Promise<Client | null> {
  const all = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const order = [...all.filter((c) => c.id === requester), ...all.filter((c) => c.id !== requester)];
  if (!order.length) return null;
  return new Promise((resolve) => {
    let left = order.length;
    let done = false;
    for (const c of order) {
      void ask<{ host?: boolean }>(c, { type: HELLO }, HELLO_MS).then((a) => {
        left--;
        if (!done && a?.host) {
          done = true;
          resolve(c);
        } else if (!done && left === 0) resolve(null);
      });
    }
  });
}

async function forward(e: FetchEvent, url: URL): Promise<Response> {
  const method = e.request.method;
  const body = method === 'GET' || method === 'HEAD' ? '' : await e.request.text();
  const host = await findHost(e.clientId || e.resultingClientId);
  if (!host) {
    return json(503, {
      error: 'NoEngine',
      message: 'No page of this site holds a statecart engine right now: open the statecart page in a tab, then send the request again.',
    });
  }
  const r = await ask<{ status: number; body: string }>(host, { type: REQUEST, req: { method, path: url.pathname.slice(prefix().length), body } }, REQUEST_MS);
  if (!r) return json(504, { error: 'Timeout', message: 'The page holding the engine did not answer (it may have been closed); send the request again.' });
  return new Response(r.body, { status: r.status, headers: { 'content-type': 'application/json', 'cache-control': 'no-store' } });
}
