/// <reference lib="webworker" />
// The worker: the engine, handed to comlink. The same script runs as a
// dedicated worker (one page) or as the origin's shared worker (every tab of
// it, one port each, one engine: src/worker/engines.ts).
import * as Comlink from 'comlink';
import { WorkerHandler, type WorkerContext } from './handler.ts';
import { Engines } from './engines.ts';
import { registerWire } from './wire.ts';
import { reportWorkerError, setNoticeChannel, type WorkerNotice } from './device-lost.ts';

registerWire();

if ('onconnect' in self) {
  const ports = new Set<MessagePort>();
  const ctx: WorkerContext = { engines: new Engines(), shared: true, pages: 0 };
  // A lost device or an uncaught error ends the worker for every tab: each tab's supervisor hears it and reconnects.
  setNoticeChannel((m: WorkerNotice) => {
    for (const p of ports) p.postMessage(m);
  });
  self.addEventListener('error', (e: ErrorEvent) => reportWorkerError(e.message || 'unknown error'));
  self.addEventListener('connect', (e: Event) => {
    const port = (e as MessageEvent).ports[0]!;
    ports.add(port);
    ctx.pages++;
    Comlink.expose(new WorkerHandler(ctx), port);
  });
} else {
  Comlink.expose(new WorkerHandler());
}
