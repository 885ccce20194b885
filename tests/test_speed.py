"""Speed work keeps results: each fast path gives the loss of the plain path on a fixed CPU batch,
and the training benchmark itself runs (at a tiny shape) and reports a step that learns."""
import json

import pytest
import torch

from conftest import REPO, TINY_MODEL, run_script
from model import GPT, make_config

CFG = TINY_MODEL  # conftest's, shared with test_model


def train_losses(model, optimizer, steps=4, forward=None):
    x = torch.randint(0, 256, (4, 33), generator=torch.Generator().manual_seed(0))
    forward = model if forward is None else forward
    losses = []
    for _ in range(steps):
        _, loss = forward(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def twin_models(name='baseline', **kw):
    torch.manual_seed(0)
    a = GPT(make_config(name, **{**CFG, **kw}))
    b = GPT(make_config(name, **{**CFG, **kw}))
    b.load_state_dict(a.state_dict())
    return a, b


def test_torch_compile_captures_the_whole_graph_and_matches_eager():
    """What a model change can break under torch.compile: capture by dynamo with no graph break (fullgraph),
    AOT autograd's decompositions and the forward/backward partition that inductor receives; the backend
    that runs those graphs in eager stands in for inductor's code generation, which is torch's own and costs
    30-60 s of C++ compiling on a cold 2-core CPU (bench/bench_train.py --compile=True times the real one)."""
    eager, compiled = twin_models('gqa', n_kv_head=2)
    plain = train_losses(eager, eager.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu'))
    fast = train_losses(compiled, compiled.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu'),
                        forward=torch.compile(compiled, backend='aot_eager_decomp_partition', fullgraph=True))
    assert fast == pytest.approx(plain, rel=1e-5, abs=1e-5)
    assert plain[-1] < plain[0]


def test_fused_adamw_matches_the_plain_loop():
    a, b = twin_models()
    plain = train_losses(a, torch.optim.AdamW(a.parameters(), lr=1e-2, foreach=False))
    fused = train_losses(b, torch.optim.AdamW(b.parameters(), lr=1e-2, fused=True))
    assert fused == pytest.approx(plain, rel=1e-5, abs=1e-5)


def test_sdpa_matches_math_attention_when_training():
    a, _ = twin_models(attn_impl='sdpa')
    b = GPT(make_config('baseline', **{**CFG, 'attn_impl': 'math'}))
    b.load_state_dict(a.state_dict())
    fast = train_losses(a, a.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu'))
    plain = train_losses(b, b.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu'))
    assert fast == pytest.approx(plain, rel=1e-5, abs=1e-5)


@pytest.mark.slow
def test_training_benchmark_runs_on_cpu(tmp_path):
    out = tmp_path / 'bench.json'
    proc = run_script(REPO / 'bench' / 'bench_train.py', '--device=cpu', '--shapes=tiny', '--loop_shape=tiny',
                      '--models=baseline,gpt2,nanogpt', '--steps=5', '--warmup_steps=2', '--loop_iters=30',
                      f'--json_out={out}', check=True)
    assert 'loop overhead over the bare step' in proc.stdout
    report = json.loads(out.read_text())
    assert report['device'].startswith('cpu') and report['torch'] == torch.__version__
    bare = [r for r in report['results'] if 'loss_first' in r]
    assert [r['model'] for r in bare] == ['baseline', 'gpt2', 'nanogpt']
    for r in bare:
        assert r['tokens_per_s'] > 0 and r['ms_per_iter'] > 0 and r['peak_mem_mb'] > 0 and r['mfu'] is None
        assert r['loss_last'] < r['loss_first'] - 0.1  # a fixed batch: a working step memorises it
    loop = report['results'][-1]
    assert loop['model'] == 'baseline (train.py)' and loop['tokens_per_s'] > 0 and 'overhead_vs_bare' in loop


def test_benchmark_rejects_unknown_shapes():
    proc = run_script(REPO / 'bench' / 'bench_train.py', '--shapes=gpt5')
    assert proc.returncode != 0 and "unknown shape 'gpt5'" in proc.stderr
