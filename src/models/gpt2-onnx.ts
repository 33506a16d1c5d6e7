/**
 * The GPT-2 decoder (with KV cache) as an ONNX graph, in the input/output
 * layout transformers.js expects of a `gpt2` text-generation model:
 *
 *   inputs   input_ids        int64 [batch_size, sequence_length]
 *            attention_mask   int64 [batch_size, total_sequence_length]
 *            position_ids     int64 [batch_size, sequence_length]
 *            past_key_values.N.key / .value  float32 [batch_size, n_head, past_sequence_length, head_dim]
 *            num_logits_to_keep int64 []  (0: every position; k: the last k — a prefill needs only the last)
 *   outputs  logits           float32 [batch_size, logits_length, vocab_size]
 *            present.N.key / .value          float32 [batch_size, n_head, total_sequence_length, head_dim]
 *            new_key.N / new_value.N         float32 [batch_size, n_head, sequence_length, head_dim]
 *              (unless `newRows: false`) only this call's rows of present.N: a run that keeps
 *              the cache itself fetches these and not present.* (src/models/gpt2-run.ts), so
 *              the runtime copies out O(new tokens) per call instead of the whole cache.
 *              They are the very tensors the Concat appends, so they equal present's last
 *              rows bit for bit. Exports that lack them (the Hub's) still run, on present.*.
 *
 * Query i sits at absolute position past + i and sees keys 0..past+i whose
 * attention_mask is 1 (causal mask from Range + LessOrEqual + Where).
 * Opset 20 (Gelu approximate="tanh"), IR version 9. LM head tied: MatMul(x, Transpose(wte)).
 */
import { GraphBuilder, DT, encodeModel } from './onnx-util.ts';
import { MASKED_SCORE, type GPT2Weights } from './gpt2-reference.ts';

const GPT2_OPSET = 20;
const GPT2_IR_VERSION = 9;

export interface Gpt2GraphOptions {
  /** Also output new_key.N / new_value.N (default true); false gives the Hub exports' outputs. */
  newRows?: boolean;
}

