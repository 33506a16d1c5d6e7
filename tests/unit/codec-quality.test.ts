import { describe, expect, it } from 'vitest';
import { measureCodecs } from '../../src/engine/codec-optimizer.ts';
import { heldOutTokens, loadMicroGpt2 } from './support/micro-model.ts';

// The codecs judged on the trained micro-gpt2 (models/micro-gpt2): a state of
// 256 held-out Brown tokens, then 64 positions teacher-forced along the next
// held-out tokens, each codec's decoded state against fp32.
describe('codecs on the trained micro-gpt2, held-out text', () => {
  it('int8 ≤ 0.56× and kivi4 ≤ 0.35× fp16 bytes; int8 picks fp32’s token at ≥ 63 of 64 positions', async () => {
    const model = await loadMicroGpt2();
    const text = await heldOutTokens(model, 256 + 64);
    const { state } = await model.prefill(text.slice(0, 256));
    const rows = await measureCodecs(model, state, { probeTokens: [text[256]!], teacherTokens: text.slice(257, 320) });
    console.log(
      rows
        .map(
          (r) =>
            `${r.codec}: ${r.bytes} bytes, ${r.bytesVsFp16.toFixed(3)}× fp16, max logit error ${r.maxLogitError.toPrecision(3)}, mean KL ${r.meanKL.toExponential(2)}, greedy ${r.greedyAgree}/${r.greedyTotal}`,
        )
        .join('\n'),
    );
    const row = (c: string) => rows.find((r) => r.codec === c)!;
    for (const r of rows) {
      expect(r.error).toBeUndefined();
      expect(r.greedyTotal).toBe(64);
    }
    expect(row('fp32')).toMatchObject({ maxLogitError: 0, meanKL: 0, greedyAgree: 64 });
    expect(row('fp16').bytesVsFp16).toBe(1);
    expect(row('int8').bytesVsFp16).toBeLessThanOrEqual(0.56);
    expect(row('kivi4').bytesVsFp16).toBeLessThanOrEqual(0.35);
    expect(row('int8').greedyAgree).toBeGreaterThanOrEqual(63);
    // Lossy codecs do move the logits (the measurement is not vacuous), int8 less than kivi4.
    expect(row('int8').maxLogitError).toBeGreaterThan(0);
    expect(row('kivi4').meanKL).toBeGreaterThan(row('int8').meanKL);
    // The probe is held-out text (64 tokens fed), not one token repeated.
    expect(rows[0]!.probeTokens).toEqual(text.slice(256, 320));
  }, 300_000);
});
