"""The model zoo: each modification's defining property, impossible combinations, parameter and FLOP
counts, and the Muon optimizer. (Shapes, causality, flash vs math, KV-cache generation, cropping past the
context, training with falling loss and checkpoints of every registered name are in test_model.py.)"""
import copy
import json
import math

import pytest
import torch
from torch.nn import functional as F

import model as model_py
from model import GPT, MODEL_REGISTRY, MuonWithAdamW, alibi_slopes, apply_rope, attention, make_config

VOCAB = 64
TINY = dict(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=VOCAB)
ZOO = ['relu2', 'nope', 'alibi', 'partial_rope', 'sliding_window', 'local_global', 'softcap', 'untied', 'parallel',
       'value_residual', 'diff_attn', 'gated_attn', 'attn_sink', 'mla', 'moe']


def tiny(name='baseline', seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(make_config(name, **{**TINY, **kw})).eval()


def tokens(B=2, T=16, seed=0):
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def test_registry_holds_every_zoo_preset_beside_the_old_ones():
    assert set(ZOO + ['muon', 'baseline', 'gqa', 'mqa', 'qk_norm', 'gpt2']) <= set(MODEL_REGISTRY)


def test_relu2_mlp_is_relu_squared_without_a_gate():
    mlp = tiny('relu2').transformer.h[0].mlp
    assert mlp.c_fc.out_features == 4 * 32  # no gate half
    x = torch.randn(3, 5, 32)
    torch.testing.assert_close(mlp(x), mlp.c_proj(torch.relu(mlp.c_fc(x)) ** 2))


def test_nope_has_no_positional_parameters_or_rotations(monkeypatch):
    model = tiny('nope')
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    assert not [n for n in names if 'wpe' in n or 'rope' in n or 'alibi' in n]

    def no_rotation(*a):
        raise AssertionError('NoPE rotated something')
    monkeypatch.setattr(model_py, 'apply_rope', no_rotation)
    model(tokens())  # runs without a rotation
    # without positions, a token repeated from the start gets the same output at every position
    same = torch.full((1, 6), 7)
    last = [model(same[:, :t])[0][0, -1] for t in range(1, 7)]
    for h in last[1:]:
        torch.testing.assert_close(h, last[0], atol=1e-5, rtol=1e-5)


def test_alibi_bias_is_minus_slope_times_distance_per_head():
    torch.testing.assert_close(alibi_slopes(4), torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]))
    torch.testing.assert_close(alibi_slopes(6), torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]))
    model = tiny('alibi')
    assert not hasattr(model, 'rope_cos') and model.transformer.wpe is None
    pos = torch.arange(6)[None]
    bias = model.attention_masks(pos, pos, None)[0]  # (1, H, 6, 6)
    for h, m in enumerate(alibi_slopes(4)):
        for i in range(6):
            for j in range(6):
                expected = -m * (i - j) if j <= i else float('-inf')
                assert bias[0, h, i, j].item() == pytest.approx(expected)
    # and the model uses it: attention of layer 0 equals softmax(q k^T / sqrt(d) - m * distance) v by hand
    attn = model.transformer.h[0].attn
    x = torch.randn(1, 6, 32)
    q, k, v = attn.c_attn(x).view(1, 6, 3, 4, 8).permute(2, 0, 3, 1, 4)
    y = ((q @ k.transpose(-2, -1)) / math.sqrt(8) + bias).softmax(-1) @ v
    expected = attn.c_proj(y.transpose(1, 2).reshape(1, 6, 32))
    torch.testing.assert_close(attn(x, None, bias)[0], expected, atol=1e-5, rtol=1e-5)


def test_partial_rope_rotates_only_the_first_quarter_of_each_head():
    model = tiny('partial_rope', n_embd=64)  # head_dim 16: 4 dims rotated
    assert model.config.rope_dims == 4 and model.rope_cos.shape == (16, 2)
    x = torch.randn(1, 4, 16, 16)
    y = apply_rope(x, model.rope_cos[None], model.rope_sin[None])
    assert torch.equal(y[..., 4:], x[..., 4:])
    assert not torch.allclose(y[..., 1:, :4], x[..., 1:, :4])
    # a rotation: each rotated pair (i, i + 2) keeps its length
    torch.testing.assert_close(y[..., [0, 1]] ** 2 + y[..., [2, 3]] ** 2, x[..., [0, 1]] ** 2 + x[..., [2, 3]] ** 2)


