/**
 * A state read from IndexedDB, by codec at rest: time to the first token
 * after 16 new tokens on a stored base (issue 14: "≥ 15× faster than
 * prefilling all of it"; "bytes read must shrink: measure a compact codec at
 * rest"), against the raw read + SHA-256 floor of the same blobs and a plain
 * prefill of the whole text, and what each codec costs in quality (the codec
 * optimizer's own measurement on that state: max |logit − fp32 logit| and
 * whether greedy decoding keeps the fp32 tokens).
 *
 *   npx tsx scripts/make-models.ts --models gpt2-shape
 *   npx tsx bench/restore-codecs.ts [--model gpt2-shape] [--tokens 1007] [--reps 3] [--codecs fp32,fp16,int8] [--port 5198] [--out FILE]
 *
 * Headless Chromium on WASM, the client library and its worker as a web app
 * uses them (the bench's own server and page). Prints a table; --out writes JSON.
 */
import { writeFileSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { launchOptions } from '../tests/e2e/browser.ts';
import { CACHE_MODELS, REPO_ROOT, ensureModels } from '../scripts/make-models.ts';
import { startServer } from './lib/server.ts';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}
const model = arg('model', 'gpt2-shape');
const baseTokens = Number(arg('tokens', '1007'));
const reps = Number(arg('reps', '3'));
const codecs = arg('codecs', 'fp32,fp16,int8').split(',');
const port = Number(arg('port', '5198'));
const out = arg('out', '');

