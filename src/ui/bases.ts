import { select } from './app.ts';
import { $, el, errorText, fmtBytes, fmtMs, setResult, short } from './dom.ts';
import { createBase } from './savings.ts';

export const EXAMPLES: Record<string, string> = {
  'System prompt':
    'You are a careful assistant for a hardware store. Answer in two sentences, name the aisle, and never guess a price. If a customer asks for something the store does not sell, say so and suggest the closest item it does sell.',
  'Few-shot':
    'Q: capital of France? A: Paris\nQ: capital of Japan? A: Tokyo\nQ: capital of Kenya? A: Nairobi\nQ: capital of Chile? A: Santiago\nQ: capital of Canada? A: Ottawa\nQ: capital of Peru? A:',
  'Long document': Array.from(
    { length: 16 },
    (_, i) =>
      `Section ${i + 1}. The cache keys every state by the SHA-256 of its model and tokens, so a prefix computed once is found again by anyone who asks for it.`,
  ).join('\n'),
};

export function initBases(): void {
  const base = $<HTMLTextAreaElement>('base');
  const progress = $<HTMLProgressElement>('progress');
  const createBtn = $<HTMLButtonElement>('create');
  const cancelBtn = $<HTMLButtonElement>('cancel');
  const res = $('createResult');
  let label: string | undefined;
  for (const [name, text] of Object.entries(EXAMPLES)) {
    $('examples').append(
      el('button', {
        type: 'button',
        class: 'chip',
        text: name,
        onclick: () => {
          base.value = text;
          label = name;
        },
      }),
    );
  }
  base.addEventListener('input', () => (label = undefined));
  let busy: AbortController | null = null;
  cancelBtn.onclick = () => busy?.abort();
  createBtn.onclick = async () => {
    busy = new AbortController();
    createBtn.disabled = true;
    cancelBtn.disabled = false;
    progress.value = 0;
    setResult(res, 'prefilling…');
    try {
      const r = await createBase(base.value, label, {
        signal: busy.signal,
        onProgress: (p) => {
          progress.value = p.total ? p.done / p.total : 1;
          $('progressText').textContent = `${p.done} / ${p.total} tokens`;
        },
      });
      progress.value = 1;
      $('progressText').textContent = `${r.tokens} / ${r.tokens} tokens`;
      setResult(
        res,
        r.processed === 0
          ? `state ${short(r.stateKey)} was already stored: ${r.tokens} tokens, nothing processed, found in ${fmtMs(r.timings.totalMs)}`
          : `state ${short(r.stateKey)}: ${r.tokens} tokens, ${fmtBytes(r.bytes)} — prefilled ${r.processed} tokens${r.reused ? ` (reused a stored prefix of ${r.reused})` : ''} in ${fmtMs(r.timings.prefillMs)}, ${fmtMs(r.timings.totalMs)} in all${r.checkpoints.length ? `; kept ${r.checkpoints.length} checkpoint${r.checkpoints.length > 1 ? 's' : ''}` : ''}. Reuse: ${r.reuse.reason}.`,
      );
      select(r.stateKey);
    } catch (e) {
      setResult(res, errorText(e), true);
    } finally {
      busy = null;
      createBtn.disabled = false;
      cancelBtn.disabled = true;
    }
  };
}
