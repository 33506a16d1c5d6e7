// Seeded models at another weight scale, for reading the codec table: at the
// real init scale seeded weights give flat next-token distributions (greedy
// agreement then says little); a larger scale makes them peaked.
//
//   npx tsx bench/make-scale-variants.ts [--out .cache/models/scales] [--gpt2-scale 1] [--mamba-scale 4]
//   npx tsx bench/codec-table.ts --root .cache/models/scales
//
// The default gpt2-shape is already built at scale 15 and mamba-130m-shape at
// 1, so the variants are the other end of each: gpt2-shape at 1, mamba at 4.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { writeGpt2Model, writeMambaModel } from '../scripts/make-models.ts';
import { seededGpt2Weights, seededSourceInfo } from '../src/models/gpt2-weights.ts';
import { seededGpt2Recipe } from '../src/models/registry.ts';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}
const out = arg('out', join(process.cwd(), '.cache/models/scales'));
const gScale = Number(arg('gpt2-scale', '1'));
const mScale = Number(arg('mamba-scale', '4'));

const g = seededGpt2Recipe('gpt2-shape');
const gdir = join(out, 'gpt2-shape');
await mkdir(gdir, { recursive: true });
let t0 = performance.now();
await writeGpt2Model(gdir, 'gpt2-shape', seededGpt2Weights(g.config, { seed: g.seed, scale: gScale }), seededSourceInfo({ seed: g.seed, scale: gScale }));
console.error(`gpt2-shape at scale ${gScale}: ${((performance.now() - t0) / 1000).toFixed(0)} s → ${gdir}`);
const mdir = join(out, 'mamba-130m-shape');
await mkdir(mdir, { recursive: true });
t0 = performance.now();
await writeMambaModel(mdir, { preset: 'mamba-130m-shape', scale: mScale });
console.error(`mamba-130m-shape at scale ${mScale}: ${((performance.now() - t0) / 1000).toFixed(0)} s → ${mdir}`);
