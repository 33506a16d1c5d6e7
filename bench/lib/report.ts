/**
 * Pure functions from a BenchResults object to text: the Markdown of
 * latest.md, the README's section, and the console table. Kept free of I/O so
 * that tests/unit/bench-report.test.ts can check them on a fixture, and check
 * that the README's section is exactly what latest.json gives.
 */
import { TARGETS } from './targets.ts';
import type { AgentLoopRow, BenchResults, DecodeRow, PrefillRow, RunTarget, Stat, StepBreakdown, TtftRow } from './types.ts';

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
  if (Math.abs(ms) < 10) return `${ms.toFixed(1)} ms`;
  if (Math.abs(ms) < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(Math.abs(ms) < 10_000 ? 2 : 1)} s`;
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

/** A ratio as "12.3×" ("—" when not finite). */
function fmtX(r: number): string {
  if (!Number.isFinite(r) || r < 0) return '—';
  return `${r >= 100 ? Math.round(r).toLocaleString('en-US') : r >= 10 ? r.toFixed(1) : r.toFixed(2)}×`;
}

/** a / b as "12.3×" ("—" when either side is missing or b is 0). */
export function fmtRatio(a: number, b: number): string {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b <= 0) return '—';
  return fmtX(a / b);
}

function fmtPct(p: number): string {
  return Number.isFinite(p) ? `${p.toFixed(1)}%` : '—';
}

const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—');
const fmtRate = (n: number) => (Number.isFinite(n) ? `${n >= 100 ? fmtInt(n) : n.toFixed(1)} tok/s` : '—');

/** "gpt2-shape · WASM"; "tiny-gpt2 · WebGPU (software adapter)". */
function target(t: RunTarget): string {
  const dev = t.device === 'wasm' ? 'WASM' : t.softwareAdapter ? 'WebGPU (software adapter)' : 'WebGPU';
  return `${t.model} · ${dev}`;
}

/**
 * A GitHub-flavoured Markdown table; cells have their `|` escaped. `pad`
 * aligns the columns as a Markdown formatter would, so that formatting the
 * README leaves the generated section as it is.
 */
export function mdTable(head: string[], rows: string[][], o: { pad?: boolean } = {}): string {
  const esc = (c: string) => c.replace(/\|/g, '\\|');
  const all = [head, ...rows].map((r) => r.map(esc));
  const width = (s: string) => [...s].length;
  const w = head.map((_, i) => (o.pad ? Math.max(3, ...all.map((r) => width(r[i] ?? ''))) : 3));
  const cell = (c: string, i: number) => (o.pad ? c + ' '.repeat(w[i]! - width(c)) : c);
  const line = (cells: string[]) => `| ${cells.map(cell).join(' | ')} |`;
  const rule = `| ${w.map((n) => '-'.repeat(n)).join(' | ')} |`;
  return [line(all[0]!), rule, ...all.slice(1).map(line)].join('\n');
}

const isMamba = (model: string) => model.includes('mamba');

/** The row of the biggest model measured on WASM (not a tiny one when there is one), of one architecture. */
function pick<T extends RunTarget>(rows: T[], mamba: boolean, ok: (x: T) => boolean = () => true): T | undefined {
  const c = rows.filter((x) => x.device === 'wasm' && isMamba(x.model) === mamba && ok(x));
  return c.find((x) => !x.model.startsWith('tiny')) ?? c[0];
}

function threadsText(r: BenchResults): string {
  const b = r.browser;
  const plain = b.plainThreads === null ? '' : b.plainThreads === b.threads ? ' (plain worker: the same)' : ` (plain worker: ${b.plainThreads}, NOT the same)`;
  return `WASM threads ${b.threads}${plain}`;
}

/** The host and the browser: "host: 2 CPU cores (…), 24 GiB; Chromium 156…, navigator.hardwareConcurrency 2, …". */
function hostLine(r: BenchResults): string {
  const b = r.browser;
  const gpu = r.devices.includes('webgpu')
    ? `; WebGPU adapter: ${b.webgpuAdapter ?? 'none'}${b.webgpuSoftware ? ' (software)' : ''}`
    : b.webgpuAdapter
      ? `; WebGPU adapter ${b.webgpuAdapter}${b.webgpuSoftware ? ' (software, not benchmarked on big models)' : ''}`
      : '; no WebGPU adapter';
  return (
    `host: ${r.machine.cores} CPU cores (${r.machine.cpuModel}), ${r.machine.memoryGiB} GiB; ${b.name} ${b.version}, ` +
    `navigator.hardwareConcurrency ${b.hardwareConcurrency ?? 'not recorded'}, cross-origin isolated: ${b.crossOriginIsolated ? 'yes' : 'no'}, ${threadsText(r)}${gpu}`
  );
}

const when = (r: BenchResults) => `${r.date.slice(0, 16).replace('T', ' ')} UTC`;

function machineLine(r: BenchResults): string {
  return `${r.mode} run, ${when(r)}, commit \`${r.commit.slice(0, 10)}${r.dirty ? '+dirty' : ''}\`; ${hostLine(r)}.`;
}

