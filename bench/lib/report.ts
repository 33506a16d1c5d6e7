/**
 * Pure functions from a BenchResults object to text: the Markdown of
 * latest.md, the README's section, and the console table. Kept free of I/O so
 * that tests/unit/bench-report.test.ts can check them on a fixture.
 */
import type { BenchResults, Stat, RunTarget } from './types.ts';

export const README_START = '<!-- bench:start -->';
export const README_END = '<!-- bench:end -->';

/** Median (the mean of the middle two for an even count), min and max. */
export function stat(samples: readonly number[]): Stat {
  if (samples.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]!, n: s.length };
}

/** Milliseconds as people read them: "0.8 ms", "42 ms", "2.61 s". */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return '—';
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/** A Stat as "median (min–max)"; a single sample prints alone. */
export function fmtStat(s: Stat | undefined): string {
  if (!s || s.n === 0) return '—';
  if (s.n === 1 || s.min === s.max) return fmtMs(s.median);
  return `${fmtMs(s.median)} (${fmtMs(s.min)}–${fmtMs(s.max)})`;
}

export function fmtBytes(n: number): string {
  if (!Number.isFinite(n)) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** a / b as "12.3×" ("—" when either side is missing or b is 0). */
export function fmtRatio(a: number, b: number): string {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b <= 0) return '—';
  const r = a / b;
  return `${r >= 100 ? Math.round(r).toLocaleString('en-US') : r >= 10 ? r.toFixed(1) : r.toFixed(2)}×`;
}

export function fmtPct(p: number): string {
  return Number.isFinite(p) ? `${p.toFixed(1)}%` : '—';
}

const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—');

/** "gpt2-shape" on WASM; "tiny-gpt2 · WebGPU (software)". */
export function target(t: RunTarget): string {
  const dev = t.device === 'wasm' ? 'WASM' : t.softwareAdapter ? 'WebGPU (software adapter)' : 'WebGPU';
  return `${t.model} · ${dev}`;
}

/** A GitHub-flavoured Markdown table; cells have their `|` escaped. */
export function mdTable(head: string[], rows: string[][]): string {
  const esc = (c: string) => c.replace(/\|/g, '\\|');
  const line = (cells: string[]) => `| ${cells.map(esc).join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

function machineLine(r: BenchResults): string {
  const b = r.browser;
  const gpu = r.devices.includes('webgpu')
    ? `; WebGPU adapter: ${b.webgpuAdapter ?? 'none'}${b.webgpuSoftware ? ' (software)' : ''}`
    : b.webgpuAdapter
      ? `; WebGPU adapter ${b.webgpuAdapter}${b.webgpuSoftware ? ' (software, not benchmarked on big models)' : ''}`
      : '; no WebGPU adapter';
  return (
    `${r.mode} run, ${r.date.slice(0, 16).replace('T', ' ')} UTC, commit \`${r.commit.slice(0, 10)}${r.dirty ? '+dirty' : ''}\`; ` +
    `${r.machine.cores} CPU cores (${r.machine.cpuModel}), ${r.machine.memoryGiB} GiB; ${b.name} ${b.version}, ` +
    `cross-origin isolated: ${b.crossOriginIsolated ? 'yes' : 'no'}, WASM threads: ${b.threads}${gpu}.`
  );
}

function breakdownText(b: { restoreMs: number; prefillMs: number; generateMs: number; storeMs: number; otherMs: number }): string {
  return `restore ${fmtMs(b.restoreMs)}, delta prefill ${fmtMs(b.prefillMs)}, generation ${fmtMs(b.generateMs)}, store ${fmtMs(b.storeMs)}, other ${fmtMs(b.otherMs)}`;
}

