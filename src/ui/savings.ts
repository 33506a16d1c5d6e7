import type { CreateStateResult, InferResult, Reuse } from '../lib/index.ts';
import { app, refresh, select } from './app.ts';
import { makeChart, type SavingsChart } from './charts.ts';
import { $, el, errorText, fmtBytes, fmtMs, setResult, short } from './dom.ts';

/** One step of a chain, every field measured in this browser. */
export interface Step {
  label: string;
  /** Tokens the model ran with the cache (delta + generated). */
  processed: number;
  /** Tokens a request without any cache would have run (whole text + generated). */
  naive: number;
  /** Time to read the context with the cache: restore + prefill of the delta, in the worker. */
  cachedMs: number;
  /** Time to prefill the whole context again from nothing, measured around probe(); null when not run. */
  recomputeMs: number | null;
  generateMs: number;
  bytesStored: number;
  /** What storing every state whole, with no shared blocks, would take. */
  bytesNaive: number;
  /** Where reuse stopped, and why. */
  reuse: Reuse;
  /** Tokens the step could have taken from the store (the whole text read before generating). */
  context: number;
}

const steps: Step[] = [];
let charts: { tokens: SavingsChart; time: SavingsChart; bytes: SavingsChart } | null = null;

const C = { cached: '#0b6bcb', naive: '#c2410c', stored: '#127a3a' };

function ensureCharts() {
  charts ??= {
    tokens: makeChart($<HTMLCanvasElement>('chartTokens'), { kind: 'bar', title: 'Tokens processed per step', yLabel: 'tokens' }),
    time: makeChart($<HTMLCanvasElement>('chartTime'), { kind: 'bar', title: 'Time to read the context per step', yLabel: 'time', format: fmtMs }),
    bytes: makeChart($<HTMLCanvasElement>('chartBytes'), { kind: 'line', title: 'Bytes stored after each step', yLabel: 'bytes', format: fmtBytes }),
  };
  return charts;
}

function render(): void {
  const c = ensureCharts();
  const labels = steps.map((s) => s.label);
  c.tokens.update(labels, [
    { label: 'with the cache', color: C.cached, values: steps.map((s) => s.processed) },
    { label: 'without (recompute all)', color: C.naive, values: steps.map((s) => s.naive) },
  ]);
  c.time.update(labels, [
    { label: 'with the cache', color: C.cached, values: steps.map((s) => s.cachedMs) },
    { label: 'recomputed', color: C.naive, values: steps.map((s) => s.recomputeMs) },
  ]);
  c.bytes.update(labels, [
    { label: 'stored (shared blocks)', color: C.stored, values: steps.map((s) => s.bytesStored) },
    { label: 'naive (every state whole)', color: C.naive, values: steps.map((s) => s.bytesNaive), dashed: true },
  ]);
  $('reuseLog').replaceChildren(
    ...steps.map((s) =>
      el(
        'li',
        { 'data-cause': s.reuse.cause },
        `${s.label}: reused ${s.reuse.tokensReused} of ${s.context} tokens${s.reuse.fromKey ? ` from ${short(s.reuse.fromKey)} (${s.reuse.tier})` : ''} — ${s.reuse.reason}`,
      ),
    ),
  );
  const sum = (f: (s: Step) => number) => steps.reduce((a, s) => a + f(s), 0);
  const summary = $('savingsSummary');
  if (!steps.length) {
    summary.textContent = 'No steps yet: create a base and continue it, or run the agent loop.';
    return;
  }
  const p = sum((s) => s.processed);
  const n = sum((s) => s.naive);
  const measured = steps.filter((s) => s.recomputeMs !== null);
  const timeText = measured.length
    ? ` Reading the context took ${fmtMs(measured.reduce((a, s) => a + s.cachedMs, 0))} with the cache vs ${fmtMs(measured.reduce((a, s) => a + (s.recomputeMs ?? 0), 0))} recomputed (${measured.length} step${measured.length > 1 ? 's' : ''} measured both ways).`
    : ' Recompute not measured (turn it on to time it).';
  const last = steps[steps.length - 1]!;
  summary.textContent = `${steps.length} step${steps.length > 1 ? 's' : ''}: ${p} tokens processed instead of ${n} (${n ? Math.round(100 * (1 - p / n)) : 0}% fewer).${timeText} Stored ${fmtBytes(last.bytesStored)} instead of ${fmtBytes(last.bytesNaive)}.`;
}

function clearSteps(): void {
  steps.length = 0;
  render();
}

function recomputeOn(): boolean {
  return $<HTMLInputElement>('recompute').checked;
}

/** Prefills the whole context again with nothing cached and nothing stored, and times it (wall time in the page). */
async function timeRecompute(tokens: number[] | undefined): Promise<number | null> {
  if (!tokens || !recomputeOn()) return null;
  const t0 = performance.now();
  await app.client.runUncached({ tokens });
  return performance.now() - t0;
}

