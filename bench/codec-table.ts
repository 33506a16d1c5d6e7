// The codec table: for each model, one state of N tokens encoded with every
// codec, each decoded copy run through the model and compared with fp32.
//
//   npx tsx scripts/make-models.ts --models gpt2-shape,mamba-130m-shape
//   npx tsx bench/codec-table.ts [--models gpt2-shape,mamba-130m-shape] [--tokens 512] [--greedy 32] [--root DIR] [--json FILE]
//
// Prints a markdown table and writes bench/results/codecs.json. Node,
// onnxruntime-node on the CPU, the same StateModel code as the browser.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { cpus } from 'node:os';
import { loadNodeModel, pseudoTokens, CACHE_MODELS, PUBLIC_MODELS } from '../tests/unit/support/codec-models.ts';
import { evaluateCodecs, type CodecReport } from '../src/engine/codec-optimizer.ts';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}

const ids = arg('models', 'gpt2-shape,mamba-130m-shape').split(',').filter(Boolean);
const nTokens = Number(arg('tokens', '512'));
const greedy = Number(arg('greedy', '32'));
const rootArg = process.argv.includes('--root') ? arg('root', '') : undefined;

const fmtBytes = (b: number) => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`);
const fmtNum = (x: number) => (x === 0 ? '0' : x < 1e-3 ? x.toExponential(1) : x < 10 ? x.toPrecision(2) : x.toFixed(1));

interface Result {
  model: string;
  weightSource: unknown;
  tokens: number;
  greedyTokens: number;
  prefillMs: number;
  evalMs: number;
  report: CodecReport;
}

const results: Result[] = [];
for (const id of ids) {
  const root = rootArg ?? (existsSync(join(CACHE_MODELS, id)) ? CACHE_MODELS : PUBLIC_MODELS);
  const metaPath = join(root, id, 'statecart.json');
  if (!existsSync(metaPath)) {
    console.error(`skip ${id}: ${metaPath} not found (build it: npx tsx scripts/make-models.ts --models ${id})`);
    continue;
  }
  const meta = JSON.parse(await readFile(metaPath, 'utf8')) as { weight_source?: unknown };
  const model = await loadNodeModel(id, root);
  const tokens = pseudoTokens(nTokens, model.vocabSize, 7);
  const t0 = performance.now();
  const { state } = await model.prefill(tokens);
  const prefillMs = performance.now() - t0;
  const t1 = performance.now();
  const report = await evaluateCodecs(model, state, { greedyTokens: greedy });
  const evalMs = performance.now() - t1;
  results.push({ model: id, weightSource: meta.weight_source ?? null, tokens: nTokens, greedyTokens: greedy, prefillMs, evalMs, report });
  await model.dispose();
  console.error(`${id}: prefill ${nTokens} tokens ${prefillMs.toFixed(0)} ms, codec evaluation ${evalMs.toFixed(0)} ms`);
}

const lines = [
  `| model | codec | bytes (${nTokens} tokens) | ratio to fp32 | max logit error | mean logit error | max KL (nats) | greedy match over ${greedy} |`,
  '|---|---|---:|---:|---:|---:|---:|---|',
];
for (const r of results) {
  for (const row of r.report.rows) {
    const m = row.metrics;
    lines.push(
      `| ${r.model} | ${row.codec} | ${row.error ? '—' : fmtBytes(row.bytes)} | ${row.error ? '—' : row.ratio.toFixed(3)} | ${m ? fmtNum(m.maxLogitError) : row.error} | ${m ? fmtNum(m.meanLogitError) : '—'} | ${m ? fmtNum(m.klMax) : '—'} | ${m ? `${m.greedyMatch ? 'yes' : 'no'} (${m.greedyAgree}/${m.positions})` : '—'} |`,
    );
  }
}
console.log(lines.join('\n'));
console.log('');
for (const r of results) {
  const f = r.report.reference;
  console.log(
    `- ${r.model} (weights ${JSON.stringify(r.weightSource)}): fp32 probe max |logit| ${f.maxAbsLogit.toFixed(1)}, mean top-1 probability ${f.meanTopProb.toFixed(3)}, ${f.distinctGreedy} distinct tokens in ${f.greedy.length} greedy.`,
  );
}
await mkdir(join(process.cwd(), 'bench/results'), { recursive: true });
const out = join(
  process.cwd(),
  arg('json', rootArg ? 'bench/results/codecs-' + rootArg.replace(/\/+$/, '').split('/').pop() + '.json' : 'bench/results/codecs.json'),
);
await writeFile(
  out,
  JSON.stringify(
    {
      command:
        'npx tsx ' +
        process.argv
          .slice(1)
          .join(' ')
          .replace(process.cwd() + '/', ''),
      node: process.version,
      cpus: cpus().length,
      date: new Date().toISOString(),
      results,
    },
    null,
    2,
  ) + '\n',
);
console.error(`wrote ${out}`);
