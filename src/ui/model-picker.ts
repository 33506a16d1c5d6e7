import { hubDtypes, MODELS, modelDownloadInfo, pendingDtype, resolveModelId, type DeviceChoice, type Dtype } from '../lib/index.ts';
import { app, refresh } from './app.ts';
import { $, el, errorText, fmtBytes, fmtMs } from './dom.ts';

export function setStatus(text: string, error = false): void {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('error', error);
}

/** The page's Hub: `?hub=<url>` (a mirror), else the library's default. */
export function hubUrlFrom(params: URLSearchParams): string | undefined {
  const h = params.get('hub');
  return h ? new URL(h, location.href).href : undefined;
}

let hubUrl: string | undefined;
/** The load in progress, for Cancel. */
let loading: AbortController | null = null;
/** Bumped on each model or dtype change, so that a slow size answer never overwrites a newer one. */
let noteSeq = 0;

const archOf = (id: string): 'gpt2' | 'mamba' | null => {
  const m = MODELS.find((x) => x.id === id);
  if (m) return m.arch;
  return null;
};

/** The dtypes the picked model offers; those statecart cannot run yet are shown, disabled, with why. */
function fillDtypes(id: string, wanted: string | null): void {
  const sel = $<HTMLSelectElement>('dtype');
  const isHub = id.startsWith('hf:');
  const arch = archOf(id) ?? 'gpt2';
  const entry = MODELS.find((x) => x.id === id);
  const list: Dtype[] = isHub ? (entry?.hub ? (Object.keys(entry.hub.dtypes) as Dtype[]) : hubDtypes(arch)) : ['fp32'];
  sel.replaceChildren(
    ...list.map((d) => {
      const why = isHub ? pendingDtype(arch, d) : undefined;
      return el('option', { value: d, text: why ? `${d} (not yet)` : d, disabled: Boolean(why), title: why });
    }),
  );
  const runnable = [...sel.options].filter((o) => !o.disabled).map((o) => o.value);
  sel.value = wanted && runnable.includes(wanted) ? wanted : (entry?.hub?.defaultDtype ?? runnable[0] ?? 'fp32');
  sel.disabled = !isHub || runnable.length < 2;
}

/** "cached" or "N MB to download", asked of the Hub (HEAD requests) before anything is downloaded. */
async function describe(): Promise<void> {
  const id = $<HTMLSelectElement>('model').value;
  const dtype = $<HTMLSelectElement>('dtype').value as Dtype;
  const note = $('modelNote');
  const seq = ++noteSeq;
  const m = MODELS.find((x) => x.id === id);
  if (!id.startsWith('hf:')) {
    note.textContent = m ? `${m.label}. Served with this page (${fmtBytes(m.approxBytes)}), no network needed.` : '';
    note.dataset.download = 'local';
    return;
  }
  const where = hubUrl ? `the mirror at ${hubUrl}` : 'the Hugging Face Hub';
  note.textContent = `${id} (${dtype}) from ${where}: checking its size…`;
  note.dataset.download = 'checking';
  try {
    const info = await modelDownloadInfo(id, { dtype, ...(hubUrl ? { hubUrl } : {}) });
    if (seq !== noteSeq) return;
    const files = info.files.map((f) => `${f.path} ${f.bytes === null ? '?' : fmtBytes(f.bytes)}${f.cached ? ' (cached)' : ''}`).join(', ');
    if (info.cached) {
      note.textContent = `${id} (${dtype}): cached — nothing to download. ${files}.`;
      note.dataset.download = 'cached';
    } else {
      note.textContent = `${id} (${dtype}): ${fmtBytes(info.downloadBytes)} to download from ${where}, once; later visits load from the browser's cache. ${files}.`;
      note.dataset.download = String(info.downloadBytes);
    }
  } catch (e) {
    if (seq !== noteSeq) return;
    note.textContent = errorText(e);
    note.dataset.download = 'error';
  }
}

