/// <reference lib="webworker" />
/** Message a worker posts, outside comlink, when its WebGPU device is lost. */
export const DEVICE_LOST = 'statecart:device-lost';
/** Message a shared worker posts to every page before it closes after an uncaught error (a dedicated worker's page gets an error event instead). */
export const WORKER_ERROR = 'statecart:worker-error';

let lost: Promise<unknown> | null = null;

/** Watches the WebGPU device the model runs on (host.ts). */
export function watchLost(device: { lost?: Promise<{ message: string; reason: string }> }): void {
  const p = device.lost;
  if (!p) return;
  lost = p;
  void p.then((info) => reportDeviceLost(info.message || info.reason || 'unknown'));
}

/**
 * Whether the device is lost, or is lost within `ms`: a run on a destroyed
 * device fails with the runtime's own error (an AbortError from mapAsync)
 * before the device's `lost` promise settles, so a failed call waits a little
 * for it before answering.
 */
export async function deviceLostWithin(ms: number): Promise<boolean> {
  if (!lost) return false;
  return Promise.race([lost.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
}

export type WorkerNotice = { type: typeof DEVICE_LOST; message: string } | { type: typeof WORKER_ERROR; message: string };

/** How this worker reaches its page(s): its own port, or (a shared worker) every connected port. */
let post: (m: WorkerNotice) => void = (m) => self.postMessage(m);

export function setNoticeChannel(fn: (m: WorkerNotice) => void): void {
  post = fn;
}

/** Tells the client's supervisor(s), which restart the worker on WASM. */
export function reportDeviceLost(message: string): void {
  post({ type: DEVICE_LOST, message });
  self.close();
}

/** A shared worker's uncaught error: every page is told, then the worker ends, as a dedicated worker's page would end it. */
export function reportWorkerError(message: string): void {
  post({ type: WORKER_ERROR, message });
  self.close();
}
