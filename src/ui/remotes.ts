import type { RemoteReport } from '../lib/index.ts';
import { app, onRefresh } from './app.ts';
import { $, errorText, fmtBytes, fmtMs, setResult, short } from './dom.ts';

const SAVED = 'statecart:remotes';

/**
 * The remote state hosts the page starts with: the visitor's own list when
 * they set one, else the host published with the site (`remote` in its
 * catalog.json: the built site's sample states), else none.
 */
export async function initialRemotes(): Promise<string[]> {
  const saved = localStorage.getItem(SAVED);
  if (saved !== null) return parseList(saved);
  try {
    const r = await fetch(new URL('catalog.json', document.baseURI));
    if (!r.ok || !(r.headers.get('content-type') ?? '').includes('json')) return [];
    const cat = (await r.json()) as { remote?: unknown };
    return typeof cat.remote === 'string' ? [new URL(cat.remote, r.url).href] : [];
  } catch {
    return [];
  }
}

function parseList(s: string): string[] {
  return s
    .split(/[\s,]+/)
    .map((x) => x.trim())
    .filter(Boolean)
    .map((x) => new URL(x, document.baseURI).href);
}

async function showStatus(): Promise<void> {
  const out = $('remoteStatus');
  const list = await app.client.remoteStatus().catch(() => []);
  out.textContent = list.length
    ? list
        .map((s) =>
          s.reachable === null
            ? `${s.remote}: not asked yet`
            : s.reachable
              ? `${s.remote}: ${s.states ?? 0} states for this model${s.message ? ` (${s.message})` : ''}`
              : `${s.remote}: unreachable (${s.message ?? 'no answer'}); states are computed here`,
        )
        .join(' · ')
    : 'No remote state hosts: every state is computed in this browser.';
}

/** One line on what a remote did for a call (or why none could help). */
export function remoteText(r: RemoteReport | undefined): string {
  if (!r) return '';
  const parts: string[] = [];
  if (r.from)
    parts.push(
      ` — ${r.from.tokens} tokens came from the remote ${r.from.remote} (${short(r.from.stateKey)}, ${fmtBytes(r.from.bytes)} downloaded in ${fmtMs(r.from.fetchMs)}, checked and stored in ${fmtMs(r.from.importMs)})`,
    );
  for (const n of r.notices) parts.push(` — ${n.error}: ${n.message}`);
  return parts.join('');
}

export function initRemotes(current: string[]): void {
  const input = $<HTMLInputElement>('remotes');
  input.value = current.join(' ');
  onRefresh(() => showStatus());
  // A call may have asked a remote without the page refreshing (another tab, the HTTP routes).
  app.client.onStoreChange(() => void showStatus());
  $('remotesForm').addEventListener('submit', (e) => {
    e.preventDefault();
    void (async () => {
      try {
        const list = parseList(input.value);
        await app.client.setRemotes(list);
        localStorage.setItem(SAVED, list.join(' '));
        await showStatus();
      } catch (err) {
        setResult($('remoteStatus'), errorText(err), true);
      }
    })();
  });
}
