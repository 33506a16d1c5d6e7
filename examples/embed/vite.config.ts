import { defineConfig } from 'vite';

// Cross-origin isolation lets onnxruntime-web use WASM threads (the page works without it too).
const headers = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };

export default defineConfig({
  server: { headers },
  preview: { headers },
  // The package ships its worker and wasm beside its module: let Vite see them as files, not pre-bundle them.
  optimizeDeps: { exclude: ['statecart'] },
  worker: { format: 'es' },
  build: { target: 'es2022' },
});