def embedding_gradient(model, t):
    """|d logits[t] / d input embedding| at every position (one sequence)."""
    seen = {}

    def keep(module, inputs, out):
        out.retain_grad()
        seen['x'] = out
    handle = model.transformer.wte.register_forward_hook(keep)
    logits, _ = model(tokens(1), tokens(1))
    handle.remove()
    logits[0, t].sum().backward()
    return seen['x'].grad[0].abs().sum(-1)


def test_sliding_window_tokens_beyond_the_window_have_exactly_zero_gradient():
    w = 4
    one_layer = embedding_gradient(tiny('sliding_window', n_layer=1, attn_window=w), 15)
    assert torch.all(one_layer[:15 - w + 1] == 0) and torch.all(one_layer[15 - w + 1:] > 0)
    two_layers = embedding_gradient(tiny('sliding_window', attn_window=w), 15)  # the reach adds up per layer
    assert torch.all(two_layers[:15 - 2 * (w - 1)] == 0) and torch.all(two_layers[15 - 2 * (w - 1):] > 0)


def test_local_global_alternates_windowed_and_global_layers():
    model = tiny('local_global', n_layer=4, attn_window=4)
    assert [b.attn.window for b in model.transformer.h] == [4, 0, 4, 0]
    grad = embedding_gradient(tiny('local_global', attn_window=4), 15)
    assert torch.all(grad > 0)  # the global layer reaches back to the first token


def test_softcap_bounds_every_logit_by_c_as_c_tanh_z_over_c():
    capped, plain = tiny('softcap', logit_softcap=5.0), tiny('baseline')
    with torch.no_grad():
        capped.lm_head.weight.mul_(300)  # huge raw logits
    plain.load_state_dict(capped.state_dict())
    logits = capped(tokens(), tokens())[0]
    assert plain(tokens(), tokens())[0].abs().max() > 100
    assert logits.abs().max() <= 5.0 and logits.abs().max() > 4.9  # (fp32 tanh reaches 1.0 exactly)
    torch.testing.assert_close(logits, 5.0 * torch.tanh(plain(tokens(), tokens())[0] / 5.0))
    torch.testing.assert_close(capped.vocab_logits(capped.hidden(tokens())), logits[..., :VOCAB])


def test_untied_has_two_distinct_matrices_that_learn_apart():
    untied, tied = tiny('untied'), tiny('baseline')
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert untied.num_params() == tied.num_params() + 64 * 32
    assert list(untied.layer_groups())[-1] == 'head'
    opt = untied.configure_optimizers(0.0, 1e-2, (0.9, 0.95), 'cpu')
    untied.transformer.wte.weight.data.copy_(untied.lm_head.weight.data)
    untied.train()(tokens(), tokens())[1].backward()
    opt.step()
    assert not torch.equal(untied.lm_head.weight, untied.transformer.wte.weight)


def test_parallel_block_is_x_plus_attn_plus_mlp_of_one_norm():
    block = tiny('parallel').transformer.h[0]
    assert block.ln_2 is None
    x = torch.randn(2, 16, 32)
    n = block.ln_1(x)
    torch.testing.assert_close(block(x)[0], x + block.attn(n)[0] + block.mlp(n))


def test_value_residual_mixes_the_first_layers_values_with_lambda():
    vr, base = tiny('value_residual'), tiny('baseline')
    assert vr.transformer.h[0].attn.v_lambda is None and vr.transformer.h[1].attn.v_lambda.item() == 0.5
    vr.transformer.h[1].attn.v_lambda.data.fill_(1.0)  # lambda 1: only its own values, the baseline
    base.load_state_dict({k: v for k, v in vr.state_dict().items() if 'v_lambda' not in k})
    torch.testing.assert_close(vr(tokens())[0], base(tokens())[0])
    vr.transformer.h[1].attn.v_lambda.data.fill_(0.0)  # lambda 0: layer 1 uses layer 0's values only
    before = vr(tokens())[0]
    with torch.no_grad():
        vr.transformer.h[1].attn.c_attn.weight[-32:].normal_()  # layer 1's value projection
    torch.testing.assert_close(vr(tokens())[0], before)


