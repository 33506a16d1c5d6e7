import { test, expect } from '@playwright/test';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gpt2Decode, gpt2Encode } from '../../scripts/train/brown.ts';
import { gpt2WeightsFromSafetensors } from '../../src/models/gpt2-weights.ts';
import { gpt2Forward } from '../../src/models/gpt2-reference.ts';

/** Greedy continuation of `ids` by the committed micro-gpt2 checkpoint, in Node (the TypeScript reference). */
async function referenceGreedy(ids: number[], n: number): Promise<number[]> {
  const dir = join(process.cwd(), 'models/micro-gpt2');
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const { weights } = await gpt2WeightsFromSafetensors(readFileSync(join(dir, 'model.safetensors')), {
    n_head: cfg.n_head,
    layer_norm_epsilon: cfg.layer_norm_epsilon,
  });
  const seq = [...ids];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const row = gpt2Forward(weights, seq, { lastOnly: true }).logits;
    let best = 0;
    for (let v = 1; v < row.length; v++) if (row[v]! > row[best]!) best = v;
    out.push(best);
    seq.push(best);
  }
  return out;
}

test('the page opens on the trained micro-gpt2 and continues text with it', async ({ page }) => {
  // No ?model=: what a person gets from `npm start`.
  await page.goto('/?device=wasm');
  await page.waitForFunction(() => window.statecartReady !== undefined);
  await page.evaluate(async () => void (await window.statecartReady));
  await expect(page.locator('#status')).not.toHaveClass(/error/);
  await expect(page.getByLabel('Model', { exact: true })).toHaveValue('micro-gpt2');
  await expect(page.locator('#status')).toContainText('micro-gpt2');
  await page.evaluate(() => window.statecart!.clearStore());
  await page.reload();
  await page.evaluate(async () => void (await window.statecartReady));
  await expect(page.locator('#status')).toContainText('micro-gpt2');

  const base = 'The jury said';
  const delta = ' that';
  const n = 12;
  await page.getByLabel('Base text').fill(base);
  await page.getByRole('button', { name: 'Create base state' }).click();
  await expect(page.getByTestId('create-result')).toContainText('tokens');
  await page.getByLabel('New text after this state').fill(delta);
  await page.getByLabel('New tokens', { exact: true }).fill(String(n));
  await page.getByRole('button', { name: 'Continue' }).click();
  await expect(page.getByTestId('action-result')).toContainText('processed');
  const output = (await page.getByTestId('output').textContent()) ?? '';
  const want = gpt2Decode(await referenceGreedy([...gpt2Encode(base), ...gpt2Encode(delta)], n));
  console.log(`micro-gpt2 on the page, greedy: ${JSON.stringify(base + delta)} → ${JSON.stringify(output)}`);
  expect(output).toBe(want);

  // A seeded sample from the same state, as the page's Branch button draws one (temperature 1).
  const sampled = await page.evaluate(
    async ([b, d, k]) => {
      const sc = window.statecart!;
      const s = await sc.createState({ text: b });
      return (await sc.infer({ stateKey: s.stateKey, delta: d, maxNewTokens: k, sampling: { temperature: 1, seed: 7 } })).output;
    },
    [base, delta, 24] as const,
  );
  console.log(`micro-gpt2 on the page, sampled (temperature 1, seed 7): ${JSON.stringify(base + delta)} → ${JSON.stringify(sampled)}`);
  expect(gpt2Encode(sampled).length).toBeGreaterThan(0);
  expect(sampled).not.toBe(output.slice(0, sampled.length));
});