function breakdownText(b: StepBreakdown): string {
  return (
    `restore ${fmtMs(b.restoreMs)}, prefill ${fmtMs(b.prefillMs)}, generate ${fmtMs(b.generateMs)}, store ${fmtMs(b.storeMs)}, ` +
    `engine other ${fmtMs(b.engineOtherMs)}, messaging ${fmtMs(b.messagingMs)}`
  );
}

const met = (ok: boolean | null) => (ok === null ? '—' : ok ? 'yes' : 'no');

/** One target's line: what, the target, what this run measured (both sides named), whether it is met. */
export interface HeadlineRow {
  measurement: string;
  target: string;
  measured: string;
  met: boolean | null;
}

function agentLoopHeadline(r: BenchResults, t: { model: string; atLeast: number }): HeadlineRow {
  const a = r.agentLoop.find((x) => x.model === t.model && x.device === 'wasm');
  const what = (x?: AgentLoopRow) =>
    `${x?.steps ?? 20}-step agent loop vs plain, ${t.model} · WASM, ${r.browser.threads} thread${r.browser.threads === 1 ? '' : 's'}`;
  if (!a) return { measurement: what(), target: `≥ ${t.atLeast}×`, measured: 'not measured in this run', met: null };
  return {
    measurement: what(a),
    target: `≥ ${t.atLeast}×`,
    measured:
      `${fmtMs(a.plainMs)} plain → ${fmtMs(a.cachedMs)} cached (${fmtX(a.speedupVsPlain)}); ` +
      `base stored earlier: ${fmtMs(a.cachedStepsMs)} (${fmtX(a.speedupVsPlainBaseStored)}); outputs identical: ${a.identicalOutputs ? 'yes' : 'NO'}`,
    met: a.speedupVsPlain >= t.atLeast,
  };
}

function ttftHotHeadline(r: BenchResults): HeadlineRow {
  const t = TARGETS.ttftHot;
  const x = pick(r.ttft, false, (y) => y.baseTokens === t.baseTokens && y.newTokens === t.newTokens);
  const measurement = `First token after ${t.newTokens} new tokens on a hot ${fmtInt(t.baseTokens)}-token base vs the same ${t.newTokens} alone${x ? `, ${target(x)}` : ''}`;
  if (!x) return { measurement, target: `≤ ${t.atMost}×`, measured: 'not measured in this run', met: null };
  const ratio = x.hotMs / x.aloneMs;
  return {
    measurement,
    target: `≤ ${t.atMost}×`,
    measured: `${fmtMs(x.hotMs)} hot vs ${fmtMs(x.aloneMs)} alone (${fmtX(ratio)}); plain (base recomputed): ${fmtMs(x.plainMs)}`,
    met: ratio <= t.atMost,
  };
}

