import { defineConfig } from 'vite';

// The library build (`npm run build` → dist/lib/): an ES module client, its
// testing entry, the worker as its own file, and onnxruntime-web's wasm
// beside them (copied by scripts/build-lib.ts), never inlined or fetched from a CDN.
const externWasm = ['onnxruntime-web-use-extern-wasm', 'import', 'module', 'browser', 'default'];

export default defineConfig({
  publicDir: false,
  base: './',
  resolve: { conditions: externWasm },
  define: {
    __STATECART_LIB__: 'true',
    // Literal per-file URLs beside the worker: an app's bundler sees and copies them.
    __STATECART_ORT_MJS__: 'new URL("./ort/ort-wasm-simd-threaded.asyncify.mjs", import.meta.url).href',
    __STATECART_ORT_WASM__: 'new URL("./ort/ort-wasm-simd-threaded.asyncify.wasm", import.meta.url).href',
  },
  worker: {
    format: 'es',
    rollupOptions: { output: { entryFileNames: 'worker.js', chunkFileNames: 'worker-[name]-[hash].js' } },
  },
  build: {
    target: 'es2022',
    outDir: 'dist/lib',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    lib: { entry: { index: 'src/lib/index.ts', testing: 'src/lib/testing.ts' }, formats: ['es'] },
  },
});
