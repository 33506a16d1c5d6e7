import { test, expect } from '@playwright/test';
import { openPage, maxAbsDiff, LOREM } from './helpers.ts';

test.describe('codecs in the browser: an int8 state in IndexedDB', () => {
  test('an int8 state restores from IndexedDB, continues, and its digest covers the encoded bytes', async ({ page }) => {
    await openPage(page);
    const r = await page.evaluate(async (text) => {
      const sc = window.statecart!;
      const tokens = await sc.tokenize({ text: text });
      // The same text stored as fp32 first, for comparison.
      const f = await sc.createState({ text });
      const fp32Info = await sc.getState({ stateKey: f.stateKey });
      const fp32Logits = Array.from(await window.statecartTesting!.probe({ tokens: [11], stateKey: f.stateKey }));
      const table = await sc.chooseCodec({ stateKey: f.stateKey, constraints: { maxLogitError: 0, greedyTokens: 8 } });
      await sc.clearStore();

      await sc.setCodecPolicy({ codec: 'int8' });
      const a = await sc.createState({ text });
      const info = await sc.getState({ stateKey: a.stateKey });
      const hot = await sc.infer({ stateKey: a.stateKey, delta: ' so', maxNewTokens: 8 });
      await window.statecartTesting!.dropHot();
      const int8Logits = Array.from(await window.statecartTesting!.probe({ tokens: [11], stateKey: a.stateKey }));
      await window.statecartTesting!.dropHot();
      const cold = await sc.infer({ stateKey: a.stateKey, delta: ' so', maxNewTokens: 8 });
      const verify = await sc.verifyState({ stateKey: a.stateKey });
      await sc.flush();

      // Flip one byte of one int8 blob, behind the store's back.
      const flipped = await new Promise<string>((resolve, reject) => {
        const open = indexedDB.open('statecart');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const tx = open.result.transaction('kv', 'readwrite');
          const req = tx.objectStore('kv').openCursor(IDBKeyRange.bound('b:', 'b:\uffff'));
          let done = '';
          req.onsuccess = () => {
            const cur = req.result;
            if (!cur || done) return;
            const rec = cur.value as { digest: string; codec: string; data: ArrayBuffer };
            if (rec.codec !== 'int8') return cur.continue();
            const bytes = new Uint8Array(rec.data.slice(0));
            bytes[bytes.length - 3] ^= 0x10;
            cur.update({ ...rec, data: bytes.buffer });
            done = String(cur.key);
          };
          tx.oncomplete = () => resolve(done);
          tx.onerror = () => reject(tx.error);
        };
      });
      await window.statecartTesting!.dropHot();
      const verifyBad = await sc.verifyState({ stateKey: a.stateKey });
      const probeErr = await window.statecartTesting!.probe({ tokens: [11], stateKey: a.stateKey }).then(
        () => 'served!',
        (e: Error) => e.name,
      );
      await sc.setCodecPolicy({ codec: 'fp32' });
      return { tokens: tokens.length, fp32Info, info, hot, cold, verify, flipped, verifyBad, probeErr, fp32Logits, int8Logits, table };
    }, LOREM.repeat(2));

    expect(r.info.codec).toBe('int8');
    expect(r.fp32Info.codec).toBe('fp32');
    expect(r.info.bytes).toBeLessThan(r.fp32Info.bytes / 2);
    expect(r.cold.tier).toBe('stored');
    expect(r.cold.savings.tokensReused).toBe(r.tokens);
    expect(r.cold.outputTokens).toEqual(r.hot.outputTokens);
    expect(r.verify.ok).toBe(true);
    // Lossy, but close: the int8 state's next-token logits differ from fp32's, a little.
    const d = maxAbsDiff(r.int8Logits, r.fp32Logits);
    expect(d).toBeGreaterThan(0);
    expect(d).toBeLessThan(1);
    expect(r.flipped).toMatch(/^b:sha256:[0-9a-f]{64}\/int8$/);
    expect(r.verifyBad.ok).toBe(false);
    expect(r.probeErr).toBe('CorruptBlob');
    expect(r.table.choice).toBe('fp32');
    expect(r.table.rows.map((x) => x.codec)).toEqual(['fp32', 'fp16', 'int8', 'kivi4']);
    expect(r.table.rows.find((x) => x.codec === 'int8')!.bytes).toBe(r.info.bytes);
  });
});