def test_diff_attn_is_a_difference_of_two_softmax_maps_normed_per_head():
    attn = tiny('diff_attn', pos_emb='none').transformer.h[1].attn
    x = torch.randn(1, 6, 32)
    q, k, v = attn.c_attn(x).split(32, dim=-1)
    q, k = q.view(1, 6, 8, 4).transpose(1, 2), k.view(1, 6, 8, 4).transpose(1, 2)
    v = v.view(1, 6, 4, 8).transpose(1, 2)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    maps = ((q @ k.transpose(-2, -1)) / 2).masked_fill(~causal, float('-inf')).softmax(-1)
    lq1, lk1, lq2, lk2 = attn.diff_lambdas
    lam = torch.exp(lq1 @ lk1) - torch.exp(lq2 @ lk2) + attn.lambda_init
    assert attn.lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-0.3))
    y = (maps[:, 0::2] - lam * maps[:, 1::2]) @ v
    y = F.rms_norm(y, (8,), attn.head_norm.weight, 1e-6) * (1 - attn.lambda_init)
    torch.testing.assert_close(attn(x)[0], attn.c_proj(y.transpose(1, 2).reshape(1, 6, 32)), atol=1e-5, rtol=1e-5)


def test_gated_attn_scales_each_head_by_a_sigmoid_of_the_input():
    attn = tiny('gated_attn', pos_emb='none').transformer.h[0].attn
    assert attn.c_gate.out_features == 4  # one gate per head
    x = torch.randn(2, 6, 32)
    q, k, v = attn.c_attn(x).view(2, 6, 3, 4, 8).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, d), ungated
    for gate in (torch.sigmoid(attn.c_gate(x)).transpose(1, 2)[..., None], 0.5):
        expected = attn.c_proj((y * gate).transpose(1, 2).reshape(2, 6, 32))
        torch.testing.assert_close(attn(x)[0], expected, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            attn.c_gate.weight.zero_()  # then sigmoid(0) = 1/2 for every head


def test_attention_sink_is_an_extra_logit_with_a_zero_value():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    sink = torch.tensor([0.0, 2.0, -1.0])
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(8)
    scores = scores.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float('-inf'))
    full = torch.cat([scores, sink.view(1, 3, 1, 1).expand(2, 3, 5, 1)], -1).softmax(-1)
    expected = full[..., :5] @ v  # the sink's share goes to a zero value
    for impl in ('sdpa', 'math'):
        torch.testing.assert_close(attention(q, k, v, None, impl, 0.0, sink), expected, atol=1e-5, rtol=1e-5)
        no_sink = attention(q, k, v, None, impl, 0.0, torch.full((3,), float('-inf')))
        torch.testing.assert_close(no_sink, attention(q, k, v, None, impl, 0.0), atol=1e-5, rtol=1e-5)
    model = tiny('attn_sink')
    assert [tuple(b.attn.sink.shape) for b in model.transformer.h] == [(4,), (4,)]
    model.train()(tokens(), tokens())[1].backward()
    assert model.transformer.h[0].attn.sink.grad.abs().sum() > 0  # it learns


