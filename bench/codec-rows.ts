// The bench's codec table, measured in the bench's own run (full and --quick):
// the trained micro-gpt2 (models/micro-gpt2) in Node on the CPU, a state of
// held-out Brown text, each codec's decoded copy run along the next 64
// held-out tokens and compared with fp32 (src/engine/codec-optimizer.ts,
// measureCodecs). The trained model is the one whose distributions are
// peaked enough for greedy agreement and KL to mean something.
import { measureCodecs } from '../src/engine/codec-optimizer.ts';
import { heldOutTokens, loadMicroGpt2, MICRO_ID } from '../tests/unit/support/micro-model.ts';
import type { CodecRow, SkipNote } from './lib/types.ts';

/** Probe positions after the state: the first compared at once, then 63 teacher-forced. */
const CODEC_PROBE_POSITIONS = 64;

export async function measureCodecRows(o: { quick: boolean; skipped: SkipNote[]; log?: (s: string) => void }): Promise<CodecRow[]> {
  const stateTokens = o.quick ? 256 : 512;
  try {
    const t0 = performance.now();
    const model = await loadMicroGpt2();
    const text = await heldOutTokens(model, stateTokens + CODEC_PROBE_POSITIONS);
    const { state } = await model.prefill(text.slice(0, stateTokens));
    const rows = await measureCodecs(model, state, {
      probeTokens: [text[stateTokens]!],
      teacherTokens: text.slice(stateTokens + 1, stateTokens + CODEC_PROBE_POSITIONS),
    });
    o.log?.(
      `codec table: ${MICRO_ID}, ${stateTokens}-token held-out state, ${CODEC_PROBE_POSITIONS} probe positions, ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    return rows.map((r) => ({
      model: MICRO_ID,
      codec: r.codec,
      bytes: r.bytes,
      bytesVsFp16: r.bytesVsFp16,
      maxLogitError: r.maxLogitError,
      meanKL: r.meanKL,
      greedyAgree: r.greedyAgree,
      greedyTotal: r.greedyTotal,
      greedyMatch: !r.error && r.greedyAgree === r.greedyTotal,
      stateTokens,
      ...(r.error ? { error: r.error } : {}),
    }));
  } catch (e) {
    o.skipped.push({ what: 'codec table', reason: `${MICRO_ID} could not be measured: ${(e as Error).message}` });
    return [];
  }
}
