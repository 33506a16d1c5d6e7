/**
 * What the performance work aims at (issue 14). The run's plan takes its
 * sizes from here, and the report shows each target beside what was measured.
 */
export const TARGETS = {
  /** 20-step agent loop, plain ÷ cached, per model. */
  agentLoop: [
    { model: 'gpt2-shape', atLeast: 12 },
    { model: 'tiny-gpt2', atLeast: 3 },
  ],
  /** 16 new tokens on a hot 512-token base, to the first token: at most this many times the same 16 tokens alone. */
  ttftHot: { baseTokens: 512, newTokens: 16, atMost: 1.5 },
  /**
   * 16 new tokens on a base read from IndexedDB, to the first token: at least this many times faster than prefilling it all.
   * GPT-2 holds 1,024 positions: 1,007 + 16 + the first generated token = 1,024.
   */
  ttftStored: { baseTokens: 1007, newTokens: 16, atLeast: 15 },
  /** One generated token at the long context: at most this many times one at the short context. */
  decode: { short: 64, mid: 512, long: 1000, extraTokens: 16, atMost: 1.3 },
  /** Prefill tokens/s, the Mamba model over the GPT-2 model of the same scale (plain, WASM). */
  prefill: {
    tokens: 512,
    atLeast: 0.8,
    pairs: [
      { mamba: 'mamba-130m-shape', gpt2: 'gpt2-shape' },
      { mamba: 'tiny-mamba', gpt2: 'tiny-gpt2' },
    ],
  },
} as const;
