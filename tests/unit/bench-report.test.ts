import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  betweenMarkers,
  consoleSummary,
  fmtBytes,
  fmtMs,
  fmtRatio,
  fmtStat,
  headlineRows,
  mdTable,
  readmeSection,
  replaceBetweenMarkers,
  stat,
  toMarkdown,
  README_END,
  README_START,
} from '../../bench/lib/report.ts';
import { readResults } from '../../bench/lib/upgrade.ts';
import { DEFINITIONS } from '../../bench/lib/definitions.ts';
import type { AgentLoopRow, BenchResults, DecodeRow, RestoreRow, StepBreakdown, StorageResult, TtftRow } from '../../bench/lib/types.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const s = (median: number, min = median, max = median, n = 3) => ({ median, min, max, n });
const bd = (over: Partial<StepBreakdown> = {}): StepBreakdown => ({
  restoreMs: 2,
  prefillMs: 30,
  generateMs: 20,
  storeMs: 15,
  engineOtherMs: 3,
  messagingMs: 5,
  ...over,
});

function agent(model: string, over: Partial<AgentLoopRow> = {}): AgentLoopRow {
  return {
    model,
    device: 'wasm',
    steps: 20,
    baseTokens: 512,
    deltaTokens: [12, 40, 10],
    newTokensPerStep: 4,
    plainTokens: 15_481,
    cachedTokens: 1018,
    cachedTokensNoBase: 506,
    tokensSavedPct: 100 * (1 - 1018 / 15_481),
    plainMs: 60_000,
    cachedMs: 4_000,
    cachedBaseMs: 2_500,
    cachedStepsMs: 1_500,
    speedupVsPlain: 15,
    speedupVsPlainBaseStored: 40,
    plainStepMs: s(3000, 2000, 4000, 20),
    cachedStepMs: s(75, 60, 90, 20),
    identicalOutputs: true,
    cachedBreakdown: bd(),
    ...over,
  };
}

function ttft(model: string, baseTokens: number, over: Partial<TtftRow> = {}): TtftRow {
  const alone = 40;
  const hot = 50;
  const stored = 200;
  const plain = 3200;
  return {
    model,
    device: 'wasm',
    baseTokens,
    newTokens: 16,
    aloneMs: alone,
    hotMs: hot,
    storedMs: stored,
    plainMs: plain,
    spread: { alone: s(alone, 35, 60), hot: s(hot), stored: s(stored), plain: s(plain) },
    hotBreakdown: bd({ storeMs: 12 }),
    storedBreakdown: bd({ restoreMs: 150 }),
    identicalFirstToken: true,
    ...over,
  };
}

function decode(model: string, context: number, msPerToken: number): DecodeRow {
  return {
    model,
    device: 'wasm',
    context,
    msPerToken,
    spread: s(msPerToken),
    extraTokens: 16,
    workerMsPerToken: msPerToken * 0.9,
    plainMsPerToken: msPerToken * 0.8,
  };
}

function restore(model: string, tokens: number, recompute: number, hot: number, stored: number): RestoreRow {
  return {
    model,
    device: 'wasm',
    tokens,
    stateBytes: tokens * 36864,
    recomputeMs: s(recompute, recompute * 0.9, recompute * 1.2),
    recomputePrefillMs: s(recompute * 0.8),
    hotMs: s(hot, hot / 2, hot * 2),
    storedMs: s(stored),
    hotFirstLogitsMs: s(hot + 40),
    storedFirstLogitsMs: s(stored + 40),
    floorMs: s(stored / 2),
  };
}

const storage: StorageResult = {
  model: 'gpt2-shape',
  device: 'wasm',
  chainBytes: 37_748_736,
  chainLogicalBytes: 400_000_000,
  uniqueKvBytes: 37_748_736,
  ratio: 1,
  states: 21,
  agents: 100,
  agentDeltaTokens: 8,
  agentsBytes: 48_000_000,
  naiveAgentsBytes: 3_800_000_000,
  baseBytes: 18_874_368,
};

