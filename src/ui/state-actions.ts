import type { StateInfo } from '../lib/index.ts';
import { app, onRefresh, onSelect, refresh, select } from './app.ts';
import { tierText } from './graph.ts';
import { $, el, errorText, fmtBytes, fmtMs, setResult, short } from './dom.ts';
import { continueFrom } from './savings.ts';

const current = (): StateInfo | undefined => app.last?.states.find((s) => s.key === app.selected);

/** Keys from the base down to `key`, following parent links. */
function chainTo(key: string): string[] {
  const byKey = new Map((app.last?.states ?? []).map((s) => [s.key, s]));
  const chain: string[] = [];
  for (let k: string | null = key; k && byKey.has(k) && !chain.includes(k); k = byKey.get(k)!.parent) chain.unshift(k);
  return chain;
}

function showInfo(s: StateInfo | undefined): void {
  const box = $('detailInfo');
  const actions = $('detailActions');
  actions.hidden = !s;
  if (!s) {
    box.replaceChildren(el('p', { class: 'muted', text: 'Select a state in the graph (click, or Tab to it and press Enter).' }));
    return;
  }
  const row = (k: string, v: string, title?: string) => [el('div', {}, el('dt', { text: k }), el('dd', { text: v, ...(title ? { title } : {}) }))];
  box.replaceChildren(
    el(
      'dl',
      { class: 'facts' },
      ...row('key', short(s.key), s.key),
      ...row('kind', s.checkpoint ? `checkpoint${s.parent ? ` after ${short(s.parent)}` : ''}` : s.parent ? `delta of ${short(s.parent)}` : 'base'),
      ...row('tokens', String(s.tokens)),
      ...row('bytes', fmtBytes(s.bytes)),
      ...row('codec', s.codec),
      ...row(
        'tier',
        tierText(s.tier),
        s.tier === 'queued' ? 'In memory and usable now; its write to IndexedDB is queued behind the call that made it' : undefined,
      ),
      ...row('model', s.model),
      ...row('pinned', s.pinned ? 'yes' : 'no'),
      ...row('hits', String(s.hits), 'requests that reused this state'),
    ),
  );
  $('pin').textContent = s.pinned ? 'Unpin' : 'Pin';
  $('pin').setAttribute('aria-pressed', String(s.pinned));
  const merge = $<HTMLButtonElement>('merge');
  merge.disabled = !s.parent;
  merge.title = s.parent ? 'Fold the chain from its base into one standalone state' : 'A base has nothing to merge';
  $<HTMLButtonElement>('compact').title = 'Re-prefill the kept part into a shorter state';
}