/** The full report: every table, as written to bench/results/latest.md. */
export function toMarkdown(r: BenchResults): string {
  const out: string[] = [];
  out.push('# statecart benchmarks', '');
  out.push(machineLine(r), '');
  if (r.note) out.push(`> ${r.note}`, '');
  out.push('Timings are the median of several runs, with (min–max). Ratios are taken within this one run.', '');

  if (r.agentLoop.length) {
    out.push("## Agent loop (State Pack's)", '');
    const a0 = r.agentLoop[0]!;
    out.push(
      `A ${a0.baseTokens}-token base, then ${a0.steps} steps, each adding a delta of ${Math.min(...a0.deltaTokens)}–${Math.max(...a0.deltaTokens)} tokens and generating ${a0.newTokensPerStep} tokens greedily. ` +
        'Naive: every step runs createState on the whole text so far in a cleared store (nothing reused), then generates. ' +
        'Cached: createState of the base once, then each step is infer() from the previous state. "Compute only" leaves the naive run\'s store writes out; "base already stored" leaves the cached run\'s first prefill of the base out (a system prompt cached earlier).',
      '',
    );
    out.push(
      mdTable(
        [
          'model · device',
          'input tokens naive',
          'cached (with base)',
          'saved',
          'naive time',
          'cached time',
          'speedup',
          'vs naive compute only',
          'speedup, base already stored',
          'step naive',
          'step cached',
          'identical outputs',
        ],
        r.agentLoop.map((a) => [
          target(a),
          fmtInt(a.naiveTokens),
          `${fmtInt(a.cachedTokens)} (${fmtInt(a.cachedTokensNoBase)} without)`,
          fmtPct(a.tokensSavedPct),
          fmtMs(a.naiveMs),
          fmtMs(a.cachedMs),
          fmtRatio(a.naiveMs, a.cachedMs),
          fmtRatio(a.naiveComputeMs, a.cachedMs),
          fmtRatio(a.naiveMs, a.cachedStepsMs),
          fmtStat(a.naiveStepMs),
          fmtStat(a.cachedStepMs),
          a.identicalOutputs ? 'yes' : 'NO',
        ]),
      ),
      '',
    );
    const bd = r.agentLoop.filter((a) => a.cachedBreakdown);
    if (bd.length) {
      out.push('Where a cached step\'s time goes (medians over the steps, the worker\'s own timers; "other" is messaging and bookkeeping):', '');
      for (const a of bd) out.push(`- ${target(a)}: ${breakdownText(a.cachedBreakdown)}`);
      out.push('');
    }
  }

  if (r.restore.length) {
    out.push('## Base-cache hit: restore vs re-prefill', '');
    out.push(
      'Recompute: createState of the base in a cleared store (prefill + store write). Hot: restore from the in-memory tier; stored: from IndexedDB after dropHot(), every blob digest-checked ' +
        "(both as timed by the worker). First logits: wall time of an infer() that restores the base and computes its next-token logits (GPT-2 re-runs the last token; Mamba takes one new token). Floor: a raw IndexedDB read of the same blobs plus SHA-256, in the page. State Pack's seed reports 0.951 s → 0.003 s.",
      '',
    );
    out.push(
      mdTable(
        [
          'model · device',
          'tokens',
          'state',
          'recompute',
          'hot restore',
          'stored restore',
          'floor',
          'hot: faster',
          'stored: faster',
          'first logits hot',
          'first logits stored',
        ],
        r.restore.map((x) => [
          target(x),
          String(x.tokens),
          fmtBytes(x.stateBytes),
          fmtStat(x.recomputeMs),
          fmtStat(x.hotMs),
          fmtStat(x.storedMs),
          fmtStat(x.floorMs),
          fmtRatio(x.recomputeMs.median, x.hotMs.median),
          fmtRatio(x.recomputeMs.median, x.storedMs.median),
          fmtStat(x.hotFirstLogitsMs),
          fmtStat(x.storedFirstLogitsMs),
        ]),
      ),
      '',
    );

    const prof = r.restore.filter((x) => x.storedProfile);
    if (prof.length) {
      out.push(
        'Where a restore from IndexedDB goes (one run, each step timed alone in the page): prefix keys = SHA-256 chain key of every prefix length; manifests = one IndexedDB get per prefix key; block chain = the 16-token block hashes; read = blobs read, digest-checked and joined.',
        '',
      );
      for (const x of prof) {
        const p = x.storedProfile!;
        out.push(
          `- ${target(x)}, ${x.tokens} tokens: prefix keys ${fmtMs(p.prefixKeysMs)}, manifests ${fmtMs(p.manifestsMs)}, block chain ${fmtMs(p.blockChainMs)}, read ${fmtMs(p.getStateMs)} (floor ${fmtMs(x.floorMs.median)})`,
        );
      }
      out.push('');
    }
  }

  if (r.continue.length) {
    out.push('## Prefill vs continue from a stored state', '');
    out.push(
      'Prefill of the base (no cache, nothing stored) against infer() of a few new tokens on the stored base (0 generated; it restores the base, runs the new tokens and stores the new state), and the same new tokens prefilled with no base and nothing stored.',
      '',
    );
    out.push(
      mdTable(
        [
          'model · device',
          'base',
          'new',
          'prefill base',
          'continue (hot)',
          'continue (stored)',
          'new tokens alone',
          'prefill / continue hot',
          'continue hot / alone',
        ],
        r.continue.map((c) => [
          target(c),
          String(c.baseTokens),
          String(c.newTokens),
          fmtStat(c.prefillBaseMs),
          fmtStat(c.continueHotMs),
          fmtStat(c.continueStoredMs),
          fmtStat(c.freshMs),
          fmtRatio(c.prefillBaseMs.median, c.continueHotMs.median),
          fmtRatio(c.continueHotMs.median, c.freshMs.median),
        ]),
      ),
      '',
    );
  }

  if (r.storage.length) {
    out.push('## Storage', '');
    out.push(
      'Agent loop: unique blob bytes in IndexedDB after the cached loop, against the KV bytes of its unique tokens (the final state) and against every state stored whole. Agents: one base plus N continuations of it.',
      '',
    );
    out.push(
      mdTable(
        ['model · device', 'states', 'stored', "unique tokens' KV", 'ratio', 'if stored whole', 'agents', 'agents stored', 'agents as copies', 'base'],
        r.storage.map((s) => [
          target(s),
          String(s.states),
          fmtBytes(s.chainBytes),
          fmtBytes(s.uniqueKvBytes),
          s.ratio.toFixed(3),
          fmtBytes(s.chainLogicalBytes),
          `${s.agents} × ${s.agentDeltaTokens} tokens`,
          fmtBytes(s.agentsBytes),
          fmtBytes(s.naiveAgentsBytes),
          fmtBytes(s.baseBytes),
        ]),
      ),
      '',
    );
  }

  if (r.mambaRestore.length) {
    out.push('## Mamba: restore vs re-prefill', '');
    const from = [...new Set(r.mambaRestore.map((m) => m.from).filter((x): x is string => typeof x === 'string'))];
    if (from.length) out.push(`Rows marked * were merged from another run (${from.join('; ')}), not measured in this one.`, '');
    out.push(
      mdTable(
        ['model · device', 'tokens', 'state', 're-prefill', 'restore (hot)', 'restore (stored)', 'speedup (hot)'],
        r.mambaRestore.map((m) => [
          target(m) + (m.from ? ' *' : ''),
          fmtInt(m.tokens),
          fmtBytes(m.stateBytes),
          fmtStat(m.reprefillMs),
          fmtStat(m.restoreMs),
          fmtStat(m.restoreStoredMs),
          fmtRatio(m.reprefillMs.median, m.restoreMs.median),
        ]),
      ),
      '',
    );
  }

  if (r.loads.length) {
    out.push('## Model load', '');
    out.push(
      mdTable(
        ['model · device', 'load (page wall)', 'worker', 'threads', 'device reason'],
        r.loads.map((l) => [target(l), fmtMs(l.wallMs), fmtMs(l.loadMs), String(l.threads), l.deviceReason]),
      ),
      '',
    );
  }

  if (r.codecs.length) {
    out.push('## Codecs', '');
    const from = [...new Set(r.codecs.map((c) => c.from).filter((x): x is string => typeof x === 'string'))];
    if (from.length) out.push(`Merged from ${from.join(', ')}: a separate run, not timed here.`, '');
    out.push(
      mdTable(
        ['model', 'codec', 'bytes', 'max logit error', 'greedy match', 'chosen'],
        r.codecs.map((c) => [
          c.model,
          c.codec,
          fmtBytes(c.bytes),
          Number.isFinite(c.maxLogitError) ? c.maxLogitError.toExponential(2) : '—',
          c.greedyMatch ? 'yes' : 'no',
          c.chosen ? 'yes' : '',
        ]),
      ),
      '',
    );
  }

  if (r.skipped.length) {
    out.push('## Not measured in this run', '');
    for (const s of r.skipped) out.push(`- ${s.what}: ${s.reason}`);
    out.push('');
  }
  out.push(
    `_Generated by \`npm run bench${r.mode === 'quick' ? ' -- --quick' : ''}\` in ${Math.round(r.durationS)} s; the numbers are in the JSON file of the same name._`,
    '',
  );
  return out.join('\n');
}

