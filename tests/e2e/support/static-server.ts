import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync, statSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';

export interface StaticServer {
  url: string;
  /** Paths of the GETs it received, in order. */
  gets: string[];
  /** Per path ('*': every path): other bytes than the file's, 'hang' (accept, never answer). */
  override: Map<string, Buffer | 'hang'>;
  close(): Promise<void>;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.mjs': 'text/javascript',
  '.css': 'text/css',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.onnx': 'application/octet-stream',
};

/**
 * A plain static host (port 0: one the OS picks, so parallel checkouts do not collide): files as they are,
 * with CORS (a remote state host serves other origins) and no COOP/COEP;
 * counts GETs by path, and can lie about a file or never answer.
 */
export function serveStatic(root: string, port: number, o: { immutable?: boolean } = {}): Promise<StaticServer> {
  const gets: string[] = [];
  const override = new Map<string, Buffer | 'hang'>();
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    if (req.method === 'GET') gets.push(path);
    const cors = { 'Access-Control-Allow-Origin': '*', 'Cross-Origin-Resource-Policy': 'cross-origin' };
    if (req.method === 'OPTIONS') return void res.writeHead(204, cors).end();
    const o2 = override.get(path) ?? override.get('*');
    if (o2 === 'hang') return;
    let file = join(root, normalize(path));
    try {
      if (statSync(file).isDirectory()) file = join(file, 'index.html');
      const body = o2 ?? readFileSync(file);
      res.writeHead(200, {
        ...cors,
        'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
        'Content-Length': body.length,
        // Cartridges are immutable by their address.
        ...(o.immutable && file.endsWith('.safetensors') ? { 'Cache-Control': 'public, max-age=31536000, immutable' } : { 'Cache-Control': 'no-cache' }),
      });
      res.end(body);
    } catch {
      res.writeHead(404, cors).end('not found');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () =>
      resolve({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
        gets,
        override,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      }),
    );
  });
}
