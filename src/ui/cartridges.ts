import { app, onRefresh, onSelect, refresh, select } from './app.ts';
import { $, el, errorText, fmtBytes, short } from './dom.ts';
import { checkQuality, type CartridgeQuality } from '../formats/cartridge.ts';
import { parseSafetensorsHeader } from '../formats/safetensors.ts';
import { isCodecName } from '../formats/codecs.ts';

/** Measured quality of the lossy states this page imported or exported, by state key (the store keeps codecs, not this). */
const qualityOf = new Map<string, CartridgeQuality>();

const sci = (x: number): string => (x === 0 ? '0' : x.toExponential(1));

/** A lossy codec's measured effect, in words. */
function qualityText(q: CartridgeQuality): string {
  return `${q.codec} vs fp32: greedy ${q.greedyAgree}/${q.greedyTotal} positions agree, max logit error ${sci(q.maxLogitError)}, mean KL ${sci(q.meanKL)} nats`;
}

/** The "quality" record in a cartridge Blob's header, read without reading its data. */
async function blobQuality(blob: Blob): Promise<CartridgeQuality | null> {
  try {
    const len = new DataView(await blob.slice(0, 8).arrayBuffer()).getBigUint64(0, true);
    if (len > 16n * 1024n * 1024n) return null;
    const h = parseSafetensorsHeader(new Uint8Array(await blob.slice(0, 8 + Number(len)).arrayBuffer()), blob.size);
    if (h.metadata.quality === undefined) return null;
    const q = JSON.parse(h.metadata.quality) as { codec?: unknown };
    const c = isCodecName(q.codec) ? checkQuality(q, q.codec) : null;
    return c && typeof c !== 'string' ? c : null;
  } catch {
    return null;
  }
}

/** What the store holds, to prove a refused cartridge changed nothing. */
async function storeFingerprint(): Promise<{ keys: string; states: number; bytes: number }> {
  const [states, h] = await Promise.all([app.client.listStates(), app.client.health()]);
  return {
    keys: states
      .map((s) => s.key)
      .sort()
      .join(','),
    states: states.length,
    bytes: h.bytesStored,
  };
}

/** One line per file, URL or catalog entry: what was tried and what happened, in plain words. */
function logEntry(name: string): { ok(text: string): void; fail(text: string): void } {
  const status = el('span', { class: 'st', text: 'checking…' });
  const li = el('li', { 'data-testid': 'import-entry' }, el('strong', { text: name }), ' — ', status);
  $('importLog').prepend(li);
  return {
    ok: (t) => {
      status.textContent = t;
      li.className = 'ok';
    },
    fail: (t) => {
      status.textContent = t;
      li.className = 'error';
      li.setAttribute('role', 'alert');
    },
  };
}

async function importOne(name: string, src: Uint8Array | Blob | string): Promise<void> {
  const log = logEntry(name);
  const before = await storeFingerprint();
  try {
    const r = await app.client.importCartridge({ source: src });
    if (r.quality) qualityOf.set(r.stateKey, r.quality);
    await refresh();
    const q = r.quality ? `; measured at export: ${qualityText(r.quality)}` : '';
    log.ok(
      r.reused
        ? `state ${short(r.stateKey)} (${r.tokens} tokens) was already stored: nothing written${q}`
        : `imported state ${short(r.stateKey)}: ${r.tokens} tokens, ${r.codec}, ${fmtBytes(r.bytes)} stored${r.parent ? `, delta of ${short(r.parent)}` : ''}; receipts ${r.receiptsVerified ? 'verified' : 'not verified'}${q}`,
    );
    select(r.stateKey);
  } catch (e) {
    const after = await storeFingerprint();
    const same = after.keys === before.keys && after.bytes === before.bytes;
    log.fail(
      `${errorText(e)} — ${same ? `the store is unchanged (${after.states} states, ${fmtBytes(after.bytes)})` : 'WARNING: the store changed during a refused import'}`,
    );
  }
}

async function importFiles(files: FileList | File[]): Promise<void> {
  for (const f of Array.from(files)) await importOne(`${f.name} (${fmtBytes(f.size)})`, new Uint8Array(await f.arrayBuffer()));
}

