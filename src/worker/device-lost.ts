/// <reference lib="webworker" />
/** Message a worker posts, outside comlink, when its WebGPU device is lost. */
export const DEVICE_LOST = 'statecart:device-lost';

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

/** Tells the client's supervisor, which restarts the worker on WASM. */
export function reportDeviceLost(message: string): void {
  self.postMessage({ type: DEVICE_LOST, message });
  self.close();
}