def test_mla_cache_holds_the_latent_not_keys_and_values():
    model = tiny('mla')
    cfg = model.config
    assert not hasattr(model.transformer.h[0].attn, 'c_attn')
    cache = model_py.KVCache(cfg, 2, 16, 'cpu')
    model.hidden(tokens(2, 5), cache=cache)
    latent, k_rope = cache.layers[0]
    assert latent.shape == (2, 16, cfg.kv_latent_dim) and k_rope.shape == (2, 1, 16, cfg.head_dim // 2)
    per_token = cfg.kv_latent_dim + cfg.head_dim // 2
    assert per_token < 2 * cfg.n_kv_head * cfg.head_dim
    # keys and values come from the latent: zero it and the attention output has no value part left
    attn = model.transformer.h[0].attn
    with torch.no_grad():
        attn.c_kv_up.weight.zero_()
        assert torch.equal(attn(torch.randn(1, 4, 32), (model.rope_cos[:4][None], model.rope_sin[:4][None]))[0],
                           torch.zeros(1, 4, 32))


def test_moe_routes_each_token_to_exactly_k_experts_and_adds_its_aux_loss():
    model = tiny('moe')
    moe = model.transformer.h[0].mlp
    x = torch.randn(2, 8, 32)
    out = moe(x)
    flat = x.view(16, 32)
    assert moe.chosen.shape == (16, 2) and all(len(set(row.tolist())) == 2 for row in moe.chosen)
    probs = moe.router(flat).softmax(-1)
    top, chosen = probs.topk(2, dim=-1)
    assert torch.equal(chosen, moe.chosen)
    expected = sum(top[:, [s]] / top.sum(-1, keepdim=True) * torch.stack(
        [moe.experts[e](flat[n]) for n, e in enumerate(chosen[:, s].tolist())]) for s in range(2))
    torch.testing.assert_close(out.view(16, 32), expected, atol=1e-5, rtol=1e-5)
    share = torch.stack([(chosen == e).float().sum() / chosen.numel() for e in range(4)])
    torch.testing.assert_close(moe.aux_loss, 4 * (share * probs.mean(0)).sum())
    # training adds moe_aux_weight * the mean aux loss over layers; evaluation is the cross-entropy alone
    ce = model.eval()(tokens(), tokens())[1]
    train_loss = model.train()(tokens(), tokens())[1]
    aux = sum(b.mlp.aux_loss for b in model.transformer.h) / 2
    torch.testing.assert_close(train_loss, ce + 0.01 * aux)
    torch.testing.assert_close(model.aux_loss, aux.detach())


def test_moe_counts_active_parameters_and_flops_of_the_experts_that_run():
    moe, base = tiny('moe'), tiny('baseline')
    expert = sum(p.numel() for p in moe.transformer.h[0].mlp.experts[0].parameters())
    assert moe.num_params() == base.num_params() + 2 * (3 * expert + 4 * 32)
    assert moe.num_params(active=True) == moe.num_params() - 2 * 2 * expert
    assert moe.flops_per_token(16) - base.flops_per_token(16) == 6 * (moe.num_params(active=True) - base.num_params())


def test_flops_count_what_runs():
    base = tiny()
    attn = 2 * 12 * 32 * 16  # 12 * n_layer * n_embd * T
    assert base.flops_per_token(16) == 6 * base.num_params() + attn
    window = tiny('sliding_window', attn_window=4)
    assert window.flops_per_token(16) == 6 * window.num_params() + attn * 4 // 16
    untied = tiny('untied')  # the input embedding is a lookup, not a matmul
    assert untied.flops_per_token(16) == base.flops_per_token(16)
    diff = tiny('diff_attn')  # two q.k maps of half width, two a.v products
    assert diff.flops_per_token(16) == 6 * diff.num_params() + 2 * 6 * 16 * 4 * (8 + 16)
    mla = tiny('mla')  # q.k over head_dim + rope dims
    assert mla.flops_per_token(16) == 6 * mla.num_params() + 2 * 6 * 16 * 4 * (12 + 8)


@pytest.mark.parametrize('settings, message', [
    (dict(model_name='alibi', rope_fraction=0.5), r"pos_emb='alibi'.*rope_fraction=0.5"),
    (dict(model_name='nope', rope_base=500.0), r"pos_emb='none'.*rope_base=500.0"),
    (dict(model_name='mla', n_kv_head=2), r"kv_latent_dim=32 \(MLA\).*n_kv_head=2"),
    (dict(model_name='gqa', kv_latent_dim=16), r"kv_latent_dim=16 \(MLA\).*n_kv_head=2"),
    (dict(model_name='mla', diff_attn=True), r"kv_latent_dim=32.*diff_attn=True"),
    (dict(model_name='mla', pos_emb='alibi'), r"kv_latent_dim=32.*pos_emb='alibi'"),
    (dict(model_name='value_residual', kv_latent_dim=8), r"kv_latent_dim=8.*value_residual=True"),
    (dict(model_name='baseline', global_every=2), r"global_every=2.*attn_window"),
    (dict(model_name='moe', expert_top_k=5), r"expert_top_k=5 with n_expert=4"),
    (dict(model_name='baseline', optimizer='sgd'), r"optimizer='sgd': expected one of adamw, muon"),
    (dict(model_name='partial_rope', rope_fraction=0.1), r"rope_fraction=0.1 rotates no pair"),
])
def test_impossible_combinations_are_one_line_naming_both(settings, message):
    name = settings.pop('model_name')
    with pytest.raises(ValueError, match=message) as e:
        make_config(name, **{**TINY, **settings})
    assert '\n' not in str(e.value)


# -----------------------------------------------------------------------------
# Muon


def muon_model():
    model = tiny('muon').train()
    return model, model.configure_optimizers(0.0, 1e-3, (0.9, 0.95), 'cpu')


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model, opt = muon_model()
    assert isinstance(opt, MuonWithAdamW) and isinstance(opt.muon, torch.optim.Muon)
    in_muon = {id(p) for g in opt.muon.param_groups for p in g['params']}
    in_adamw = {id(p) for g in opt.adamw.param_groups for p in g['params']}
    blocks_2d = {id(p) for p in model.transformer.h.parameters() if p.dim() == 2}
    assert in_muon == blocks_2d and not in_muon & in_adamw
    assert in_muon | in_adamw == {id(p) for p in model.parameters()}
    assert id(model.lm_head.weight) in in_adamw  # embedding / head, norms: AdamW
    assert [g['lr_scale'] for g in opt.param_groups] == [1.0, 1.0, pytest.approx(0.02 / 1e-3)]
    assert not isinstance(tiny().configure_optimizers(0.0, 1e-3, (0.9, 0.95), 'cpu'), MuonWithAdamW)


def test_muon_updates_are_orthogonalised():
    model, opt = muon_model()
    w = model.transformer.h[0].mlp.c_fc.weight  # (128, 32)
    before = w.detach().clone()
    model(tokens(), tokens())[1].backward()
    grad_sv = torch.linalg.svdvals(w.grad)
    opt.step()
    update_sv = torch.linalg.svdvals(w.detach() - before)
    half = len(grad_sv) // 2  # (the smallest directions of a rank-limited gradient stay small)
    assert grad_sv[0] / grad_sv[half] > 4  # a raw gradient is far from orthogonal
    assert update_sv[0] / update_sv[half] < 1.6  # Newton-Schulz flattens the spectrum
    step = 0.02 * math.sqrt(256 / 32)  # muon_lr, times Keller Jordan's sqrt(rows / cols) for tall matrices
    assert 0.6 * step < update_sv[0] < 1.3 * step


def test_muon_resumes_exactly_from_its_state_dict():
    def steps(model, opt, n, seed):
        for i in range(n):
            idx = tokens(4, 16, seed + i)
            opt.zero_grad(set_to_none=True)
            model(idx, idx)[1].backward()
            opt.step()
    model, opt = muon_model()
    steps(model, opt, 3, 0)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict()))
    saved = torch.serialization.pickle.loads(torch.serialization.pickle.dumps(saved))
    steps(model, opt, 3, 10)
    again, opt2 = muon_model()
    again.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    steps(again, opt2, 3, 10)
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="expected Muon's and AdamW's"):
        opt2.load_state_dict(tiny().configure_optimizers(0.0, 1e-3, (0.9, 0.95), 'cpu').state_dict())

