/**
 * What the figures of a run mean, written into its JSON (`definitions`) so
 * that the file explains itself, and printed under the report's tables.
 */
export const DEFINITIONS: Record<string, string> = {
  wallTime:
    'Every user-facing time is a page wall time: performance.now() in the bench page around one awaited call (the statecart client or the plain worker), to its result.',
  plain:
    'What a page without statecart pays: a second worker of the bench page loads the same model files with the same runtime (onnxruntime-web through transformers.js), device and WASM thread count as the statecart worker, through src/models directly, and runs prefill of the whole text plus greedy generation (n tokens: n − 1 forward passes after the prefill; the last token is not run back in). No hashing, no store.',
  cached:
    'statecart through its client library: createState / infer, which restore, run the new tokens, generate (running the last generated token too, so that the stored state holds it), hash and store.',
  agentLoop:
    'A base, then steps that each add a delta and generate newTokensPerStep tokens greedily, plain and cached step by step in turn. plainMs: the plain steps summed. cachedMs: createState(base) plus the infer() steps; cachedStepsMs leaves the base out (a base stored earlier). speedupVsPlain = plainMs / cachedMs.',
  ttft: 'Time to the first generated token after newTokens new tokens: alone = the new tokens with no base (plain); plain = base + new tokens recomputed; hot = statecart infer() on a base in the in-memory tier; stored = the same with the base read from IndexedDB (after dropHot()). Medians.',
  decodeMsPerToken:
    "msPerToken: statecart, page wall time of infer() generating 1 + extraTokens tokens minus infer() generating 1, on the same hot base, divided by extraTokens; the median over paired repetitions, after one unmeasured pair (so no measured call writes a state). workerMsPerToken: the engine's generation timer of the longer call divided by the tokens it generated. plainMsPerToken: the same wall-time difference in the plain worker, from a state it holds.",
  prefill: 'Plain prefill of the first `tokens` tokens of the corpus (and the pick of the first token), page wall time; tokPerS = tokens / median seconds.',
  breakdown:
    "Where a statecart call's wall time goes, medians over the calls: the engine's restore / prefill / generate / store timers, engine other = the rest of the engine's total (manifest lookup, receipt), messaging = wall time minus the engine's total (page ↔ worker messages, the worker's queue).",
  hotLookup:
    'Restore times marked "lookup" are the engine\'s own restore timer on a hit in the in-memory tier: a lookup inside the worker that reads no data. Ratios of a prefill to them are not speedups a user sees.',
};
