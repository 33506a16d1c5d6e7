/**
 * Several byte strings as one blob: 4 magic bytes, u32 count, u32 length per
 * part, then the parts, each padded to 4 bytes (codec headers are 4-byte
 * aligned, so every part's float views stay aligned).
 */
export function frameParts(magic: readonly number[], parts: readonly Uint8Array[]): Uint8Array {
  const head = 8 + 4 * parts.length;
  let size = head;
  for (const p of parts) size += (p.length + 3) & ~3;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  out.set(magic, 0);
  dv.setUint32(4, parts.length, true);
  let at = head;
  parts.forEach((p, i) => {
    dv.setUint32(8 + 4 * i, p.length, true);
    out.set(p, at);
    at += (p.length + 3) & ~3;
  });
  return out;
}