# -----------------------------------------------------------------------------
# through train.py: the optimizer and the parameter counts in config.json, the aux loss in the logs


@pytest.fixture(scope='module')
def zoo_run(bpe_data, tmp_path_factory):
    """One short train.py run of the moe preset trained with Muon (both at once: one run, half the time)."""
    from conftest import train_run
    return train_run(bpe_data, tmp_path_factory.mktemp('zoo') / 'out', 'moe_muon', '--model_name=moe',
                     '--optimizer=muon', '--muon_lr=0.03', '--tokenizer=bpe4k', '--n_layer=2', '--n_head=2',
                     '--n_embd=32', '--block_size=32', '--batch_size=4', '--max_iters=12', '--eval_interval=6',
                     '--log_interval=3', '--eval_windows=4', '--warmup_iters=2')


def test_train_py_logs_the_moe_aux_loss_and_active_parameters(zoo_run):
    import runs
    config = json.loads((zoo_run / 'config.json').read_text())
    assert config['n_params_active'] < config['n_params'] and config['model_args']['n_expert'] == 4
    assert config['flops_per_token'] > 6 * config['n_params_active']
    aux = [v for v in runs.read_metrics(zoo_run)['aux_loss'] if v is not None and not math.isnan(v)]
    assert len(aux) >= 4 and all(0.9 < v < 4.0 for v in aux)  # 1.0 when balanced, n_expert at worst


def test_train_py_records_muon_and_schedules_its_own_lr(zoo_run):
    import runs
    config = json.loads((zoo_run / 'config.json').read_text())
    assert config['optimizer'] == 'muon' and config['model_args']['optimizer'] == 'muon'
    assert config['muon_lr'] == 0.03
    ckpt = runs.load_checkpoint(runs.resolve_checkpoint(zoo_run)[1])[1]
    muon_group = ckpt['optimizer']['muon']['param_groups'][0]
    adamw_group = ckpt['optimizer']['adamw']['param_groups'][0]
    assert muon_group['lr'] / adamw_group['lr'] == pytest.approx(0.03 / config['learning_rate'])
