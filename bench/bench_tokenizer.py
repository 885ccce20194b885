"""
The 4k BPE trained on TinyStories against GPT-2's tokenizer, on the bundled sample (data_sample/).

    python bench/bench_tokenizer.py                  # 5 runs of everything
    python bench/bench_tokenizer.py --runs 3 --steps 10 --threads 1
    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=8000000000 python bench/bench_tokenizer.py
                                                     # the glibc setting of BENCHMARKS.md (CPU steps)

1. Training time of the bpe4k tokenizer on the sample's train split (4,709 stories, 4.0 MB).
2. Encoding throughput, tokens/s and MB/s of UTF-8 text, on the train split: prepare.py's path
   (Tokenizer.encode_stories, 512 stories a call: tiktoken is one thread, Hugging Face tokenizers uses
   every core) and one story at a time (Tokenizer.encode, one thread, as sample.py and the eval do).
   Bytes per token too: a smaller vocabulary cuts text into more pieces.
3. A CPU training step at 4 layers x 128 wide, T 128, B 16 (bench_train.py's cpu_4l128d step, fp32):
   GPT-2's 50,257-token vocabulary against the 4,096 one. ms/step, tokens/s and parameters; the batch
   is real text from each tokenizer's bins, fixed, so the loss must fall (a broken step cannot look fast).
4. What the speed buys: train.py with config/tiny_bpe4k.py on each tokenizer for about --budget_s
   seconds of training (iterations sized from 3.), and val_bpb (bits per byte, tokenizer-independent)
   of both at the same training time (interpolated between eval points in elapsed_s).

Every measurement alternates gpt2 and bpe4k run by run, so that load from other processes hits both
alike; medians are reported, and the spread (min-max) says how noisy the machine was. On a machine
that other processes load, torch's busy-waiting threads make multi-threaded steps erratic: --threads 1
gives steadier step times.
"""
import argparse
import contextlib
import csv
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import prepare  # noqa: E402
import tokenizer  # noqa: E402
from model import GPT, make_config  # noqa: E402

parser = argparse.ArgumentParser(description="bpe4k against GPT-2: tokenizer training, encoding, a CPU step")
parser.add_argument('--runs', type=int, default=5, help="runs of each measurement (medians reported)")
parser.add_argument('--steps', type=int, default=20, help="timed training steps per run")
parser.add_argument('--warmup_steps', type=int, default=5)
parser.add_argument('--threads', type=int, default=0,
                    help="torch threads for the step (0: torch's default); 1 is steadier on a machine others load")
parser.add_argument('--budget_s', type=float, default=60.0, help="training seconds per tokenizer in part 4 (0 skips it)")
parser.add_argument('--json_out', default='', help="also write every figure to this JSON file")
args = parser.parse_args()
if min(args.runs, args.steps) < 1:
    sys.exit("bench_tokenizer.py: error: --runs and --steps must be >= 1")
if args.threads:
    torch.set_num_threads(args.threads)
SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=128)
B = 16


def spread(values, scale=1.0, fmt='.2f'):
    values = [v * scale for v in values]
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


load_before = os.getloadavg()[0]
versions = {name: __import__(name).__version__ for name in ('tiktoken', 'tokenizers')}
print(f"{os.cpu_count()} CPUs, load average {load_before:.2f} (other processes slow every figure), "
      f"torch {torch.__version__} ({torch.get_num_threads()} threads), tiktoken {versions['tiktoken']}, "
      f"tokenizers {versions['tokenizers']}, {args.runs} runs")