async function download(): Promise<void> {
  const out = $('exportResult');
  const s = app.last?.states.find((x) => x.key === app.selected);
  if (!s) throw new Error('Select a state in the graph first.');
  const delta = $<HTMLInputElement>('exportDelta').checked;
  if (delta && !s.parent) throw new Error('A base state has no parent: export it in full.');
  const codec = $<HTMLSelectElement>('exportCodec').value as 'fp32' | 'fp16' | 'int8' | 'kivi4';
  const blob = await app.client.exportCartridge({ stateKey: s.key, ...(delta ? { delta: s.parent! } : {}), codec });
  const name = `statecart-${short(s.key)}${delta ? '-delta' : ''}-${codec}.safetensors`;
  const url = URL.createObjectURL(blob);
  const a = el('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  const q = await blobQuality(blob);
  if (q) qualityOf.set(s.key, q);
  out.classList.remove('error');
  out.textContent = `${name}: ${fmtBytes(blob.size)} (${delta ? `delta from ${short(s.parent)}` : 'full state'}, ${codec}; stored state ${fmtBytes(s.bytes)})${q ? `; ${qualityText(q)}` : ''}`;
  updateExport();
}

interface CatalogEntry {
  name: string;
  description?: string;
  model?: string;
  size?: number;
  url: string;
}

/** The catalog ships next to the page when the cartridges issue builds one; without it the list says so. */
async function loadCatalog(): Promise<void> {
  const list = $('catalog');
  try {
    const r = await fetch(new URL('catalog.json', document.baseURI));
    if (!r.ok || !(r.headers.get('content-type') ?? '').includes('json')) throw new Error(`HTTP ${r.status}`);
    const cat = (await r.json()) as { cartridges?: CatalogEntry[] } | CatalogEntry[];
    const entries = Array.isArray(cat) ? cat : (cat.cartridges ?? []);
    if (!entries.length) throw new Error('empty');
    list.replaceChildren(
      ...entries.map((e, i) =>
        el(
          'li',
          {},
          // Named "Open" and described by its line (an example's name stays the name of one button only).
          el('button', {
            class: 'small',
            type: 'button',
            text: 'Open',
            'aria-describedby': `catalog-${i}`,
            onclick: () => void importOne(e.name, new URL(e.url, r.url).href),
          }),
          ' ',
          el('span', {
            id: `catalog-${i}`,
            text: `${e.name}${e.model ? ` · ${e.model}` : ''}${e.size ? ` · ${fmtBytes(e.size)}` : ''}${e.description ? ` — ${e.description}` : ''}`,
          }),
        ),
      ),
    );
  } catch {
    list.replaceChildren(el('li', { class: 'muted', text: 'No catalog.json is published next to this page.' }));
  }
}

function updateExport(): void {
  const s = app.last?.states.find((x) => x.key === app.selected);
  const btn = $<HTMLButtonElement>('exportBtn');
  btn.disabled = !s;
  $('exportTarget').textContent = s ? `${short(s.key)} · ${s.tokens} tokens · ${s.parent ? 'delta of ' + short(s.parent) : 'base'}` : 'no state selected';
  const q = s ? qualityOf.get(s.key) : undefined;
  const line = $('stateQuality');
  line.hidden = !q;
  line.textContent = q ? `Measured quality of this state's ${q.codec} cartridge: ${qualityText(q)}.` : '';
  const d = $<HTMLInputElement>('exportDelta');
  d.disabled = !s?.parent;
  if (!s?.parent) d.checked = false;
}

export function initCartridges(): void {
  onRefresh(updateExport);
  onSelect(updateExport);
  $<HTMLButtonElement>('exportBtn').onclick = () =>
    download().catch((e) => {
      const out = $('exportResult');
      out.textContent = errorText(e);
      out.classList.add('error');
    });
  const input = $<HTMLInputElement>('file');
  input.onchange = () => {
    if (input.files?.length) void importFiles(input.files).finally(() => (input.value = ''));
  };
  $('urlForm').addEventListener('submit', (e) => {
    e.preventDefault();
    const u = $<HTMLInputElement>('cartUrl').value.trim();
    if (u) void importOne(u, new URL(u, document.baseURI).href);
  });
  // Drop anywhere on the page: the zone lights up while a file is over the window.
  const zone = $('dropzone');
  let depth = 0;
  const files = (e: DragEvent) => Array.from(e.dataTransfer?.types ?? []).includes('Files');
  window.addEventListener('dragenter', (e) => {
    if (!files(e)) return;
    depth++;
    document.body.classList.add('dragging');
  });
  window.addEventListener('dragleave', () => {
    if (--depth <= 0) {
      depth = 0;
      document.body.classList.remove('dragging');
    }
  });
  window.addEventListener('dragover', (e) => {
    if (files(e)) e.preventDefault();
  });
  window.addEventListener('drop', (e) => {
    if (!files(e)) return;
    e.preventDefault();
    depth = 0;
    document.body.classList.remove('dragging');
    if (e.dataTransfer?.files.length) void importFiles(e.dataTransfer.files);
  });
  zone.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      input.click();
    }
  });
  zone.addEventListener('click', () => input.click());
  void loadCatalog();
}

/** A link can open a cartridge: ?cartridge=<url> (after the model has loaded, which import checks against). */
export function openLinkedCartridge(): void {
  const linked = new URLSearchParams(location.search).get('cartridge');
  if (linked) void importOne(linked, new URL(linked, document.baseURI).href);
}
