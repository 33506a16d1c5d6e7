import { createStatecart, MODELS, type StatecartClient, type StateInfo } from '../lib/index.ts';

declare global {
  interface Window {
    statecart?: StatecartClient;
    statecartReady?: Promise<StatecartClient>;
  }
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const modelSel = $<HTMLSelectElement>('model');
const deviceSel = $<HTMLSelectElement>('device');
const badge = $('badge');
const status = $('status');
const base = $<HTMLTextAreaElement>('base');
const delta = $<HTMLTextAreaElement>('delta');
const fromSel = $<HTMLSelectElement>('from');
const progress = $<HTMLProgressElement>('progress');
const createBtn = $<HTMLButtonElement>('create');
const cancelBtn = $<HTMLButtonElement>('cancel');
const inferBtn = $<HTMLButtonElement>('infer');
const output = $('output');

const EXAMPLES: Record<string, string> = {
  'System prompt': 'You are a careful assistant for a hardware store. Answer in two sentences, name the aisle, and never guess a price.',
  'Few-shot': 'Q: capital of France? A: Paris\nQ: capital of Japan? A: Tokyo\nQ: capital of Kenya? A: Nairobi\nQ: capital of Peru? A:',
  'Long document': Array.from({ length: 12 }, (_, i) => `Section ${i + 1}. The cache keys every state by the SHA-256 of its model and tokens, so a prefix computed once is found again by anyone who asks for it.`).join('\n'),
};

const params = new URLSearchParams(location.search);
const fmtBytes = (n: number) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`);
const short = (k: string | null) => (k ? k.slice(7, 19) : '—');

for (const m of MODELS) {
  const o = document.createElement('option');
  o.value = m.id;
  o.textContent = `${m.id}${m.source === 'hub' ? ` (Hub, ~${fmtBytes(m.approxBytes)})` : ''}`;
  modelSel.append(o);
}
modelSel.value = params.get('model') ?? 'tiny-gpt2';
deviceSel.value = params.get('device') ?? 'auto';
for (const [name, text] of Object.entries(EXAMPLES)) {
  const b = document.createElement('button');
  b.textContent = name;
  b.onclick = () => (base.value = text);
  $('examples').append(b);
}

function setStatus(text: string, error = false) {
  status.textContent = text;
  status.classList.toggle('error', error);
}

let client: StatecartClient;
let busy: AbortController | null = null;

async function refresh() {
  const states = await client.listStates();
  const h = await client.health();
  $('storeSummary').textContent = `${h.statesStored} states, ${fmtBytes(h.bytesStored)} stored (${fmtBytes(h.logicalBytes)} without block sharing), ${h.statesHot} hot` + (h.quota ? ` · origin uses ${fmtBytes(h.quota.usage)} of ${fmtBytes(h.quota.quota)}` : '');
  const tbody = document.querySelector('#states tbody')!;
  tbody.replaceChildren(...states.map(row));
  const keep = fromSel.value;
  fromSel.replaceChildren(
    ...states.map((s) => {
      const o = document.createElement('option');
      o.value = s.key;
      o.textContent = `${short(s.key)} · ${s.tokens} tokens${s.label ? ` · ${s.label}` : ''}`;
      return o;
    }),
  );
  if (states.some((s) => s.key === keep)) fromSel.value = keep;
  inferBtn.disabled = states.length === 0;
}

function row(s: StateInfo): HTMLTableRowElement {
  const tr = document.createElement('tr');
  tr.dataset.key = s.key;
  const cells = [short(s.key), String(s.tokens), fmtBytes(s.bytes), s.tier, short(s.parent)];
  cells.forEach((c, i) => {
    const td = document.createElement('td');
    td.textContent = c;
    if (i === 0) {
      td.className = 'key';
      td.title = s.key;
    }
    tr.append(td);
  });
  const td = document.createElement('td');
  const del = document.createElement('button');
  del.className = 'small';
  del.textContent = 'delete';
  del.onclick = async () => {
    await client.deleteState(s.key);
    await refresh();
  };
  td.append(del);
  tr.append(td);
  return tr;
}

async function load() {
  setStatus(`loading ${modelSel.value}…`);
  createBtn.disabled = true;
  try {
    const info = await client.loadModel(modelSel.value, {
      device: deviceSel.value as 'auto',
      onProgress: (p) => setStatus(`downloading ${p.file} ${p.total ? Math.round((100 * p.loaded) / p.total) + '%' : ''}`),
    });
    badge.textContent = info.device === 'webgpu' ? `WebGPU · ${info.adapter}` : `WASM${info.adapter ? '' : ''}`;
    badge.title = info.deviceReason;
    badge.className = `badge ${info.device}`;
    setStatus(`${info.id} loaded in ${(info.loadMs / 1000).toFixed(2)} s — ${info.deviceReason}`);
    createBtn.disabled = false;
  } catch (e) {
    setStatus(`${(e as Error).name}: ${(e as Error).message}`, true);
  }
}

createBtn.onclick = async () => {
  const res = $('createResult');
  busy = new AbortController();
  createBtn.disabled = true;
  cancelBtn.disabled = false;
  progress.value = 0;
  res.classList.remove('error');
  try {
    const r = await client.createState({ text: base.value }, { signal: busy.signal, onProgress: (p) => (progress.value = p.total ? p.done / p.total : 1) });
    progress.value = 1;
    res.textContent = `state ${short(r.stateKey)}: ${r.tokens} tokens, ${fmtBytes(r.bytes)} — processed ${r.processed} tokens, reused ${r.reused}, in ${(r.timings.totalMs / 1000).toFixed(3)} s`;
    await refresh();
    fromSel.value = r.stateKey;
  } catch (e) {
    res.textContent = `${(e as Error).name}: ${(e as Error).message}`;
    res.classList.add('error');
  } finally {
    busy = null;
    createBtn.disabled = false;
    cancelBtn.disabled = true;
  }
};

cancelBtn.onclick = () => busy?.abort();

inferBtn.onclick = async () => {
  const res = $('inferResult');
  res.classList.remove('error');
  inferBtn.disabled = true;
  try {
    const r = await client.infer({ stateKey: fromSel.value, delta: delta.value, maxNewTokens: Number($<HTMLInputElement>('maxNew').value) });
    output.textContent = r.output;
    res.textContent = `processed ${r.savings.tokensProcessed} tokens, reused ${r.savings.tokensReused} (${Math.round(100 * r.savings.fraction)}% fewer than without the cache) — from the ${r.tier} tier, ${(r.timings.totalMs / 1000).toFixed(3)} s → state ${short(r.newStateKey)}`;
    await refresh();
  } catch (e) {
    res.textContent = `${(e as Error).name}: ${(e as Error).message}`;
    res.classList.add('error');
  } finally {
    inferBtn.disabled = false;
  }
};

$<HTMLButtonElement>('load').onclick = () => void load();

window.statecartReady = (async () => {
  client = await createStatecart({ device: deviceSel.value as 'auto' });
  window.statecart = client;
  if (params.get('autoload') !== '0') await load();
  await refresh();
  return client;
})();
window.statecartReady.catch((e) => setStatus(`${(e as Error).name}: ${(e as Error).message}`, true));
