import { defineConfig } from 'vite';

// Cross-origin isolation (COOP/COEP) lets onnxruntime-web use WASM threads.
const isolation = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

export default defineConfig({
  // Relative base: the built site works from any folder of any static host.
  base: './',
  // Tests and benchmarks drive the page themselves: a file saved mid-run must not reload it.
  server: { headers: isolation, host: '127.0.0.1', strictPort: true, hmr: process.env.STATECART_NO_HMR ? false : undefined },
  preview: { headers: isolation, host: '127.0.0.1', strictPort: true },
  worker: { format: 'es' },
  optimizeDeps: {
    // onnxruntime-web finds its .wasm through paths we set; pre-bundling would move it.
    exclude: ['onnxruntime-web', '@huggingface/transformers'],
    // CommonJS (protobufjs): pre-bundled up front, or the first Hub conversion would reload the page.
    include: ['onnx-proto'],
  },
  build: {
    target: 'es2022',
    outDir: 'dist',
    chunkSizeWarningLimit: 4096,
  },
});
