import canonicalizeLib from 'canonicalize';

/**
 * RFC 8785 (JCS) canonical JSON. The library is the reference
 * implementation by the RFC's author; we only refuse what JCS cannot carry.
 */
export function canonicalize(value: unknown): string {
  const s = (canonicalizeLib as unknown as (v: unknown) => string | undefined)(value);
  if (s === undefined) throw new TypeError('value has no canonical JSON form');
  return s;
}
