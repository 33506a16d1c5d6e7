import { describe, expect, it } from 'vitest';
import { readResults } from '../../bench/lib/upgrade.ts';
import { readmeSection, toMarkdown } from '../../bench/lib/report.ts';

const s = (m: number) => ({ median: m, min: m, max: m, n: 1 });

/** A format-1 file, cut down to what the reader looks at. */
const v1 = {
  version: 1,
  mode: 'full',
  date: '2026-11-23T20:20:00.000Z',
  commit: '31c970fcd1aaaa',
  dirty: false,
  machine: { cores: 2, hardwareConcurrency: 2, platform: 'linux', node: 'v20', cpuModel: 'AMD EPYC', memoryGiB: 24, loadAvg: [1, 1, 1] },
  browser: { name: 'Chromium', version: '156', userAgent: 'ua', crossOriginIsolated: true, threads: 2, webgpuAdapter: null, webgpuSoftware: null },
  devices: ['wasm'],
  note: '',
  durationS: 485,
  loads: [{ model: 'gpt2-shape', device: 'wasm', wallMs: 10_300, loadMs: 10_300, adapter: null, deviceReason: 'WASM was asked for', threads: 2 }],
  agentLoop: [{ model: 'gpt2-shape', device: 'wasm', naiveMs: 91_200, cachedMs: 16_600, speedup: 5.49 }],
  restore: [],
  continue: [{ model: 'gpt2-shape', device: 'wasm' }],
  storage: [],
  mambaRestore: [
    {
      model: 'mamba-130m-shape',
      device: 'wasm',
      tokens: 4096,
      stateBytes: 1,
      reprefillMs: s(71_400),
      restoreMs: s(5.5),
      restoreStoredMs: s(32),
      speedup: 12_967,
    },
  ],
  codecs: [],
  skipped: [],
};

describe('bench results of format 1', () => {
  const r = readResults(structuredClone(v1));

  it('keeps what format 2 means the same way, and says what it leaves out', () => {
    expect(r.version).toBe(2);
    expect(r.upgradedFrom).toBe(1);
    expect(r.commit).toBe('31c970fcd1aaaa');
    expect(r.mambaRestore[0]!.reprefillOverHotLookup).toBe(12_967);
    expect(r.loads[0]!.plainThreads).toBeNull();
    // Node's core count was recorded as hardwareConcurrency: not the page's.
    expect(r.browser.hardwareConcurrency).toBeNull();
    expect('hardwareConcurrency' in r.machine).toBe(false);
    // The loop was measured against a cleared-store statecart: not relabelled as plain.
    expect(r.agentLoop).toEqual([]);
    // Format 1 measured no model quality.
    expect(r.quality).toEqual([]);
    expect(r.skipped.map((x) => x.what)).toEqual(['agent loop vs plain', 'continue vs prefill', 'time to first token, decode, prefill throughput']);
  });

  it('renders with every target "not measured" and the reason given', () => {
    const sec = readmeSection(r);
    expect(sec).toContain('not measured in this run');
    expect(sec).not.toContain('5.49');
    expect(sec).toContain('format-1 bench, before the plain baseline existed');
    expect(toMarkdown(r)).toContain('- agent loop vs plain: this format-1 run measured the loop against statecart with a cleared store');
  });

  it('refuses a format it does not know', () => {
    expect(() => readResults({ version: 3 })).toThrow(/unknown format 3/);
  });
});

describe('bench results of format 2 written before quality[] existed', () => {
  it('reads as having measured no model quality, and keeps rows that are there', () => {
    expect(readResults({ version: 2, mode: 'full', codecs: [] }).quality).toEqual([]);
    const rows = [{ model: 'micro-gpt2', heldOutTokens: 2044, perplexity: 801.9 }];
    expect(readResults({ version: 2, mode: 'quick', quality: rows }).quality).toEqual(rows);
  });
});
