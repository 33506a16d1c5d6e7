import 'fake-indexeddb/auto';
import { describe, it, expect, vi, afterEach } from 'vitest';
import { Engine } from '../../src/engine/engine.ts';
import { StateStore } from '../../src/store/store.ts';
import { planEviction } from '../../src/store/quota.ts';
import { useHitKey, type Manifest } from '../../src/store/records.ts';
import { loadNodeModel, pseudoTokens } from './support/codec-models.ts';

// Issue 18, part 1: eviction removes checkpoints that no request ever reused
// before states that were (Marconi's rule for speculative SSM states).

function tick(): void {
  let clock = 1_700_000_000_000;
  vi.spyOn(Date, 'now').mockImplementation(() => (clock += 1000));
}
afterEach(() => vi.restoreAllMocks());

const manifest = (key: string, lastUsed: number, o: Partial<Manifest> = {}): Manifest => ({
  v: 2,
  key,
  modelId: 'm',
  modelFp: 'f',
  arch: 'mamba',
  tokens: [1],
  tensors: [],
  blocks: [{ key: `${key}/fp32`, digest: 'sha256:x', start: 0, end: 1, codec: 'fp32', bytes: 100 }],
  parent: null,
  codec: 'fp32',
  bytes: 100,
  receipt: null,
  createdAt: lastUsed,
  lastUsed,
  pinned: false,
  ...o,
});

describe('eviction and checkpoints', () => {
  it('the plan takes unreused checkpoints first, least recent first among them; a reused checkpoint ranks as a state', () => {
    const ms = [
      manifest('old-state', 1),
      manifest('hit-ck', 2, { checkpoint: true }),
      manifest('new-ck', 5, { checkpoint: true }),
      manifest('pinned-ck', 0, { checkpoint: true, pinned: true }),
      manifest('newer-ck', 6, { checkpoint: true }),
      manifest('recent-state', 7),
    ];
    const use = new Map<string, number>([[useHitKey('hit-ck'), 3]]);
    const plan = planEviction({ manifests: ms, lastUsed: use, limitBytes: 200 });
    // Six states of 100 bytes each, room for two: the pinned one stays whatever happens.
    expect(plan.victims).toEqual(['new-ck', 'newer-ck', 'old-state', 'hit-ck']);
    // The same checkpoint, never reused, is the first to go (the least recent of the unreused).
    const unused = planEviction({ manifests: ms, lastUsed: new Map(), limitBytes: 200 });
    expect(unused.victims.slice(0, 3)).toEqual(['hit-ck', 'new-ck', 'newer-ck']);
    // Without checkpoints, least recent first.
    const noHits = planEviction({ manifests: ms.map((m) => ({ ...m, checkpoint: undefined })), lastUsed: use, limitBytes: 200 });
    expect(noHits.victims).toEqual(['old-state', 'hit-ck', 'new-ck', 'newer-ck']);
  });

  it('tiny-mamba: evicting keeps the checkpoint a request reused and drops the unreused ones, though they are more recent', async () => {
    tick();
    const model = await loadNodeModel('tiny-mamba');
    const store = new StateStore({ dbName: `evict-ck-${process.pid}`, useFlushMs: 10 });
    const engine = new Engine(store, async () => model, { checkpointEvery: 64 });
    const textA = pseudoTokens(150, model.vocabSize, 1);
    const a = await engine.createState({ tokens: textA });
    expect(a.checkpoints).toHaveLength(2); // 64, 128
    // A second text shares 100 tokens with A: it resumes from A's checkpoint at 64.
    const c = await engine.createState({ tokens: [...textA.slice(0, 100), ...pseudoTokens(10, model.vocabSize, 2)] });
    expect(c.reuse.fromKey).toBe(a.checkpoints[0]);
    const b = await engine.createState({ tokens: pseudoTokens(150, model.vocabSize, 3) });
    expect(b.checkpoints).toHaveLength(2);
    const before = await engine.listStates();
    expect(before).toHaveLength(7);
    const size = before[0]!.bytes;
    expect(before.every((s) => s.bytes === size)).toBe(true); // a fixed-size state, whole in one blob
    // Room for four of the seven.
    const r = await store.evict({ targetBytes: 4 * size });
    expect(new Set(r.evicted)).toEqual(new Set([a.checkpoints[1], ...b.checkpoints]));
    const after = await engine.listStates();
    expect(after.map((s) => s.key).sort()).toEqual([a.stateKey, a.checkpoints[0], c.stateKey, b.stateKey].sort());
    expect(after.find((s) => s.key === a.checkpoints[0])).toMatchObject({ checkpoint: true, hits: 1 });
    // Least recent first alone would have taken A's first checkpoint and A (the oldest) instead.
    store.close();
  });
});