export function initModelPicker(params: URLSearchParams): void {
  hubUrl = hubUrlFrom(params);
  const sel = $<HTMLSelectElement>('model');
  const groups = {
    local: el('optgroup', { label: 'Offline (served with the page)' }),
    hub: el('optgroup', { label: hubUrl ? `Hub models (from ${hubUrl})` : 'Online (Hugging Face Hub)' }),
  };
  for (const m of MODELS)
    groups[m.source].append(
      el('option', {
        value: m.id,
        text: m.source === 'hub' ? `${m.id} (~${fmtBytes(m.approxBytes)})` : `${m.id}${m.approxBytes > 1e8 ? ` (~${fmtBytes(m.approxBytes)})` : ''}`,
      }),
    );
  const asked = params.get('model') ?? 'tiny-gpt2';
  // A Hub model the registry does not list (its architecture comes from its config.json).
  if (asked.startsWith('hf:') && !MODELS.some((m) => m.id === asked)) {
    try {
      resolveModelId(asked);
      groups.hub.append(el('option', { value: asked, text: asked }));
    } catch (e) {
      setStatus(errorText(e), true);
    }
  }
  sel.append(groups.local, groups.hub);
  sel.value = asked;
  fillDtypes(sel.value, params.get('dtype'));
  $<HTMLSelectElement>('device').value = params.get('device') ?? 'auto';
  sel.onchange = () => {
    fillDtypes(sel.value, null);
    void describe();
  };
  $<HTMLSelectElement>('dtype').onchange = () => void describe();
  void describe();
  $<HTMLButtonElement>('load').onclick = () => void loadModel();
  $<HTMLButtonElement>('cancelLoad').onclick = () => loading?.abort();
}

/** One line per file: its bytes so far, of how many. */
function showFiles(files: Map<string, { loaded: number; total: number }>): void {
  $('loadFiles').replaceChildren(
    ...[...files].map(([file, p]) => {
      const pct = p.total ? Math.floor((100 * p.loaded) / p.total) : 0;
      const what = file.startsWith('converting') ? `${p.loaded} of ${p.total} steps` : `${fmtBytes(p.loaded)}${p.total ? ` of ${fmtBytes(p.total)}` : ''}`;
      return el('li', { 'data-file': file, 'data-loaded': p.loaded, 'data-total': p.total }, `${file}: ${what} (${pct}%)`);
    }),
  );
}

/** Loads the picked model in the worker and says which device it got and why. */
export async function loadModel(): Promise<boolean> {
  const id = $<HTMLSelectElement>('model').value;
  const dtype = $<HTMLSelectElement>('dtype').value as Dtype;
  const device = $<HTMLSelectElement>('device').value as DeviceChoice;
  const bar = $<HTMLProgressElement>('loadProgress');
  const btn = $<HTMLButtonElement>('load');
  const cancel = $<HTMLButtonElement>('cancelLoad');
  const ac = new AbortController();
  loading = ac;
  btn.disabled = true;
  cancel.hidden = false;
  bar.hidden = false;
  bar.value = 0;
  setStatus(`loading ${id}…`);
  document.body.classList.remove('model-ready');
  const files = new Map<string, { loaded: number; total: number }>();
  showFiles(files);
  try {
    const info = await app.client.loadModel(
      { model: id, device, ...(id.startsWith('hf:') ? { dtype } : {}) },
      {
        signal: ac.signal,
        onProgress: (p) => {
          files.set(p.file, p);
          showFiles(files);
          const bytes = [...files].filter(([f]) => !f.startsWith('converting')).map(([, f]) => f);
          const loaded = bytes.reduce((a, f) => a + f.loaded, 0);
          const total = bytes.reduce((a, f) => a + f.total, 0);
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
      `${info.id}${info.dtype && id.startsWith('hf:') ? ` ${info.dtype}` : ''} (${info.arch}, ${Number.isFinite(info.maxTokens) ? `up to ${info.maxTokens} tokens` : 'a fixed-size state: no context limit'}) loaded in ${fmtMs(info.loadMs)}`,
    );
    const recompute = $<HTMLInputElement>('recompute');
    // Recomputing a long context on a full-size model takes seconds per step: opt-in there.
    recompute.checked = id.startsWith('tiny-');
    document.body.classList.add('model-ready');
    for (const b of document.querySelectorAll<HTMLButtonElement>('[data-needs-model]')) b.disabled = false;
    await refresh();
    return true;
  } catch (e) {
    const cancelled = (e as { name?: string })?.name === 'Aborted';
    setStatus(
      cancelled
        ? `Loading ${id} was cancelled; nothing was kept of the file being downloaded. Load it again to resume from the files already kept.`
        : errorText(e),
      !cancelled,
    );
    return false;
  } finally {
    if (loading === ac) loading = null;
    btn.disabled = false;
    cancel.hidden = true;
    bar.hidden = true;
    void describe();
  }
}
