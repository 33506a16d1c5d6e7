/**
 * `npm run build:lib` (also run by `npm run build`): the library a web app
 * installs, in dist/lib/ —
 *
 *   index.js, testing.js   ES modules (the client, and the testing entry)
 *   worker.js (+ chunks)   the worker, its own file, with the runtime bundled in
 *   ort/                   onnxruntime-web's loader and wasm, beside the worker
 *   types/                 .d.ts
 *
 * The worker and the wasm are named by literal `new URL('./file', import.meta.url)`
 * expressions, so an app's bundler (Vite, webpack 5, …) copies them into its build.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'vite';
import { REPO_ROOT } from './make-models.ts';

const out = join(REPO_ROOT, 'dist', 'lib');
await build({ configFile: join(REPO_ROOT, 'vite.lib.config.ts'), logLevel: 'warn' });

// Vite writes the worker's URL in a form no bundler reads back; make it the literal one.
const index = join(out, 'index.js');
const src = readFileSync(index, 'utf8');
const emitted = /new URL\(\s*\/\* @vite-ignore \*\/\s*new URL\("worker\.js", import\.meta\.url\)\.href,\s*"" \+ import\.meta\.url\s*\)/g;
const found = src.match(emitted)?.length ?? 0;
if (found !== 1)
  throw new Error(`build-lib: expected the worker URL once in dist/lib/index.js, found it ${found} times (did Vite change how it emits workers?)`);
writeFileSync(index, src.replace(emitted, 'new URL("./worker.js", import.meta.url)'));

mkdirSync(join(out, 'ort'), { recursive: true });
for (const f of ['ort-wasm-simd-threaded.asyncify.mjs', 'ort-wasm-simd-threaded.asyncify.wasm']) {
  copyFileSync(join(REPO_ROOT, 'node_modules', 'onnxruntime-web', 'dist', f), join(out, 'ort', f));
}

execFileSync(process.execPath, [join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(REPO_ROOT, 'tsconfig.lib.json')], { stdio: 'inherit' });
console.log(`[build-lib] dist/lib: index.js, testing.js, worker.js, ort/, types/`);
