#!/usr/bin/python3
"""Step 2 of `npm run train-micro`: trains a small GPT-2 on the Brown corpus.

    npx tsx scripts/train/tokenize-corpus.ts          # step 1 → .cache/train/
    nice -n 10 /usr/bin/python3 scripts/train/train_micro.py [--steps 3000 | --minutes M] [options]

Needs Debian's torch (`apt-get install python3-torch libopenblas0-pthread`;
call /usr/bin/python3, which has it). CPU only, 2 threads.

The model is a plain GPT-2 (learned position embeddings, pre-LN blocks,
tanh-GELU, causal self-attention, final LN, LM head tied to wte), with its
linear weights kept in Hugging Face's Conv1D layout (in x out, y = x @ W + b)
so that they are saved as they are. Training runs its matmuls in bf16
(torch.autocast; fp32 weights, AdamW state and loss) unless --precision fp32;
every evaluation is fp32. Writes into --out (default
models/micro-gpt2/): model.safetensors (F16, HF `gpt2` names), config.json,
generation_config.json, train-log.txt and train-summary.json (which records
the SHA-256 of model.safetensors).

The budget is a step count (default 3000 steps of 1024 tokens, about 2.5
epochs): the same schedule and data order on any machine, only the wall time
differs (about 20 minutes on a quiet 2-core machine with AMX, several times
that when the cores are shared). With --minutes M instead, the learning-rate
schedule runs on elapsed training time, so a slower machine trains fewer steps.
"""
import argparse
import ctypes
import datetime
import hashlib
import json
import math
import os
import platform
import struct
import sys
import time


def keep_freed_memory():
    """glibc: serve big buffers from the heap and never give them back, so the
    ~400 MB logits of every step reuse pages instead of faulting in fresh ones
    (measured: a step ~1.7x faster, a third of the time had gone to the kernel)."""
    try:
        libc = ctypes.CDLL('libc.so.6')
        return libc.mallopt(-3, 1 << 30) == 1 and libc.mallopt(-1, 2**31 - 1) == 1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    except OSError:
        return False


MALLOPT = keep_freed_memory()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

EOT = 50256
VOCAB = 50257


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default='.cache/train', help='output of tokenize-corpus.ts')
    p.add_argument('--out', default='models/micro-gpt2')
    p.add_argument('--n-layer', type=int, default=4)
    p.add_argument('--n-embd', type=int, default=64)
    p.add_argument('--n-head', type=int, default=4)
    p.add_argument('--n-positions', type=int, default=1024)
    p.add_argument('--steps', type=int, default=3000, help='train this many steps (the default budget; schedule on steps)')
    p.add_argument('--minutes', type=float, default=0, help='instead of --steps: train for this much time (schedule on elapsed time)')
    p.add_argument('--tokens-per-step', type=int, default=1024, help='batch = tokens-per-step / seq-len')
    p.add_argument('--seq-lens', default='128,256,512,1024', help='each step draws one of these (uniformly, seeded)')
    p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--min-lr-frac', type=float, default=0.1, help='cosine decays to lr * this')
    p.add_argument('--warmup', type=float, default=0.03, help='fraction of the run spent on linear warmup')
    p.add_argument('--weight-decay', type=float, default=0.1, help='on 2-D weights only')
    p.add_argument('--grad-clip', type=float, default=1.0)
    p.add_argument('--seed', type=int, default=1234)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--precision', choices=['bf16', 'fp32'], default='bf16',
                   help='training matmuls: bf16 autocast (about 4x faster on CPUs with AMX / AVX512-BF16) or fp32')
    p.add_argument('--log-every', type=int, default=25)
    p.add_argument('--eval-every', type=float, default=0.25, help='held-out check every this fraction of the run')
    p.add_argument('--eval-tokens-mid', type=int, default=16384, help='held-out tokens for the midway checks')
    p.add_argument('--sample-tokens', type=int, default=512, help='the test sample: the first N held-out tokens')
    return p.parse_args()


# ----------------------------------------------------------------------- model


