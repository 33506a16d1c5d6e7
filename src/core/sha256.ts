import { toHex } from './bytes.ts';

// WebCrypto is one-shot only, but it is native and fast (about 0.7 GB/s here)
// and present in browsers, workers and Node 20 alike.
async function sha256(data: Uint8Array): Promise<Uint8Array> {
  const buf = await crypto.subtle.digest('SHA-256', data as Uint8Array<ArrayBuffer>);
  return new Uint8Array(buf);
}

export async function sha256Hex(data: Uint8Array): Promise<string> {
  return toHex(await sha256(data));
}

/** "sha256:<hex>", the form in which digests and keys are written everywhere. */
export async function digestOf(data: Uint8Array): Promise<string> {
  return 'sha256:' + (await sha256Hex(data));
}
