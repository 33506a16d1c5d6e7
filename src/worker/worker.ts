/// <reference lib="webworker" />
// The worker: the engine, handed to comlink.
import * as Comlink from 'comlink';
import { WorkerHandler } from './handler.ts';
import { registerWire } from './wire.ts';

registerWire();
Comlink.expose(new WorkerHandler());
