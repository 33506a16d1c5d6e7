import { describe, expect, it } from 'vitest';
import { outputName, parseArgs, FULL_MODELS, QUICK_MODELS } from '../../bench/lib/args.ts';

describe('bench command line', () => {
  it('a plain run is the full run: every model, latest.* and the README', () => {
    const a = parseArgs([], 5199);
    expect(a.mode).toBe('full');
    expect(a.models).toEqual(FULL_MODELS);
    expect(a.command).toBe('npm run bench');
    expect(outputName(a)).toEqual({ name: 'latest', readme: true });
  });

  it('--quick writes latest-quick.* only, never latest.* or the README', () => {
    const a = parseArgs(['--quick'], 5199);
    expect(a.mode).toBe('quick');
    expect(a.models).toEqual(QUICK_MODELS);
    expect(a.command).toBe('npm run bench -- --quick');
    expect(outputName(a)).toEqual({ name: 'latest-quick', readme: false });
    expect(() => outputName(parseArgs(['--quick', '--out', 'latest'], 5199))).toThrow(/only a full run/);
  });

  it('any narrowing makes a partial run, written to partial.* (or --out), never latest.*', () => {
    for (const argv of [
      ['--models', 'gpt2-shape'],
      ['--devices=wasm'],
      ['--only', 'ttft,decode'],
      ['--reps', '1'],
      ['--steps', '2'],
      ['--quick', '--models', 'tiny-gpt2'],
    ]) {
      const a = parseArgs(argv, 5199);
      expect(a.mode, argv.join(' ')).toBe('partial');
      expect(outputName(a)).toEqual({ name: 'partial', readme: false });
      expect(() => outputName({ ...a, out: 'latest' })).toThrow(/only a full run/);
    }
    expect(outputName(parseArgs(['--models', 'gpt2-shape', '--out', 'bench/results/check.json'], 5199))).toEqual({ name: 'check', readme: false });
  });

  it('reads its options and refuses bad ones', () => {
    const a = parseArgs(['--models', 'gpt2-shape', '--only', 'agent', '--reps=2', '--steps', '3', '--port', '5192'], 5199);
    expect([a.models, a.only, a.reps, a.steps, a.port]).toEqual([['gpt2-shape'], ['agent'], 2, 3, 5192]);
    expect(() => parseArgs(['--only', 'nothing'], 5199)).toThrow(/unknown section/);
    expect(() => parseArgs(['--reps', '0'], 5199)).toThrow(/whole number/);
    expect(() => parseArgs(['--devices', 'cpu'], 5199)).toThrow(/unknown device/);
  });
});