if (model.endsWith('-shape')) await ensureModels([model]);
const server = await startServer({ root: REPO_ROOT, port, cacheRoot: CACHE_MODELS });
const browser = await chromium.launch(launchOptions());
try {
  const page = await browser.newPage();
  page.on('console', (m) => {
    if (m.text().startsWith('[restore-codecs]')) console.log(m.text());
  });
  // tsx keeps function names with a helper the page does not have (the evaluated function is sent as text).
  await page.addInitScript({ content: 'window.__name = (f) => f;' });
  await page.goto(`${server.url}/bench/lib/page.html`);
  const r = await page.evaluate(
    async ({ model, baseTokens, reps, codecs }) => {
      const lib = '/src/lib/index.ts';
      const { createStatecart } = (await import(/* @vite-ignore */ lib)) as typeof import('../src/lib/index.ts');
      const { testing } = (await import(/* @vite-ignore */ lib.replace('index.ts', 'testing.ts'))) as typeof import('../src/lib/testing.ts');
      const db = 'statecart-restore-codecs';
      const sc = await createStatecart({
        device: 'wasm',
        dbName: db,
        modelsBase: new URL('/models/', location.href).href,
        ortBase: new URL('/ort/', location.href).href,
      });
      const info = await sc.loadModel({ model, device: 'wasm' });
      const vocab = 50257;
      const text = (n: number, salt: number) => Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729 + 13) % vocab);
      const base = text(baseTokens, 1);
      const now = () => performance.now();
      const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      /** Raw IndexedDB read of a state's blobs and SHA-256 of their bytes (the floor no restore beats). */
      const floor = async (key: string) => {
        const idb = await new Promise<IDBDatabase>((res, rej) => {
          const q = indexedDB.open(db);
          q.onsuccess = () => res(q.result);
          q.onerror = () => rej(q.error);
        });
        const req = <T>(x: IDBRequest<T>) =>
          new Promise<T>((res, rej) => {
            x.onsuccess = () => res(x.result);
            x.onerror = () => rej(x.error);
          });
        const m = (await req(
          idb
            .transaction('kv')
            .objectStore('kv')
            .get('m:' + key),
        )) as { blocks: { key: string }[] };
        const t = now();
        const s = idb.transaction('kv').objectStore('kv');
        const recs = (await Promise.all(m.blocks.map((b) => req(s.get('b:' + b.key))))) as { data: ArrayBuffer }[];
        for (const rec of recs) await crypto.subtle.digest('SHA-256', rec.data);
        const ms = now() - t;
        idb.close();
        return ms;
      };
      const rows = [];
      // Plain: prefill of all base + 16 tokens and the first token, nothing cached.
      const plain: number[] = [];
      for (let i = 0; i < reps; i++) {
        const t = now();
        await sc.runUncached({ tokens: [...base, ...text(16, 100 + i)], maxNewTokens: 1 });
        plain.push(now() - t);
      }
      let quality: Record<string, { maxLogitError: number; greedyMatch: boolean }> = {};
      for (const codec of codecs) {
        await sc.clearStore();
        await sc.setCodecPolicy({ codec: codec as 'fp32' });
        const made = await sc.createState({ tokens: base }, { durable: true });
        const ttft: number[] = [];
        const restore: number[] = [];
        const prefill: number[] = [];
        const floors: number[] = [];
        const firsts: number[] = [];
        for (let i = 0; i < reps; i++) {
          await testing(sc).dropHot();
          const d = text(16, 200 + i);
          const t = now();
          const x = await sc.infer({ stateKey: made.stateKey, deltaTokens: d, maxNewTokens: 1 });
          ttft.push(now() - t);
          if (x.tier !== 'stored') throw new Error(`expected a restore from IndexedDB, got ${x.tier}`);
          restore.push(x.timings.restoreMs);
          prefill.push(x.timings.prefillMs);
          firsts.push(x.outputTokens[0]!);
          // The floor reads the base's blobs on a quiet store: the infer's own write (queued behind it)
          // may re-point the base's tail block and delete its tail blob between the floor's two reads.
          await sc.flush();
          floors.push(await floor(made.stateKey));
        }
        if (codec === 'fp32') {
          // The optimizer's measurement of every codec on this state (it runs the model: once, on the fp32 state).
          const rep = await sc.chooseCodec({ stateKey: made.stateKey, constraints: { maxLogitError: 0, greedyTokens: 16 } });
          quality = Object.fromEntries(
            rep.rows
              .filter((row) => row.metrics)
              .map((row) => [row.codec, { maxLogitError: row.metrics!.maxLogitError, greedyMatch: row.metrics!.greedyMatch }]),
          );
        }
        const row = {
          codec,
          bytes: made.bytes,
          ttftMs: med(ttft),
          restoreMs: med(restore),
          prefillMs: med(prefill),
          floorMs: med(floors),
          firstTokens: firsts,
          runs: { ttft, restore, floors },
        };
        console.log(`[restore-codecs] ${JSON.stringify({ ...row, runs: undefined })}`);
        rows.push(row);
      }
      sc.terminate();
      return { model, device: info.device, baseTokens, reps, plainMs: med(plain), plainRuns: plain, rows, quality };
    },
    { model, baseTokens, reps, codecs },
  );
  const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;
  console.log(
    `\n${r.model} · ${r.device}, ${r.baseTokens}-token base + 16 new tokens, first token; plain prefill of all ${r.baseTokens + 16}: ${r.plainMs.toFixed(0)} ms (median of ${r.reps})\n`,
  );
  console.log(
    '| codec at rest | bytes | first token (from IndexedDB) | engine restore | raw read + SHA-256 floor | prefill of 16 | plain ÷ first token | max logit error | greedy match |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const x of r.rows) {
    const q = r.quality[x.codec];
    console.log(
      `| ${x.codec} | ${mib(x.bytes)} | ${x.ttftMs.toFixed(0)} ms | ${x.restoreMs.toFixed(0)} ms | ${x.floorMs.toFixed(0)} ms | ${x.prefillMs.toFixed(0)} ms | ${(r.plainMs / x.ttftMs).toFixed(1)}× | ${q ? q.maxLogitError.toExponential(2) : '—'} | ${q ? (q.greedyMatch ? 'yes' : 'no') : '—'} |`,
    );
  }
  if (out)
    writeFileSync(
      out,
      JSON.stringify({ date: new Date().toISOString(), command: `npx tsx bench/restore-codecs.ts ${process.argv.slice(2).join(' ')}`, ...r }, null, 2),
    );
} finally {
  await browser.close();
  await server.close();
}
