/**
 * Everything `npm start`, `npm test` and `npm run bench` need that is not in
 * git: the generated offline models and onnxruntime-web's wasm files, copied
 * next to the page so that nothing is fetched from a CDN. Skips what is
 * already up to date.
 */
import { copyFileSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultModelIds, ensureModels } from './make-models.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function copyOrt(): void {
  const src = join(root, 'node_modules/onnxruntime-web/dist');
  const dst = join(root, 'public/ort');
  mkdirSync(dst, { recursive: true });
  for (const f of ['ort-wasm-simd-threaded.asyncify.mjs', 'ort-wasm-simd-threaded.asyncify.wasm']) {
    const a = join(src, f);
    const b = join(dst, f);
    if (!existsSync(b) || statSync(b).size !== statSync(a).size || statSync(b).mtimeMs < statSync(a).mtimeMs) copyFileSync(a, b);
  }
}

const ids = process.argv.slice(2).filter((a) => !a.startsWith('-'));
copyOrt();
await ensureModels(ids.length ? ids : defaultModelIds(), undefined, { log: (s) => console.log(`[models] ${s}`) });