function fixture(over: Partial<BenchResults> = {}): BenchResults {
  return {
    version: 2,
    mode: 'full',
    command: 'npm run bench',
    date: '2026-11-23T18:35:00.000Z',
    commit: '7c4f3b4e0d1234567890abcdef',
    dirty: false,
    machine: { cores: 2, platform: 'linux', node: 'v20', cpuModel: 'Test CPU', memoryGiB: 24, loadAvg: [1, 1, 1] },
    browser: {
      name: 'Chromium',
      version: '156.0',
      userAgent: 'ua',
      hardwareConcurrency: 2,
      crossOriginIsolated: true,
      threads: 2,
      plainThreads: 2,
      webgpuAdapter: 'google swiftshader',
      webgpuSoftware: true,
    },
    devices: ['wasm', 'webgpu'],
    note: 'Taken under load.',
    durationS: 321,
    definitions: DEFINITIONS,
    loads: [
      {
        model: 'gpt2-shape',
        device: 'wasm',
        wallMs: 8123,
        loadMs: 8000,
        adapter: null,
        deviceReason: 'WASM was asked for',
        threads: 2,
        plainWallMs: 7000,
        plainThreads: 2,
      },
    ],
    agentLoop: [
      agent('tiny-gpt2', { identicalOutputs: false, plainMs: 5000, cachedMs: 2000, speedupVsPlain: 2.5 }),
      agent('gpt2-shape'),
      agent('tiny-gpt2', { device: 'webgpu', softwareAdapter: true }),
    ],
    ttft: [ttft('tiny-gpt2', 512), ttft('gpt2-shape', 512), ttft('gpt2-shape', 1007, { storedMs: 400, plainMs: 5600 })],
    decode: [decode('gpt2-shape', 64, 100), decode('gpt2-shape', 512, 120), decode('gpt2-shape', 1000, 140)],
    prefill: [
      { model: 'gpt2-shape', device: 'wasm', tokens: 512, tokPerS: 200, ms: s(2560) },
      { model: 'mamba-130m-shape', device: 'wasm', tokens: 512, tokPerS: 50, ms: s(10_240) },
    ],
    restore: [
      restore('tiny-gpt2', 512, 1400, 10, 110),
      { ...restore('gpt2-shape', 512, 2600, 3, 150), storedProfile: { prefixKeysMs: 4, manifestsMs: 90, blockChainMs: 1.5, getStateMs: 55 } },
      restore('gpt2-shape', 1024, 6200, 5, 300),
    ],
    storage: [storage],
    mambaRestore: [
      {
        model: 'mamba-130m-shape',
        device: 'wasm',
        tokens: 1024,
        stateBytes: 2_801_664,
        reprefillMs: s(8600),
        restoreMs: s(4),
        restoreStoredMs: s(20),
        reprefillOverHotLookup: 2150,
      },
      {
        model: 'mamba-130m-shape',
        device: 'webgpu',
        tokens: 256,
        stateBytes: 2_801_664,
        reprefillMs: s(900),
        restoreMs: s(3),
        restoreStoredMs: s(20),
        reprefillOverHotLookup: 300,
        from: 'bench/mamba-restore.ts, 2026-11-23',
      },
    ],
    codecs: [
      {
        model: 'gpt2-shape',
        codec: 'fp32',
        bytes: 37_748_736,
        maxLogitError: 0,
        greedyMatch: true,
        chosen: false,
        from: 'bench/results/codecs.json (2026-11-23)',
      },
      {
        model: 'gpt2-shape',
        codec: 'int8',
        bytes: 9_437_184,
        maxLogitError: 0.0123,
        greedyMatch: true,
        chosen: true,
        from: 'bench/results/codecs.json (2026-11-23)',
      },
      {
        model: 'micro-gpt2',
        codec: 'int8',
        bytes: 285_952,
        bytesVsFp16: 0.539,
        maxLogitError: 0.000549,
        meanKL: 4.1e-9,
        greedyAgree: 64,
        greedyTotal: 64,
        greedyMatch: true,
        stateTokens: 512,
      },
    ],
    quality: [
      { model: 'micro-gpt2', heldOutTokens: 2044, perplexity: 801.93 },
      { model: 'tiny-gpt2', heldOutTokens: 2044, perplexity: 934_459.14 },
    ],
    skipped: [{ what: 'gpt2-shape on WebGPU', reason: 'software adapter' }],
    ...over,
  };
}

/** The data rows of the first Markdown table after `heading`. */
function tableRows(md: string, heading: string): string[][] {
  const lines = md.split('\n');
  let i = lines.indexOf(heading);
  expect(i, `heading ${heading}`).toBeGreaterThanOrEqual(0);
  while (i < lines.length && !lines[i]!.startsWith('|')) i++;
  const rows: string[][] = [];
  for (i += 2; i < lines.length && lines[i]!.startsWith('|'); i++) rows.push(lines[i]!.slice(2, -2).split(' | '));
  return rows;
}

