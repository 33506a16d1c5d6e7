import { app, onRefresh, refresh, select, type Snapshot } from './app.ts';
import { $, errorText, fmtBytes, setResult } from './dom.ts';

async function showQuota(snap: Snapshot): Promise<void> {
  const h = snap.health;
  const pinned = snap.states.filter((s) => s.pinned).length;
  $('storeSummary').textContent =
    `${h.statesStored} states (${pinned} pinned, ${h.statesHot} hot in memory): ${fmtBytes(h.bytesStored)} stored, ${fmtBytes(h.logicalBytes)} if every state were stored whole.`;
  const bar = $<HTMLProgressElement>('quotaBar');
  const text = $('quotaText');
  const est = await navigator.storage?.estimate?.().catch(() => undefined);
  if (est?.quota) {
    bar.max = est.quota;
    bar.value = est.usage ?? 0;
    text.textContent = `This site uses ${fmtBytes(est.usage ?? 0)} of ${fmtBytes(est.quota)} the browser allows (${(((est.usage ?? 0) / est.quota) * 100).toFixed(2)}%).`;
  } else {
    bar.removeAttribute('value');
    text.textContent = 'This browser does not report storage use (navigator.storage.estimate is missing).';
  }
  const persisted = await navigator.storage?.persisted?.().catch(() => undefined);
  $('persistText').textContent =
    persisted === undefined
      ? 'Persistence: not supported by this browser.'
      : persisted
        ? 'Persistence: granted — the browser will not clear these states under storage pressure.'
        : 'Persistence: not granted — the browser may clear these states when space runs low.';
  $<HTMLButtonElement>('persist').disabled = persisted !== false;
}

export function initStorage(): void {
  onRefresh(showQuota);
  const out = $('storageResult');
  const policy = $<HTMLSelectElement>('codecPolicy');
  policy.onchange = async () => {
    try {
      await app.client.setCodecPolicy({ codec: policy.value as 'fp32' });
      setResult(
        out,
        `New states are stored as ${policy.value}${policy.value === 'auto' ? ' (measured per state against fp32)' : ''}; existing states keep their codec.`,
      );
    } catch (e) {
      setResult(out, errorText(e), true);
    }
  };
  $<HTMLButtonElement>('persist').onclick = async () => {
    const ok = await navigator.storage?.persist?.().catch(() => false);
    setResult(
      out,
      ok
        ? 'The browser granted persistent storage.'
        : 'The browser declined persistent storage (browsers grant it to sites you use often, bookmark, or install).',
      !ok,
    );
    await refresh();
  };
  $<HTMLButtonElement>('evict').onclick = async () => {
    const btn = $<HTMLButtonElement>('evict');
    btn.disabled = true;
    try {
      const states = await app.client.listStates();
      let bytes = 0;
      let n = 0;
      for (const s of states.filter((x) => !x.pinned)) {
        const r = await app.client.deleteState({ stateKey: s.key });
        if (r.deleted) n++;
        bytes += r.bytesFreed;
      }
      if (app.selected && !states.some((s) => s.key === app.selected && s.pinned)) select(null);
      await refresh();
      setResult(out, `Evicted ${n} unpinned states, freed ${fmtBytes(bytes)}; ${states.length - n} pinned states kept.`);
    } catch (e) {
      setResult(out, errorText(e), true);
    } finally {
      btn.disabled = false;
    }
  };
}
