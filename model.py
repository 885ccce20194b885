"""
Every model variant of tinystories-lab in one file, selected by `model_name`.

The baseline is a GPT-2-shaped decoder with the modern updates: pre-norm RMSNorm, SwiGLU MLP,
rotary position embeddings, causal attention through scaled_dot_product_attention (FlashAttention
where the device has it), tied input/output embeddings and a vocabulary padded to a multiple of 64.
A variant is a name in MODEL_REGISTRY that sets a few GPTConfig fields; the modules below read those
fields. This file also owns generation (with a key/value cache), log-likelihood scoring and the one
checkpoint format (save_checkpoint / load_checkpoint) that every script uses.

    from model import make_config, GPT
    model = GPT(make_config('gqa', n_layer=4, n_head=4, n_embd=256, block_size=256))
"""
import math
import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

# -----------------------------------------------------------------------------
# configuration and the variant registry


@dataclass
class GPTConfig:
    model_name: str = 'baseline'    # a name in MODEL_REGISTRY
    block_size: int = 512           # longest context
    vocab_size: int = 50257         # the tokenizer's; the embedding is padded to a multiple of 64
    n_layer: int = 8                # transformer blocks
    n_head: int = 8                 # query heads per attention layer
    n_kv_head: int | None = None    # None: n_head (multi-head); fewer: grouped-query; 1: multi-query
    n_embd: int = 512               # model width
    mlp_hidden: int | None = None   # None: 8/3*n_embd rounded up to 64 (SwiGLU) or 4*n_embd (GELU)
    dropout: float = 0.0            # on embeddings, attention and residual branches
    bias: bool = False              # biases in Linear and LayerNorm
    norm: str = 'rmsnorm'           # 'rmsnorm' | 'layernorm'
    mlp: str = 'swiglu'             # 'swiglu' | 'gelu'
    pos_emb: str = 'rope'           # 'rope' | 'learned' (absolute, GPT-2)
    rope_base: float = 10000.0      # rotary embedding base (theta)
    residual_scale: str = 'none'    # 'none' | 'fixed' | 'learned' (see Block)
    qk_norm: bool = False           # RMSNorm on queries and keys per head
    attn_impl: str = 'sdpa'         # 'sdpa' (Flash/efficient kernels) | 'math' (plain softmax(QK^T)V)

    def __post_init__(self):
        choices = dict(norm=('rmsnorm', 'layernorm'), mlp=('swiglu', 'gelu'), pos_emb=('rope', 'learned'),
                       residual_scale=('none', 'fixed', 'learned'), attn_impl=('sdpa', 'math'))
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r}: expected one of {', '.join(allowed)}")
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        for key in ('block_size', 'vocab_size', 'n_layer', 'n_head', 'n_kv_head', 'n_embd'):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r}: expected a positive integer")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be divisible by n_kv_head={self.n_kv_head}")
        if self.pos_emb == 'rope' and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rotary embeddings need an even head size, got n_embd/n_head={self.n_embd // self.n_head}")

    @property
    def padded_vocab_size(self):
        return 64 * math.ceil(self.vocab_size / 64)  # 50257 -> 50304: matmuls on multiples of 64 are faster


# A variant = the config fields it sets. Fields a user sets explicitly win over these.
MODEL_REGISTRY = {
    'baseline': dict(),
    # depth scaling moved from the init into the forward pass: each branch times 1/sqrt(2*n_layer)
    'residual_scaling': dict(residual_scale='fixed'),
    # the same, but a learnable scalar per branch and layer, initialised at 1/sqrt(2*n_layer)
    'residual_scaling_learned': dict(residual_scale='learned'),
    'gqa': dict(n_kv_head=2),     # grouped-query attention: n_head query heads share 2 key/value heads
    'mqa': dict(n_kv_head=1),     # multi-query attention
    'qk_norm': dict(qk_norm=True),
    # the classic GPT-2 block, so that "modern vs classic" is one flag away
    'gpt2': dict(norm='layernorm', mlp='gelu', pos_emb='learned', bias=True),
}


def make_config(model_name='baseline', **overrides):
    """GPTConfig for a registered variant; overrides that are None leave the variant's choice."""
    if model_name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model_name {model_name!r}: expected one of {', '.join(MODEL_REGISTRY)}")
    known = {f.name for f in fields(GPTConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown model setting(s) {', '.join(unknown)}: expected some of {', '.join(sorted(known))}")
    settings = dict(MODEL_REGISTRY[model_name])
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings['model_name'] = model_name
    return GPTConfig(**settings)

# -----------------------------------------------------------------------------
# modules


def make_norm(config, dim):
    if config.norm == 'rmsnorm':
        return nn.RMSNorm(dim, eps=1e-6)
    return nn.LayerNorm(dim, bias=config.bias)


def rope_tables(head_dim, length, base):
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate pairs (x[i], x[i + d/2]) of x (B, H, T, d) by position-dependent angles (GPT-NeoX layout)."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.type_as(x), sin.type_as(x)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def attention(q, k, v, mask, impl, dropout_p):
    """softmax(q k^T / sqrt(d)) v; mask None means plain causal, else a bool (B, 1, Tq, Tk), True = attend."""
    if impl == 'sdpa' and mask is None:  # the training path: FlashAttention takes GQA directly
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True,
                                              enable_gqa=k.size(1) != q.size(1))
    if k.size(1) != q.size(1):  # masked kernels need one key/value head per query head
        k = k.repeat_interleave(q.size(1) // k.size(1), dim=1)
        v = v.repeat_interleave(q.size(1) // v.size(1), dim=1)
    if impl == 'sdpa':
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    if mask is None:
        mask = torch.ones(q.size(2), k.size(2), dtype=torch.bool, device=q.device).tril()
    att = att.masked_fill(~mask, float('-inf')).softmax(dim=-1)
    return F.dropout(att, p=dropout_p, training=dropout_p > 0) @ v


class CausalSelfAttention(nn.Module):

    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        self.q_size, self.kv_size = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        self.c_attn = nn.Linear(config.n_embd, self.q_size + 2 * self.kv_size, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.q_norm = make_norm(config, self.head_dim) if config.qk_norm else None
        self.k_norm = make_norm(config, self.head_dim) if config.qk_norm else None
        self.dropout, self.impl = config.dropout, config.attn_impl

    def forward(self, x, rope=None, mask=None, cache=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split([self.q_size, self.kv_size, self.kv_size], dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        y = attention(q, k, v, mask, self.impl, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(self.c_proj(y), p=self.dropout, training=self.training)


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.swiglu = config.mlp == 'swiglu'
        hidden = config.mlp_hidden or (64 * math.ceil(8 * config.n_embd / 3 / 64) if self.swiglu else 4 * config.n_embd)
        # SwiGLU's gate and up projections are one matmul, split after
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.swiglu else hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x):
        if self.swiglu:
            gate, up = self.c_fc(x).chunk(2, dim=-1)
            x = F.silu(gate) * up
        else:
            x = F.gelu(self.c_fc(x), approximate='tanh')
        return F.dropout(self.c_proj(x), p=self.dropout, training=self.training)


class Block(nn.Module):
    """Pre-norm block. residual_scale 'fixed' multiplies each branch by 1/sqrt(2*n_layer) (and the
    init no longer scales the output projections, so the two variants start from the same function);
    'learned' makes that factor a learnable scalar per branch and layer."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)
        scale = 1.0 / math.sqrt(2 * config.n_layer)
        if config.residual_scale == 'fixed':
            self.register_buffer('res_scale', torch.full((2,), scale), persistent=False)
        elif config.residual_scale == 'learned':
            self.res_scale = nn.Parameter(torch.full((2,), scale))
        else:
            self.res_scale = None

    def forward(self, x, rope=None, mask=None, cache=None):
        a = self.attn(self.ln_1(x), rope, mask, cache)
        if self.res_scale is not None:
            a = a * self.res_scale[0]
        x = x + a
        m = self.mlp(self.ln_2(x))
        if self.res_scale is not None:
            m = m * self.res_scale[1]
        return x + m


class KVCache:
    """Keys and values of every layer for generation, preallocated to max_len positions."""

    def __init__(self, config, batch_size, max_len, device, dtype):
        shape = (config.n_layer, batch_size, config.n_kv_head, max_len, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # positions filled so far; GPT.hidden advances it after all layers

    def update(self, layer, k, v):
        end = self.pos + k.size(2)
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd) if config.pos_emb == 'learned' else None,
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=make_norm(config, config.n_embd),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied embeddings
        if config.pos_emb == 'rope':
            cos, sin = rope_tables(config.n_embd // config.n_head, config.block_size, config.rope_base)
            self.register_buffer('rope_cos', cos, persistent=False)
            self.register_buffer('rope_sin', sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2: residual output projections scaled down by depth, unless the variant scales in forward
        if config.residual_scale == 'none':
            for name, p in self.named_parameters():
                if name.endswith('c_proj.weight'):
                    torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=False):
        """Parameter count; non_embedding drops the (tied) token and the position embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel()
            if self.transformer.wpe is not None:
                n -= self.transformer.wpe.weight.numel()
        return n

    def layer_groups(self):
        """{layer name: its parameters}, in depth order: 'embed' (token and position embeddings; the
        tied lm_head is the token embedding), 'block_0'.., 'final_norm'. train.py logs a norm per layer."""
        groups = {'embed': [p for p in (self.transformer.wte.weight, getattr(self.transformer.wpe, 'weight', None))
                            if p is not None]}
        for i, block in enumerate(self.transformer.h):
            groups[f'block_{i}'] = list(block.parameters())
        groups['final_norm'] = list(self.transformer.ln_f.parameters())
        return groups

    def hidden(self, idx, pos=None, mask=None, cache=None):
        """Final-norm hidden states (B, T, C). pos (B, T) gives each token's position (default
        0..T-1 after what the cache holds); mask as in attention()."""
        B, T = idx.size()
        if pos is None:
            start = cache.pos if cache is not None else 0
            if start + T > self.config.block_size:
                raise ValueError(f"sequence of {start + T} tokens is longer than block_size={self.config.block_size}")
            pos = slice(start, start + T)
        x = self.transformer.wte(idx)
        rope = None
        if self.transformer.wpe is not None:
            x = x + (self.transformer.wpe.weight[pos])
        else:
            cos, sin = self.rope_cos[pos], self.rope_sin[pos]  # (T, d/2) or (B, T, d/2)
            rope = (cos.unsqueeze(-3), sin.unsqueeze(-3))      # broadcast over heads
        x = F.dropout(x, p=self.config.dropout, training=self.training)
        for block in self.transformer.h:
            x = block(x, rope, mask, cache)
        if cache is not None:
            cache.pos += T
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, reduction='mean'):
        """Training: (logits, cross-entropy over targets != -1: the mean, or per token (B, T) with
        reduction='none'). Inference: (last-position logits, None)."""
        x = self.hidden(idx)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=reduction)
        return logits, loss.view(targets.shape) if reduction == 'none' else loss

    # -------------------------------------------------------------------------
    # cost

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token, PaLM appendix B: 6N + 12 * n_layer * n_embd * T."""
        cfg = self.config
        n = self.num_params() - (self.transformer.wpe.weight.numel() if self.transformer.wpe is not None else 0)
        return 6 * n + 12 * cfg.n_layer * cfg.n_embd * (seq_len or cfg.block_size)

    def estimate_mfu(self, tokens_per_s, device=None, peak_flops=None, seq_len=None):
        """Model FLOPs utilisation against the device's dense bf16 peak; None where the peak is unknown."""
        peak = peak_flops or device_peak_flops(device)
        if not peak:
            return None
        return self.flops_per_token(seq_len) * tokens_per_s / peak

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW; weight decay on matrices (2-D and up) only, never on norms, biases or scalars."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [dict(params=[p for p in params if p.dim() >= 2], weight_decay=weight_decay),
                  dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0)]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == 'cuda')

    # -------------------------------------------------------------------------
    # generation and scoring

    def vocab_logits(self, h):
        """fp32 logits over the tokenizer's vocabulary only: padding ids can never be generated."""
        return F.linear(h, self.lm_head.weight[:self.config.vocab_size]).float()

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens, temperature=0.0, top_k=None, eot_token=50256, generator=None):
        """Continue each prompt (a list of token ids; lengths may differ) in one batch with a key/value
        cache. temperature 0 is greedy. Stops a row at eot_token (not returned) or after max_new_tokens.
        Prompts longer than block_size - max_new_tokens keep their last tokens. Returns lists of new ids."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("generate: every prompt needs at least one token")
        if max_new_tokens < 1 or max_new_tokens >= self.config.block_size:
            raise ValueError(f"max_new_tokens={max_new_tokens}: expected 1..{self.config.block_size - 1} (block_size)")
        was_training = self.training
        self.eval()
        device = self.lm_head.weight.device
        keep = self.config.block_size - max_new_tokens
        prompts = [list(p)[-keep:] for p in prompts]
        B, L = len(prompts), max(len(p) for p in prompts)
        # left-pad so every row's last prompt token sits at column L-1; pads are never attended to
        pad = torch.tensor([L - len(p) for p in prompts], device=device)
        idx = torch.tensor([[0] * (L - len(p)) + p for p in prompts], device=device)
        cols = torch.arange(L + max_new_tokens, device=device)
        key_ok = cols[None, :] >= pad[:, None]                        # (B, total)
        row_pos = (cols[None, :] - pad[:, None]).clamp(min=0)         # each row's own positions
        cache = KVCache(self.config, B, L + max_new_tokens, device, self.lm_head.weight.dtype)
        out = [[] for _ in range(B)]
        done = [False] * B
        start, x = 0, idx
        for _ in range(max_new_tokens):
            T = x.size(1)
            q_cols, k_cols = cols[start:start + T, None], cols[None, :start + T]
            # real keys up to the query; a pad query sees itself only, so no row is all -inf (NaN)
            mask = (key_ok[:, None, :start + T] | (k_cols == q_cols)) & (k_cols <= q_cols)
            mask = mask.unsqueeze(1)  # (B, 1, T, start+T)
            h = self.hidden(x, row_pos[:, start:start + T], mask, cache)
            logits = self.vocab_logits(h[:, -1, :])
            if temperature == 0:  # (torch's CPU argmax over 50k columns is several times slower than numpy's)
                nxt = torch.from_numpy(logits.numpy().argmax(-1)) if logits.is_cpu else logits.argmax(dim=-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float('-inf'))
                nxt = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)
            for b, t in enumerate(nxt.tolist()):
                if not done[b]:
                    done[b] = t == eot_token
                    if not done[b]:
                        out[b].append(t)
            if all(done):
                break
            start += T
            x = nxt[:, None]
        self.train(was_training)
        return out

    @torch.no_grad()
    def score(self, prompts, continuations, batch_size=32):
        """Log-likelihood of each continuation after its prompt (lists of token ids), the way
        lm-evaluation-harness scores multiple choice. Returns (sum of log-probs, is_greedy) per pair.
        Sequences longer than block_size + 1 keep their last tokens."""
        if len(prompts) != len(continuations):
            raise ValueError(f"score: {len(prompts)} prompts but {len(continuations)} continuations")
        was_training = self.training
        self.eval()
        device = self.lm_head.weight.device
        logprobs, greedy = [], []
        for i in range(0, len(prompts), batch_size):
            seqs, n_cont = [], []
            for p, c in zip(prompts[i:i + batch_size], continuations[i:i + batch_size]):
                if not p or not c:
                    raise ValueError("score: prompts and continuations need at least one token each")
                seqs.append((list(p) + list(c))[-(self.config.block_size + 1):])
                n_cont.append(len(c))
            L = max(len(s) for s in seqs) - 1
            # right padding: a causal model's earlier positions never see it
            inputs = torch.tensor([s[:-1] + [0] * (L - len(s) + 1) for s in seqs], device=device)
            # the vocabulary projection only where a continuation token is predicted: it dominates small models
            rows = torch.tensor([b for b, n in enumerate(n_cont) for _ in range(n)], device=device)
            cols = torch.tensor([len(s) - 1 - n + j for s, n in zip(seqs, n_cont) for j in range(n)], device=device)
            target = torch.tensor([t for s, n in zip(seqs, n_cont) for t in s[-n:]], device=device)
            logits = self.vocab_logits(self.hidden(inputs)[rows, cols])
            token_lp = logits.log_softmax(dim=-1).gather(1, target[:, None]).squeeze(1)
            hit = logits.argmax(dim=-1) == target
            logprobs += torch.stack([lp.sum() for lp in token_lp.split(n_cont)]).tolist()
            greedy += torch.stack([h.all() for h in hit.split(n_cont)]).tolist()
        self.train(was_training)
        return logprobs, greedy

# -----------------------------------------------------------------------------
# the device every script runs on


def pick_device(name='auto'):
    """'auto': cuda, then mps, then cpu. A named device that this machine lacks is a ValueError
    with one line that says what is there instead."""
    if name == 'auto':
        if torch.cuda.is_available():
            return 'cuda'
        if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available():
            return 'mps'
        return 'cpu'
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r}: no CUDA device is visible here; use --device=cpu (or auto)")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {name!r}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
    elif dev.type == 'mps' and not (getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r}: MPS is not available here; use --device=cpu (or auto)")
    elif dev.type not in ('cpu', 'cuda', 'mps'):
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    return name

# -----------------------------------------------------------------------------
# device peaks for MFU

# dense bf16 tensor-core peak by device name (longest match wins); pass peak_flops for anything else
PEAK_FLOPS = {
    'H100': 989e12, 'H100 PCIe': 756e12, 'H100 NVL': 835e12, 'H200': 989e12, 'GH200': 989e12,
    'B200': 2250e12, 'A100': 312e12, 'A10G': 70e12, 'A10': 125e12, 'L40S': 362e12, 'L4': 121e12,
    'RTX 4090': 165e12, 'RTX 3090': 71e12, 'V100': 125e12, 'T4': 65e12,
}


def device_peak_flops(device=None):
    """Peak FLOPS of a CUDA device from PEAK_FLOPS, or None (CPU, MPS, unknown card)."""
    if device is None or torch.device(device).type != 'cuda' or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    matches = [k for k in PEAK_FLOPS if k in name]
    return PEAK_FLOPS[max(matches, key=len)] if matches else None

# -----------------------------------------------------------------------------
# the checkpoint format: one save, one load, used by every script

CHECKPOINT_FORMAT = 'tinystories-lab/1'


class CheckpointError(ValueError):
    pass


def unwrap(model):
    """The plain GPT inside DDP and/or torch.compile wrappers."""
    model = getattr(model, 'module', model)
    return getattr(model, '_orig_mod', model)


def save_checkpoint(path, model, optimizer=None, **state):
    """Save weights, the model config, the optimizer and any training state (plain values and tensors),
    atomically through runs.atomic_write: a kill or a full disk leaves the old file or the new one."""
    from runs import atomic_write  # the project's one atomic write (runs.py imports nothing heavy)
    raw = unwrap(model)
    ckpt = dict(format=CHECKPOINT_FORMAT, model_args=asdict(raw.config), model=raw.state_dict(),
                optimizer=optimizer.state_dict() if optimizer is not None else None, **state)
    atomic_write(path, lambda f: torch.save(ckpt, f))


def load_checkpoint(path, device='cpu'):
    """Rebuild the model a checkpoint describes and load its weights. Returns (model, checkpoint dict).
    Refuses, with CheckpointError naming the file, anything truncated, foreign or mismatched."""
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)  # moved to the device after
    except Exception as e:  # truncated zip, pickle garbage, ...
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {detail}") from None
    if not isinstance(ckpt, dict) or 'model_args' not in ckpt or 'model' not in ckpt:
        raise CheckpointError(f"{path}: not a tinystories-lab checkpoint (expected keys model_args and model)")
    try:
        model = GPT(GPTConfig(**ckpt['model_args']))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its model_args do not describe a model this model.py can build: {e}") from None
    state = {}
    for k, v in ckpt['model'].items():  # names saved from compiled or DDP-wrapped models
        for prefix in ('module.', '_orig_mod.'):
            k = k[len(prefix):] if k.startswith(prefix) else k
        state[k] = v
    missing, unexpected = model.state_dict().keys() - state.keys(), state.keys() - model.state_dict().keys()
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match its model_args (missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(unexpected)[:3]})")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match its model_args: {str(e).splitlines()[-1].strip()}") from None
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as e:  # the file is fine: the device is not
        raise CheckpointError(f"{path}: cannot move the model to device {device!r} "
                              f"({str(e).strip().splitlines()[0]}); try --device=cpu") from None
    return model, ckpt
