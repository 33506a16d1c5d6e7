import { describe, expect, it } from 'vitest';
import {
  consoleSummary,
  fmtBytes,
  fmtMs,
  fmtRatio,
  fmtStat,
  mdTable,
  readmeSection,
  replaceBetweenMarkers,
  stat,
  toMarkdown,
  README_END,
  README_START,
} from '../../bench/lib/report.ts';
import type { AgentLoopResult, BenchResults, RestoreRow, StorageResult } from '../../bench/lib/types.ts';

const s = (median: number, min = median, max = median, n = 3) => ({ median, min, max, n });

function agent(model: string, over: Partial<AgentLoopResult> = {}): AgentLoopResult {
  return {
    model,
    device: 'wasm',
    steps: 20,
    baseTokens: 512,
    deltaTokens: [12, 40, 10],
    newTokensPerStep: 4,
    naiveTokens: 15541,
    cachedTokens: 1018,
    cachedTokensNoBase: 506,
    tokensSavedPct: 100 * (1 - 1018 / 15541),
    naiveMs: 60_000,
    naiveComputeMs: 50_000,
    cachedMs: 4_000,
    cachedStepsMs: 1_500,
    naiveStepMs: s(3000, 2000, 4000, 20),
    cachedStepMs: s(75, 60, 90, 20),
    speedup: 15,
    speedupVsCompute: 12.5,
    identicalOutputs: true,
    cachedBreakdown: { restoreMs: 2, prefillMs: 30, generateMs: 20, storeMs: 15, otherMs: 8 },
    ...over,
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
    version: 1,
    mode: 'full',
    date: '2026-11-23T18:35:00.000Z',
    commit: '7c4f3b4e0d1234567890abcdef',
    dirty: false,
    machine: { cores: 2, hardwareConcurrency: 2, platform: 'linux', node: 'v20', cpuModel: 'Test CPU', memoryGiB: 24, loadAvg: [1, 1, 1] },
    browser: {
      name: 'Chromium',
      version: '156.0',
      userAgent: 'ua',
      crossOriginIsolated: true,
      threads: 2,
      webgpuAdapter: 'google swiftshader',
      webgpuSoftware: true,
    },
    devices: ['wasm', 'webgpu'],
    note: 'Taken under load.',
    durationS: 321,
    loads: [{ model: 'gpt2-shape', device: 'wasm', wallMs: 8123, loadMs: 8000, adapter: null, deviceReason: 'WASM was asked for', threads: 2 }],
    agentLoop: [agent('tiny-gpt2', { identicalOutputs: false }), agent('gpt2-shape'), agent('tiny-gpt2', { device: 'webgpu', softwareAdapter: true })],
    restore: [
      restore('tiny-gpt2', 512, 1400, 10, 110),
      { ...restore('gpt2-shape', 512, 2600, 3, 150), storedProfile: { prefixKeysMs: 4, manifestsMs: 90, blockChainMs: 1.5, getStateMs: 55 } },
      restore('gpt2-shape', 1024, 6200, 5, 300),
    ],
    continue: [
      {
        model: 'gpt2-shape',
        device: 'wasm',
        baseTokens: 512,
        newTokens: 16,
        prefillBaseMs: s(2600),
        continueHotMs: s(100),
        continueStoredMs: s(250),
        freshMs: s(80),
      },
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
        speedup: 2150,
      },
      {
        model: 'mamba-130m-shape',
        device: 'webgpu',
        tokens: 256,
        stateBytes: 2_801_664,
        reprefillMs: s(900),
        restoreMs: s(3),
        restoreStoredMs: s(20),
        speedup: 300,
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

  it('escapes pipes inside table cells', () => {
    expect(mdTable(['a', 'b'], [['x|y', 'z']])).toBe('| a | b |\n| --- | --- |\n| x\\|y | z |');
  });
});

describe('bench report: latest.md', () => {
  const md = toMarkdown(fixture());

  it('states the machine, the commit and the load it ran under', () => {
    expect(md).toContain('commit `7c4f3b4e0d`');
    expect(md).toContain('2 CPU cores (Test CPU)');
    expect(md).toContain('Chromium 156.0');
    expect(md).toContain('WASM threads: 2');
    expect(md).toContain('google swiftshader (software)');
    expect(md).toContain('> Taken under load.');
    expect(toMarkdown(fixture({ dirty: true }))).toContain('commit `7c4f3b4e0d+dirty`');
  });

  it('writes one agent-loop row per run, with ratios from the numbers in the JSON', () => {
    const rows = tableRows(md, "## Agent loop (State Pack's)");
    expect(rows).toHaveLength(3);
    const [tiny, big, gpu] = rows;
    expect(big![0]).toBe('gpt2-shape · WASM');
    expect(big![1]).toBe('15,541');
    expect(big![2]).toBe('1,018 (506 without)');
    expect(big![3]).toBe('93.4%');
    expect(big![6]).toBe('15.0×'); // 60 s / 4 s
    expect(big![7]).toBe('12.5×'); // 50 s / 4 s
    expect(big![8]).toBe('40.0×'); // 60 s / 1.5 s
    expect(big![11]).toBe('yes');
    expect(tiny![11]).toBe('NO');
    expect(gpu![0]).toBe('tiny-gpt2 · WebGPU (software adapter)');
    expect(md).toContain('- gpt2-shape · WASM: restore 2.0 ms, delta prefill 30 ms, generation 20 ms, store 15 ms, other 8.0 ms');
  });

  it('writes restore, continue, storage, Mamba, load and codec rows', () => {
    const r = tableRows(md, '## Base-cache hit: restore vs re-prefill');
    expect(r).toHaveLength(3);
    expect(r[1]!.slice(0, 3)).toEqual(['gpt2-shape · WASM', '512', '18.0 MiB']);
    expect(r[1]![7]).toBe('867×'); // 2,600 / 3
    expect(r[1]![8]).toBe('17.3×'); // 2,600 / 150
    expect(md).toContain('- gpt2-shape · WASM, 512 tokens: prefix keys 4.0 ms, manifests 90 ms, block chain 1.5 ms, read 55 ms (floor 75 ms)');
    expect(md.match(/prefix keys \d/g)).toHaveLength(1);
    const c = tableRows(md, '## Prefill vs continue from a stored state');
    expect(c[0]![7]).toBe('26.0×');
    expect(c[0]![8]).toBe('1.25×');
    const st = tableRows(md, '## Storage');
    expect(st[0]![4]).toBe('1.000');
    expect(st[0]![6]).toBe('100 × 8 tokens');
    const m = tableRows(md, '## Mamba: restore vs re-prefill');
    expect(m[0]!.slice(0, 3)).toEqual(['mamba-130m-shape · WASM', '1,024', '2.7 MiB']);
    expect(m[0]![6]).toBe('2,150×');
    expect(m[1]![0]).toBe('mamba-130m-shape · WebGPU *');
    expect(md).toContain('Rows marked * were merged from another run (bench/mamba-restore.ts, 2026-11-23), not measured in this one.');
    expect(tableRows(md, '## Model load')[0]![1]).toBe('8.12 s');
    expect(tableRows(md, '## Codecs')).toEqual([
      ['gpt2-shape', 'fp32', '36.0 MiB', '0.00e+0', 'yes', ''],
      ['gpt2-shape', 'int8', '9.0 MiB', '1.23e-2', 'yes', 'yes'],
    ]);
    expect(md).toContain('Merged from bench/results/codecs.json (2026-11-23): a separate run, not timed here.');
    expect(md).toContain('- gpt2-shape on WebGPU: software adapter');
  });

  it('leaves out the sections a run has no rows for', () => {
    const bare = toMarkdown(fixture({ agentLoop: [], mambaRestore: [], codecs: [], skipped: [] }));
    expect(bare).not.toContain('## Agent loop');
    expect(bare).not.toContain('## Mamba');
    expect(bare).not.toContain('## Codecs');
    expect(bare).not.toContain('## Not measured');
    expect(bare).toContain('## Base-cache hit');
  });
});

describe('bench report: README section', () => {
  it("takes the headline figures from the biggest WASM model, beside the seeds' claims", () => {
    const sec = readmeSection(fixture());
    const rows = sec.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| measurement') && !l.startsWith('| ---'));
    const byName = (p: string) => rows.find((l) => l.startsWith(`| ${p}`));
    expect(byName('Agent loop, input tokens')).toContain('| 93% fewer | 93.4% fewer (15,541 → 1,018) | gpt2-shape |');
    expect(byName('Agent loop, wall time')).toContain('15.0× faster (60.0 s → 4.00 s), 40.0× with the base already stored; outputs identical: yes');
    expect(byName('Base-cache hit, 512 tokens')).toContain('| 0.951 s → 0.003 s | 2.60 s → 3.0 ms hot (867×)');
    expect(byName('Base-cache hit, 1024 tokens')).toContain('6.20 s → 5.0 ms hot');
    expect(byName('100 agents sharing one base')).toContain('(79.2× smaller)');
    expect(byName('Continue a stored 512-token state by 16 tokens')).toContain(
      '100 ms hot, 250 ms from IndexedDB, vs 2.60 s to prefill the base (26.0× / 10.4×)',
    );
    expect(byName('Mamba restore vs re-prefill, 1,024 tokens')).toContain('8.60 s → 4.0 ms (2,150×)');
    expect(sec).toContain('[bench/results/latest.md](bench/results/latest.md)');
    expect(readmeSection(fixture(), 'bench/results/latest-full.md')).toContain('[bench/results/latest-full.md](bench/results/latest-full.md)');
  });

  it('falls back to a tiny model when no big one ran', () => {
    const sec = readmeSection(
      fixture({
        agentLoop: [agent('tiny-gpt2', { naiveTokens: 100, cachedTokens: 10, tokensSavedPct: 90 })],
        restore: [],
        storage: [],
        mambaRestore: [],
        loads: [],
      }),
    );
    expect(sec).toContain('90.0% fewer (100 → 10) | tiny-gpt2 |');
    expect(sec).not.toContain('Base-cache hit');
  });

  it('replaces only what lies between the markers, and the same run twice gives the same file', () => {
    const doc = `# Title\n\nintro\n\n${README_START}\nold table\n${README_END}\n\n## After\nkept\n`;
    const once = replaceBetweenMarkers(doc, 'NEW TABLE')!;
    expect(once).toBe(`# Title\n\nintro\n\n${README_START}\nNEW TABLE\n${README_END}\n\n## After\nkept\n`);
    expect(replaceBetweenMarkers(once, 'NEW TABLE')).toBe(once);
    expect(replaceBetweenMarkers('# no markers\n', 'x')).toBeNull();
    expect(replaceBetweenMarkers(`${README_END}\n${README_START}\n`, 'x')).toBeNull();
  });

  it('prints a console summary with one line per measurement', () => {
    const out = consoleSummary(fixture());
    expect(out.split('\n').filter((l) => l.startsWith('agent loop'))).toHaveLength(3);
    expect(out.split('\n').filter((l) => l.startsWith('restore'))).toHaveLength(3);
    expect(out).toContain('identical: false');
  });
});