async function recordBase(r: CreateStateResult, tokens: number[] | undefined): Promise<void> {
  const snap = await refresh();
  steps.push({
    label: `base`,
    processed: r.processed,
    naive: r.tokens,
    cachedMs: r.timings.lookupMs + r.timings.prefillMs,
    recomputeMs: r.processed === r.tokens ? r.timings.lookupMs + r.timings.prefillMs : await timeRecompute(tokens),
    generateMs: 0,
    bytesStored: snap.health.bytesStored,
    bytesNaive: snap.health.logicalBytes,
    reuse: r.reuse,
    context: r.tokens,
  });
  render();
}

/** Records a continue/generate step; `context` is the token ids the step read before generating, when known. */
async function recordStep(r: InferResult, context: number[] | undefined): Promise<void> {
  const recomputeMs = await timeRecompute(context);
  const snap = await refresh();
  steps.push({
    label: `step ${steps.length}`,
    processed: r.savings.tokensProcessed,
    naive: r.savings.naiveTokens,
    cachedMs: r.timings.restoreMs + r.timings.prefillMs,
    recomputeMs,
    generateMs: r.timings.generateMs,
    bytesStored: snap.health.bytesStored,
    bytesNaive: snap.health.logicalBytes,
    reuse: r.reuse,
    context: r.savings.naiveTokens - r.outputTokens.length,
  });
  render();
}

/**
 * Runs a continue step and keeps the token ids of the new state, so that its
 * own children can be recomputed for real later.
 */
export async function continueFrom(
  stateKey: string,
  delta: string,
  maxNewTokens: number,
  sampling?: { temperature: number; seed: number },
): Promise<InferResult> {
  const parentTokens = app.tokensOf.get(stateKey);
  const deltaTokens = parentTokens ? await app.client.tokenize({ text: delta }) : undefined;
  const r = await app.client.infer({ stateKey, delta, maxNewTokens, ...(sampling ? { sampling } : {}) });
  const context = parentTokens && deltaTokens ? [...parentTokens, ...deltaTokens] : undefined;
  if (context) app.tokensOf.set(r.newStateKey, [...context, ...r.outputTokens]);
  await recordStep(r, context);
  return r;
}

export async function createBase(
  text: string,
  label: string | undefined,
  opts: { signal?: AbortSignal; onProgress?: (p: { done: number; total: number }) => void } = {},
): Promise<CreateStateResult> {
  const r = await app.client.createState({ text, ...(label ? { label } : {}) }, opts);
  const tokens = await app.client.tokenize({ text });
  app.tokensOf.set(r.stateKey, tokens);
  await recordBase(r, tokens);
  return r;
}

// Tool results an agent reads back, one per step: each is a new delta on the last state.
const TOOL_OUTPUTS = [
  'search("aisle for wood glue") → aisle 7, adhesives, top shelf',
  'inventory("wood glue 250 ml") → 14 in stock',
  'price("wood glue 250 ml") → not listed',
  'search("clamps") → aisle 7, next to adhesives',
  'inventory("bar clamp 300 mm") → 3 in stock',
  'policy("price questions") → never guess; send to the desk',
  'search("sandpaper 120 grit") → aisle 9',
  'inventory("sandpaper 120 grit") → 40 sheets',
  'search("dust masks") → aisle 12, safety',
  'inventory("dust mask FFP2") → out of stock',
];

function agentDelta(i: number): string {
  return `\nTool: ${TOOL_OUTPUTS[i % TOOL_OUTPUTS.length]}\nAssistant:`;
}

/** Base plus N steps, each step run with the cache and (when on) recomputed from nothing, filling the charts. */
async function runAgentLoop(base: string, n: number, perStep: number, onStep: (i: number) => void, signal: AbortSignal): Promise<string> {
  clearSteps();
  const b = await createBase(base, 'agent loop base', { signal });
  let key = b.stateKey;
  for (let i = 0; i < n; i++) {
    if (signal.aborted) break;
    onStep(i + 1);
    const r = await continueFrom(key, agentDelta(i), perStep);
    key = r.newStateKey;
  }
  select(key);
  return key;
}

export function initSavings(): void {
  render();
  const btn = $<HTMLButtonElement>('runLoop');
  const stop = $<HTMLButtonElement>('stopLoop');
  const out = $('loopResult');
  let ac: AbortController | null = null;
  stop.onclick = () => ac?.abort();
  btn.onclick = async () => {
    ac = new AbortController();
    btn.disabled = true;
    stop.disabled = false;
    const n = Math.max(1, Math.min(50, Number($<HTMLInputElement>('loopSteps').value) || 5));
    const g = Math.max(0, Math.min(64, Number($<HTMLInputElement>('loopTokens').value) || 0));
    const base = $<HTMLTextAreaElement>('base').value.trim() || 'You are a careful assistant for a hardware store.';
    const t0 = performance.now();
    try {
      await runAgentLoop(base, n, g, (i) => setResult(out, `step ${i} of ${n}…`), ac.signal);
      setResult(out, `agent loop: base + ${n} steps in ${fmtMs(performance.now() - t0)}${ac.signal.aborted ? ' (stopped early)' : ''}`);
    } catch (e) {
      setResult(out, errorText(e), true);
    } finally {
      ac = null;
      btn.disabled = false;
      stop.disabled = true;
    }
  };
  $('clearSteps').onclick = () => clearSteps();
}