/**
 * The README's section: the seeds' claims beside what this run measured,
 * one row per claim, taken from the biggest model measured on WASM.
 */
export function readmeSection(r: BenchResults, mdPath = 'bench/results/latest.md'): string {
  const pick = <T extends RunTarget>(rows: T[], ok: (x: T) => boolean = () => true): T | undefined => {
    const c = rows.filter((x) => x.device === 'wasm' && ok(x));
    return c.find((x) => !x.model.startsWith('tiny')) ?? c[0];
  };
  const rows: string[][] = [];
  const a = pick(r.agentLoop);
  if (a) {
    rows.push([
      `Agent loop, input tokens (${a.steps} steps on a ${a.baseTokens}-token base)`,
      '93% fewer',
      `${fmtPct(a.tokensSavedPct)} fewer (${fmtInt(a.naiveTokens)} → ${fmtInt(a.cachedTokens)})`,
      a.model,
    ]);
    rows.push([
      'Agent loop, wall time',
      '6.4× faster',
      `${fmtRatio(a.naiveMs, a.cachedMs)} faster (${fmtMs(a.naiveMs)} → ${fmtMs(a.cachedMs)}), ${fmtRatio(a.naiveMs, a.cachedStepsMs)} with the base already stored; outputs identical: ${a.identicalOutputs ? 'yes' : 'NO'}`,
      a.model,
    ]);
  }
  for (const n of [512, 1024]) {
    const x = pick(r.restore, (y) => y.tokens === n);
    if (!x) continue;
    rows.push([
      `Base-cache hit, ${n} tokens`,
      n === 512 ? '0.951 s → 0.003 s' : '',
      `${fmtMs(x.recomputeMs.median)} → ${fmtMs(x.hotMs.median)} hot (${fmtRatio(x.recomputeMs.median, x.hotMs.median)}), ${fmtMs(x.storedMs.median)} from IndexedDB (${fmtRatio(x.recomputeMs.median, x.storedMs.median)}; floor ${fmtMs(x.floorMs.median)})`,
      x.model,
    ]);
  }
  const c = pick(r.continue);
  if (c)
    rows.push([
      `Continue a stored ${c.baseTokens}-token state by ${c.newTokens} tokens`,
      '',
      `${fmtMs(c.continueHotMs.median)} hot, ${fmtMs(c.continueStoredMs.median)} from IndexedDB, vs ${fmtMs(c.prefillBaseMs.median)} to prefill the base (${fmtRatio(c.prefillBaseMs.median, c.continueHotMs.median)} / ${fmtRatio(c.prefillBaseMs.median, c.continueStoredMs.median)})`,
      c.model,
    ]);
  const s = pick(r.storage);
  if (s) {
    rows.push([
      `Bytes stored, base + ${s.states - 1} chained steps`,
      '',
      `${fmtBytes(s.chainBytes)} for ${fmtBytes(s.uniqueKvBytes)} of unique KV (ratio ${s.ratio.toFixed(3)}; ${fmtBytes(s.chainLogicalBytes)} if stored whole)`,
      s.model,
    ]);
    rows.push([
      `${s.agents} agents sharing one base`,
      '',
      `${fmtBytes(s.agentsBytes)} vs ${fmtBytes(s.naiveAgentsBytes)} as copies (${fmtRatio(s.naiveAgentsBytes, s.agentsBytes)} smaller)`,
      s.model,
    ]);
  }
  for (const m of r.mambaRestore.filter((x) => x.device === 'wasm')) {
    rows.push([
      `Mamba restore vs re-prefill, ${fmtInt(m.tokens)} tokens`,
      '',
      `${fmtMs(m.reprefillMs.median)} → ${fmtMs(m.restoreMs.median)} (${fmtRatio(m.reprefillMs.median, m.restoreMs.median)})${m.from ? ' (separate run)' : ''}`,
      m.model,
    ]);
  }
  for (const l of r.loads.filter((x) => x.device === 'wasm')) rows.push([`Model load, ${l.model}`, '', fmtMs(l.wallMs), l.model]);
  const lines = [
    mdTable(['measurement', 'seed claims', 'statecart, this run (WASM)', 'model'], rows),
    '',
    `_${machineLine(r)} Full tables: [${mdPath}](${mdPath})._`,
  ];
  if (r.note) lines.push('', `_${r.note}_`);
  return lines.join('\n');
}

