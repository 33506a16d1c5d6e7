// Storing a state in a test, as the engine would: a key chain over its
// tokens, and the parent's manifest when one is named.
import { KeyChain } from '../../../src/core/key-chain.ts';
import type { ModelState } from '../../../src/core/state.ts';
import type { BlockCodec } from '../../../src/store/blocks.ts';
import type { Manifest } from '../../../src/store/records.ts';
import type { StateStore } from '../../../src/store/store.ts';

export async function storeState(
  store: StateStore,
  o: { state: ModelState; modelId: string; modelFp: string; arch?: string; parent?: string | null; codec?: BlockCodec },
): Promise<Manifest> {
  const parent = o.parent ? ((await store.getManifest(o.parent)) ?? null) : null;
  const r = await store.putState({
    state: o.state,
    chain: await KeyChain.create(o.modelFp, o.state.tokens),
    modelId: o.modelId,
    modelFp: o.modelFp,
    arch: o.arch ?? 'gpt2',
    parent,
    ...(o.codec ? { codec: o.codec } : {}),
    // A test that stores a key again means to replace it (say, in another codec).
    replace: true,
  });
  return r.manifest;
}
