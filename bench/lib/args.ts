/**
 * bench/run.ts' command line, and which files a run may write: only a full
 * run (every model, every row, nothing narrowed) writes latest.* and the
 * README; a quick run writes latest-quick.* only; a narrowed one partial.*.
 */
import { basename } from 'node:path';
import type { BenchDevice, BenchMode } from './types.ts';

export const SECTIONS = ['agent', 'ttft', 'decode', 'prefill', 'restore', 'agents'] as const;
export type Section = (typeof SECTIONS)[number];

export const QUICK_MODELS = ['tiny-gpt2', 'tiny-mamba'];
export const FULL_MODELS = ['tiny-gpt2', 'gpt2-shape', 'tiny-mamba', 'mamba-130m-shape'];

export interface BenchArgs {
  mode: BenchMode;
  models: string[];
  devices: BenchDevice[];
  only: Section[] | null;
  reps: number | null;
  steps: number | null;
  port: number;
  readme: boolean;
  fromJson: string | undefined;
  out: string | undefined;
  /** The command as typed, recorded in the results. */
  command: string;
}

export function parseArgs(argv: string[], defaultPort = Number(process.env.BENCH_PORT ?? 5199)): BenchArgs {
  const get = (name: string) => {
    const i = argv.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
    if (i < 0) return undefined;
    return argv[i]!.includes('=') ? argv[i]!.split('=').slice(1).join('=') : argv[i + 1];
  };
  const list = (name: string) => get(name)?.split(',').filter(Boolean);
  const num = (name: string) => {
    const v = get(name);
    if (v === undefined) return null;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} takes a whole number ≥ 1, not ${v}`);
    return n;
  };
  const quick = argv.includes('--quick');
  const only = (list('only') ?? null) as Section[] | null;
  for (const s of only ?? []) if (!SECTIONS.includes(s)) throw new Error(`--only: unknown section ${s} (${SECTIONS.join(', ')})`);
  const models = list('models');
  const devices = list('devices') as BenchDevice[] | undefined;
  for (const d of devices ?? []) if (d !== 'wasm' && d !== 'webgpu') throw new Error(`--devices: unknown device ${d} (wasm, webgpu)`);
  const reps = num('reps');
  const steps = num('steps');
  const narrowed = models !== undefined || devices !== undefined || only !== null || reps !== null || steps !== null;
  return {
    mode: narrowed ? 'partial' : quick ? 'quick' : 'full',
    models: models ?? (quick ? QUICK_MODELS : FULL_MODELS),
    devices: devices ?? ['wasm', 'webgpu'],
    only,
    reps,
    steps,
    port: Number(get('port') ?? defaultPort),
    readme: !argv.includes('--no-readme'),
    fromJson: get('from-json'),
    out: get('out'),
    command: ['npm run bench', ...(argv.length ? ['--', ...argv] : [])].join(' '),
  };
}

/** The results' file name (bench/results/NAME.json and .md) and whether the README's table is written from it. */
export function outputName(a: Pick<BenchArgs, 'mode' | 'out'>): { name: string; readme: boolean } {
  if (a.out !== undefined) {
    const name = basename(a.out).replace(/\.(json|md)$/, '');
    if (!name) throw new Error('--out takes a file name');
    if (name === 'latest' && a.mode !== 'full') throw new Error(`--out latest: only a full run writes latest.json (this one is ${a.mode})`);
    return { name, readme: false };
  }
  if (a.mode === 'full') return { name: 'latest', readme: true };
  return { name: a.mode === 'quick' ? 'latest-quick' : 'partial', readme: false };
}
