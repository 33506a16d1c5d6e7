import type { StatecartClient } from '../lib/index.ts';
import { refresh } from './app.ts';
import { short } from './dom.ts';
import { setStatus } from './model-picker.ts';

/**
 * The store changes behind the page's back: a state's write lands after the
 * call that made it returned (write-behind), another tab stores or deletes
 * states. Each change redraws the panels (once per burst); a write that
 * failed is said in the status line, since its call had already succeeded.
 */
export function watchStore(client: StatecartClient): void {
  let timer: ReturnType<typeof setTimeout> | null = null;
  client.onStoreChange((e) => {
    if (e.type === 'failed') setStatus(`Not stored: ${e.keys.map(short).join(', ')} — ${e.reason} It was returned and shown, but is not in the store.`, true);
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      void refresh().catch(() => undefined);
    }, 150);
  });
}
