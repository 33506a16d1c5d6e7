/// <reference lib="webworker" />
/** Message a worker posts, outside comlink, when its WebGPU device is lost. */
export const DEVICE_LOST = 'statecart:device-lost';

/** Tells the client's supervisor, which restarts the worker on WASM. */
export function reportDeviceLost(message: string): void {
  self.postMessage({ type: DEVICE_LOST, message });
  self.close();
}