class MicroGPT2(torch.nn.Module):
    """GPT-2 with parameters named and laid out as an HF `gpt2` checkpoint."""

    def __init__(self, n_layer, n_embd, n_head, n_positions, vocab=VOCAB):
        super().__init__()
        self.n_layer, self.n_embd, self.n_head, self.n_positions = n_layer, n_embd, n_head, n_positions
        E = n_embd
        P = torch.nn.Parameter
        std = 0.02
        proj_std = 0.02 / math.sqrt(2 * n_layer)  # GPT-2's scaled init of the residual projections
        self.params = torch.nn.ParameterDict()
        self.names = []  # HF names, in gpt2TensorSpecs order

        def add(name, t):
            self.params[name.replace('.', '__')] = P(t)
            self.names.append(name)

        add('wte.weight', torch.randn(vocab, E) * std)
        add('wpe.weight', torch.randn(n_positions, E) * std)
        for i in range(n_layer):
            h = f'h.{i}'
            add(f'{h}.ln_1.weight', torch.ones(E))
            add(f'{h}.ln_1.bias', torch.zeros(E))
            add(f'{h}.attn.c_attn.weight', torch.randn(E, 3 * E) * std)
            add(f'{h}.attn.c_attn.bias', torch.zeros(3 * E))
            add(f'{h}.attn.c_proj.weight', torch.randn(E, E) * proj_std)
            add(f'{h}.attn.c_proj.bias', torch.zeros(E))
            add(f'{h}.ln_2.weight', torch.ones(E))
            add(f'{h}.ln_2.bias', torch.zeros(E))
            add(f'{h}.mlp.c_fc.weight', torch.randn(E, 4 * E) * std)
            add(f'{h}.mlp.c_fc.bias', torch.zeros(4 * E))
            add(f'{h}.mlp.c_proj.weight', torch.randn(4 * E, E) * proj_std)
            add(f'{h}.mlp.c_proj.bias', torch.zeros(E))
        add('ln_f.weight', torch.ones(E))
        add('ln_f.bias', torch.zeros(E))

    def p(self, name):
        return self.params[name.replace('.', '__')]

    def named_hf(self):
        return [(n, self.p(n)) for n in self.names]

    def hidden(self, idx):
        B, T = idx.shape
        E, H = self.n_embd, self.n_head
        D = E // H
        pos = torch.arange(T, device=idx.device)
        x = F.embedding(idx, self.p('wte.weight')) + F.embedding(pos, self.p('wpe.weight'))[None]
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        for i in range(self.n_layer):
            h = f'h.{i}'
            a = F.layer_norm(x, (E,), self.p(f'{h}.ln_1.weight'), self.p(f'{h}.ln_1.bias'), 1e-5)
            qkv = a @ self.p(f'{h}.attn.c_attn.weight') + self.p(f'{h}.attn.c_attn.bias')
            q, k, v = qkv.split(E, dim=2)
            q = q.view(B, T, H, D).transpose(1, 2)
            k = k.view(B, T, H, D).transpose(1, 2)
            v = v.view(B, T, H, D).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
            att = att.masked_fill(mask, float('-inf')).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, E)
            x = x + y @ self.p(f'{h}.attn.c_proj.weight') + self.p(f'{h}.attn.c_proj.bias')
            m = F.layer_norm(x, (E,), self.p(f'{h}.ln_2.weight'), self.p(f'{h}.ln_2.bias'), 1e-5)
            m = F.gelu(m @ self.p(f'{h}.mlp.c_fc.weight') + self.p(f'{h}.mlp.c_fc.bias'), approximate='tanh')
            x = x + m @ self.p(f'{h}.mlp.c_proj.weight') + self.p(f'{h}.mlp.c_proj.bias')
        return F.layer_norm(x, (E,), self.p('ln_f.weight'), self.p('ln_f.bias'), 1e-5)

    def forward(self, idx):
        return self.hidden(idx) @ self.p('wte.weight').t()  # tied LM head


