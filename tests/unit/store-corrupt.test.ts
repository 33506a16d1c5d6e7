import 'fake-indexeddb/auto';
import { describe, it, expect } from 'vitest';
import { promisifyRequest } from 'idb-keyval';
import { StateStore } from '../../src/store/store.ts';
import { CorruptBlob } from '../../src/core/errors.ts';
import type { BlockRecord } from '../../src/store/records.ts';
import { audit, maxDiff, putSynthetic, syntheticState, tokensFor } from './support/synthetic-state.ts';
import { nodeEngine } from './support/node-engine.ts';

let n = 0;

async function flip(store: StateStore, blobKey: string, offset: number): Promise<void> {
  await store.idb('readwrite', async (s) => {
    const rec = (await promisifyRequest(s.get('b:' + blobKey))) as BlockRecord;
    const bytes = new Uint8Array(rec.data.slice(0));
    bytes[offset % bytes.length]! ^= 1 << (offset % 8);
    s.put({ ...rec, data: bytes.buffer }, 'b:' + blobKey);
    return promisifyRequest(s.transaction);
  });
}

describe('corrupt data is never served', () => {
  it('every flipped bit in every stored blob is detected on read; the state is marked damaged, listed so, and healed by a rewrite', async () => {
    const store = new StateStore({ dbName: `corrupt-${process.pid}-${++n}`, hotBytes: 1 });
    const states = [tokensFor(1, 50), tokensFor(1, 90), tokensFor(4, 33)];
    for (const t of states) await putSynthetic(store, t);
    let flips = 0;
    let detected = 0;
    let served = 0;
    for (let round = 0; round < 3; round++) {
      for (const first of await store.list()) {
        for (let i = 0; i < first.blocks.length; i++) {
          // A rewrite below may re-cut a state's tail: take its blocks as they are now.
          const m = (await store.getManifest(first.key))!;
          const b = m.blocks[i]!;
          const sharers = (await store.list()).filter((x) => x.blocks.some((y) => y.key === b.key)).map((x) => x.key);
          await flip(store, b.key, 7 + round * 1013 + flips * 31);
          flips++;
          const r = await store.getState(m.key).then(
            () => 'served',
            (e: Error) => e,
          );
          if (r === 'served') served++;
          else if (r instanceof CorruptBlob) detected++;
          // Every state naming the blob is now listed as damaged, and none serves it.
          const listed = await store.list();
          for (const k of sharers) expect(listed.find((x) => x.key === k)!.damaged?.blocks).toContain(b.key);
          for (const k of sharers) await expect(store.getState(k)).rejects.toBeInstanceOf(CorruptBlob);
          // The corrupt blob was dropped; rewriting the state (a recompute) heals it and its sharers.
          expect((await audit(store)).badDigest).toEqual([]);
          await putSynthetic(store, m.tokens);
          for (const k of sharers) {
            const { state, manifest } = await store.getState(k);
            expect(maxDiff(state, syntheticState(manifest.tokens))).toBe(0);
          }
          expect((await store.list()).filter((x) => x.damaged)).toEqual([]);
        }
      }
    }
    console.log(`[corrupt] ${flips} bit flips in stored blobs: ${detected} detected on read, ${served} served`);
    expect(served).toBe(0);
    expect(detected).toBe(flips);
    expect(store.stats().damageDetected).toBeGreaterThanOrEqual(flips);
  });

  it('engine: a damaged state is listed as damaged, and createState / infer recompute it from its tokens', async () => {
    const { engine, store } = await nodeEngine();
    const a = await engine.createState({ text: 'A damaged state is recomputed from its tokens, never served. '.repeat(3) });
    const clean = await engine.infer({ stateKey: a.stateKey, delta: ' so', maxNewTokens: 5 });
    const m = (await store.getManifest(a.stateKey))!;
    await flip(store, m.blocks[1]!.key, 100);
    await store.dropHot();
    expect((await store.verify(a.stateKey)).ok).toBe(false);
    const info = await engine.getState(a.stateKey);
    expect(info.damaged).toEqual({ reason: 'digest mismatch', blocks: 1 });
    expect((await engine.listStates()).find((s) => s.key === a.stateKey)!.damaged).toBeDefined();
    // createState of the same text does not answer "already stored" for a damaged state: it recomputes.
    const again = await engine.createState({ text: 'A damaged state is recomputed from its tokens, never served. '.repeat(3) });
    expect(again.stateKey).toBe(a.stateKey);
    expect(again.processed).toBeGreaterThan(0);
    expect((await engine.getState(a.stateKey)).damaged).toBeUndefined();
    expect((await store.verify(a.stateKey)).ok).toBe(true);
    // Damage it again and continue it: infer recomputes, and the continuation is the clean one.
    await flip(store, (await store.getManifest(a.stateKey))!.blocks[0]!.key, 5);
    await store.dropHot();
    const healed = await engine.infer({ stateKey: a.stateKey, delta: ' so', maxNewTokens: 5 });
    expect(healed.tier).toBe('recomputed');
    expect(healed.outputTokens).toEqual(clean.outputTokens);
    expect((await store.verify(a.stateKey)).ok).toBe(true);
  });
});