export function initStateActions(): void {
  onRefresh(() => showInfo(current()));
  onSelect(() => {
    $('codecTable').replaceChildren();
    showInfo(current());
  });
  const out = $('actionResult');
  const output = $('output');
  const maxNew = () => Math.max(0, Math.min(256, Number($<HTMLInputElement>('maxNew').value) || 0));

  const run = (id: string, fn: (s: StateInfo) => Promise<void>) => {
    const btn = $<HTMLButtonElement>(id);
    btn.onclick = async () => {
      const s = current();
      if (!s) return setResult(out, 'Select a state first.', true);
      btn.disabled = true;
      setResult(out, `${btn.textContent?.toLowerCase()}…`);
      try {
        await fn(s);
      } catch (e) {
        setResult(out, errorText(e), true);
      } finally {
        btn.disabled = false;
        showInfo(current());
      }
    };
  };

  const step = async (s: StateInfo, delta: string, n: number, sampling?: { temperature: number; seed: number }) => {
    const r = await continueFrom(s.key, delta, n, sampling);
    output.textContent = r.output;
    setResult(
      out,
      `${short(s.key)} → ${short(r.newStateKey)}: processed ${r.savings.tokensProcessed} tokens, reused ${r.savings.tokensReused} (${Math.round(100 * r.savings.fraction)}% fewer than without the cache); restored from the ${r.tier} tier; ${fmtMs(r.timings.totalMs)}${sampling ? `; sampled with seed ${sampling.seed}` : ''}. Reuse: ${r.reuse.reason}.`,
    );
    select(r.newStateKey);
  };

  run('continue', (s) => step(s, $<HTMLTextAreaElement>('delta').value, maxNew()));
  run('generate', (s) => step(s, '', Math.max(1, maxNew())));
  // A branch is a sibling of the greedy continuation: same state, a seeded sample.
  run('branch', (s) => step(s, $<HTMLTextAreaElement>('delta').value, Math.max(1, maxNew()), { temperature: 1, seed: (Math.random() * 2 ** 31) >>> 0 }));
  run('merge', async (s) => {
    const stateKeys = chainTo(s.key);
    const r = await app.client.merge({ stateKeys });
    await refresh();
    setResult(
      out,
      `merged ${stateKeys.length} states into ${short(r.newStateKey)} (${r.tokens} tokens, ${fmtBytes(r.bytes)}): released ${r.released.length} intermediate states${r.keptPinned.length ? `, kept ${r.keptPinned.length} pinned` : ''}, freed ${fmtBytes(r.bytesFreed)}`,
    );
    select(r.newStateKey);
  });
  run('compact', async (s) => {
    const firstTokens = Math.max(0, Number($<HTMLInputElement>('keepFirst').value) || 0);
    const lastTokens = Math.max(0, Number($<HTMLInputElement>('keepLast').value) || 0);
    const r = await app.client.compact({ stateKey: s.key, keep: { firstTokens, lastTokens } });
    await refresh();
    setResult(
      out,
      `compacted ${short(s.key)} (${s.tokens} tokens) to ${short(r.newStateKey)}: kept ${r.tokens} tokens, dropped ${r.tokensDropped}, folded ${r.stepsFolded} steps; reused ${r.reused} tokens, prefilled ${r.processed} in ${fmtMs(r.timings.prefillMs)}`,
    );
    select(r.newStateKey);
  });
  run('chooseCodec', async (s) => {
    const t0 = performance.now();
    const r = await app.client.chooseCodec({ stateKey: s.key });
    const head = el('tr', {}, ...['codec', 'bytes', 'ratio', 'max logit err', 'KL max', 'greedy', 'verdict'].map((h) => el('th', { scope: 'col', text: h })));
    const rows = r.rows.map((row) =>
      el(
        'tr',
        { class: row.codec === r.choice ? 'chosen' : '' },
        el('td', { text: row.codec + (row.codec === r.choice ? ' ✓' : '') }),
        el('td', { text: fmtBytes(row.bytes) }),
        el('td', { text: row.ratio.toFixed(3) }),
        el('td', { text: row.metrics ? row.metrics.maxLogitError.toExponential(2) : '—' }),
        el('td', { text: row.metrics ? row.metrics.klMax.toExponential(2) : '—' }),
        el('td', { text: row.metrics ? `${row.metrics.greedyAgree}/${row.metrics.positions}` : '—' }),
        el('td', { text: row.error ? row.error : row.meets ? 'meets' : row.failed.join('; ') }),
      ),
    );
    $('codecTable').replaceChildren(
      el(
        'table',
        {},
        el('caption', {
          text: `Codecs measured on ${short(s.key)} (${r.tokens} tokens, probe of ${r.probeTokens.length} tokens) in ${fmtMs(performance.now() - t0)}: the smallest that meets every limit is ${r.choice}.`,
        }),
        el('thead', {}, head),
        el('tbody', {}, ...rows),
      ),
    );
    setResult(out, `codec choice for ${short(s.key)}: ${r.choice}`);
  });
  run('pin', async (s) => {
    await app.client.pinState({ stateKey: s.key, pinned: !s.pinned });
    await refresh();
    setResult(out, `${short(s.key)} ${s.pinned ? 'unpinned' : 'pinned: eviction keeps it'}`);
  });
  run('delete', async (s) => {
    const r = await app.client.deleteState({ stateKey: s.key });
    select(s.parent);
    await refresh();
    setResult(
      out,
      r.deleted
        ? `deleted ${short(s.key)}: freed ${r.blobsFreed} blobs, ${fmtBytes(r.bytesFreed)} (blocks other states share are kept)`
        : `${short(s.key)} was already gone`,
    );
  });
  showInfo(undefined);
}