def token_losses(model, ids):
    """Per-token losses (nats) of predicting ids[1:] from ids[:-1], one window."""
    x = ids[None, :-1]
    logits = model(x)
    return F.cross_entropy(logits[0], ids[1:], reduction='none')


@torch.no_grad()
def evaluate(model, ids, window, limit=None):
    """Mean loss over non-overlapping windows (each from a fresh context), by position band."""
    model.eval()
    n = len(ids) if limit is None else min(limit + 1, len(ids))
    total, count = 0.0, 0
    bands = {'pos 0-127': [0.0, 0], 'pos 128-511': [0.0, 0], 'pos 512-1023': [0.0, 0]}
    start = 0
    while start + 1 < n:
        end = min(start + window + 1, n)
        losses = token_losses(model, ids[start:end]).double()
        total += losses.sum().item()
        count += losses.numel()
        for name, lo, hi in (('pos 0-127', 0, 128), ('pos 128-511', 128, 512), ('pos 512-1023', 512, 1024)):
            seg = losses[lo:hi]
            bands[name][0] += seg.sum().item()
            bands[name][1] += seg.numel()
        start = end - 1
    model.train()
    mean = total / count
    return {
        'tokens': count,
        'loss': mean,
        'ppl': math.exp(mean),
        'bands': {k: {'tokens': c, 'loss': s / c, 'ppl': math.exp(s / c)} for k, (s, c) in bands.items() if c > 0},
    }


@torch.no_grad()
def greedy(model, ids, n):
    model.eval()
    seq = list(ids)
    for _ in range(n):
        logits = model(torch.tensor([seq[-model.n_positions:]]))
        seq.append(int(logits[0, -1].argmax()))
    model.train()
    return seq[len(ids):]


# ------------------------------------------------------------------ tokenizer


def gpt2_decoder(encoder_json):
    with open(encoder_json, encoding='utf-8') as f:
        enc = json.load(f)
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_of = {chr(c): b for b, c in zip(bs, cs)}
    dec = {v: k for k, v in enc.items()}

    def decode(ids):
        return bytes(byte_of[ch] for i in ids for ch in dec[i]).decode('utf-8', errors='replace')

    return decode