results = dict(runs=args.runs, cpus=os.cpu_count(), torch=torch.__version__, torch_threads=torch.get_num_threads())
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    train_stories = list(prepare.read_stories(prepare.SAMPLE_DIR / prepare.SAMPLE_FILES['train']))
    train_mb = sum(len(s.encode('utf-8')) for s in train_stories) / 1e6

    # 1. tokenizer training
    train_s = []
    for run in range(args.runs):
        t0 = time.perf_counter()
        (tmp / f'run{run}').mkdir()
        tokenizer.build_tokenizer('bpe4k', iter(train_stories), tmp / f'run{run}')
        train_s.append(time.perf_counter() - t0)
    same = len({f.read_bytes() for run in range(args.runs) for f in (tmp / f'run{run}').iterdir()}) == 1
    print(f"\n1. bpe4k training on {len(train_stories):,} stories ({train_mb:.1f} MB): {spread(train_s)} s "
          f"(median (min-max)); the same file every run: {same}")
    results['bpe4k_train_s'] = train_s

    # prepare.py end to end, once per tokenizer: its bins feed the training step, its tokenizers are
    # loaded as every script loads them
    tokenizers, bins, prepare_s = {}, {}, {}
    for name in ('gpt2', 'bpe4k'):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            meta = prepare.prepare('small', 'sample', tmp / 'data', tokenizer=name)
        prepare_s[name] = time.perf_counter() - t0
        folder = prepare.variant_dir(tmp / 'data', 'small', name)
        tokenizers[name] = tokenizer.load_tokenizer(meta['tokenizer_info'], folder)
        bins[name] = prepare.load_bin(tmp / 'data', 'small', 'train', tokenizer=name)
    print(f"   prepare.py --variant small --source sample, end to end (one run): "
          f"gpt2 {prepare_s['gpt2']:.1f} s, bpe4k {prepare_s['bpe4k']:.1f} s (training included)")
    results['prepare_s'] = prepare_s

    # 2. encoding
    size = prepare.BATCH_STORIES
    batches = [train_stories[i:i + size] for i in range(0, len(train_stories), size)]
    enc = {name: dict(batch=[], story=[]) for name in tokenizers}
    n_tokens = {}
    for run in range(args.runs):
        for name, tok in tokenizers.items():
            t0 = time.perf_counter()
            n_tokens[name] = sum(len(tok.encode_stories(batch)) for batch in batches) - len(train_stories)
            enc[name]['batch'].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for story in train_stories:
                tok.encode(story)
            enc[name]['story'].append(time.perf_counter() - t0)
    print(f"\n2. encoding the train split ({train_mb:.1f} MB), median (min-max) of {args.runs} runs")
    print(f"{'tokenizer':<10} {'tokens':>9} {'bytes/token':>11}  {'batched M tokens/s':>22} {'MB/s':>20}  "
          f"{'one story at a time M tokens/s':>30} {'MB/s':>20}")
    for name in tokenizers:
        b, s = enc[name]['batch'], enc[name]['story']
        print(f"{name:<10} {n_tokens[name]:>9,} {train_mb * 1e6 / n_tokens[name]:>11.2f}  "
              f"{spread([n_tokens[name] / t for t in b], 1e-6):>22} {spread([train_mb / t for t in b]):>20}  "
              f"{spread([n_tokens[name] / t for t in s], 1e-6):>30} {spread([train_mb / t for t in s]):>20}")
        results[f'{name}_encode'] = dict(tokens=n_tokens[name], mb=train_mb, batch_s=b, story_s=s)

    # 3. a CPU training step
    setups = {}
    for name, tok in tokenizers.items():
        torch.manual_seed(0)
        model = GPT(make_config('baseline', vocab_size=tok.vocab_size, **SHAPE))
        optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
        starts = np.random.default_rng(0).integers(0, len(bins[name]) - SHAPE['block_size'] - 1, B)
        xy = np.stack([bins[name][i:i + SHAPE['block_size'] + 1] for i in starts]).astype(np.int64)
        xy = torch.from_numpy(xy)
        setups[name] = (model, optimizer, xy[:, :-1].contiguous(), xy[:, 1:].contiguous())

    def step(name):
        model, optimizer, x, y = setups[name]
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    first_loss = {name: step(name) for name in setups}
    for name in setups:
        for _ in range(args.warmup_steps - 1):
            step(name)
    step_ms = {name: [] for name in setups}
    for run in range(args.runs):
        for name in setups:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                last_loss = step(name)
            step_ms[name].append(1000 * (time.perf_counter() - t0) / args.steps)
            results.setdefault(f'{name}_step', {})['last_loss'] = last_loss
    tokens_per_step = B * SHAPE['block_size']
    print(f"\n3. CPU training step, 4 layers x 128 wide, T {SHAPE['block_size']}, B {B}, fp32; "
          f"median (min-max) of {args.runs} x {args.steps} steps")
    print(f"{'tokenizer':<10} {'vocab':>6} {'params':>8} {'of which embedding':>19} {'ms/step':>20} "
          f"{'tokens/s':>26}  loss first -> last")
    for name, (model, *_) in setups.items():
        n_params = model.num_params()
        n_embedding = model.transformer.wte.weight.numel()
        r = results[f'{name}_step']
        r.update(vocab_size=tokenizers[name].vocab_size, params=n_params, embedding_params=n_embedding,
                 ms_per_step=step_ms[name], first_loss=first_loss[name])
        tokens_per_s = [tokens_per_step / ms * 1000 for ms in step_ms[name]]
        print(f"{name:<10} {tokenizers[name].vocab_size:>6} {n_params / 1e6:>7.2f}M {n_embedding / 1e6:>18.2f}M "
              f"{spread(step_ms[name], fmt='.1f'):>20} {spread(tokens_per_s, fmt=',.0f'):>26}  "
              f"{first_loss[name]:.3f} -> {r['last_loss']:.3f}")
    speedup = statistics.median(step_ms['gpt2']) / statistics.median(step_ms['bpe4k'])
    text_kb_per_s = {name: tokens_per_step / statistics.median(step_ms[name]) * train_mb * 1e6 / n_tokens[name]
                     for name in setups}  # tokens/s x bytes/token: the text trained on per second
    print(f"bpe4k steps {speedup:.1f}x faster; text trained on per second: gpt2 {text_kb_per_s['gpt2']:,.1f} kB/s, "
          f"bpe4k {text_kb_per_s['bpe4k']:,.1f} kB/s")
    results['step_speedup'] = speedup

    # 4. val_bpb after the same training time, through train.py itself
    if args.budget_s > 0:
        import subprocess
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='4000000000', MALLOC_TRIM_THRESHOLD_='8000000000')
        if args.threads:
            env['OMP_NUM_THREADS'] = str(args.threads)
        curves = {}
        for name in setups:
            iters = max(20, int(args.budget_s * 1000 / statistics.median(step_ms[name])))
            cmd = [sys.executable, str(REPO / 'train.py'), 'config/tiny_bpe4k.py', f'--tokenizer={name}',
                   f'--data_dir={tmp / "data"}', f'--out_dir={tmp / "out"}', f'--run_name={name}',
                   f'--max_iters={iters}', f'--eval_interval={max(1, iters // 8)}', f'--log_interval={max(1, iters // 8)}',
                   '--eval_windows=32', '--save_checkpoints=False', '--tensorboard=False', '--device=cpu']
            subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
            rows = [r for r in csv.DictReader(open(tmp / 'out' / name / 'metrics.csv')) if r['val_bpb']]
            curves[name] = ([float(r['elapsed_s']) for r in rows], [float(r['val_bpb']) for r in rows], iters)
        same_s = min(c[0][-1] for c in curves.values())
        print(f"\n4. train.py config/tiny_bpe4k.py for ~{args.budget_s:.0f} s of training on each tokenizer "
              f"(lr 3e-3, eval on 32 windows); val_bpb after the same {same_s:.0f} s of training:")
        for name, (seconds, bpb, iters) in curves.items():
            at = float(np.interp(same_s, seconds, bpb))
            print(f"{name:<10} {iters:>5} iterations in {seconds[-1]:.0f} s: val_bpb {bpb[0]:.3f} -> {bpb[-1]:.3f}; "
                  f"at {same_s:.0f} s: {at:.3f}")
            results[f'{name}_budget'] = dict(iters=iters, elapsed_s=seconds, val_bpb=bpb, val_bpb_at_same_time=at)

print(f"\nload average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
if args.json_out:
    Path(args.json_out).write_text(json.dumps(results, indent=2), encoding='utf-8')
