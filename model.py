"""
Every model variant of tinystories-lab in one file, selected by `model_name`.

The baseline is a GPT-2-shaped decoder with the modern updates: pre-norm RMSNorm, SwiGLU MLP,
rotary position embeddings, causal attention through scaled_dot_product_attention (FlashAttention
where the device has it), tied input/output embeddings and a vocabulary padded to a multiple of 64.
A variant is a name in MODEL_REGISTRY that sets a few GPTConfig fields; the modules below read those
fields. This file also owns generation (with a key/value cache) and log-likelihood scoring; the
checkpoint format (save_checkpoint / load_checkpoint) is runs.py's.

    from model import make_config, GPT
    model = GPT(make_config('gqa', n_layer=4, n_head=4, n_embd=256, block_size=256))
"""
import math
from dataclasses import dataclass, fields

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
    mlp_hidden: int | None = None   # None: 8/3*n_embd rounded up to 64 (SwiGLU) or 4*n_embd (GELU, ReLU²)
    dropout: float = 0.0            # on embeddings, attention and residual branches
    bias: bool = False              # biases in Linear and LayerNorm
    norm: str = 'rmsnorm'           # 'rmsnorm' | 'layernorm'
    mlp: str = 'swiglu'             # 'swiglu' | 'gelu' | 'relu2' (relu(x)², Primer)
    pos_emb: str = 'rope'           # 'rope' | 'learned' (absolute, GPT-2) | 'alibi' (distance bias) | 'none' (NoPE)
    rope_base: float = 10000.0      # rotary embedding base (theta)
    rope_fraction: float = 1.0      # share of each head's dims that rotary rotates; the rest carry no position
    residual_scale: str = 'none'    # 'none' | 'fixed' | 'learned' (see Block)
    qk_norm: bool = False           # RMSNorm on queries and keys per head
    attn_window: int = 0            # > 0: a token attends to itself and the attn_window - 1 tokens before it
    global_every: int = 0           # with attn_window: every global_every-th layer attends to the whole context
    logit_softcap: float = 0.0      # > 0: output logits are c*tanh(z/c) with c = logit_softcap, bounded by c
    tie_embeddings: bool = True     # False: the output head is its own matrix, not the input embedding
    parallel_block: bool = False    # attention and MLP read the same normed input and are summed (GPT-J)
    value_residual: bool = False    # layers after the first mix the first layer's values into theirs (learned)
    diff_attn: bool = False         # differential attention: two softmax maps subtracted (learned), per-head norm
    attn_gate: bool = False         # a sigmoid gate per head, from the layer input, on the attention output
    attn_sink: bool = False         # a learned logit per head in every softmax whose value is zero
    kv_latent_dim: int = 0          # > 0: multi-head latent attention (MLA); the cache holds this latent
    n_expert: int = 0               # > 0: mixture of experts, n_expert MLPs per block, top-k routed
    expert_top_k: int = 2           # experts each token runs through
    moe_aux_weight: float = 0.01    # weight of the load-balancing loss added to the training loss
    attn_impl: str = 'sdpa'         # 'sdpa' (Flash/efficient kernels) | 'math' (plain softmax(QK^T)V)
    optimizer: str = 'adamw'        # 'adamw' | 'muon' (Muon on the blocks' matrices, AdamW on the rest)
    muon_lr: float = 0.02           # Muon's peak learning rate; follows learning_rate's warmup and decay

    def __post_init__(self):
        choices = dict(norm=('rmsnorm', 'layernorm'), mlp=('swiglu', 'gelu', 'relu2'),
                       pos_emb=('rope', 'learned', 'alibi', 'none'), residual_scale=('none', 'fixed', 'learned'),
                       attn_impl=('sdpa', 'math'), optimizer=('adamw', 'muon'))
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r}: expected one of {', '.join(allowed)}")
        if self.kv_latent_dim and self.n_kv_head not in (None, self.n_head):
            raise ValueError(f"kv_latent_dim={self.kv_latent_dim} (MLA) cannot be combined with "
                             f"n_kv_head={self.n_kv_head}: the latent replaces the key/value heads")
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        for key in ('block_size', 'vocab_size', 'n_layer', 'n_head', 'n_kv_head', 'n_embd'):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r}: expected a positive integer")
        for key in ('attn_window', 'global_every', 'kv_latent_dim', 'n_expert'):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                raise ValueError(f"{key}={getattr(self, key)!r}: expected 0 (off) or a positive integer")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be divisible by n_kv_head={self.n_kv_head}")
        if not 0 < self.rope_fraction <= 1:
            raise ValueError(f"rope_fraction={self.rope_fraction}: expected a fraction in (0, 1]")
        if self.logit_softcap < 0:
            raise ValueError(f"logit_softcap={self.logit_softcap}: expected 0 (off) or a positive cap")
        # settings that cannot work together: one line naming both
        rope_set = [f"{k}={getattr(self, k)}" for k, default in (('rope_fraction', 1.0), ('rope_base', 10000.0))
                    if getattr(self, k) != default]
        if self.pos_emb != 'rope' and rope_set:
            raise ValueError(f"pos_emb={self.pos_emb!r} has no rotary embedding, but {rope_set[0]} is a RoPE setting "
                             f"(it needs pos_emb='rope')")
        if self.global_every and not self.attn_window:
            raise ValueError(f"global_every={self.global_every} alternates windowed and global layers: it needs "
                             f"attn_window > 0 (got attn_window=0)")
        if self.kv_latent_dim:
            clash = [s for s, on in ((f"pos_emb={self.pos_emb!r}", self.pos_emb != 'rope'),
                                     ('diff_attn=True', self.diff_attn), ('value_residual=True', self.value_residual),
                                     ('qk_norm=True', self.qk_norm)) if on]
            if clash:
                raise ValueError(f"kv_latent_dim={self.kv_latent_dim} (MLA, with its decoupled RoPE keys) cannot be "
                                 f"combined with {clash[0]}")
            if self.head_dim % 4:
                raise ValueError(f"kv_latent_dim={self.kv_latent_dim} (MLA) rotates head_dim/2 dims and needs a "
                                 f"head size divisible by 4, got n_embd/n_head={self.head_dim}")
        if self.diff_attn and self.head_dim % (4 if self.pos_emb == 'rope' else 2):
            raise ValueError(f"diff_attn=True splits each head in two halves and needs a head size divisible by "
                             f"{4 if self.pos_emb == 'rope' else 2}, got n_embd/n_head={self.head_dim}")
        if self.pos_emb == 'rope' and self.rope_dims < 2:
            raise ValueError(f"rope_fraction={self.rope_fraction} rotates no pair of the {self.head_dim} dims per "
                             f"head: raise it or the head size")
        if self.pos_emb == 'rope' and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rotary embeddings need an even head size, got n_embd/n_head={self.n_embd // self.n_head}")
        if self.n_expert and not 1 <= self.expert_top_k <= self.n_expert:
            raise ValueError(f"expert_top_k={self.expert_top_k} with n_expert={self.n_expert}: "
                             f"expected 1..{self.n_expert}")

    @property
    def padded_vocab_size(self):
        return 64 * math.ceil(self.vocab_size / 64)  # 50257 -> 50304: matmuls on multiples of 64 are faster

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    @property
    def rope_dims(self):
        """Dims per query/key head that rotary rotates: MLA's decoupled part (head_dim/2), else rope_fraction
        of a head (of a half head with diff_attn), rounded down to pairs."""
        if self.kv_latent_dim:
            return self.head_dim // 2
        dims = self.head_dim // 2 if self.diff_attn else self.head_dim
        return 2 * int(dims * self.rope_fraction / 2)


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
    # the model zoo: modifications tested in 2024-2026 (README: "The model zoo" says what and where from)
    'relu2': dict(mlp='relu2'),                       # Primer (So et al. 2021)
    'nope': dict(pos_emb='none'),                     # NoPE (Kazemnejad et al. 2023)
    'alibi': dict(pos_emb='alibi'),                   # ALiBi (Press et al. 2021)
    'partial_rope': dict(rope_fraction=0.25),         # GPT-NeoX, GPT-J
    'sliding_window': dict(attn_window=32),           # Mistral; Gemma 2
    'local_global': dict(attn_window=32, global_every=2),  # GPT-Neo (TinyStories' models); Gemma 2
    'softcap': dict(logit_softcap=30.0),              # Gemma 2; modded-nanogpt
    'untied': dict(tie_embeddings=False),             # modded-nanogpt
    'parallel': dict(parallel_block=True),            # GPT-J; PaLM
    'value_residual': dict(value_residual=True),      # ResFormer (Zhou et al. 2024)
    'diff_attn': dict(diff_attn=True),                # Differential Transformer (Ye et al. 2024)
    'gated_attn': dict(attn_gate=True),               # gated attention (Qiu et al. 2025)
    'attn_sink': dict(attn_sink=True),                # gpt-oss; StreamingLLM
    'mla': dict(kv_latent_dim=32),                    # multi-head latent attention (DeepSeek-V2)
    'moe': dict(n_expert=4, expert_top_k=2),          # top-2 of 4 experts (Switch; ST-MoE)
    'muon': dict(optimizer='muon'),                   # the baseline trained with Muon (Jordan et al. 2024)
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


def rope_tables(rope_dims, length, base):
    inv_freq = 1.0 / (base ** (torch.arange(0, rope_dims, 2, dtype=torch.float32) / rope_dims))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate pairs (x[i], x[i + r/2]) of the first r = 2 * cos.size(-1) dims of x (B, H, T, d) by
    position-dependent angles (GPT-NeoX layout); with r < d (partial rotary) the other dims pass as they are."""
    r = 2 * cos.size(-1)
    x1, x2 = x[..., :r // 2], x[..., r // 2:r]
    cos, sin = cos.type_as(x), sin.type_as(x)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, x[..., r:]], dim=-1)


def alibi_slopes(n_head):
    """ALiBi's per-head slopes m: 2^(-8/n), 2^(-16/n), ... for n heads (Press et al. 2021), and the
    paper's interleaving when n_head is not a power of 2."""
    n = 2 ** math.floor(math.log2(n_head))
    slopes = [2 ** (-8 * (i + 1) / n) for i in range(n)]
    slopes += [2 ** (-8 * (i + 1) / (2 * n)) for i in range(2 * n)][0::2][:n_head - n]
    return torch.tensor(slopes)


def attention(q, k, v, mask, impl, dropout_p, sink=None):
    """softmax(q k^T / sqrt(d)) v. mask: None is plain causal (the FlashAttention path); a bool (B|1, 1, Tq, Tk),
    True = attend; or a float bias added to the scores, -inf = masked (ALiBi). sink (H,): one more logit per
    head in every softmax, for a key whose value is zero: a head can attend to nothing (attn_sink)."""
    if impl == 'sdpa' and mask is None and sink is None:  # the training path: FlashAttention takes GQA directly
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True,
                                              enable_gqa=k.size(1) != q.size(1))
    if k.size(1) != q.size(1):  # masked kernels need one key/value head per query head
        k = k.repeat_interleave(q.size(1) // k.size(1), dim=1)
        v = v.repeat_interleave(q.size(1) // v.size(1), dim=1)
    if mask is None:  # causal, aligned at the last query (a cache may hold earlier keys)
        Tq, Tk = q.size(2), k.size(2)
        mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)[None, None]
    if sink is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float('-inf'))
        mask = mask.expand(-1, q.size(1), -1, -1)
        mask = torch.cat([mask, sink.to(mask.dtype).view(1, -1, 1, 1).expand(mask.size(0), -1, mask.size(2), 1)], -1)
        k = torch.cat([k, k.new_zeros(*k.shape[:2], 1, k.size(3))], dim=2)
        v = torch.cat([v, v.new_zeros(*v.shape[:2], 1, v.size(3))], dim=2)
    if mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    if impl == 'sdpa':
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    att = att.masked_fill(~mask, float('-inf')) if mask.dtype == torch.bool else att + mask
    return F.dropout(att.softmax(dim=-1), p=dropout_p, training=dropout_p > 0) @ v