/** The README section's tables as rows of trimmed cells (its columns are padded). */
function readmeRows(sec: string): string[][] {
  return sec
    .split('\n')
    .filter((l) => l.startsWith('| ') && !/^\| -+ \|/.test(l))
    .map((l) =>
      l
        .slice(2, -2)
        .split(' | ')
        .map((c) => c.trim()),
    );
}

describe('bench report: numbers', () => {
  it('stat takes the median, min and max, whatever the order', () => {
    expect(stat([5, 1, 3])).toEqual({ median: 3, min: 1, max: 5, n: 3 });
    expect(stat([4, 1, 3, 10])).toEqual({ median: 3.5, min: 1, max: 10, n: 4 });
    expect(stat([7])).toEqual({ median: 7, min: 7, max: 7, n: 1 });
    expect(stat([]).n).toBe(0);
    expect(Number.isNaN(stat([]).median)).toBe(true);
  });

  it('formats times, sizes and ratios for people', () => {
    expect(fmtMs(0.84)).toBe('0.8 ms');
    expect(fmtMs(42.4)).toBe('42 ms');
    expect(fmtMs(2612)).toBe('2.61 s');
    expect(fmtMs(58_400)).toBe('58.4 s');
    expect(fmtMs(-3.2)).toBe('-3.2 ms');
    expect(fmtMs(NaN)).toBe('—');
    expect(fmtBytes(512)).toBe('512 B');
    expect(fmtBytes(2_801_664)).toBe('2.7 MiB');
    expect(fmtRatio(951, 3)).toBe('317×');
    expect(fmtRatio(60_000, 4_000)).toBe('15.0×');
    expect(fmtRatio(3, 2)).toBe('1.50×');
    expect(fmtRatio(1, 0)).toBe('—');
    expect(fmtStat(s(10, 8, 30))).toBe('10 ms (8.0 ms–30 ms)');
    expect(fmtStat(s(10, 10, 10, 1))).toBe('10 ms');
  });

  it('escapes pipes inside table cells, and pads columns when asked', () => {
    expect(mdTable(['a', 'b'], [['x|y', 'z']])).toBe('| a | b |\n| --- | --- |\n| x\\|y | z |');
    expect(mdTable(['a', 'bb'], [['long cell', '→']], { pad: true })).toBe('| a         | bb  |\n| --------- | --- |\n| long cell | →   |');
  });
});

describe('bench report: targets', () => {
  it('sets each target against the plain baseline, naming both sides', () => {
    const h = headlineRows(fixture());
    expect(h.map((x) => [x.target, x.met])).toEqual([
      ['≥ 12×', true], // 60 s / 4 s = 15×
      ['≥ 3×', false], // tiny: 5 s / 2 s = 2.5×
      ['≤ 1.5×', true], // 50 / 40 = 1.25×
      ['≥ 15×', false], // 5.6 s / 400 ms = 14×
      ['≤ 1.3×', false], // 140 / 100 = 1.4×
      ['≥ 0.8×', false], // 50 / 200 = 0.25×
    ]);
    expect(h[0]!.measurement).toBe('20-step agent loop vs plain, gpt2-shape · WASM, 2 threads');
    expect(h[0]!.measured).toBe('60.0 s plain → 4.00 s cached (15.0×); base stored earlier: 1.50 s (40.0×); outputs identical: yes');
    expect(h[1]!.measured).toContain('5.00 s plain → 2.00 s cached (2.50×)');
    expect(h[1]!.measured).toContain('outputs identical: NO');
    expect(h[2]!.measurement).toContain('gpt2-shape · WASM');
    expect(h[2]!.measured).toBe('50 ms hot vs 40 ms alone (1.25×); plain (base recomputed): 3.20 s');
    expect(h[3]!.measurement).toContain('1,007-token base read from IndexedDB vs plain prefill of all 1,023 (1,024 positions with the token)');
    expect(h[3]!.measured).toBe('5.60 s plain → 400 ms from IndexedDB (14.0×)');
    expect(h[4]!.measured).toBe('100 ms/token at 64 → 140 ms/token at 1,000 (1.40×)');
    expect(h[5]!.measurement).toContain('mamba-130m-shape vs gpt2-shape');
    expect(h[5]!.measured).toBe('50.0 tok/s vs 200 tok/s (0.25×)');
  });

  it('says "not measured" rather than leave a target out', () => {
    const h = headlineRows(fixture({ agentLoop: [], ttft: [], decode: [], prefill: [] }));
    expect(h).toHaveLength(6);
    for (const x of h) {
      expect(x.measured).toBe('not measured in this run');
      expect(x.met).toBeNull();
    }
  });

  it('falls back to the tiny models when no big one ran', () => {
    const h = headlineRows(
      fixture({
        ttft: [ttft('tiny-gpt2', 512)],
        prefill: [
          { model: 'tiny-gpt2', device: 'wasm', tokens: 512, tokPerS: 8000, ms: s(64) },
          { model: 'tiny-mamba', device: 'wasm', tokens: 512, tokPerS: 4000, ms: s(128) },
        ],
      }),
    );
    expect(h[2]!.measurement).toContain('tiny-gpt2 · WASM');
    expect(h[5]!.measurement).toContain('tiny-mamba vs tiny-gpt2');
    expect(h[5]!.measured).toContain('(0.50×)');
  });
});