function ttftStoredHeadline(r: BenchResults): HeadlineRow {
  const t = TARGETS.ttftStored;
  const x = pick(r.ttft, false, (y) => y.baseTokens === t.baseTokens && y.newTokens === t.newTokens);
  const measurement =
    `First token after ${t.newTokens} new tokens on a ${fmtInt(t.baseTokens)}-token base read from IndexedDB vs plain prefill of all ${fmtInt(t.baseTokens + t.newTokens)}` +
    ` (${fmtInt(t.baseTokens + t.newTokens + 1)} positions with the token)${x ? `, ${target(x)}` : ''}`;
  if (!x) return { measurement, target: `≥ ${t.atLeast}×`, measured: 'not measured in this run', met: null };
  const ratio = x.plainMs / x.storedMs;
  return {
    measurement,
    target: `≥ ${t.atLeast}×`,
    measured: `${fmtMs(x.plainMs)} plain → ${fmtMs(x.storedMs)} from IndexedDB (${fmtX(ratio)})`,
    met: ratio >= t.atLeast,
  };
}

function decodeHeadline(r: BenchResults): HeadlineRow {
  const t = TARGETS.decode;
  const long = pick(r.decode, false, (y) => y.context === t.long);
  const short = long && r.decode.find((y) => y.model === long.model && y.device === long.device && y.context === t.short);
  const measurement = `One generated token at ${fmtInt(t.long)} vs ${t.short} tokens of context${long ? `, ${target(long)}` : ''}`;
  if (!long || !short) return { measurement, target: `≤ ${t.atMost}×`, measured: 'not measured in this run', met: null };
  const ratio = long.msPerToken / short.msPerToken;
  return {
    measurement,
    target: `≤ ${t.atMost}×`,
    measured: `${fmtMs(short.msPerToken)}/token at ${t.short} → ${fmtMs(long.msPerToken)}/token at ${fmtInt(t.long)} (${fmtX(ratio)})`,
    met: ratio <= t.atMost,
  };
}

function prefillPair(r: BenchResults): { mamba: PrefillRow; gpt2: PrefillRow } | null {
  const t = TARGETS.prefill;
  for (const p of t.pairs) {
    const m = r.prefill.find((x) => x.model === p.mamba && x.device === 'wasm' && x.tokens === t.tokens);
    const g = r.prefill.find((x) => x.model === p.gpt2 && x.device === 'wasm' && x.tokens === t.tokens);
    if (m && g) return { mamba: m, gpt2: g };
  }
  return null;
}

function prefillHeadline(r: BenchResults): HeadlineRow {
  const t = TARGETS.prefill;
  const p = prefillPair(r);
  const measurement = p
    ? `Prefill of ${t.tokens} tokens, tokens/s, ${p.mamba.model} vs ${p.gpt2.model} (plain, WASM)`
    : `Prefill of ${t.tokens} tokens, tokens/s, Mamba vs GPT-2 of the same scale (plain, WASM)`;
  if (!p) return { measurement, target: `≥ ${t.atLeast}×`, measured: 'not measured in this run', met: null };
  const ratio = p.mamba.tokPerS / p.gpt2.tokPerS;
  return {
    measurement,
    target: `≥ ${t.atLeast}×`,
    measured: `${fmtRate(p.mamba.tokPerS)} vs ${fmtRate(p.gpt2.tokPerS)} (${fmtX(ratio)})`,
    met: ratio >= t.atLeast,
  };
}

/** The targets of issue 14, in order, each against the plain baseline of this run. */
export function headlineRows(r: BenchResults): HeadlineRow[] {
  return [...TARGETS.agentLoop.map((t) => agentLoopHeadline(r, t)), ttftHotHeadline(r), ttftStoredHeadline(r), decodeHeadline(r), prefillHeadline(r)];
}