class CausalSelfAttention(nn.Module):
    """Multi-head attention (grouped-query with n_kv_head < n_head) and the attention modifications:
    a window (this layer's `window`, 0 = global), value residual, differential attention, a head gate, a
    sink logit, and multi-head latent attention (MLA: keys and values decompressed from a small latent,
    which is what the cache holds, plus one rotary key shared by the heads)."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = hd = config.head_dim
        self.q_size, self.kv_size = self.n_head * hd, self.n_kv_head * hd
        self.latent_dim = config.kv_latent_dim
        if self.latent_dim:
            r = config.rope_dims  # DeepSeek-V2: queries carry head_dim + r dims, the last r rotated
            self.c_q = nn.Linear(config.n_embd, self.n_head * (hd + r), bias=config.bias)
            self.c_kv_down = nn.Linear(config.n_embd, self.latent_dim + r, bias=config.bias)
            self.kv_norm = make_norm(config, self.latent_dim)
            self.c_kv_up = nn.Linear(self.latent_dim, 2 * self.n_head * hd, bias=config.bias)
        else:
            self.c_attn = nn.Linear(config.n_embd, self.q_size + 2 * self.kv_size, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.q_norm = make_norm(config, hd) if config.qk_norm else None
        self.k_norm = make_norm(config, hd) if config.qk_norm else None
        global_layer = config.global_every and (layer_idx + 1) % config.global_every == 0
        self.window = 0 if global_layer else config.attn_window
        # the first layer's values are the ones later layers mix in; lambda 0.5 as in ResFormer
        self.v_lambda = nn.Parameter(torch.tensor(0.5)) if config.value_residual and layer_idx > 0 else None
        self.diff = config.diff_attn
        if self.diff:  # lambda = exp(lq1.lk1) - exp(lq2.lk2) + lambda_init, Ye et al. 2024 eq. 2-3
            self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * layer_idx)
            self.diff_lambdas = nn.Parameter(torch.randn(4, hd // 2) * 0.1)
            self.head_norm = nn.RMSNorm(hd, eps=1e-6)
        self.c_gate = nn.Linear(config.n_embd, self.n_head, bias=False) if config.attn_gate else None
        self.sink = nn.Parameter(torch.zeros(self.n_head)) if config.attn_sink else None
        # attention's own training FLOPs per token and key: 6 * heads * (q.k width + a.v width)
        qk = hd + config.rope_dims if self.latent_dim else hd
        self.flops_per_key = 6 * self.n_head * (qk + (2 * hd if self.diff else hd))
        self.dropout, self.impl = config.dropout, config.attn_impl

    def heads_qkv(self, x, rope, cache):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split([self.q_size, self.kv_size, self.kv_size], dim=2)
        q = q.view(B, T, self.n_head, self.head_dim)
        k = k.view(B, T, self.n_kv_head, self.head_dim)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.diff:  # each head becomes two half heads: even ones make the first map, odd ones the second
            q = q.view(B, T, 2 * self.n_head, self.head_dim // 2)
            k = k.view(B, T, 2 * self.n_kv_head, self.head_dim // 2)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def latent_qkv(self, x, rope, cache):
        B, T, C = x.size()
        hd, r = self.head_dim, 2 * rope[0].size(-1)
        q = self.c_q(x).view(B, T, self.n_head, hd + r).transpose(1, 2)
        q = torch.cat([q[..., :hd], apply_rope(q[..., hd:], *rope)], dim=-1)
        latent, k_rope = self.c_kv_down(x).split([self.latent_dim, r], dim=2)
        latent, k_rope = self.kv_norm(latent), apply_rope(k_rope[:, None], *rope)  # (B, T, c), (B, 1, T, r)
        if cache is not None:
            latent, k_rope = cache.update(self.layer_idx, latent, k_rope)
        S = latent.size(1)
        k, v = self.c_kv_up(latent).view(B, S, self.n_head, 2 * hd).transpose(1, 2).split([hd, hd], dim=-1)
        return q, torch.cat([k, k_rope.expand(B, self.n_head, S, r)], dim=-1), v

    def forward(self, x, rope=None, mask=None, cache=None, v_first=None):
        """Returns the attention output and the first layer's values (for value_residual)."""
        B, T, C = x.size()
        qkv = self.latent_qkv if self.latent_dim else self.heads_qkv
        q, k, v = qkv(x, rope, cache)
        if self.v_lambda is not None:
            v = self.v_lambda * v + (1 - self.v_lambda) * v_first
        elif self.layer_idx == 0:
            v_first = v
        if cache is not None and not self.latent_dim:
            k, v = cache.update(self.layer_idx, k, v)
        dropout = self.dropout if self.training else 0.0
        if self.diff:
            lq1, lk1, lq2, lk2 = self.diff_lambdas
            lam = (lq1 @ lk1).exp() - (lq2 @ lk2).exp() + self.lambda_init
            y1 = attention(q[:, 0::2], k[:, 0::2], v, mask, self.impl, dropout, self.sink)
            y2 = attention(q[:, 1::2], k[:, 1::2], v, mask, self.impl, dropout, self.sink)
            y = self.head_norm(y1 - lam * y2) * (1 - self.lambda_init)
        else:
            y = attention(q, k, v, mask, self.impl, dropout, self.sink)
        if self.c_gate is not None:
            y = y * torch.sigmoid(self.c_gate(x)).transpose(1, 2)[..., None]
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(self.c_proj(y), p=self.dropout, training=self.training), v_first


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.kind = config.mlp
        hidden = config.mlp_hidden or (64 * math.ceil(8 * config.n_embd / 3 / 64) if self.kind == 'swiglu'
                                       else 4 * config.n_embd)
        # SwiGLU's gate and up projections are one matmul, split after
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.kind == 'swiglu' else hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x):
        if self.kind == 'swiglu':
            gate, up = self.c_fc(x).chunk(2, dim=-1)
            x = F.silu(gate) * up
        elif self.kind == 'relu2':
            x = F.relu(self.c_fc(x)).square()
        else:
            x = F.gelu(self.c_fc(x), approximate='tanh')
        return F.dropout(self.c_proj(x), p=self.dropout, training=self.training)


