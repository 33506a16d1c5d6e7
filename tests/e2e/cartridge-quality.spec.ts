import { test, expect } from '@playwright/test';
import { openPage, LOREM } from './helpers.ts';
import { editMeta } from '../unit/support/cartridge-mutators.ts';

// A lossy cartridge carries its codec's measured quality: export writes it,
// the page shows it on import and for the state; a malformed record is refused.
test('an int8 cartridge shows its measured quality on import and for the state; a malformed one is refused, the store unchanged', async ({ page }) => {
  await openPage(page);
  const out = await page.evaluate(async (t) => {
    const sc = window.statecart!;
    const base = await sc.createState({ text: t });
    const blob = await sc.exportCartridge({ stateKey: base.stateKey, codec: 'int8' });
    const u = new Uint8Array(await blob.arrayBuffer());
    const n = new DataView(u.buffer).getUint32(0, true);
    const meta = JSON.parse(new TextDecoder().decode(u.subarray(8, 8 + n))).__metadata__ as Record<string, string>;
    await sc.clearStore();
    return { key: base.stateKey, bytes: Array.from(u), quality: meta.quality };
  }, LOREM);
  expect(out.quality, 'the exported file records the quality').toBeDefined();
  const q = JSON.parse(out.quality!) as { codec: string; greedyAgree: number; greedyTotal: number; maxLogitError: number };
  expect(q).toMatchObject({ codec: 'int8', greedyTotal: 64 });
  expect(q.maxLogitError).toBeGreaterThan(0);
  const bytes = Buffer.from(out.bytes);

  // A malformed record: refused with a typed error, and the page says the store is unchanged.
  await page.setInputFiles('#file', {
    name: 'bad-quality.safetensors',
    mimeType: 'application/octet-stream',
    buffer: Buffer.from(editMeta(new Uint8Array(bytes), (m) => (m.quality = JSON.stringify({ ...q, greedyAgree: q.greedyTotal + 1 })))),
  });
  const bad = page.getByTestId('import-entry').filter({ hasText: 'bad-quality' });
  await expect(bad).toHaveClass(/error/, { timeout: 30_000 });
  await expect(bad).toContainText('InvalidCartridge');
  await expect(bad).toContainText('quality');
  await expect(bad).toContainText('the store is unchanged (0 states');

  await page.setInputFiles('#file', { name: 'good.safetensors', mimeType: 'application/octet-stream', buffer: bytes });
  const good = page.getByTestId('import-entry').filter({ hasText: 'good.safetensors' });
  await expect(good).toHaveClass(/ok/, { timeout: 30_000 });
  const words = `int8 vs fp32: greedy ${q.greedyAgree}/${q.greedyTotal} positions agree, max logit error ${q.maxLogitError.toExponential(1)}`;
  await expect(good).toContainText(`measured at export: ${words}`);
  // The imported state is selected; its quality line shows.
  await expect(page.getByTestId('state-quality')).toBeVisible();
  await expect(page.getByTestId('state-quality')).toContainText(words);
});
