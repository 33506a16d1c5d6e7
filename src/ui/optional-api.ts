import type { StatecartClient } from '../lib/index.ts';

export type Client = StatecartClient;

/**
 * Methods that arrived with later issues (merge/compact, cartridges, codecs).
 * The page still checks each at run time, so that it says "not available
 * yet" against a worker or library build that lacks one instead of failing.
 */
export function has(c: Client, name: 'merge' | 'compact' | 'exportCartridge' | 'importCartridge' | 'chooseCodec' | 'setCodecPolicy'): boolean {
  return typeof (c as unknown as Record<string, unknown>)[name] === 'function';
}

export const NOT_YET = 'not available yet in this build of the library';