describe('bench report: latest.md', () => {
  const md = toMarkdown(fixture());

  it('states the machine, the threads, the commit and the load it ran under', () => {
    expect(md).toContain('commit `7c4f3b4e0d`');
    expect(md).toContain('2 CPU cores (Test CPU)');
    expect(md).toContain('Chromium 156.0');
    expect(md).toContain('navigator.hardwareConcurrency 2');
    expect(md).toContain('WASM threads 2 (plain worker: the same)');
    expect(md).toContain('google swiftshader (software)');
    expect(md).toContain('> Taken under load.');
    expect(toMarkdown(fixture({ dirty: true }))).toContain('commit `7c4f3b4e0d+dirty`');
    const other = fixture();
    other.browser.plainThreads = 1;
    expect(toMarkdown(other)).toContain('(plain worker: 1, NOT the same)');
  });

  it('opens with the targets and writes one agent-loop row per run', () => {
    expect(md.indexOf('## Targets')).toBeLessThan(md.indexOf('## Agent loop vs plain'));
    expect(tableRows(md, '## Targets')).toHaveLength(6);
    const rows = tableRows(md, '## Agent loop vs plain');
    expect(rows).toHaveLength(3);
    const big = rows[1]!;
    expect(big.slice(0, 4)).toEqual(['gpt2-shape · WASM', '15,481', '1,018 (506 without)', '93.4%']);
    expect(big.slice(4, 9)).toEqual(['60.0 s', '4.00 s', '15.0×', '1.50 s', '40.0×']);
    expect(big[11]).toBe('yes');
    expect(rows[0]![11]).toBe('NO');
    expect(rows[2]![0]).toBe('tiny-gpt2 · WebGPU (software adapter)');
    expect(md).toContain('- gpt2-shape · WASM: restore 2.0 ms, prefill 30 ms, generate 20 ms, store 15 ms, engine other 3.0 ms, messaging 5.0 ms');
  });

  it('writes first-token, decode and prefill rows', () => {
    const t = tableRows(md, '## Time to first token');
    expect(t).toHaveLength(3);
    expect(t[2]!.slice(0, 2)).toEqual(['gpt2-shape · WASM', '1,007 + 16']);
    expect(t[0]!.slice(6)).toEqual(['1.25×', '64.0×', '16.0×', 'yes']);
    expect(md).toContain('- gpt2-shape · WASM, 1,007 + 16, stored: restore 150 ms,');
    const d = tableRows(md, '## Decode: one generated token by context length');
    expect(d.map((r) => r[6])).toEqual(['1.00×', '1.20×', '1.40×']);
    expect(d[2]!.slice(0, 6)).toEqual(['gpt2-shape · WASM', '1,000', '16', '140 ms', '126 ms', '112 ms']);
    const p = tableRows(md, '## Prefill throughput (plain)');
    expect(p[1]).toEqual(['mamba-130m-shape · WASM', '512', '10.2 s', '50.0 tok/s']);
    expect(md).toContain('mamba-130m-shape ÷ gpt2-shape: 0.25× (target ≥ 0.8×).');
  });

  it('labels restore ratios as a lookup against a prefill', () => {
    const r = tableRows(md, '## Restore: in-worker lookup and IndexedDB read vs prefill');
    expect(r).toHaveLength(3);
    expect(r[1]!.slice(0, 3)).toEqual(['gpt2-shape · WASM', '512', '18.0 MiB']);
    expect(r[1]![9]).toBe('13.7×'); // 2,600 / (150 + 40)
    expect(r[1]![10]).toBe('867×'); // 2,600 / 3: a lookup
    expect(md).toContain('| recompute ÷ first logits stored | recompute ÷ hot lookup |');
    expect(md).toContain('- gpt2-shape · WASM, 512 tokens: prefix keys 4.0 ms, manifests 90 ms, block chain 1.5 ms, read 55 ms (floor 75 ms)');
    const m = tableRows(md, '## Mamba: in-worker lookup vs re-prefill');
    expect(m[0]!.slice(0, 3)).toEqual(['mamba-130m-shape · WASM', '1,024', '2.7 MiB']);
    expect(m[0]![6]).toBe('2,150×');
    expect(m[1]![0]).toBe('mamba-130m-shape · WebGPU *');
    expect(md).toContain('Rows marked * were merged from another run (bench/mamba-restore.ts, 2026-11-23), not measured in this one.');
  });

  it('writes storage, load, codec, definition and skip lines', () => {
    const st = tableRows(md, '## Storage');
    expect(st[0]![4]).toBe('1.000');
    expect(st[0]![6]).toBe('100 × 8 tokens');
    expect(tableRows(md, '## Model load')[0]!.slice(0, 6)).toEqual(['gpt2-shape · WASM', '8.12 s', '8.00 s', '2', '7.00 s', '2']);
    expect(tableRows(md, '## Codecs')).toEqual([
      ['gpt2-shape', 'fp32', '36.0 MiB', '—', '0.00e+0', '—', 'yes', ''],
      ['gpt2-shape', 'int8', '9.0 MiB', '—', '1.23e-2', '—', 'yes', 'yes'],
      ['micro-gpt2 (512 tokens)', 'int8', '279.3 KiB', '0.539×', '5.49e-4', '4.10e-9', '64/64', ''],
    ]);
    expect(tableRows(md, '## Model quality (held-out perplexity)')).toEqual([
      ['micro-gpt2', '2,044', '801.9'],
      ['tiny-gpt2', '2,044', '934,459'],
    ]);
    expect(md).toContain(`- decodeMsPerToken: ${DEFINITIONS.decodeMsPerToken}`);
    expect(md).toContain('- gpt2-shape on WebGPU: software adapter');
    expect(md).toContain('_Generated by `npm run bench` at commit `7c4f3b4e0d` in 321 s;');
  });

  it('leaves out the sections a run has no rows for', () => {
    const bare = toMarkdown(fixture({ agentLoop: [], ttft: [], decode: [], mambaRestore: [], codecs: [], quality: [], skipped: [] }));
    expect(bare).not.toContain('## Agent loop');
    expect(bare).not.toContain('## Time to first token');
    expect(bare).not.toContain('## Decode');
    expect(bare).not.toContain('## Mamba');
    expect(bare).not.toContain('## Codecs');
    expect(bare).not.toContain('## Model quality');
    expect(bare).not.toContain('## Not measured');
    expect(bare).toContain('## Targets');
    expect(bare).toContain('## Restore');
  });
});

