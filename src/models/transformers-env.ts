import { env } from '@huggingface/transformers';
import type { RuntimeFileCache } from './hub-files.ts';

// (apart from hub-load.ts, which the page imports too: only workers and Node load transformers.js)

/**
 * transformers.js reads every model file through `runtime` (statecart's
 * cache): Hub files from where `prepareHubLoad` put them, a page's own model
 * files from the page, hashed on the way. `local` is the pathname of the
 * page's models folder for a local model, or null for a Hub one.
 */
export function configureTransformers(o: { hubUrl: string; runtime: RuntimeFileCache; local: string | null }): void {
  env.useCustomCache = true;
  env.customCache = o.runtime as unknown as typeof env.customCache;
  env.remoteHost = o.hubUrl.endsWith('/') ? o.hubUrl : `${o.hubUrl}/`;
  env.remotePathTemplate = '{model}/resolve/{revision}/';
  env.allowLocalModels = o.local !== null;
  env.allowRemoteModels = o.local === null;
  if (o.local !== null) env.localModelPath = o.local;
}