# -------------------------------------------------------------------- output


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, torch tensor); written F16, in order, contiguous."""
    header = {}
    blobs = []
    offset = 0
    for name, t in tensors:
        b = t.detach().to(torch.float16).contiguous().numpy().astype('<f2').tobytes()
        header[name] = {'dtype': 'F16', 'shape': list(t.shape), 'data_offsets': [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    header['__metadata__'] = metadata
    h = json.dumps(header, separators=(',', ':')).encode('utf-8')
    h += b' ' * ((8 - len(h) % 8) % 8)  # the byte buffer starts 8-aligned, as the reference writer does
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def hf_config(a):
    return {
        'activation_function': 'gelu_new',
        'architectures': ['GPT2LMHeadModel'],
        'attn_pdrop': 0.1,
        'bos_token_id': EOT,
        'embd_pdrop': 0.1,
        'eos_token_id': EOT,
        'initializer_range': 0.02,
        'layer_norm_epsilon': 1e-05,
        'model_type': 'gpt2',
        'n_ctx': a.n_positions,
        'n_embd': a.n_embd,
        'n_head': a.n_head,
        'n_inner': None,
        'n_layer': a.n_layer,
        'n_positions': a.n_positions,
        'reorder_and_upcast_attn': False,
        'resid_pdrop': 0.1,
        'scale_attn_by_inverse_layer_idx': False,
        'scale_attn_weights': True,
        'summary_activation': None,
        'summary_first_dropout': 0.1,
        'summary_proj_to_labels': True,
        'summary_type': 'cls_index',
        'summary_use_proj': True,
        'tie_word_embeddings': True,
        'torch_dtype': 'float16',
        'use_cache': True,
        'vocab_size': VOCAB,
    }


# ---------------------------------------------------------------------- main


def main():
    a = parse_args()
    if a.minutes:
        a.steps = 0
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.set_flush_denormal(True)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    log_path = os.path.join(a.out, 'train-log.txt')
    logf = open(log_path, 'w', encoding='utf-8')

    def log(*parts):
        s = ' '.join(str(x) for x in parts)
        print(s, flush=True)
        logf.write(s + '\n')
        logf.flush()

    with open(os.path.join(a.data, 'meta.json'), encoding='utf-8') as f:
        meta = json.load(f)

    def load_ids(info):
        path = os.path.join(a.data, info['file'])
        if sha256_file(path) != info['sha256']:
            sys.exit(f'{path}: SHA-256 does not match meta.json; rerun tokenize-corpus.ts')
        with open(path, 'rb') as f:
            raw = f.read()
        return torch.frombuffer(bytearray(raw), dtype=torch.int16).to(torch.int64) & 0xFFFF

    train_ids = load_ids(meta['train'])
    held_ids = load_ids(meta['heldout'])
    seq_lens = [int(s) for s in a.seq_lens.split(',')]
    for L in seq_lens:
        if a.tokens_per_step % L or L > a.n_positions:
            sys.exit(f'seq len {L}: must divide --tokens-per-step and be <= n_positions')

    log('# micro-gpt2 training log (scripts/train/train_micro.py)')
    log('command:', ' '.join([sys.executable] + sys.argv))
    log('date:', datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))
    log('host:', platform.platform(), f'| python {platform.python_version()} | torch {torch.__version__} | threads {torch.get_num_threads()} | cpus {os.cpu_count()} | mallopt {MALLOPT}')
    log('corpus:', meta['corpus']['package'], f"(package.json license: {meta['corpus']['package_license']}),", meta['corpus']['documents'], 'documents')
    log('corpus README (origin and license):')
    for line in meta['corpus']['readme'].splitlines():
        log('  |', line)
    log('tokenizer:', meta['tokenizer'])
    log('split:', meta['split_rule'])
    log('  held-out files:', ', '.join(meta['heldout']['files']))
    log(f"  train:    {meta['train']['documents']} documents, {meta['train']['words']} words, {len(train_ids)} tokens, sha256 {meta['train']['sha256']}")
    log(f"  held-out: {meta['heldout']['documents']} documents, {meta['heldout']['words']} words, {len(held_ids)} tokens, sha256 {meta['heldout']['sha256']}")

    model = MicroGPT2(a.n_layer, a.n_embd, a.n_head, a.n_positions)
    n_params = sum(p.numel() for p in model.parameters())
    n_emb = model.p('wte.weight').numel() + model.p('wpe.weight').numel()
    log(f'model: GPT-2, n_layer {a.n_layer}, n_embd {a.n_embd}, n_head {a.n_head}, n_positions {a.n_positions}, vocab {VOCAB}, tied LM head, '
        f'gelu_new, pre-LN, eps 1e-5; {n_params} parameters ({n_emb} in wte+wpe, {n_params - n_emb} in the blocks and ln_f)')
    log(f'init: N(0, 0.02²) embeddings and weights, residual projections N(0, (0.02/sqrt(2·n_layer))²), biases 0, LN 1/0; seed {a.seed}')
    log(f'hyperparameters: AdamW(betas 0.9/0.95, eps 1e-8), lr {a.lr} peak, warmup {a.warmup:.0%} of the run then cosine to {a.min_lr_frac}×, '
        f'weight decay {a.weight_decay} on 2-D weights only, grad clip {a.grad_clip}, no dropout; '
        + ('bf16 autocast for the training forward/backward (fp32 weights, optimizer and loss)' if a.precision == 'bf16' else 'fp32')
        + '; all evaluations in fp32')
    log(f'batches: {a.tokens_per_step} tokens per step; each step draws a sequence length from {seq_lens} (seeded, uniform) and '
        f'takes tokens-per-step/length windows at uniformly random offsets in the train stream (so every position up to '
        f'{max(seq_lens) - 1} is trained)')
    log('budget:', f'--steps {a.steps} (schedule on steps)' if a.steps else f'--minutes {a.minutes} of training time (schedule on elapsed time; evals not counted)')

    decay = [p for n, p in model.named_hf() if p.dim() == 2]
    no_decay = [p for n, p in model.named_hf() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': a.weight_decay}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(a.seed)

    def lr_at(progress):
        if progress < a.warmup:
            return a.lr * max(progress, 1e-3) / a.warmup
        q = min(1.0, (progress - a.warmup) / max(1e-9, 1 - a.warmup))
        return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * q)))

    init = evaluate(model, held_ids, a.n_positions, a.eval_tokens_mid)
    log(f"held-out at init (first {init['tokens']} tokens): loss {init['loss']:.4f}, ppl {init['ppl']:.1f} (ln 50257 = {math.log(VOCAB):.4f})")
    log('step  progress  seq_len  lr        loss    tokens_seen  epochs  train_s  tok/s')

    budget_s = a.minutes * 60
    train_s = 0.0
    step = 0
    tokens_seen = 0
    run_loss, run_n = 0.0, 0
    next_eval = a.eval_every
    curve = []
    evals = [{'step': 0, **{k: init[k] for k in ('tokens', 'loss', 'ppl')}}]
    wall0 = time.time()
    while True:
        progress = step / a.steps if a.steps else train_s / budget_s
        if progress >= 1:
            break
        t0 = time.time()
        L = seq_lens[int(torch.randint(len(seq_lens), (1,), generator=gen))]
        B = a.tokens_per_step // L
        starts = torch.randint(len(train_ids) - L - 1, (B,), generator=gen)
        batch = torch.stack([train_ids[s:s + L + 1] for s in starts.tolist()])
        lr = lr_at(progress)
        for g in opt.param_groups:
            g['lr'] = lr
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=a.precision == 'bf16'):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        train_s += time.time() - t0
        step += 1
        tokens_seen += B * L
        run_loss += loss.item()
        run_n += 1
        if step % a.log_every == 0:
            mean = run_loss / run_n
            p_now = step / a.steps if a.steps else train_s / budget_s
            log(f'{step:5d}  {p_now:8.3f}  {L:7d}  {lr:.2e}  {mean:.4f}  {tokens_seen:11d}  {tokens_seen / len(train_ids):6.2f}  {train_s:7.0f}  {tokens_seen / train_s:5.0f}')
            curve.append({'step': step, 'tokens_seen': tokens_seen, 'train_s': round(train_s, 1), 'lr': lr, 'loss': round(mean, 4)})
            run_loss, run_n = 0.0, 0
        p_now = step / a.steps if a.steps else train_s / budget_s
        if p_now >= next_eval and p_now < 1:
            next_eval += a.eval_every
            e = evaluate(model, held_ids, a.n_positions, a.eval_tokens_mid)
            log(f"  held-out (first {e['tokens']} tokens) at step {step}: loss {e['loss']:.4f}, ppl {e['ppl']:.2f}")
            evals.append({'step': step, **{k: e[k] for k in ('tokens', 'loss', 'ppl')}})
    wall_train = time.time() - wall0
    log(f'trained {step} steps, {tokens_seen} tokens ({tokens_seen / len(train_ids):.2f} epochs) in {train_s:.0f} s of training '
        f'({train_s / 60:.1f} min; {tokens_seen / train_s:.0f} tokens/s), {wall_train:.0f} s wall including the midway evals')

    # Round to fp16 (what is saved) and evaluate that.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.float16).to(torch.float32))
    t0 = time.time()
    final = evaluate(model, held_ids, a.n_positions)
    sample = evaluate(model, held_ids[:a.sample_tokens], a.n_positions)
    log(f"final held-out (fp16 weights, all {final['tokens']} predicted tokens, non-overlapping {a.n_positions}-token windows): "
        f"loss {final['loss']:.4f} nats/token, perplexity {final['ppl']:.2f}  ({time.time() - t0:.0f} s)")
    for k, v in final['bands'].items():
        log(f"  {k:13s} {v['tokens']:6d} tokens  loss {v['loss']:.4f}  ppl {v['ppl']:.2f}")
    log(f"test sample (the first {a.sample_tokens} held-out tokens, one window): loss {sample['loss']:.6f}, perplexity {sample['ppl']:.4f}")

    # Baseline: add-one-smoothed unigram model of the training tokens.
    counts = torch.bincount(train_ids, minlength=VOCAB).double() + 1
    logp = (counts / counts.sum()).log()
    uni = -logp[held_ids[1:]].mean().item()
    log(f'baseline: add-one unigram of the train tokens on the same held-out tokens: loss {uni:.4f}, perplexity {math.exp(uni):.1f}')

    decode = gpt2_decoder(meta['encoder_json'])
    samples = []
    for pr in meta['prompts']:
        out = greedy(model, pr['ids'], 40)
        samples.append({'prompt': pr['text'], 'greedy_ids': out, 'greedy_text': decode(out)})
        log(f"greedy: {pr['text']!r} → {decode(out)!r}")

    st_path = os.path.join(a.out, 'model.safetensors')
    write_safetensors(st_path, model.named_hf(), {'format': 'pt'})
    digest = sha256_file(st_path)
    size = os.path.getsize(st_path)
    with open(os.path.join(a.out, 'config.json'), 'w', encoding='utf-8') as f:
        json.dump(hf_config(a), f, indent=2)
        f.write('\n')
    with open(os.path.join(a.out, 'generation_config.json'), 'w', encoding='utf-8') as f:
        json.dump({'_from_model_config': True, 'bos_token_id': EOT, 'eos_token_id': EOT}, f, indent=2)
        f.write('\n')
    log(f'model.safetensors: {size} bytes, F16, {len(model.names)} tensors, sha256 {digest}')

    summary = {
        'model': {'n_layer': a.n_layer, 'n_embd': a.n_embd, 'n_head': a.n_head, 'n_positions': a.n_positions, 'vocab_size': VOCAB,
                  'parameters': n_params},
        'model_safetensors': {'bytes': size, 'dtype': 'F16', 'sha256': digest},
        'corpus': {k: meta['corpus'][k] for k in ('package', 'package_license', 'documents')},
        'split': {'rule': meta['split_rule'], 'heldout_files': meta['heldout']['files'],
                  'train_tokens': len(train_ids), 'heldout_tokens': len(held_ids),
                  'train_sha256': meta['train']['sha256'], 'heldout_sha256': meta['heldout']['sha256']},
        'training': {'command': ' '.join([sys.executable] + sys.argv), 'torch': torch.__version__, 'threads': torch.get_num_threads(),
                     'seed': a.seed, 'precision': a.precision, 'steps': step, 'tokens_seen': tokens_seen, 'epochs': tokens_seen / len(train_ids),
                     'train_seconds': round(train_s, 1), 'wall_seconds': round(wall_train, 1),
                     'lr': a.lr, 'tokens_per_step': a.tokens_per_step, 'seq_lens': seq_lens},
        'heldout': {'tokens': final['tokens'], 'loss': final['loss'], 'perplexity': final['ppl'], 'bands': final['bands'],
                    'window': a.n_positions, 'weights': 'fp16 as saved'},
        'test_sample': {'tokens': a.sample_tokens, 'what': f'the first {a.sample_tokens} tokens of heldout.u16, one window',
                        'loss': sample['loss'], 'perplexity': sample['ppl']},
        'unigram_baseline': {'loss': uni, 'perplexity': math.exp(uni)},
        'midway_evals': evals,
        'loss_curve': curve,
        'greedy': samples,
    }
    with open(os.path.join(a.out, 'train-summary.json'), 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
        f.write('\n')
    log('wrote', ', '.join(os.path.join(a.out, n) for n in ('model.safetensors', 'config.json', 'generation_config.json', 'train-log.txt', 'train-summary.json')))
    logf.close()


if __name__ == '__main__':
    main()
