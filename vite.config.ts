import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { defineConfig, transformWithOxc, type Plugin } from 'vite';

// Cross-origin isolation (COOP/COEP) lets onnxruntime-web use WASM threads.
const isolation = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

/**
 * The State Pack Service Worker (src/sw/statepack-sw.ts) as one classic
 * script at the site's root, `statepack-sw.js`, so that its scope covers
 * `statepack/`: served by the dev server, written into the build.
 */
function statepackServiceWorker(): Plugin {
  const src = resolve('src/sw/statepack-sw.ts');
  const compile = async () => (await transformWithOxc(readFileSync(src, 'utf8'), src, { lang: 'ts' })).code.replace(/^export\s*\{\s*\};?\s*$/m, '');
  return {
    name: 'statecart:statepack-sw',
    configureServer(server) {
      server.middlewares.use((req, res, next) => {
        if (req.url?.split('?')[0] !== '/statepack-sw.js') return next();
        compile().then(
          (code) => {
            res.setHeader('Content-Type', 'text/javascript');
            res.setHeader('Cache-Control', 'no-cache');
            res.end(code);
          },
          (e) => next(e),
        );
      });
    },
    async generateBundle() {
      this.emitFile({ type: 'asset', fileName: 'statepack-sw.js', source: await compile() });
    },
  };
}

/**
 * The built site ships sample states (the page's system prompt and long
 * document, for each offline model) as a remote state host in `states/`, and
 * `catalog.json` listing them: the catalog panel and the remote tier work on
 * a first visit. Made by scripts/publish-states.ts (Node, onnxruntime-node);
 * STATECART_NO_SAMPLES=1 leaves them out.
 */
function sampleStates(): Plugin {
  let outDir = 'dist';
  return {
    name: 'statecart:sample-states',
    apply: 'build',
    configResolved(c) {
      outDir = resolve(c.root, c.build.outDir);
    },
    closeBundle() {
      if (process.env.STATECART_NO_SAMPLES) return;
      execFileSync(
        process.execPath,
        ['--import', 'tsx', 'scripts/publish-states.ts', '--samples', '--out', join(outDir, 'states'), '--catalog', join(outDir, 'catalog.json')],
        { stdio: ['ignore', 'ignore', 'inherit'], timeout: 300_000 },
      );
    },
  };
}

export default defineConfig({
  // Relative base: the built site works from any folder of any static host.
  base: './',
  // Pre-bundled dependencies per checkout: several checkouts share one node_modules
  // (git worktrees), and each one's config re-optimizing the shared cache under the
  // other's running server made its pages fail to load their modules.
  cacheDir: '.cache/vite',
  plugins: [statepackServiceWorker(), sampleStates()],
  // Tests and benchmarks drive the page themselves: a file saved mid-run must not reload it.
  server: { headers: isolation, host: '127.0.0.1', strictPort: true, hmr: process.env.STATECART_NO_HMR ? false : undefined },
  preview: { headers: isolation, host: '127.0.0.1', strictPort: true },
  worker: { format: 'es' },
  optimizeDeps: {
    // onnxruntime-web finds its .wasm through paths we set; pre-bundling would move it.
    exclude: ['onnxruntime-web', '@huggingface/transformers'],
    // CommonJS (protobufjs): pre-bundled up front, or the first Hub conversion would reload the page.
    include: ['onnx-proto'],
    // examples/embed imports the packed library ('statecart'), which only resolves in its own install: scanning it
    // failed the whole dependency scan, and Vite then found dependencies one by one and reloaded pages mid-test.
    entries: ['**/*.html', '!examples/**', '!dist/**', '!node_modules/**', '!test-results/**'],
  },
  build: {
    target: 'es2022',
    outDir: 'dist',
    chunkSizeWarningLimit: 4096,
  },
});