describe('bench report: README section', () => {
  const sec = readmeSection(fixture());
  const rows = readmeRows(sec);

  it('puts the targets first, each against the plain baseline, then other figures of the same run', () => {
    expect(rows[0]).toEqual(['measurement', 'target', 'this run', 'met']);
    expect(rows[1]).toEqual([
      '20-step agent loop vs plain, gpt2-shape · WASM, 2 threads',
      '≥ 12×',
      '60.0 s plain → 4.00 s cached (15.0×); base stored earlier: 1.50 s (40.0×); outputs identical: yes',
      'yes',
    ]);
    const start = rows.findIndex((r) => r[0] === 'other figures of the same run');
    const codecsAt = rows.findIndex((r) => r[0] === 'model' && r[1] === 'codec');
    const other = rows.slice(start, codecsAt);
    // Then the codec table of the same run, on the trained model.
    expect(codecsAt).toBeGreaterThan(start);
    const codecs = rows.slice(codecsAt + 1);
    expect(codecs.length).toBe(fixture().codecs.length);
    expect(codecs.find((r) => r[0]!.startsWith('micro-gpt2') && r[1] === 'int8')?.slice(3)).toEqual(['0.539×', '5.49e-4', '4.10e-9', '64/64', '']);
    expect(other.map((r) => r[0])).toEqual([
      'other figures of the same run',
      'Agent loop input tokens, 20 steps on a 512-token base, gpt2-shape · WASM',
      'First token after 16 new tokens on a 512-token base, gpt2-shape · WASM',
      'Bytes stored, base + 20 chained steps, gpt2-shape · WASM',
      '100 agents sharing one base, gpt2-shape · WASM',
      'Model load, gpt2-shape · WASM',
      'Held-out perplexity, micro-gpt2 (2,044 Brown tokens)',
      'Held-out perplexity, tiny-gpt2 (2,044 Brown tokens)',
    ]);
    expect(other.at(-2)![1]).toBe('801.9');
    expect(other[1]![1]).toBe('15,481 plain → 1,018 cached (93.4% fewer)');
    expect(other[2]![1]).toBe('3.20 s plain → 50 ms hot (64.0×), 200 ms from IndexedDB (16.0×)');
    expect(other[4]![1]).toContain('(79.2× smaller)');
  });

  it('keeps in-worker lookups and merged rows out, and names the command, commit and machine', () => {
    expect(sec).not.toMatch(/lookup/);
    expect(sec).not.toContain('867×');
    expect(sec).not.toContain('2,150×');
    expect(sec).toContain('_Measured by `npm run bench` at commit `7c4f3b4e0d`, 2026-11-23 18:35 UTC; host: 2 CPU cores (Test CPU)');
    expect(sec).toContain('navigator.hardwareConcurrency 2');
    expect(sec).toContain('[bench/results/latest.md](bench/results/latest.md)');
    expect(readmeSection(fixture({ dirty: true }))).toContain('at commit `7c4f3b4e0d` with uncommitted changes');
  });

  it('pads its tables, so that a Markdown formatter leaves it as it is', () => {
    for (const table of sec.split('\n\n').filter((b) => b.startsWith('|'))) {
      const lines = table.split('\n');
      expect(new Set(lines.map((l) => [...l].length)).size, table).toBe(1);
    }
  });

  it('replaces only what lies between the markers, and the same run twice gives the same file', () => {
    const doc = `# Title\n\nintro\n\n${README_START}\nold table\n${README_END}\n\n## After\nkept\n`;
    const once = replaceBetweenMarkers(doc, 'NEW TABLE')!;
    expect(once).toBe(`# Title\n\nintro\n\n${README_START}\nNEW TABLE\n${README_END}\n\n## After\nkept\n`);
    expect(replaceBetweenMarkers(once, 'NEW TABLE')).toBe(once);
    expect(betweenMarkers(once)).toBe('NEW TABLE');
    expect(replaceBetweenMarkers('# no markers\n', 'x')).toBeNull();
    expect(replaceBetweenMarkers(`${README_END}\n${README_START}\n`, 'x')).toBeNull();
  });

  it('prints a console summary with one line per measurement', () => {
    const out = consoleSummary(fixture());
    expect(out.split('\n').filter((l) => l.startsWith('target'))).toHaveLength(6);
    expect(out.split('\n').filter((l) => l.startsWith('agent loop'))).toHaveLength(3);
    expect(out.split('\n').filter((l) => l.startsWith('ttft'))).toHaveLength(3);
    expect(out.split('\n').filter((l) => l.startsWith('decode'))).toHaveLength(3);
    expect(out).toContain('identical: false');
    expect(out.split('\n').filter((l) => l.startsWith('quality'))).toEqual([
      `quality     ${'micro-gpt2'.padEnd(40)} held-out perplexity 801.9 over 2044 tokens`,
      `quality     ${'tiny-gpt2'.padEnd(40)} held-out perplexity 934459.1 over 2044 tokens`,
    ]);
  });
});

describe('bench results in the repository', () => {
  const latest = readResults(JSON.parse(readFileSync(join(ROOT, 'bench', 'results', 'latest.json'), 'utf8')));

  it("the README's section is exactly what bench/results/latest.json gives", () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const got = betweenMarkers(readme);
    expect(got, 'README.md has no <!-- bench:start --> / <!-- bench:end --> markers').not.toBeNull();
    // Regenerate with: npx tsx bench/run.ts --from-json bench/results/latest.json
    expect(got).toBe(readmeSection(latest).trim());
  });

  it('latest.json holds a full run (a quick or partial one writes files of its own)', () => {
    expect(latest.mode).toBe('full');
  });
});
