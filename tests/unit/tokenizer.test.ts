import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AutoTokenizer, env, type PreTrainedTokenizer } from '@huggingface/transformers';
import gpt3 from 'gpt-3-encoder';
import { ensureModels, PUBLIC_MODELS } from '../../scripts/make-models.ts';

const DIR = join(PUBLIC_MODELS, 'tiny-gpt2');
let tok: PreTrainedTokenizer;

beforeAll(async () => {
  await ensureModels(['tiny-gpt2']);
  env.allowLocalModels = true;
  env.allowRemoteModels = false;
  env.localModelPath = PUBLIC_MODELS + '/';
  tok = await AutoTokenizer.from_pretrained('tiny-gpt2');
});

const SAMPLES = [
  'Hello world',
  ' the',
  'The quick brown fox jumps over the lazy dog.',
  "I'm sure they'll say it's fine, won't they? We've done it.",
  'Line one\nLine two\n\n\tTabbed   and    spaced  ',
  'héllo wörld — naïve café, “quotes” and ‘apostrophes’',
  'emoji 🤗🚀👩‍👩‍👧 and CJK 日本語のテキスト, 한국어',
  'numbers 1234567 3.14159 -42 1e10',
  'Ünïcödé ∑∫√∞ ≠ ≤ ≥ ½ ¾ ©®™ \u0000 \u00a0 nbsp',
  '    leading spaces',
  'code: function f(x) { return x * 2; } // comment',
];

describe('GPT-2 tokenizer.json (transformers.js)', () => {
  it('gives the known GPT-2 ids', () => {
    expect(tok.encode('Hello world')).toEqual([15496, 995]);
    expect(tok.encode(' the')).toEqual([262]);
    expect(tok.encode('<|endoftext|>')).toEqual([50256]);
    expect(tok.encode('Hello<|endoftext|>world')).toEqual([15496, 50256, 6894]);
    expect(tok.encode('\n\n')).toEqual([628]);
    expect(tok.encode('  spaces')).toEqual([220, 9029]);
    expect(tok.encode(' 🤗')).toEqual([12520, 97, 245]);
  });

  it('matches gpt-3-encoder (the reference BPE) on varied text', () => {
    for (const s of SAMPLES) expect(tok.encode(s), s).toEqual(gpt3.encode(s));
  });

  it('round-trips through decode, unicode and emoji included', () => {
    for (const s of SAMPLES) expect(tok.decode(tok.encode(s))).toBe(s);
    // A token-by-token decode concatenates back to the text as well (byte-level).
    const s = 'emoji 🤗 ok';
    const ids = tok.encode(s);
    expect(tok.decode(ids)).toBe(s);
    expect(tok.decode([50256])).toBe('<|endoftext|>');
    expect(tok.decode([15496, 50256, 6894], { skip_special_tokens: true })).toBe('Helloworld');
  });

  it('has the HF structure and config', () => {
    const tj = JSON.parse(readFileSync(join(DIR, 'tokenizer.json'), 'utf8'));
    expect(tj.model.type).toBe('BPE');
    expect(Object.keys(tj.model.vocab)).toHaveLength(50257);
    expect(tj.model.merges).toHaveLength(50000);
    expect(tj.model.merges[0]).toBe('Ġ t');
    expect(tj.pre_tokenizer).toMatchObject({ type: 'ByteLevel', add_prefix_space: false, use_regex: true });
    expect(tj.decoder.type).toBe('ByteLevel');
    expect(tj.added_tokens).toEqual([expect.objectContaining({ id: 50256, content: '<|endoftext|>', special: true })]);
    const tc = JSON.parse(readFileSync(join(DIR, 'tokenizer_config.json'), 'utf8'));
    expect(tc).toMatchObject({
      tokenizer_class: 'GPT2Tokenizer',
      bos_token: '<|endoftext|>',
      eos_token: '<|endoftext|>',
      unk_token: '<|endoftext|>',
      model_max_length: 1024,
    });
  });
});
