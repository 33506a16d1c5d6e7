import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from '@playwright/test';
import { seededGpt2Weights } from '../../src/models/gpt2-weights.ts';
import { gpt2Forward, type GPT2Weights } from '../../src/models/gpt2-reference.ts';
import type { StatecartClient } from '../../src/lib/index.ts';
import type { DebugApi } from '../../src/lib/testing.ts';

declare global {
  interface Window {
    statecart?: StatecartClient;
    statecartReady?: Promise<StatecartClient>;
    /** The testing entry's hooks for the page's client (dev server only). */
    statecartTesting?: DebugApi;
  }
}

/** Opens the demo page and waits until its worker has loaded the model. */
/** `shared: false` gives the page a worker of its own (`?shared=0`) instead of the origin's shared engine. */
export async function openPage(
  page: Page,
  opts: { device?: 'wasm' | 'webgpu' | 'auto'; model?: string; clear?: boolean; shared?: boolean } = {},
): Promise<void> {
  const q = new URLSearchParams({ device: opts.device ?? 'wasm', model: opts.model ?? 'tiny-gpt2' });
  if (opts.shared === false) q.set('shared', '0');
  await page.goto(`/?${q}`);
  await page.waitForFunction(() => window.statecartReady !== undefined);
  await page.evaluate(async () => {
    await window.statecartReady;
  });
  const status = await page.locator('#status').textContent();
  if (await page.locator('#status.error').count()) throw new Error(`page failed to load the model: ${status}`);
  if (opts.clear !== false) await page.evaluate(() => window.statecart!.clearStore());
}

let tinyWeights: GPT2Weights | null = null;

/** The tiny-gpt2 weights, regenerated in Node from the seed recorded next to the model. */
export function tinyGpt2Weights(): GPT2Weights {
  if (tinyWeights) return tinyWeights;
  const dir = join(process.cwd(), 'public/models/tiny-gpt2');
  const sc = JSON.parse(readFileSync(join(dir, 'statecart.json'), 'utf8'));
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  tinyWeights = seededGpt2Weights({ ...sc.config, layer_norm_epsilon: cfg.layer_norm_epsilon }, { seed: sc.weight_source.seed, scale: sc.weight_source.scale });
  return tinyWeights;
}

/** Last-position logits of the reference forward pass. */
export function referenceLogits(tokens: number[]): Float32Array {
  return gpt2Forward(tinyGpt2Weights(), tokens, { lastOnly: true }).logits;
}

/** Greedy continuation by the reference, recomputing the whole text every step (no cache at all). */
export function referenceGreedy(tokens: number[], n: number): number[] {
  const w = tinyGpt2Weights();
  const seq = [...tokens];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const logits = gpt2Forward(w, seq, { lastOnly: true }).logits;
    let best = 0;
    for (let j = 1; j < logits.length; j++) if (logits[j]! > logits[best]!) best = j;
    out.push(best);
    seq.push(best);
  }
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export const LOREM =
  'The cache keys every state by the SHA-256 of its model and its tokens, so a prefix computed once is found again by anyone who asks for it. ';