function buildGpt2Graph(w: GPT2Weights, o: Gpt2GraphOptions = {}): GraphBuilder {
  const newRows = o.newRows ?? true;
  const c = w.config;
  const E = c.n_embd;
  const H = c.n_head;
  const D = E / H;
  const g = new GraphBuilder('gpt2');
  const W = (name: string) => {
    const t = w.tensors.get(name);
    if (!t) throw new Error(`missing weight ${name}`);
    return g.float32(name, t.shape, t.data);
  };

  const inputIds = g.input('input_ids', DT.INT64, ['batch_size', 'sequence_length']);
  const attentionMask = g.input('attention_mask', DT.INT64, ['batch_size', 'total_sequence_length']);
  const positionIds = g.input('position_ids', DT.INT64, ['batch_size', 'sequence_length']);
  const pastK: string[] = [];
  const pastV: string[] = [];
  for (let l = 0; l < c.n_layer; l++) {
    pastK.push(g.input(`past_key_values.${l}.key`, DT.FLOAT, ['batch_size', H, 'past_sequence_length', D]));
    pastV.push(g.input(`past_key_values.${l}.value`, DT.FLOAT, ['batch_size', H, 'past_sequence_length', D]));
  }
  // As in Hugging Face exports; transformers.js fills it in (0 = all) when not given.
  const keep = g.input('num_logits_to_keep', DT.INT64, []);

  const wte = W('wte.weight');
  const wpe = W('wpe.weight');

  // Embeddings: [B, S, E]
  let x = g.add(g.op1('Gather', [wte, inputIds], { axis: 0 }), g.op1('Gather', [wpe, positionIds], { axis: 0 }));

  // Mask, shared by all layers: allowed[b, 0, s, t] = (t <= past + s) && attention_mask[b, t] != 0.
  const S = g.dimScalar(inputIds, 1);
  const T = g.dimScalar(attentionMask, 1);
  const past = g.op1('Sub', [T, S]);
  const qpos = g.op1('Range', [past, T, g.int(1)]); // [S]
  const kpos = g.op1('Range', [g.int(0), T, g.int(1)]); // [T]
  const causal = g.op1('LessOrEqual', [g.unsqueeze(kpos, [0]), g.unsqueeze(qpos, [1])]); // [S, T]
  const amBool = g.op1('Cast', [attentionMask], { to: DT.BOOL }); // [B, T]
  const allowed = g.op1('And', [causal, g.unsqueeze(amBool, [1, 2])]); // [B, 1, S, T]
  const negScore = g.float(MASKED_SCORE);
  const invSqrtD = g.float(1 / Math.sqrt(D));
  const headShape = g.ints([0, 0, H, D]);
  const mergeShape = g.ints([0, 0, E]);

  const toHeads = (t: string, name?: string) => g.op1('Transpose', [g.reshape(t, headShape)], { perm: [0, 2, 1, 3] }, name); // [B, H, S, D]

  for (let l = 0; l < c.n_layer; l++) {
    const h = `h.${l}`;
    const a = g.layerNorm(x, W(`${h}.ln_1.weight`), W(`${h}.ln_1.bias`), c.layer_norm_epsilon);
    const qkv = g.linear(a, W(`${h}.attn.c_attn.weight`), W(`${h}.attn.c_attn.bias`));
    const [q, k, v] = g.split(qkv, 2, [E, E, E]) as [string, string, string];
    const kNew = toHeads(k, newRows ? `new_key.${l}` : undefined);
    const vNew = toHeads(v, newRows ? `new_value.${l}` : undefined);
    const kAll = g.op1('Concat', [pastK[l]!, kNew], { axis: 2 }, `present.${l}.key`);
    const vAll = g.op1('Concat', [pastV[l]!, vNew], { axis: 2 }, `present.${l}.value`);
    const scores = g.mul(g.matmul(toHeads(q), g.transpose(kAll, [0, 1, 3, 2])), invSqrtD); // [B, H, S, T]
    const masked = g.op1('Where', [allowed, scores, negScore]);
    const probs = g.op1('Softmax', [masked], { axis: -1 });
    const ctx = g.reshape(g.transpose(g.matmul(probs, vAll), [0, 2, 1, 3]), mergeShape); // [B, S, E]
    x = g.add(x, g.linear(ctx, W(`${h}.attn.c_proj.weight`), W(`${h}.attn.c_proj.bias`)));

    const m = g.layerNorm(x, W(`${h}.ln_2.weight`), W(`${h}.ln_2.bias`), c.layer_norm_epsilon);
    const fc = g.op1('Gelu', [g.linear(m, W(`${h}.mlp.c_fc.weight`), W(`${h}.mlp.c_fc.bias`))], { approximate: 'tanh' });
    x = g.add(x, g.linear(fc, W(`${h}.mlp.c_proj.weight`), W(`${h}.mlp.c_proj.bias`)));
  }

  const xf = g.layerNorm(x, W('ln_f.weight'), W('ln_f.bias'), c.layer_norm_epsilon);
  // The LM head is the largest matmul of a prefill (vocab × width per position),
  // and its output the largest read-back: run it on the kept positions only.
  const k = g.op1('Where', [g.op1('Equal', [keep, g.int(0)]), S, g.op1('Min', [keep, S])]);
  const xs = g.op1('Slice', [xf, g.unsqueeze(g.op1('Sub', [S, k]), [0]), g.unsqueeze(S, [0]), g.ints([1])]);
  g.op1('MatMul', [xs, g.transpose(wte, [1, 0])], {}, 'logits');

  const vi = (name: string, dims: (number | string)[]) => g.output(name, name, DT.FLOAT, dims);
  vi('logits', ['batch_size', 'logits_length', c.vocab_size]);
  for (let l = 0; l < c.n_layer; l++) {
    vi(`present.${l}.key`, ['batch_size', H, 'total_sequence_length', D]);
    vi(`present.${l}.value`, ['batch_size', H, 'total_sequence_length', D]);
  }
  if (newRows) {
    for (let l = 0; l < c.n_layer; l++) {
      vi(`new_key.${l}`, ['batch_size', H, 'sequence_length', D]);
      vi(`new_value.${l}`, ['batch_size', H, 'sequence_length', D]);
    }
  }
  return g;
}

/** The model.onnx bytes for these weights (deterministic). */
export function buildGpt2Onnx(w: GPT2Weights, o: Gpt2GraphOptions = {}): Uint8Array {
  const g = buildGpt2Graph(w, o);
  return encodeModel(g, {
    opset: GPT2_OPSET,
    irVersion: GPT2_IR_VERSION,
    producerName: 'statecart/src/models/gpt2-onnx.ts',
  }).model;
}
