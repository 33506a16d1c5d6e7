import { describe, expect, it } from 'vitest';
import { agentLoopRow, decodeRow, prefillRow, stepBreakdown, ttftRow, type TimedCall } from '../../bench/lib/rows.ts';

const call = (ms: number, t: Partial<TimedCall['timings']> = {}): TimedCall => ({
  ms,
  timings: { totalMs: ms - 2, restoreMs: 1, prefillMs: 10, generateMs: 20, storeMs: 30, ...t },
});
const tgt = { model: 'tiny-gpt2', device: 'wasm' as const };

describe('bench rows', () => {
  it('splits a call into the engine timers, the rest of the engine, and messaging', () => {
    expect(stepBreakdown([call(100), call(80, { storeMs: 10 }), call(120, { storeMs: 50 })])).toEqual({
      restoreMs: 1,
      prefillMs: 10,
      generateMs: 20,
      storeMs: 30,
      engineOtherMs: 37, // 98 − 61
      messagingMs: 2,
    });
  });

  it('sums an agent loop on both sides and compares their outputs step by step', () => {
    const raw = {
      baseTokens: 512,
      gen: 4,
      deltaTokens: [10, 20],
      baseMs: 500,
      baseProcessed: 512,
      plain: [
        { ms: 1000, tokens: 525, out: [1, 2, 3, 4] },
        { ms: 1200, tokens: 549, out: [5, 6, 7, 8] },
      ],
      cached: [
        { ...call(100), tokens: 14, tier: 'hot', out: [1, 2, 3, 4] },
        { ...call(150), tokens: 24, tier: 'hot', out: [5, 6, 7, 8] },
      ],
    };
    const row = agentLoopRow(tgt, raw);
    expect(row.steps).toBe(2);
    expect(row.plainMs).toBe(2200);
    expect(row.cachedMs).toBe(750);
    expect(row.cachedStepsMs).toBe(250);
    expect(row.speedupVsPlain).toBeCloseTo(2200 / 750);
    expect(row.speedupVsPlainBaseStored).toBeCloseTo(2200 / 250);
    expect(row.plainTokens).toBe(1074);
    expect(row.cachedTokens).toBe(550);
    expect(row.cachedTokensNoBase).toBe(38);
    expect(row.identicalOutputs).toBe(true);
    expect(row.plainStepMs).toEqual({ median: 1100, min: 1000, max: 1200, n: 2 });
    const differs = structuredClone(raw);
    differs.cached[1]!.out = [5, 6, 7, 9];
    expect(agentLoopRow(tgt, differs).identicalOutputs).toBe(false);
    const shorter = structuredClone(raw);
    shorter.cached.pop();
    expect(agentLoopRow(tgt, shorter).identicalOutputs).toBe(false);
  });

  it('takes first-token medians of each side', () => {
    const row = ttftRow(tgt, {
      baseTokens: 512,
      newTokens: 16,
      alone: [30, 10, 20],
      plain: [300, 100, 200],
      hot: [call(50), call(40), call(60)],
      stored: [call(90), call(70), call(80)],
      identicalFirstToken: true,
    });
    expect([row.aloneMs, row.plainMs, row.hotMs, row.storedMs]).toEqual([20, 200, 50, 80]);
    expect(row.spread.alone).toEqual({ median: 20, min: 10, max: 30, n: 3 });
    expect(row.hotBreakdown.messagingMs).toBe(2);
  });

  it('takes a token’s cost from paired wall-time differences', () => {
    const row = decodeRow(tgt, {
      context: 1000,
      extraTokens: 16,
      pairs: [
        { one: call(100), more: call(260, { generateMs: 170 }) },
        { one: call(110), more: call(302, { generateMs: 204 }) },
        { one: call(90), more: call(330, { generateMs: 238 }) },
      ],
      plainPairs: [
        { one: 10, more: 170 },
        { one: 12, more: 204 },
        { one: 11, more: 11 + 16 * 9 },
      ],
    });
    expect(row.msPerToken).toBe(12); // (302 − 110) / 16; the others 10 and 15
    expect(row.spread).toEqual({ median: 12, min: 10, max: 15, n: 3 });
    expect(row.workerMsPerToken).toBe(12); // 204 / 17 tokens
    expect(row.plainMsPerToken).toBe(10);
  });

  it('gives prefill throughput from the median time', () => {
    expect(prefillRow(tgt, { tokens: 512, ms: [512, 256, 1000] }).tokPerS).toBe(1000);
  });
});
