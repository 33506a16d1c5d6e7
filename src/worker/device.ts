import type { Device } from '../models/types.ts';

export type DeviceChoice = 'auto' | 'webgpu' | 'wasm';

export interface DevicePick {
  device: Device;
  adapter: string | null;
  reason: string;
}

interface AdapterInfoLike {
  vendor?: string;
  architecture?: string;
  description?: string;
  device?: string;
  isFallbackAdapter?: boolean;
}

/**
 * WebGPU when a hardware adapter exists, WASM otherwise. A software adapter
 * (SwiftShader, the "fallback adapter") is 60–200× slower than WASM, so auto
 * mode skips it; forcing 'webgpu' still uses it.
 */
export async function pickDevice(choice: DeviceChoice): Promise<DevicePick> {
  if (choice === 'wasm') return { device: 'wasm', adapter: null, reason: 'WASM was asked for' };
  const gpu = (globalThis.navigator as { gpu?: { requestAdapter: (o?: object) => Promise<unknown> } } | undefined)?.gpu;
  if (!gpu) return { device: 'wasm', adapter: null, reason: 'this browser has no WebGPU (navigator.gpu is missing)' };
  type AdapterLike = { info?: AdapterInfoLike; isFallbackAdapter?: boolean };
  const adapter = (await gpu.requestAdapter({ powerPreference: 'high-performance' }).catch(() => null)) as AdapterLike | null;
  if (!adapter) return { device: 'wasm', adapter: null, reason: 'WebGPU is present but no adapter was found' };
  const info = adapter.info ?? {};
  const name = [info.vendor, info.architecture, info.description || info.device].filter(Boolean).join(' ') || 'unknown adapter';
  const software = Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter) || /swiftshader|llvmpipe|software/i.test(name);
  if (choice === 'webgpu')
    return { device: 'webgpu', adapter: name, reason: software ? 'WebGPU was asked for (software adapter: slow)' : 'WebGPU was asked for' };
  if (software) return { device: 'wasm', adapter: name, reason: `only a software WebGPU adapter (${name}); WASM is faster` };
  return { device: 'webgpu', adapter: name, reason: 'a WebGPU adapter was found' };
}
