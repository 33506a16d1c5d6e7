/**
 * From the bench page's raw samples to the rows of latest.json: medians,
 * sums and ratios. Pure functions, so that tests/unit/bench-rows.test.ts can
 * check them without a browser.
 */
import { stat } from './report.ts';
import type { EngineTimings } from './statecart-adapter.ts';
import type { AgentLoopRow, DecodeRow, PrefillRow, RunTarget, StepBreakdown, TtftRow } from './types.ts';

/** One statecart call: its page wall time and the engine's own timers. */
export interface TimedCall {
  ms: number;
  timings: EngineTimings;
}

export interface AgentLoopRaw {
  baseTokens: number;
  gen: number;
  deltaTokens: number[];
  /** Page wall time of createState(base), and the tokens it ran. */
  baseMs: number;
  baseProcessed: number;
  plain: { ms: number; tokens: number; out: number[] }[];
  cached: (TimedCall & { tokens: number; tier: string; out: number[] })[];
}

export interface TtftRaw {
  baseTokens: number;
  newTokens: number;
  alone: number[];
  plain: number[];
  hot: TimedCall[];
  stored: TimedCall[];
  identicalFirstToken: boolean;
}

export interface DecodeRaw {
  context: number;
  extraTokens: number;
  /** Paired repetitions on the same hot base: generating 1 token, then 1 + extraTokens. */
  pairs: { one: TimedCall; more: TimedCall }[];
  /** The same in the plain worker, from a held state (page wall times). */
  plainPairs: { one: number; more: number }[];
}

export interface PrefillRaw {
  tokens: number;
  ms: number[];
}

const sum = (a: number[]) => a.reduce((s, v) => s + v, 0);

/** Medians of the engine's timers over the calls; what they leave of the engine's total, and of the page wall time. */
export function stepBreakdown(calls: TimedCall[]): StepBreakdown {
  const med = (f: (c: TimedCall) => number) => stat(calls.map(f)).median;
  const t = (c: TimedCall) => c.timings;
  return {
    restoreMs: med((c) => t(c).restoreMs),
    prefillMs: med((c) => t(c).prefillMs),
    generateMs: med((c) => t(c).generateMs),
    storeMs: med((c) => t(c).storeMs),
    engineOtherMs: med((c) => t(c).totalMs - t(c).restoreMs - t(c).prefillMs - t(c).generateMs - t(c).storeMs),
    messagingMs: med((c) => c.ms - t(c).totalMs),
  };
}

export function agentLoopRow(tgt: RunTarget, x: AgentLoopRaw): AgentLoopRow {
  const plainMs = sum(x.plain.map((s) => s.ms));
  const cachedStepsMs = sum(x.cached.map((s) => s.ms));
  const cachedMs = x.baseMs + cachedStepsMs;
  const plainTokens = sum(x.plain.map((s) => s.tokens));
  const cachedTokensNoBase = sum(x.cached.map((s) => s.tokens));
  const cachedTokens = x.baseProcessed + cachedTokensNoBase;
  const identicalOutputs =
    x.plain.length === x.cached.length && x.plain.every((s, i) => s.out.length === x.cached[i]!.out.length && s.out.every((t, j) => t === x.cached[i]!.out[j]));
  return {
    ...tgt,
    steps: x.plain.length,
    baseTokens: x.baseTokens,
    deltaTokens: x.deltaTokens,
    newTokensPerStep: x.gen,
    plainTokens,
    cachedTokens,
    cachedTokensNoBase,
    tokensSavedPct: 100 * (1 - cachedTokens / plainTokens),
    plainMs,
    cachedMs,
    cachedBaseMs: x.baseMs,
    cachedStepsMs,
    speedupVsPlain: plainMs / cachedMs,
    speedupVsPlainBaseStored: plainMs / cachedStepsMs,
    plainStepMs: stat(x.plain.map((s) => s.ms)),
    cachedStepMs: stat(x.cached.map((s) => s.ms)),
    identicalOutputs,
    cachedBreakdown: stepBreakdown(x.cached),
  };
}

export function ttftRow(tgt: RunTarget, x: TtftRaw): TtftRow {
  const spread = {
    alone: stat(x.alone),
    hot: stat(x.hot.map((c) => c.ms)),
    stored: stat(x.stored.map((c) => c.ms)),
    plain: stat(x.plain),
  };
  return {
    ...tgt,
    baseTokens: x.baseTokens,
    newTokens: x.newTokens,
    aloneMs: spread.alone.median,
    hotMs: spread.hot.median,
    storedMs: spread.stored.median,
    plainMs: spread.plain.median,
    spread,
    hotBreakdown: stepBreakdown(x.hot),
    storedBreakdown: stepBreakdown(x.stored),
    identicalFirstToken: x.identicalFirstToken,
  };
}

export function decodeRow(tgt: RunTarget, x: DecodeRaw): DecodeRow {
  const k = x.extraTokens;
  const spread = stat(x.pairs.map((p) => (p.more.ms - p.one.ms) / k));
  return {
    ...tgt,
    context: x.context,
    msPerToken: spread.median,
    spread,
    extraTokens: k,
    workerMsPerToken: stat(x.pairs.map((p) => p.more.timings.generateMs / (k + 1))).median,
    plainMsPerToken: stat(x.plainPairs.map((p) => (p.more - p.one) / k)).median,
  };
}

export function prefillRow(tgt: RunTarget, x: PrefillRaw): PrefillRow {
  const ms = stat(x.ms);
  return { ...tgt, tokens: x.tokens, tokPerS: x.tokens / (ms.median / 1000), ms };
}