class MoE(nn.Module):
    """Top-k routed expert MLPs (Switch Transformer, ST-MoE): a linear router scores the n_expert MLPs for
    each token, the top_k best run, and their outputs are summed, weighted by the router's softmax
    renormalised over those k. aux_loss is Switch's load-balancing loss n_expert * sum_e f_e * p_e
    (f_e: share of routed slots, p_e: mean router probability; 1.0 when perfectly balanced)."""

    def __init__(self, config):
        super().__init__()
        self.top_k = config.expert_top_k
        self.router = nn.Linear(config.n_embd, config.n_expert, bias=False)
        self.experts = nn.ModuleList([MLP(config) for _ in range(config.n_expert)])
        self.aux_loss = self.chosen = None

    def forward(self, x):
        B, T, C = x.size()
        x = x.reshape(B * T, C)
        probs = self.router(x).float().softmax(dim=-1)  # (N, n_expert)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        share = F.one_hot(chosen, len(self.experts)).float().mean(dim=(0, 1))
        self.aux_loss = len(self.experts) * (share * probs.mean(dim=0)).sum()
        self.chosen = chosen  # (N, top_k): which experts each token ran through
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = (chosen == e).nonzero(as_tuple=True)
            out.index_add_(0, token, (expert(x[token]) * weights[token, slot, None]).to(out.dtype))
        return out.view(B, T, C)


