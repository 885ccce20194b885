"""
Training speed: the bare step of any registered variant at fixed shapes on synthetic tokens, and
train.py's real loop at one shape, so that the loop's overhead over the bare step is visible.

    python bench/bench_train.py                          # GPU: the three GPU shapes; CPU: cpu_4l128d
    python bench/bench_train.py --shapes=gpt2_124m --models=baseline,nanogpt --steps=50
    python bench/bench_train.py --device=cpu --shapes=cpu_4l128d --loop=True
    python bench/bench_train.py --device=cpu --models=zoo --shapes=zoo_cpu --vocab_size=4096 --rounds=5 --loop=False

Per shape and model it prints ms/iteration, tokens/s, MFU (against model.PEAK_FLOPS for the card),
peak memory, the step time relative to the baseline's at the same shape (when the baseline is timed;
on a CPU by the process's CPU time per step, which with one thread does not depend on other load),
and the loss before and after the timed steps: the batch is fixed, so a working step memorises it and
the loss falls (a broken step cannot look fast). --models=zoo times every registered variant. `nanogpt` is the `gpt2` variant
with bias=False, i.e. nanoGPT's GPT, timed by the same code on the same card.
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configurator import ConfigError, configure  # noqa: E402
from model import GPT, MODEL_REGISTRY, make_config, pick_device  # noqa: E402

SHAPES = {  # n_layer, n_head, n_embd, block_size T, batch_size B
    'gpt2_124m': (12, 12, 768, 1024, 16),
    'ts_8l512d': (8, 8, 512, 512, 64),
    'ts_6l384d': (6, 6, 384, 256, 128),
    'cpu_4l128d': (4, 4, 128, 128, 16),
    'zoo_cpu': (4, 4, 64, 64, 16),  # config/sweeps/zoo.py's runs (with --vocab_size=4096)
    'tiny': (1, 2, 32, 32, 2),  # for the test suite
}
MODELS = {'nanogpt': ('gpt2', dict(bias=False))}  # other names: registered variants as they are

shapes: str = 'auto'            # comma-separated SHAPES keys; auto: the GPU shapes on CUDA, cpu_4l128d elsewhere
models: str = 'baseline,nanogpt'  # comma-separated; 'zoo': every name in model.MODEL_REGISTRY
vocab_size: int = 50257         # 4096: the bpe4k tokenizer of config/tiny_bpe4k.py and the zoo sweep
steps: int = 20                 # timed steps
rounds: int = 1                 # > 1: every model timed once per round, in turn; the median round is reported
warmup_steps: int = 5           # untimed (compilation, allocator warm-up)
device: str = 'auto'
dtype: str = 'auto'             # bfloat16 on CUDA, float32 elsewhere
compile: bool | None = None     # None: on CUDA only, as train.py
peak_flops: float | None = None
loop: bool = True               # also time train.py at loop_shape
loop_shape: str = 'auto'        # auto: ts_6l384d on CUDA, cpu_4l128d elsewhere
loop_iters: int = 60
json_out: str = ''              # also write every figure to this JSON file
try:
    configure(globals(), sys.argv[1:])
except ConfigError as e:
    sys.exit(f"bench_train.py: error: {e}")

try:
    device = pick_device(device)
except ValueError as e:
    sys.exit(f"bench_train.py: error: {e}")
device_type = torch.device(device).type
dtype = ('bfloat16' if device_type == 'cuda' else 'float32') if dtype == 'auto' else dtype
compile = device_type == 'cuda' if compile is None else compile
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
autocast = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=ptdtype)
shape_names = (['gpt2_124m', 'ts_8l512d', 'ts_6l384d'] if device_type == 'cuda' else ['cpu_4l128d']) \
    if shapes == 'auto' else shapes.split(',')
loop_shape = ('ts_6l384d' if device_type == 'cuda' else 'cpu_4l128d') if loop_shape == 'auto' else loop_shape
for name in shape_names + [loop_shape]:
    if name not in SHAPES:
        sys.exit(f"bench_train.py: error: unknown shape {name!r}: expected one of {', '.join(SHAPES)}")
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True


def peak_memory_mb():
    if device_type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark, Linux KiB


def make_step(shape, model_spec):
    """train.py's step (autocast, fused AdamW, clipping, GradScaler) on one fixed batch, warmed up.
    Returns (step, model, loss of the first step)."""
    n_layer, n_head, n_embd, T, B = SHAPES[shape]
    name, extra = MODELS.get(model_spec, (model_spec, {}))
    torch.manual_seed(0)
    model = GPT(make_config(name, n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=T, vocab_size=vocab_size,
                            **extra)).to(device)
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == 'float16')
    step_model = torch.compile(model) if compile else model
    x = torch.randint(0, vocab_size, (B, T + 1), generator=torch.Generator().manual_seed(0)).to(device)
    x, y = x[:, :-1].contiguous(), x[:, 1:].contiguous()

    def step():
        with autocast:
            _, loss = step_model(x, y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    first_loss = step().item()
    for _ in range(warmup_steps - 1):
        step()
    if device_type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    return step, model, first_loss


def time_steps(step):
    """(wall seconds per step, this process's CPU seconds per step, the last loss) over `steps` steps."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = step()
    last_loss = loss.item()  # waits for the device
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps, last_loss


def bench_shape(shape, specs):
    """Each model's step at `shape`, one result per model. With rounds > 1 the models stay built and take
    turns, each timed once per round, and the median round is reported: other work on a shared CPU then
    slows them alike (with rounds = 1, one model at a time, as on a GPU)."""
    n_layer, n_head, n_embd, T, B = SHAPES[shape]
    built, times, cpu_times, results = {}, {spec: [] for spec in specs}, {spec: [] for spec in specs}, []
    for r in range(rounds):
        for spec in specs:
            if spec not in built:
                built[spec] = make_step(shape, spec)
            step, model, first_loss = built[spec]
            dt, cpu, last_loss = time_steps(step)
            times[spec].append(dt)
            cpu_times[spec].append(cpu)
            if r < rounds - 1:
                continue
            del built[spec]
            dt = sorted(times[spec])[len(times[spec]) // 2]
            tokens_per_s = B * T / dt
            # with one thread, CPU time per step is what the step takes on an idle core, whatever the load
            cpu_ms = 1000 * sorted(cpu_times[spec])[len(cpu_times[spec]) // 2]
            results.append(dict(shape=shape, model=spec, params_m=round(model.num_params() / 1e6, 2),
                                ms_per_iter=1000 * dt, cpu_ms_per_iter=cpu_ms, tokens_per_s=tokens_per_s,
                                mfu=model.estimate_mfu(tokens_per_s, device, peak_flops, T),
                                peak_mem_mb=peak_memory_mb(), loss_first=first_loss, loss_last=last_loss,
                                ms_per_iter_rounds=[round(1000 * t, 1) for t in times[spec]]))
    return results


def release():
    """Forget compiled graphs and cached blocks between shapes (the models are gone by now)."""
    if compile:
        torch._dynamo.reset()
    if device_type == 'cuda':
        torch.cuda.empty_cache()


def synthetic_data(folder, tokens=2_000_000):
    """Random tokens as a prepared `small` variant (prepare.py's format), without a tokenizer: "stories"
    of 256 tokens, each ended by GPT-2's <|endoftext|> (train.py checks that the bins hold whole stories)."""
    from prepare import write_token_bins
    rng = np.random.default_rng(0)
    bins = {}
    for split, n in (('train', tokens), ('val', tokens // 10)):
        bins[split] = rng.integers(0, 50256, n, dtype=np.uint16)
        bins[split][255::256] = 50256
    write_token_bins(os.path.join(folder, 'small'), bins, source='synthetic')
    return folder


def bench_loop(shape):
    """train.py itself at `shape`: data loading, logging, per-layer norms, TensorBoard, as in a real run."""
    n_layer, n_head, n_embd, T, B = SHAPES[shape]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = synthetic_data(os.path.join(tmp, 'data'))
        cmd = [sys.executable, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'train.py'),
               f'--out_dir={tmp}', '--run_name=loop', f'--data_dir={data_dir}', f'--n_layer={n_layer}',
               f'--n_head={n_head}', f'--n_embd={n_embd}', f'--block_size={T}', f'--batch_size={B}',
               f'--max_iters={loop_iters}', '--log_interval=10', f'--eval_interval={loop_iters}', '--eval_windows=16',
               '--save_checkpoints=False', f'--device={device}', f'--dtype={dtype}', f'--compile={compile}',
               '--warmup_iters=10', '--plots=False']
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"bench_train.py: error: train.py failed:\n{proc.stderr[-2000:]}")
        with open(os.path.join(tmp, 'loop', 'summary.json')) as f:
            summary = json.load(f)
    return dict(shape=shape, model='baseline (train.py)', tokens_per_s=summary['tokens_per_s_mean'],
                mfu=summary['mfu_mean'], ms_per_iter=1000 * B * T / summary['tokens_per_s_mean'],
                loss_last=summary['final_train_loss'])


def pct(v):
    return f"{100 * v:5.1f}%" if v is not None else '    -'


device_name = torch.cuda.get_device_name(device) if device_type == 'cuda' else f'cpu ({torch.get_num_threads()} threads)'
print(f"device {device_name}, torch {torch.__version__}, {dtype}{', compiled' if compile else ''}, "
      f"{steps} timed steps after {warmup_steps}")
# on a CPU the comparison is by CPU time (the same as wall time on an idle machine with one thread)
relative_to = 'cpu_ms_per_iter' if device_type == 'cpu' else 'ms_per_iter'
print(f"{'shape':<12} {'model':<24} {'params':>7} {'ms/iter':>9} {'cpu ms':>8} {'vs base':>7} {'tokens/s':>11} "
      f"{'MFU':>6} {'peak MB':>8}  loss first -> last")
model_specs = list(MODEL_REGISTRY) if models == 'zoo' else models.split(',')
results = []
for shape in shape_names:
    base_ms = None
    for r in bench_shape(shape, model_specs):
        spec = r['model']
        if spec == 'baseline':
            base_ms = r[relative_to]
        r['vs_baseline'] = r[relative_to] / base_ms if base_ms else None
        results.append(r)
        relative = f"{r['vs_baseline']:>6.2f}x" if base_ms else f"{'-':>7}"
        print(f"{shape:<12} {spec:<24} {r['params_m']:>6}M {r['ms_per_iter']:>9.1f} {r['cpu_ms_per_iter']:>8.1f} "
              f"{relative} {r['tokens_per_s']:>11,.0f} {pct(r['mfu'])} {r['peak_mem_mb']:>8.0f}  "
              f"{r['loss_first']:.3f} -> {r['loss_last']:.3f}", flush=True)
    release()
if loop:
    bare = next((r for r in results if r['shape'] == loop_shape and r['model'] == 'baseline'), None) or \
        bench_shape(loop_shape, ['baseline'])[0]
    r = bench_loop(loop_shape)
    r['overhead_vs_bare'] = bare['tokens_per_s'] / r['tokens_per_s'] - 1
    results.append(r)
    print(f"{loop_shape:<12} {'baseline (train.py)':<22} {'':>7} {r['ms_per_iter']:>9.1f} {r['tokens_per_s']:>11,.0f} "
          f"{pct(r['mfu'])}  loop overhead over the bare step: {100 * r['overhead_vs_bare']:+.1f}%")
if json_out:
    with open(json_out, 'w') as f:
        json.dump(dict(device=device_name, torch=torch.__version__, dtype=dtype, compile=compile, results=results), f, indent=2)
