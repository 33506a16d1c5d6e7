import { MODELS, type DeviceChoice } from '../lib/index.ts';
import { app, refresh } from './app.ts';
import { $, el, errorText, fmtBytes, fmtMs } from './dom.ts';

export function setStatus(text: string, error = false): void {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('error', error);
}

function describe(id: string): string {
  const m = MODELS.find((x) => x.id === id);
  if (!m) return '';
  return m.source === 'hub'
    ? `Downloads about ${fmtBytes(m.approxBytes)} from the Hugging Face Hub once, then loads from the browser cache.`
    : `${m.label}. Served with this page (${fmtBytes(m.approxBytes)}), no network needed.`;
}

export function initModelPicker(params: URLSearchParams): void {
  const sel = $<HTMLSelectElement>('model');
  const groups = { local: el('optgroup', { label: 'Offline (served with the page)' }), hub: el('optgroup', { label: 'Online (Hugging Face Hub)' }) };
  for (const m of MODELS)
    groups[m.source].append(
      el('option', {
        value: m.id,
        text: m.source === 'hub' ? `${m.id} (~${fmtBytes(m.approxBytes)})` : `${m.id}${m.approxBytes > 1e8 ? ` (~${fmtBytes(m.approxBytes)})` : ''}`,
      }),
    );
  sel.append(groups.local, groups.hub);
  sel.value = params.get('model') ?? 'tiny-gpt2';
  $<HTMLSelectElement>('device').value = params.get('device') ?? 'auto';
  const note = () => ($('modelNote').textContent = describe(sel.value));
  sel.onchange = note;
  note();
  $<HTMLButtonElement>('load').onclick = () => void loadModel();
}

/** Loads the picked model in the worker and says which device it got and why. */
export async function loadModel(): Promise<boolean> {
  const id = $<HTMLSelectElement>('model').value;
  const device = $<HTMLSelectElement>('device').value as DeviceChoice;
  const bar = $<HTMLProgressElement>('loadProgress');
  const btn = $<HTMLButtonElement>('load');
  btn.disabled = true;
  bar.hidden = false;
  bar.value = 0;
  setStatus(`loading ${id}…`);
  document.body.classList.remove('model-ready');
  try {
    const files = new Map<string, { loaded: number; total: number }>();
    const info = await app.client.loadModel(
      { model: id, device },
      {
        onProgress: (p) => {
          files.set(p.file, p);
          const loaded = [...files.values()].reduce((a, f) => a + f.loaded, 0);
          const total = [...files.values()].reduce((a, f) => a + f.total, 0);
          if (total) bar.value = loaded / total;
          setStatus(`loading ${id}: ${p.file} ${fmtBytes(loaded)}${total ? ` of ${fmtBytes(total)}` : ''}`);
        },
      },
    );
    app.model = info;
    bar.value = 1;
    const h = await app.client.health();
    const badge = $('badge');
    badge.className = `badge ${info.device}`;
    badge.textContent = info.device === 'webgpu' ? `WebGPU · ${info.adapter ?? 'adapter'}` : `WASM · ${h.threads} thread${h.threads === 1 ? '' : 's'}`;
    const iso = h.crossOriginIsolated ? '' : ' The page is not cross-origin isolated (the host sends no COOP/COEP headers), so WASM runs on one thread.';
    $('deviceReason').textContent = `Why: ${info.deviceReason}.${iso}`;
    setStatus(
      `${info.id} (${info.arch}, ${Number.isFinite(info.maxTokens) ? `up to ${info.maxTokens} tokens` : 'a fixed-size state: no context limit'}) loaded in ${fmtMs(info.loadMs)}`,
    );
    const recompute = $<HTMLInputElement>('recompute');
    // Recomputing a long context on a full-size model takes seconds per step: opt-in there.
    recompute.checked = id.startsWith('tiny-');
    document.body.classList.add('model-ready');
    for (const b of document.querySelectorAll<HTMLButtonElement>('[data-needs-model]')) b.disabled = false;
    await refresh();
    return true;
  } catch (e) {
    setStatus(errorText(e), true);
    return false;
  } finally {
    btn.disabled = false;
    bar.hidden = true;
  }
}