function headlineTable(r: BenchResults, pad: boolean): string {
  return mdTable(
    ['measurement', 'target', 'this run', 'met'],
    headlineRows(r).map((h) => [h.measurement, h.target, h.measured, met(h.met)]),
    { pad },
  );
}

function commandLine(r: BenchResults): string {
  return `\`${r.command}\` at commit \`${r.commit.slice(0, 10)}\`${r.dirty ? ' with uncommitted changes' : ''}`;
}

function upgradeNote(r: BenchResults): string | null {
  if (!r.upgradedFrom) return null;
  return (
    `This file was written by the format-${r.upgradedFrom} bench, before the plain baseline existed: its rows that format cannot state honestly ` +
    '(the agent loop against a cleared-store statecart, continue vs prefill) are left out, and the rows it never had are not measured. Run `npm run bench` to measure them.'
  );
}

/** The full report: every table, as written to bench/results/latest.md (or latest-quick.md). */
export function toMarkdown(r: BenchResults): string {
  const out: string[] = [];
  out.push('# statecart benchmarks', '');
  out.push(machineLine(r), '');
  if (r.note) out.push(`> ${r.note}`, '');
  const up = upgradeNote(r);
  if (up) out.push(`> ${up}`, '');
  out.push(
    'Times are page wall times, the median of several runs with (min–max) where there are several. "Plain" is what a page without statecart pays (definitions at the end). Ratios are taken within this one run: hosts differ by 2× or more, so compare ratios, not times, across runs.',
    '',
  );
  out.push('## Targets', '');
  out.push(headlineTable(r, false), '');

  if (r.agentLoop.length) {
    out.push('## Agent loop vs plain', '');
    const a0 = r.agentLoop[0]!;
    out.push(
      `A ${a0.baseTokens}-token base, then ${a0.steps} steps, each adding a delta of ${Math.min(...a0.deltaTokens)}–${Math.max(...a0.deltaTokens)} tokens and generating ${a0.newTokensPerStep} tokens greedily; plain and cached step by step in turn.`,
      '',
    );
    out.push(
      mdTable(
        [
          'model · device',
          'input tokens plain',
          'cached (with base)',
          'saved',
          'plain',
          'cached',
          'plain ÷ cached',
          'cached, base stored earlier',
          'plain ÷ that',
          'step plain',
          'step cached',
          'identical outputs',
        ],
        r.agentLoop.map((a) => [
          target(a),
          fmtInt(a.plainTokens),
          `${fmtInt(a.cachedTokens)} (${fmtInt(a.cachedTokensNoBase)} without)`,
          fmtPct(a.tokensSavedPct),
          fmtMs(a.plainMs),
          fmtMs(a.cachedMs),
          fmtX(a.speedupVsPlain),
          fmtMs(a.cachedStepsMs),
          fmtX(a.speedupVsPlainBaseStored),
          fmtStat(a.plainStepMs),
          fmtStat(a.cachedStepMs),
          a.identicalOutputs ? 'yes' : 'NO',
        ]),
      ),
      '',
    );
    out.push("Where a cached step's wall time goes (medians over the steps):", '');
    for (const a of r.agentLoop) out.push(`- ${target(a)}: ${breakdownText(a.cachedBreakdown)}`);
    out.push('');
  }

  if (r.ttft.length) {
    out.push('## Time to first token', '');
    out.push(
      'New tokens after a base, to the first generated token. Alone: the new tokens with no base (plain). Plain: base + new tokens recomputed. Hot / stored: statecart infer() with the base in the in-memory tier / read from IndexedDB.',
      '',
    );
    out.push(
      mdTable(
        ['model · device', 'base + new', 'alone', 'hot', 'stored', 'plain', 'hot ÷ alone', 'plain ÷ hot', 'plain ÷ stored', 'same first token'],
        r.ttft.map((x: TtftRow) => [
          target(x),
          `${fmtInt(x.baseTokens)} + ${x.newTokens}`,
          fmtStat(x.spread.alone),
          fmtStat(x.spread.hot),
          fmtStat(x.spread.stored),
          fmtStat(x.spread.plain),
          fmtRatio(x.hotMs, x.aloneMs),
          fmtRatio(x.plainMs, x.hotMs),
          fmtRatio(x.plainMs, x.storedMs),
          x.identicalFirstToken ? 'yes' : 'NO',
        ]),
      ),
      '',
    );
    out.push('Where the wall time of a first token goes (medians):', '');
    for (const x of r.ttft) {
      out.push(`- ${target(x)}, ${fmtInt(x.baseTokens)} + ${x.newTokens}, hot: ${breakdownText(x.hotBreakdown)}`);
      out.push(`- ${target(x)}, ${fmtInt(x.baseTokens)} + ${x.newTokens}, stored: ${breakdownText(x.storedBreakdown)}`);
    }
    out.push('');
  }

  if (r.decode.length) {
    out.push('## Decode: one generated token by context length', '');
    out.push(
      'ms/token: the wall-time difference between generating 1 + k and 1 token on the same hot base, ÷ k (definitions at the end); engine timer: the generation timer ÷ tokens; plain: the same difference in the plain worker.',
      '',
    );
    const shortOf = (d: DecodeRow) => r.decode.find((y) => y.model === d.model && y.device === d.device && y.context === TARGETS.decode.short);
    out.push(
      mdTable(
        ['model · device', 'context', 'k', 'ms/token (wall)', 'engine timer', 'plain', `÷ at ${TARGETS.decode.short}`],
        r.decode.map((d) => [
          target(d),
          fmtInt(d.context),
          String(d.extraTokens),
          fmtStat(d.spread),
          fmtMs(d.workerMsPerToken),
          fmtMs(d.plainMsPerToken),
          fmtRatio(d.msPerToken, shortOf(d)?.msPerToken ?? NaN),
        ]),
      ),
      '',
    );
  }

  if (r.prefill.length) {
    out.push('## Prefill throughput (plain)', '');
    out.push(
      mdTable(
        ['model · device', 'tokens', 'time', 'tokens/s'],
        r.prefill.map((p) => [target(p), fmtInt(p.tokens), fmtStat(p.ms), fmtRate(p.tokPerS)]),
      ),
      '',
    );
    const p = prefillPair(r);
    if (p) out.push(`${p.mamba.model} ÷ ${p.gpt2.model}: ${fmtRatio(p.mamba.tokPerS, p.gpt2.tokPerS)} (target ≥ ${TARGETS.prefill.atLeast}×).`, '');
  }

  if (r.restore.length) {
    out.push('## Restore: in-worker lookup and IndexedDB read vs prefill', '');
    out.push(
      'Recompute: createState of the base in a cleared store (prefill + store write), page wall time. Hot lookup / stored restore: the engine\'s own restore timer (a hit in the in-memory tier reads no data: "recompute ÷ hot lookup" sets a prefill against a lookup inside the worker, not a speedup a user sees; State Pack\'s seed figure of 0.951 s → 0.003 s is of that kind). First logits: page wall time of an infer() that restores the base and computes its next-token logits (GPT-2 re-runs the last token; Mamba takes one new token). Floor: a raw IndexedDB read of the same blobs plus SHA-256, in the page.',
      '',
    );
    out.push(
      mdTable(
        [
          'model · device',
          'tokens',
          'state',
          'recompute',
          'hot lookup (engine timer)',
          'stored restore (engine timer)',
          'floor',
          'first logits hot',
          'first logits stored',
          'recompute ÷ first logits stored',
          'recompute ÷ hot lookup',
        ],
        r.restore.map((x) => [
          target(x),
          String(x.tokens),
          fmtBytes(x.stateBytes),
          fmtStat(x.recomputeMs),
          fmtStat(x.hotMs),
          fmtStat(x.storedMs),
          fmtStat(x.floorMs),
          fmtStat(x.hotFirstLogitsMs),
          fmtStat(x.storedFirstLogitsMs),
          fmtRatio(x.recomputeMs.median, x.storedFirstLogitsMs.median),
          fmtRatio(x.recomputeMs.median, x.hotMs.median),
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
    out.push('## Mamba: in-worker lookup vs re-prefill', '');
    out.push(
      'Re-prefill: createState in a cleared store, page wall time. Restore: the engine\'s restore timer (hot: a lookup inside the worker, so "re-prefill ÷ hot lookup" is not a speedup a user sees; the time-to-first-token rows are).',
      '',
    );
    const from = [...new Set(r.mambaRestore.map((m) => m.from).filter((x): x is string => typeof x === 'string'))];
    if (from.length) out.push(`Rows marked * were merged from another run (${from.join('; ')}), not measured in this one.`, '');
    out.push(
      mdTable(
        ['model · device', 'tokens', 'state', 're-prefill', 'hot lookup (engine timer)', 'stored restore (engine timer)', 're-prefill ÷ hot lookup'],
        r.mambaRestore.map((m) => [
          target(m) + (m.from ? ' *' : ''),
          fmtInt(m.tokens),
          fmtBytes(m.stateBytes),
          fmtStat(m.reprefillMs),
          fmtStat(m.restoreMs),
          fmtStat(m.restoreStoredMs),
          fmtX(m.reprefillOverHotLookup),
        ]),
      ),
      '',
    );
  }

  if (r.loads.length) {
    out.push('## Model load', '');
    out.push(
      mdTable(
        ['model · device', 'load (page wall)', 'worker', 'threads', 'plain worker load', 'plain threads', 'device reason'],
        r.loads.map((l) => [
          target(l),
          fmtMs(l.wallMs),
          fmtMs(l.loadMs),
          String(l.threads),
          l.plainWallMs === null ? '—' : fmtMs(l.plainWallMs),
          l.plainThreads === null ? '—' : String(l.plainThreads),
          l.deviceReason,
        ]),
      ),
      '',
    );
  }

  if (r.codecs.length) {
    out.push('## Codecs', '');
    const from = [...new Set(r.codecs.map((c) => c.from).filter((x): x is string => typeof x === 'string'))];
    if (from.length) out.push(`Merged from ${from.join(', ')}: a separate run, not timed here.`, '');
    out.push(codecTable(r), '');
  }

  if (r.quality.length) {
    out.push('## Model quality (held-out perplexity)', '');
    out.push(
      "Perplexity on held-out Brown-corpus text (documents micro-gpt2 never trained on), computed in this run on the ONNX graph each model is served as. Lower is better; a uniform guess over GPT-2's 50,257 tokens scores 50,257.",
      '',
    );
    out.push(
      mdTable(
        ['model', 'held-out tokens', 'perplexity'],
        r.quality.map((q) => [q.model, fmtInt(q.heldOutTokens), q.perplexity >= 1000 ? fmtInt(Math.round(q.perplexity)) : q.perplexity.toFixed(1)]),
      ),
      '',
    );
  }

  const defs = Object.entries(r.definitions);
  if (defs.length) {
    out.push('## Definitions', '');
    for (const [k, v] of defs) out.push(`- ${k}: ${v}`);
    out.push('');
  }

  if (r.skipped.length) {
    out.push('## Not measured in this run', '');
    for (const s of r.skipped) out.push(`- ${s.what}: ${s.reason}`);
    out.push('');
  }
  out.push(`_Generated by ${commandLine(r)} in ${Math.round(r.durationS)} s; the numbers are in the JSON file of the same name._`, '');
  return out.join('\n');
}

/** The codec rows of a run: bytes against fp16 and the quality each codec keeps on held-out text. */
function codecTable(r: BenchResults, pad = false): string {
  const n = (x: unknown, f: (v: number) => string) => (typeof x === 'number' && Number.isFinite(x) ? f(x) : '—');
  return mdTable(
    ['model', 'codec', 'bytes', 'vs fp16', 'max logit error', 'mean KL (nats)', 'greedy agreement', 'chosen'],
    r.codecs.map((c) => [
      c.stateTokens ? `${c.model} (${c.stateTokens} tokens)` : c.model,
      c.codec,
      fmtBytes(c.bytes),
      n(c.bytesVsFp16, (v) => `${v.toFixed(3)}×`),
      n(c.maxLogitError, (v) => v.toExponential(2)),
      n(c.meanKL, (v) => v.toExponential(2)),
      typeof c.greedyAgree === 'number' && typeof c.greedyTotal === 'number' ? `${c.greedyAgree}/${c.greedyTotal}` : c.greedyMatch ? 'yes' : 'no',
      c.chosen ? 'yes' : '',
    ]),
    { pad },
  );
}

/**
 * The README's section: the targets against the plain baseline first, then
 * a few figures of the same run, then where they came from. Only from the
 * one JSON object given; rows merged from other scripts are left out.
 */
export function readmeSection(r: BenchResults, mdPath = 'bench/results/latest.md'): string {
  const other: string[][] = [];
  const a = pick(r.agentLoop, false);
  if (a)
    other.push([
      `Agent loop input tokens, ${a.steps} steps on a ${fmtInt(a.baseTokens)}-token base, ${target(a)}`,
      `${fmtInt(a.plainTokens)} plain → ${fmtInt(a.cachedTokens)} cached (${fmtPct(a.tokensSavedPct)} fewer)`,
    ]);
  const hot = pick(r.ttft, false, (y) => y.baseTokens === TARGETS.ttftHot.baseTokens);
  if (hot)
    other.push([
      `First token after ${hot.newTokens} new tokens on a ${fmtInt(hot.baseTokens)}-token base, ${target(hot)}`,
      `${fmtMs(hot.plainMs)} plain → ${fmtMs(hot.hotMs)} hot (${fmtRatio(hot.plainMs, hot.hotMs)}), ${fmtMs(hot.storedMs)} from IndexedDB (${fmtRatio(hot.plainMs, hot.storedMs)})`,
    ]);
  const s = pick(r.storage, false);
  if (s) {
    other.push([
      `Bytes stored, base + ${s.states - 1} chained steps, ${target(s)}`,
      `${fmtBytes(s.chainBytes)} for ${fmtBytes(s.uniqueKvBytes)} of unique KV (ratio ${s.ratio.toFixed(3)}; ${fmtBytes(s.chainLogicalBytes)} if stored whole)`,
    ]);
    other.push([
      `${s.agents} agents sharing one base, ${target(s)}`,
      `${fmtBytes(s.agentsBytes)} vs ${fmtBytes(s.naiveAgentsBytes)} as copies (${fmtRatio(s.naiveAgentsBytes, s.agentsBytes)} smaller)`,
    ]);
  }
  for (const l of r.loads.filter((x) => x.device === 'wasm')) other.push([`Model load, ${target(l)}`, fmtMs(l.wallMs)]);
  for (const q of r.quality) other.push([`Held-out perplexity, ${q.model} (${fmtInt(q.heldOutTokens)} Brown tokens)`, q.perplexity.toFixed(1)]);
  const lines = [headlineTable(r, true), ''];
  if (other.length) lines.push(mdTable(['other figures of the same run', 'this run'], other, { pad: true }), '');
  if (r.codecs.length) lines.push('Codecs on a state of held-out text (greedy agreement with fp32 over the probe positions):', '', codecTable(r, true), '');
  lines.push(
    `_Measured by ${commandLine(r)}, ${when(r)}; ${hostLine(r)}. Page wall times; "plain" is the same model, runtime and threads without statecart. Ratios hold within this run only. Full tables and definitions: [${mdPath}](${mdPath})._`,
  );
  const up = upgradeNote(r);
  if (up) lines.push('', `_${up}_`);
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

/** What lies between the markers, trimmed; null without them. */
export function betweenMarkers(doc: string): string | null {
  const a = doc.indexOf(README_START);
  const b = doc.indexOf(README_END);
  if (a < 0 || b < 0 || b < a) return null;
  return doc.slice(a + README_START.length, b).trim();
}

/** A plain-text summary for the terminal. */
export function consoleSummary(r: BenchResults): string {
  const lines: string[] = [];
  for (const h of headlineRows(r)) lines.push(`target      ${h.measurement}: ${h.measured} [target ${h.target}, met: ${met(h.met)}]`);
  for (const a of r.agentLoop) {
    lines.push(
      `agent loop  ${target(a).padEnd(40)} tokens ${a.plainTokens} → ${a.cachedTokens}  time ${fmtMs(a.plainMs)} plain → ${fmtMs(a.cachedMs)} cached (${fmtX(a.speedupVsPlain)})  identical: ${a.identicalOutputs}`,
    );
    lines.push(`            cached step (median): ${breakdownText(a.cachedBreakdown)}`);
  }
  for (const x of r.ttft)
    lines.push(
      `ttft        ${target(x).padEnd(40)} ${x.baseTokens}+${x.newTokens}  alone ${fmtMs(x.aloneMs)}  hot ${fmtMs(x.hotMs)}  stored ${fmtMs(x.storedMs)}  plain ${fmtMs(x.plainMs)}  same first token: ${x.identicalFirstToken}`,
    );
  for (const d of r.decode)
    lines.push(
      `decode      ${target(d).padEnd(40)} ${String(d.context).padStart(5)} ctx  ${fmtMs(d.msPerToken)}/token (engine timer ${fmtMs(d.workerMsPerToken)}, plain ${fmtMs(d.plainMsPerToken)})`,
    );
  for (const p of r.prefill) lines.push(`prefill     ${target(p).padEnd(40)} ${p.tokens} tok  ${fmtStat(p.ms)}  ${fmtRate(p.tokPerS)}`);
  for (const x of r.restore)
    lines.push(
      `restore     ${target(x).padEnd(40)} ${String(x.tokens).padStart(5)} tok  recompute ${fmtStat(x.recomputeMs)}  hot lookup ${fmtStat(x.hotMs)}  stored ${fmtStat(x.storedMs)}  first logits stored ${fmtStat(x.storedFirstLogitsMs)}`,
    );
  for (const s of r.storage)
    lines.push(
      `storage     ${target(s).padEnd(40)} chain ${fmtBytes(s.chainBytes)} / unique ${fmtBytes(s.uniqueKvBytes)} = ${s.ratio.toFixed(3)}  agents ${s.agents}: ${fmtBytes(s.agentsBytes)} vs ${fmtBytes(s.naiveAgentsBytes)}`,
    );
  for (const m of r.mambaRestore)
    lines.push(
      `mamba       ${target(m).padEnd(40)} ${String(m.tokens).padStart(5)} tok  re-prefill ${fmtStat(m.reprefillMs)}  hot lookup ${fmtStat(m.restoreMs)}  stored ${fmtStat(m.restoreStoredMs)}`,
    );
  for (const l of r.loads) lines.push(`load        ${target(l).padEnd(40)} ${fmtMs(l.wallMs)} (threads ${l.threads}, plain ${l.plainThreads ?? '—'})`);
  for (const q of r.quality) lines.push(`quality     ${q.model.padEnd(40)} held-out perplexity ${q.perplexity.toFixed(1)} over ${q.heldOutTokens} tokens`);
  for (const s of r.skipped) lines.push(`skipped     ${s.what}: ${s.reason}`);
  return lines.join('\n');
}
