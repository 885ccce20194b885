"""model.py: shapes, causality, attention paths, KV-cache generation, scoring, training, checkpoints."""
import math

import pytest
import torch

from conftest import TINY_MODEL
from model import GPT, MODEL_REGISTRY, device_peak_flops, make_config, pick_device
from runs import CheckpointError, load_checkpoint, save_checkpoint

TINY = TINY_MODEL  # vocab 256 keeps these tests fast; the 50257 default is exercised by train tests
VOCAB = TINY['vocab_size']


def tiny(name='baseline', seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(make_config(name, **{**TINY, **kw})).eval()


@pytest.mark.parametrize('name', list(MODEL_REGISTRY))
def test_every_variant_builds_with_right_shapes(name):
    model = tiny(name)
    assert model.config.padded_vocab_size % 64 == 0
    idx = torch.randint(0, VOCAB, (3, 20))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 20, model.config.padded_vocab_size) and loss.ndim == 0
    last, none = model(idx)
    assert last.shape == (3, 1, model.config.padded_vocab_size) and none is None
    torch.testing.assert_close(last[:, 0], logits[:, -1])


def test_gpt2_vocab_is_padded_to_50304():
    assert make_config('baseline').padded_vocab_size == 50304


@pytest.mark.parametrize('name', list(MODEL_REGISTRY))
def test_causal_future_tokens_never_change_earlier_logits(name):
    model = tiny(name)
    idx = torch.randint(0, VOCAB, (2, 24))
    changed = idx.clone()
    changed[:, 15:] = (changed[:, 15:] + 7) % VOCAB
    with torch.no_grad():
        a, _ = model(idx, idx)
        b, _ = model(changed, changed)
    torch.testing.assert_close(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def test_unknown_variant_lists_known_names():
    with pytest.raises(ValueError, match="unknown model_name 'nopee'.*baseline.*gqa.*gpt2"):
        make_config('nopee')


def test_bad_head_counts_are_clear_errors():
    with pytest.raises(ValueError, match='n_head=4 must be divisible by n_kv_head=3'):
        make_config('baseline', n_head=4, n_kv_head=3, n_embd=32)
    with pytest.raises(ValueError, match='unknown model setting'):
        make_config('baseline', n_layers=3)


def test_user_settings_override_the_variant_defaults():
    assert make_config('gqa', n_head=8, n_embd=64).n_kv_head == 2
    assert make_config('gqa', n_head=8, n_kv_head=4, n_embd=64).n_kv_head == 4
    assert make_config('baseline', n_head=8, n_embd=64).n_kv_head == 8


@pytest.mark.parametrize('impl', ['sdpa', 'math'])
def test_gqa_equals_multi_head_attention_with_repeated_key_value_heads(impl):
    """Query head h must use key/value head h // (n_head / n_kv_head): build the MHA model whose k/v
    weights repeat each GQA head for its group, and both must compute the same function."""
    gqa = tiny('gqa', n_kv_head=2, attn_impl=impl)
    mha = tiny('baseline', attn_impl=impl)
    hd, nh, nkv = 8, 4, 2
    state = gqa.state_dict()
    for i in range(2):
        w = state[f'transformer.h.{i}.attn.c_attn.weight']  # rows: q (nh*hd), k (nkv*hd), v (nkv*hd)
        q, k, v = w.split([nh * hd, nkv * hd, nkv * hd])
        k = k.view(nkv, hd, -1).repeat_interleave(nh // nkv, dim=0).reshape(nh * hd, -1)
        v = v.view(nkv, hd, -1).repeat_interleave(nh // nkv, dim=0).reshape(nh * hd, -1)
        state[f'transformer.h.{i}.attn.c_attn.weight'] = torch.cat([q, k, v])
    mha.load_state_dict(state)
    idx = torch.randint(0, VOCAB, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(gqa(idx, idx)[0], mha(idx, idx)[0], atol=1e-5, rtol=1e-5)


def test_gqa_with_as_many_kv_heads_as_heads_is_plain_multi_head():
    a, b = tiny('gqa', n_kv_head=4), tiny('baseline')
    assert a.config.n_kv_head == b.config.n_head
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(a(idx, idx)[0], b(idx, idx)[0])


@pytest.mark.parametrize('name', list(MODEL_REGISTRY))
def test_flash_and_math_attention_paths_agree(name):
    fast, plain = tiny(name, attn_impl='sdpa'), tiny(name, attn_impl='math')
    plain.load_state_dict(fast.state_dict())
    idx = torch.randint(0, VOCAB, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(fast(idx, idx)[0], plain(idx, idx)[0], atol=1e-5, rtol=1e-5)


def naive_greedy(model, prompt, max_new_tokens, eot):
    """The slow reference: re-run the whole context (its last block_size tokens, as nanoGPT crops) for
    every new token, one prompt at a time."""
    ctx, out = list(prompt), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits, _ = model(torch.tensor([ctx[-model.config.block_size:]]))
            t = int(logits[0, -1, :model.config.vocab_size].argmax())
            if t == eot:
                break
            out.append(t)
            ctx.append(t)
    return out


# every variant on the default kernel; both kernels on the masked (GQA) path: flash vs math per variant is above
@pytest.mark.parametrize('name, impl', [(name, 'sdpa') for name in MODEL_REGISTRY] + [('gqa', 'math')])
def test_kv_cache_generation_equals_full_recompute_batched_and_ragged(name, impl):
    model = tiny(name, seed=1, attn_impl=impl)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (1, 7, 12)]
    expected = [naive_greedy(model, p, 8, eot=-1) for p in prompts]
    assert model.generate(prompts, 8, eot_token=-1) == expected
    assert [model.generate([p], 8, eot_token=-1)[0] for p in prompts] == expected


def test_generation_stops_at_end_of_text_per_row():
    model = tiny(seed=2)
    prompts = [[5, 9, 11], [100, 3]]
    free = [naive_greedy(model, p, 10, eot=-1) for p in prompts]
    eot = free[0][3]  # pretend the 4th token of row 0 is end-of-text
    out = model.generate(prompts, 10, eot_token=eot)
    assert out[0] == free[0][:free[0].index(eot)]
    assert out[1] == naive_greedy(model, prompts[1], 10, eot=eot)


@pytest.mark.parametrize('name', list(MODEL_REGISTRY))
def test_generation_continues_past_the_context_by_cropping(name):
    """3 x block_size new tokens, prompts longer and shorter than the context in one batch: each row
    equals nanoGPT's crop-to-the-last-block_size-tokens-and-recompute, token for token."""
    model = tiny(name, seed=4, block_size=8)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (11, 3)]
    out = model.generate(prompts, 24, eot_token=-1)
    assert [len(o) for o in out] == [24, 24]
    assert out == [naive_greedy(model, p, 24, eot=-1) for p in prompts]


def test_generation_validates_its_arguments():
    model = tiny()
    with pytest.raises(ValueError, match='max_new_tokens=0: expected at least 1'):
        model.generate([[1]], 0)
    with pytest.raises(ValueError, match='at least one token'):
        model.generate([[1], []], 3)


def test_sampling_is_reproducible_and_respects_top_k():
    model = tiny()
    a = model.generate([[1, 2, 3]] * 3, 8, temperature=1.0, top_k=5, eot_token=-1,
                       generator=torch.Generator().manual_seed(3))
    b = model.generate([[1, 2, 3]] * 3, 8, temperature=1.0, top_k=5, eot_token=-1,
                       generator=torch.Generator().manual_seed(3))
    assert a == b and len(set(map(tuple, a))) > 1  # rows differ: it really samples
    top1 = model.generate([[1, 2, 3]], 8, temperature=1.0, top_k=1, eot_token=-1)
    assert top1 == model.generate([[1, 2, 3]], 8, eot_token=-1)  # top-1 sampling is greedy


def test_score_is_the_log_likelihood_of_the_continuation():
    model = tiny(seed=3)
    prompts, conts = [[1, 2, 3], [7], [4, 4, 4, 4, 4]], [[9], [8, 2, 6], [1, 2]]
    scores, greedy = model.score(prompts, conts, batch_size=2)
    for p, c, s, gr in zip(prompts, conts, scores, greedy):
        with torch.no_grad():
            logits, _ = model(torch.tensor([p + c]), torch.tensor([p + c]))
        lp = logits[0, :, :VOCAB].log_softmax(-1)
        ref = sum(lp[len(p) - 1 + i, t].item() for i, t in enumerate(c))
        assert math.isclose(s, ref, rel_tol=1e-5, abs_tol=1e-5)
        assert gr == all(lp[len(p) - 1 + i].argmax().item() == t for i, t in enumerate(c))
    greedy_cont = model.generate([[1, 2, 3]], 3, eot_token=-1)[0]
    assert model.score([[1, 2, 3]], [greedy_cont])[1] == [True]


@pytest.mark.parametrize('name', list(MODEL_REGISTRY))
def test_every_variant_trains_on_a_fixed_batch(name):
    model = tiny(name).train()
    opt = model.configure_optimizers(0.1, 3e-3, (0.9, 0.95), 'cpu')
    idx = torch.randint(0, VOCAB, (4, 33), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(15):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses


def test_weight_decay_only_on_matrices():
    model = tiny('residual_scaling_learned')
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    decay, no_decay = opt.param_groups
    assert decay['weight_decay'] == 0.1 and all(p.dim() >= 2 for p in decay['params'])
    assert no_decay['weight_decay'] == 0.0 and all(p.dim() < 2 for p in no_decay['params'])
    assert len(decay['params']) + len(no_decay['params']) == len(list(model.parameters()))


def test_param_counts_flops_and_mfu():
    model = tiny()
    n_emb = model.config.padded_vocab_size * 32
    assert model.num_params() - model.num_params(non_embedding=True) == n_emb
    assert model.flops_per_token(32) == 6 * model.num_params() + 12 * 2 * 32 * 32
    assert model.estimate_mfu(1000.0, peak_flops=1e12) == pytest.approx(model.flops_per_token() * 1000 / 1e12)
    assert model.estimate_mfu(1000.0, device='cpu') is None and device_peak_flops('cpu') is None
    gpt2 = tiny('gpt2')  # learned positions are not part of the 6N
    assert gpt2.flops_per_token(32) == 6 * (gpt2.num_params() - 32 * 32) + 12 * 2 * 32 * 32


@pytest.mark.parametrize('name', list(MODEL_REGISTRY))
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, name):
    model = tiny(name)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    path = tmp_path / 'ckpt.pt'
    save_checkpoint(path, model, opt, iter_num=7, note='x')
    assert not (tmp_path / 'ckpt.pt.tmp').exists()
    loaded, ckpt = load_checkpoint(path)
    assert ckpt['iter_num'] == 7 and ckpt['optimizer'] is not None and loaded.config == model.config
    idx = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        assert torch.equal(model(idx, idx)[0], loaded.eval()(idx, idx)[0])


def test_checkpoint_from_compiled_model_names_loads(tmp_path):
    model = tiny()
    wrapped = torch.nn.Module()
    wrapped._orig_mod = model  # what torch.compile's OptimizedModule looks like to unwrap()
    path = tmp_path / 'c.pt'
    save_checkpoint(path, wrapped)
    raw = torch.load(path, weights_only=True)
    raw['model'] = {'_orig_mod.' + k: v for k, v in raw['model'].items()}
    torch.save(raw, path)
    loaded, _ = load_checkpoint(path)
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight)


def test_corrupt_or_foreign_checkpoints_are_refused_with_the_file_named(tmp_path):
    model = tiny()
    good = tmp_path / 'good.pt'
    save_checkpoint(good, model)
    truncated = tmp_path / 'truncated.pt'
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match='truncated.pt: not a readable checkpoint'):
        load_checkpoint(truncated)
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'\x00not a checkpoint' * 10)
    with pytest.raises(CheckpointError, match='garbage.pt'):
        load_checkpoint(garbage)
    foreign = tmp_path / 'foreign.pt'
    torch.save({'weights': torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match='foreign.pt: not a tinystories-lab checkpoint'):
        load_checkpoint(foreign)
    mismatched = tmp_path / 'mismatched.pt'
    ckpt = torch.load(good, weights_only=True)
    ckpt['model_args']['n_layer'] = 3
    torch.save(ckpt, mismatched)
    with pytest.raises(CheckpointError, match='mismatched.pt: weights do not match'):
        load_checkpoint(mismatched)
    with pytest.raises(CheckpointError, match='missing.pt: checkpoint not found'):
        load_checkpoint(tmp_path / 'missing.pt')


def test_a_good_checkpoint_for_an_absent_device_is_not_called_corrupt(tmp_path):
    path = tmp_path / 'good.pt'
    save_checkpoint(path, tiny())
    absent = f'cuda:{torch.cuda.device_count()}'  # one past the last visible GPU: absent on every machine
    with pytest.raises(CheckpointError, match=rf"good.pt: cannot move the model to device '{absent}'.*--device=cpu") as e:
        load_checkpoint(path, absent)
    assert 'corrupt' not in str(e.value)


def test_pick_device_names_what_is_missing():
    assert pick_device('auto') in ('cpu', 'cuda', 'mps') and pick_device('cpu') == 'cpu'
    with pytest.raises(ValueError, match="device 'tpu': expected auto, cpu, cuda, cuda:N or mps"):
        pick_device('tpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:1': no CUDA device is visible here"):
            pick_device('cuda:1')


def test_layer_groups_cover_every_parameter_once_in_depth_order():
    for name in ('baseline', 'gpt2'):
        model = tiny(name)
        groups = model.layer_groups()
        assert list(groups) == ['embed', 'block_0', 'block_1', 'final_norm']
        ids = [id(p) for params in groups.values() for p in params]
        assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_per_token_loss_averages_to_the_mean_loss():
    model = tiny()
    idx = torch.randint(0, VOCAB, (3, 20))
    with torch.no_grad():
        _, mean = model(idx, idx)
        _, per_token = model(idx, idx, reduction='none')
    assert per_token.shape == (3, 20) and per_token.mean().item() == pytest.approx(mean.item(), rel=1e-6)