class Block(nn.Module):
    """Pre-norm block. residual_scale 'fixed' multiplies each branch by 1/sqrt(2*n_layer) (and the
    init no longer scales the output projections, so the two variants start from the same function);
    'learned' makes that factor a learnable scalar per branch and layer. parallel_block: both branches
    read ln_1(x) and x + attn + mlp is the output (one norm, no ln_2)."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.parallel = config.parallel_block
        self.ln_2 = None if self.parallel else make_norm(config, config.n_embd)
        self.mlp = MoE(config) if config.n_expert else MLP(config)
        scale = 1.0 / math.sqrt(2 * config.n_layer)
        if config.residual_scale == 'fixed':
            self.register_buffer('res_scale', torch.full((2,), scale), persistent=False)
        elif config.residual_scale == 'learned':
            self.res_scale = nn.Parameter(torch.full((2,), scale))
        else:
            self.res_scale = None

    def forward(self, x, rope=None, mask=None, cache=None, v_first=None):
        h = self.ln_1(x)
        a, v_first = self.attn(h, rope, mask, cache, v_first)
        if self.res_scale is not None:
            a = a * self.res_scale[0]
        if not self.parallel:
            x = x + a
            h = self.ln_2(x)
        m = self.mlp(h)
        if self.res_scale is not None:
            m = m * self.res_scale[1]
        if self.parallel:
            return x + a + m, v_first
        return x + m, v_first


class KVCache:
    """What attention keeps of earlier tokens for generation, preallocated to max_len positions per
    layer: keys and values, or MLA's latent and shared rotary key. key_pos: each column's position."""

    def __init__(self, config, batch_size, max_len, device, dtype=None):
        self.layers = [None] * config.n_layer
        self.max_len = max_len
        self.key_pos = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)
        self.pos = 0  # positions filled so far; GPT.hidden advances it after all layers

    def update(self, layer, *tensors):
        """Store the new columns of each tensor (time on dim -2); returns each up to them."""
        end = self.pos + tensors[0].size(-2)
        if self.layers[layer] is None:
            self.layers[layer] = [t.new_zeros(*t.shape[:-2], self.max_len, t.size(-1)) for t in tensors]
        for buf, t in zip(self.layers[layer], tensors):
            buf[..., self.pos:end, :] = t
        return [buf[..., :end, :] for buf in self.layers[layer]]


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
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight
        if config.pos_emb == 'rope':
            cos, sin = rope_tables(config.rope_dims, config.block_size, config.rope_base)
            self.register_buffer('rope_cos', cos, persistent=False)
            self.register_buffer('rope_sin', sin, persistent=False)
        if config.pos_emb == 'alibi':
            self.register_buffer('alibi_slopes', alibi_slopes(config.n_head), persistent=False)
        self.aux_loss = None  # MoE: the last forward's load-balancing loss (detached), for the logs
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

    def num_params(self, non_embedding=False, active=False):
        """Parameter count; non_embedding drops the token and position embeddings (the tied output head
        with them); active counts only the top_k experts a token runs through (MoE)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel()
            if self.transformer.wpe is not None:
                n -= self.transformer.wpe.weight.numel()
        if active and self.config.n_expert:
            per_expert = sum(p.numel() for p in self.transformer.h[0].mlp.experts[0].parameters())
            n -= self.config.n_layer * (self.config.n_expert - self.config.expert_top_k) * per_expert
        return n

    def layer_groups(self):
        """{layer name: its parameters}, in depth order: 'embed' (token and position embeddings; a tied
        lm_head is the token embedding), 'block_0'.., 'final_norm', and 'head' when untied. train.py logs
        a norm per layer."""
        groups = {'embed': [p for p in (self.transformer.wte.weight, getattr(self.transformer.wpe, 'weight', None))
                            if p is not None]}
        for i, block in enumerate(self.transformer.h):
            groups[f'block_{i}'] = list(block.parameters())
        groups['final_norm'] = list(self.transformer.ln_f.parameters())
        if not self.config.tie_embeddings:
            groups['head'] = [self.lm_head.weight]
        return groups

    def attention_masks(self, q_pos, k_pos, allowed):
        """{window: mask for attention()} for each window the layers use. q_pos (B|1, Tq) and k_pos (B|1, Tk)
        are positions, allowed (B|1, 1, Tq, Tk) the keys a query may see at all (None: causal by position).
        A window keeps keys less than `window` positions back; ALiBi adds -slope * distance per head."""
        distance = q_pos[:, None, :, None] - k_pos[:, None, None, :]  # (B|1, 1, Tq, Tk)
        allowed = distance >= 0 if allowed is None else allowed
        masks = {}
        for window in {block.attn.window for block in self.transformer.h}:
            mask = allowed & (distance < window) if window else allowed
            if self.config.pos_emb == 'alibi':
                bias = -self.alibi_slopes.view(1, -1, 1, 1) * distance
                mask = bias.masked_fill(~mask, float('-inf'))
            masks[window] = mask
        return masks

    def hidden(self, idx, pos=None, mask=None, cache=None):
        """Final-norm hidden states (B, T, C). pos (B, T) gives each token's position (default
        0..T-1 after what the cache holds); mask (B, 1, T, cached + T): the keys each query may see,
        True = attend (default causal by position)."""
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        plain = pos is None  # positions start..start+T-1 for every row
        if plain:
            if start + T > self.config.block_size:
                raise ValueError(f"sequence of {start + T} tokens is longer than block_size={self.config.block_size}")
            pos = slice(start, start + T)
        # the FlashAttention path needs no mask: causal from 0, no window shorter than T, no ALiBi
        windows = {block.attn.window for block in self.transformer.h}
        masks = dict.fromkeys(windows)
        if not plain or start > 0 or self.config.pos_emb == 'alibi' or any(0 < w < T for w in windows):
            q_pos = torch.arange(start, start + T, device=idx.device)[None] if plain else pos
            k_pos = q_pos
            if cache is not None:
                cache.key_pos[:, start:start + T] = q_pos
                k_pos = cache.key_pos[:, :start + T]
            masks = self.attention_masks(q_pos, k_pos, mask)
        x = self.transformer.wte(idx)
        rope = None
        if self.transformer.wpe is not None:
            x = x + (self.transformer.wpe.weight[pos])
        elif self.config.pos_emb == 'rope':
            cos, sin = self.rope_cos[pos], self.rope_sin[pos]  # (T, r/2) or (B, T, r/2)
            rope = (cos.unsqueeze(-3), sin.unsqueeze(-3))      # broadcast over heads
        x = F.dropout(x, p=self.config.dropout, training=self.training)
        v_first = None
        for block in self.transformer.h:
            x, v_first = block(x, rope, masks[block.attn.window], cache, v_first)
        if cache is not None:
            cache.pos += T
        return self.transformer.ln_f(x)

    def softcap(self, logits):
        """c*tanh(z/c): every logit within (-c, c) (logit_softcap = c > 0; fp32, as modded-nanogpt)."""
        c = self.config.logit_softcap
        return c * torch.tanh(logits.float() / c) if c else logits

    def forward(self, idx, targets=None, reduction='mean'):
        """Training: (logits, cross-entropy over targets != -1: the mean, or per token (B, T) with
        reduction='none'). Inference: (last-position logits, None). MoE in training mode adds
        moe_aux_weight * the load-balancing loss to the mean (self.aux_loss keeps it for the logs)."""
        x = self.hidden(idx)
        if targets is None:
            return self.softcap(self.lm_head(x[:, [-1], :])), None
        logits = self.softcap(self.lm_head(x))
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=reduction)
        if reduction == 'none':
            return logits, loss.view(targets.shape)
        if self.config.n_expert:
            aux = sum(block.mlp.aux_loss for block in self.transformer.h) / self.config.n_layer
            if self.training:
                self.aux_loss = aux.detach()
                loss = loss + self.config.moe_aux_weight * aux
        return logits, loss

    # -------------------------------------------------------------------------
    # cost

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token for what runs, PaLM appendix B: 6 per weight a token goes through
        (active experts only; lookup tables excluded, a tied embedding counted once as the output head),
        plus attention's 6 * heads * (q.k + a.v widths) per key, over min(T, window) keys per layer."""
        T = seq_len or self.config.block_size
        n = self.num_params(active=True)
        if self.transformer.wpe is not None:
            n -= self.transformer.wpe.weight.numel()
        if not self.config.tie_embeddings:
            n -= self.transformer.wte.weight.numel()
        keys = [min(T, block.attn.window or T) for block in self.transformer.h]
        return 6 * n + sum(k * block.attn.flops_per_key for k, block in zip(keys, self.transformer.h))

    def estimate_mfu(self, tokens_per_s, device=None, peak_flops=None, seq_len=None):
        """Model FLOPs utilisation against the device's dense bf16 peak; None where the peak is unknown."""
        peak = peak_flops or device_peak_flops(device)
        if not peak:
            return None
        return self.flops_per_token(seq_len) * tokens_per_s / peak

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW, weight decay on matrices (2-D and up) only, never on norms, biases or scalars. With
        optimizer='muon': torch.optim.Muon (at muon_lr) on the blocks' matrices, AdamW on the rest
        (embeddings, output head, norms, gains). Every group's lr_scale is its peak lr over learning_rate:
        the training loop sets lr = schedule(it) * lr_scale."""
        params = [p for p in self.parameters() if p.requires_grad]
        muon = [p for p in self.transformer.h.parameters() if p.requires_grad and p.dim() == 2] \
            if self.config.optimizer == 'muon' else []
        in_muon = {id(p) for p in muon}
        rest = [p for p in params if id(p) not in in_muon]
        groups = [dict(params=[p for p in rest if p.dim() >= 2], weight_decay=weight_decay, lr_scale=1.0),
                  dict(params=[p for p in rest if p.dim() < 2], weight_decay=0.0, lr_scale=1.0)]
        adamw = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == 'cuda')
        if not muon:
            return adamw
        scale = self.config.muon_lr / learning_rate
        return MuonWithAdamW(torch.optim.Muon([dict(params=muon, lr_scale=scale)], lr=self.config.muon_lr,
                                              weight_decay=weight_decay), adamw)

    # -------------------------------------------------------------------------
    # generation and scoring

    def vocab_logits(self, h):
        """fp32 logits over the tokenizer's vocabulary only: padding ids can never be generated."""
        return self.softcap(F.linear(h, self.lm_head.weight[:self.config.vocab_size]).float())

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens, temperature=0.0, top_k=None, eot_token=50256, generator=None):
        """Continue each prompt (a list of token ids; lengths may differ) in one batch with a key/value
        cache. temperature 0 is greedy. Stops a row at eot_token (not returned) or after max_new_tokens.
        The model sees the last block_size tokens of each row, as nanoGPT's generate: once the cache is
        full, each new token recomputes that cropped context from position 0. Returns lists of new ids."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("generate: every prompt needs at least one token")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}: expected at least 1")
        was_training = self.training
        self.eval()
        device = self.lm_head.weight.device
        block_size = self.config.block_size
        prompts = [list(p)[-block_size:] for p in prompts]
        B, L = len(prompts), max(len(p) for p in prompts)
        # left-pad so every row's last token sits in the last column; pads are never attended to
        pad = torch.tensor([L - len(p) for p in prompts], device=device)
        tokens = torch.tensor([[0] * (L - len(p)) + p for p in prompts], device=device)
        out = [[] for _ in range(B)]
        done = [False] * B
        cache = None
        for _ in range(max_new_tokens):
            if cache is None or cache.pos == block_size:  # (re)start from the last block_size columns
                first = max(0, tokens.size(1) - block_size)
                x, row_pad = tokens[:, first:], (pad - first).clamp(min=0)
                cols = torch.arange(x.size(1), device=device)
                key_ok = cols[None, :] >= row_pad[:, None]              # (B, T)
                pos = (cols[None, :] - row_pad[:, None]).clamp(min=0)   # each row's own positions
                # real keys up to the query; a pad query sees itself only, so no row is all -inf (NaN)
                mask = (key_ok[:, None, :] | torch.eye(x.size(1), dtype=torch.bool, device=device)) & \
                    (cols[None, :] <= cols[:, None])
                cache = KVCache(self.config, B, block_size, device)
            else:  # one new column, a real token in every row
                col = torch.arange(cache.pos + 1, device=device)
                x, pos = tokens[:, -1:], (cache.pos - row_pad)[:, None]
                mask = (col[None, :] >= row_pad[:, None])[:, None, :]     # (B, 1, cached + 1)
            h = self.hidden(x, pos, mask.unsqueeze(1), cache)
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
            tokens = torch.cat([tokens, nxt.to(device)[:, None]], dim=1)
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
# two optimizers as one


class MuonWithAdamW:
    """Muon and AdamW stepped as one optimizer: the training loop, GradScaler and the checkpoint see one
    object with param_groups, step, zero_grad, state_dict and load_state_dict (both states, for exact resume)."""

    def __init__(self, muon, adamw):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self):  # a property: load_state_dict replaces the group dicts
        return self.adamw.param_groups + self.muon.param_groups

    @property
    def state(self):
        return {**self.adamw.state, **self.muon.state}

    def step(self, closure=None):
        self.adamw.step()
        self.muon.step()

    def zero_grad(self, set_to_none=True):
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return dict(adamw=self.adamw.state_dict(), muon=self.muon.state_dict())

    def load_state_dict(self, state_dict):
        if set(state_dict) != {'adamw', 'muon'}:
            raise ValueError("optimizer state: expected Muon's and AdamW's (from a run with optimizer='muon')")
        self.adamw.load_state_dict(state_dict['adamw'])
        self.muon.load_state_dict(state_dict['muon'])

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
