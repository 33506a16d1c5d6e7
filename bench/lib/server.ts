/**
 * The benchmark's own Vite dev server: the project's vite.config.ts (COOP/COEP
 * on, so onnxruntime-web gets WASM threads), plus a middleware that serves
 * the big generated models from .cache/models/<id>/ at /models/<id>/, where
 * the worker looks for every local model. They stay out of public/, which
 * only holds the tiny ones.
 */
import { createReadStream, existsSync, statSync } from 'node:fs';
import { extname, join, normalize, sep } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Plugin, type ViteDevServer } from 'vite';

const ISOLATION = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

const TYPES: Record<string, string> = {
  '.json': 'application/json',
  '.onnx': 'application/octet-stream',
  '.bin': 'application/octet-stream',
  '.safetensors': 'application/octet-stream',
};

/** Serves GET /models/<id>/<file> from `cacheRoot/<id>/<file>` when that file exists; anything else falls through to Vite. */
function cacheModelsPlugin(cacheRoot: string): Plugin {
  const handler = (req: IncomingMessage, res: ServerResponse, next: () => void) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/models\/(.+)$/.exec(decodeURIComponent(url.pathname));
    if (!m || (req.method !== 'GET' && req.method !== 'HEAD')) return next();
    const file = normalize(join(cacheRoot, m[1]!));
    // No escaping the cache folder through "..".
    if (!file.startsWith(normalize(cacheRoot) + sep) || !existsSync(file) || !statSync(file).isFile()) return next();
    const size = statSync(file).size;
    res.writeHead(200, {
      ...ISOLATION,
      'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
      'Content-Length': String(size),
      'Cache-Control': 'no-cache',
    });
    if (req.method === 'HEAD') return res.end();
    createReadStream(file).pipe(res);
  };
  return {
    name: 'statecart-bench-cache-models',
    configureServer(server) {
      server.middlewares.use(handler);
    },
  };
}

export async function startServer(o: {
  root: string;
  port: number;
  cacheRoot: string;
}): Promise<{ url: string; close: () => Promise<void>; server: ViteDevServer }> {
  const server = await createServer({
    root: o.root,
    configFile: join(o.root, 'vite.config.ts'),
    logLevel: 'warn',
    clearScreen: false,
    server: { port: o.port, strictPort: true, host: '127.0.0.1', headers: ISOLATION, hmr: false, watch: null },
    plugins: [cacheModelsPlugin(o.cacheRoot)],
  });
  await server.listen();
  return { url: `http://127.0.0.1:${o.port}`, server, close: () => server.close() };
}
