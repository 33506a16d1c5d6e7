/**
 * Reads a results file of any format into the current one. Format 1 (before
 * the plain baseline) is kept where its rows mean what format 2's mean; what
 * it cannot state honestly is left out and said so, never relabelled:
 *  - its agent loop compared against statecart itself with a cleared store
 *    (prefill plus hashing and a store write), not against a page without
 *    statecart;
 *  - its "continue" rows are superseded by the time-to-first-token rows;
 *  - its hardwareConcurrency was Node's core count, not the page's.
 */
import { DEFINITIONS } from './definitions.ts';
import type { BenchResults, LoadRow, MambaRestoreRow, SkipNote } from './types.ts';

type V1 = Omit<
  BenchResults,
  'version' | 'mode' | 'command' | 'definitions' | 'ttft' | 'decode' | 'prefill' | 'loads' | 'mambaRestore' | 'agentLoop' | 'quality'
> & {
  version: 1;
  mode: 'quick' | 'full';
  machine: BenchResults['machine'] & { hardwareConcurrency?: number };
  browser: Omit<BenchResults['browser'], 'hardwareConcurrency' | 'plainThreads'>;
  loads: Omit<LoadRow, 'plainWallMs' | 'plainThreads'>[];
  mambaRestore: (Omit<MambaRestoreRow, 'reprefillOverHotLookup'> & { speedup: number })[];
  agentLoop: unknown[];
  continue?: unknown[];
};

export function readResults(json: unknown): BenchResults {
  const v = (json as { version?: unknown }).version;
  // Format 2 files written before quality[] existed have no such rows: none were measured.
  if (v === 2) return { ...(json as BenchResults), quality: (json as Partial<BenchResults>).quality ?? [] };
  if (v !== 1) throw new Error(`bench results: unknown format ${String(v)}`);
  const o = json as V1;
  const { hardwareConcurrency: _nodeCores, ...machine } = o.machine;
  const skipped: SkipNote[] = [...o.skipped];
  if (o.agentLoop.length)
    skipped.push({
      what: 'agent loop vs plain',
      reason: 'this format-1 run measured the loop against statecart with a cleared store, not against the plain baseline',
    });
  if (o.continue?.length) skipped.push({ what: 'continue vs prefill', reason: 'format 1; superseded by the time-to-first-token rows' });
  skipped.push({ what: 'time to first token, decode, prefill throughput', reason: 'format 1 had no such rows' });
  return {
    version: 2,
    mode: o.mode,
    command: o.mode === 'quick' ? 'npm run bench -- --quick' : 'npm run bench',
    date: o.date,
    commit: o.commit,
    dirty: o.dirty,
    machine,
    browser: { ...o.browser, hardwareConcurrency: null, plainThreads: null },
    devices: o.devices,
    note: o.note,
    durationS: o.durationS,
    definitions: { wallTime: DEFINITIONS.wallTime!, hotLookup: DEFINITIONS.hotLookup! },
    loads: o.loads.map((l) => ({ ...l, plainWallMs: null, plainThreads: null })),
    agentLoop: [],
    ttft: [],
    decode: [],
    prefill: [],
    restore: o.restore,
    storage: o.storage,
    mambaRestore: o.mambaRestore.map(({ speedup, ...m }) => ({ ...m, reprefillOverHotLookup: speedup })),
    codecs: o.codecs,
    quality: [],
    skipped,
    upgradedFrom: 1,
  };
}