/** Replaces what lies between the markers; null when either marker is missing or they are out of order. */
export function replaceBetweenMarkers(doc: string, content: string): string | null {
  const a = doc.indexOf(README_START);
  const b = doc.indexOf(README_END);
  if (a < 0 || b < 0 || b < a) return null;
  return `${doc.slice(0, a + README_START.length)}\n${content.trim()}\n${doc.slice(b)}`;
}

/** A plain-text summary for the terminal. */
export function consoleSummary(r: BenchResults): string {
  const lines: string[] = [];
  for (const a of r.agentLoop)
    lines.push(
      `agent loop  ${target(a).padEnd(40)} tokens ${a.naiveTokens} → ${a.cachedTokens} (${fmtPct(a.tokensSavedPct)} fewer)  time ${fmtMs(a.naiveMs)} → ${fmtMs(a.cachedMs)} (${fmtRatio(a.naiveMs, a.cachedMs)})  identical: ${a.identicalOutputs}`,
    );
  for (const a of r.agentLoop) if (a.cachedBreakdown) lines.push(`            cached step (median): ${breakdownText(a.cachedBreakdown)}`);
  for (const x of r.restore)
    lines.push(
      `restore     ${target(x).padEnd(40)} ${String(x.tokens).padStart(5)} tok  recompute ${fmtStat(x.recomputeMs)}  hot ${fmtStat(x.hotMs)}  stored ${fmtStat(x.storedMs)}  floor ${fmtStat(x.floorMs)}`,
    );
  for (const c of r.continue)
    lines.push(
      `continue    ${target(c).padEnd(40)} prefill ${c.baseTokens}: ${fmtStat(c.prefillBaseMs)}  +${c.newTokens} hot: ${fmtStat(c.continueHotMs)}  stored: ${fmtStat(c.continueStoredMs)}  alone: ${fmtStat(c.freshMs)}`,
    );
  for (const s of r.storage)
    lines.push(
      `storage     ${target(s).padEnd(40)} chain ${fmtBytes(s.chainBytes)} / unique ${fmtBytes(s.uniqueKvBytes)} = ${s.ratio.toFixed(3)}  agents ${s.agents}: ${fmtBytes(s.agentsBytes)} vs ${fmtBytes(s.naiveAgentsBytes)}`,
    );
  for (const m of r.mambaRestore)
    lines.push(
      `mamba       ${target(m).padEnd(40)} ${String(m.tokens).padStart(5)} tok  re-prefill ${fmtStat(m.reprefillMs)}  restore ${fmtStat(m.restoreMs)}  stored ${fmtStat(m.restoreStoredMs)}`,
    );
  for (const l of r.loads) lines.push(`load        ${target(l).padEnd(40)} ${fmtMs(l.wallMs)} (threads ${l.threads})`);
  for (const s of r.skipped) lines.push(`skipped     ${s.what}: ${s.reason}`);
  return lines.join('\n');
}
