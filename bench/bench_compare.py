"""
Speed of compare.py on many runs: writes synthetic run folders (config.json, metrics.csv, layer_norms.csv,
summary.json as train.py writes them; --groups variants x --seeds seeds, --evals evaluations each) into a
temporary folder, then times compare.main on them, in this process, without stories.

    python bench/bench_compare.py                      # 100 runs: 5 groups x 20 seeds, 50 evaluations
    python bench/bench_compare.py --groups 10 --seeds 10 --evals 200 --repeat 3

Prints the time to read the runs and judge them (the tables) and the time of the whole report (plots
and files included), best of --repeat. State the load average (uptime) beside any figure you record.
"""
import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import compare  # noqa: E402

HEADER = 'iter,tokens_seen,elapsed_s,lr,train_loss,val_loss,grad_norm,weight_norm,tokens_per_s,mfu,val_bpb'


def write_runs(root, groups, seeds, evals, eval_interval=10, tokens_per_iter=1024):
    """groups x seeds completed runs; group g is 0.01 * g nats worse than the baseline, seed noise 0.02."""
    rng = np.random.default_rng(0)
    for g in range(groups):
        model_name = 'baseline' if g == 0 else f'variant{g}'
        for seed in range(1, seeds + 1):
            run = root / f'{model_name}_s{seed}'
            run.mkdir(parents=True)
            config = dict(run_name=run.name, seed=seed, model_name=model_name, n_layer=2, n_head=2, n_embd=32,
                          learning_rate=1e-3, max_iters=evals * eval_interval, batch_size=4, block_size=256,
                          eval_interval=eval_interval, tokens_per_iter=tokens_per_iter, n_params=12345)
            (run / 'config.json').write_text(json.dumps(config))
            offset = 0.01 * g + 0.02 * rng.standard_normal()
            lines, norms = [HEADER], ['iter,layer,grad_norm,weight_norm']
            for k in range(evals + 1):
                it = k * eval_interval
                val = 2.0 + 8.0 / (1 + it / 50) + offset
                lines.append(f'{it},{it * tokens_per_iter},{it * 0.05},1e-3,{val + 0.05},{val},1.0,50.0,'
                             f'{2e4 + seed},,{val / 3}')
                norms += [f'{it},{layer},0.1,10.0' for layer in ('embed', 'block_0', 'block_1', 'final_norm')]
            (run / 'metrics.csv').write_text('\n'.join(lines) + '\n')
            (run / 'layer_norms.csv').write_text('\n'.join(norms) + '\n')
            (run / 'summary.json').write_text(json.dumps(dict(status='completed', iters=evals * eval_interval)))


def judge(runs_dir):
    """What compare.main does before drawing: read every run, group them, build the tables."""
    loaded, _ = compare.load_runs(sorted(p for p in runs_dir.iterdir() if p.is_dir()))
    groups = compare.seed_groups(loaded)
    baseline, _ = compare.pick_baseline(groups, None)
    rows = {r['name']: compare.run_numbers(r) for r in loaded}
    return compare.group_table(groups, baseline, rows, 'val_loss')


def best_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--groups', type=int, default=5)
    ap.add_argument('--seeds', type=int, default=20)
    ap.add_argument('--evals', type=int, default=50)
    ap.add_argument('--repeat', type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir, report_dir = Path(tmp) / 'out', Path(tmp) / 'report'
        write_runs(runs_dir, args.groups, args.seeds, args.evals)
        n = args.groups * args.seeds
        judged = best_time(lambda: judge(runs_dir), args.repeat)
        with contextlib.redirect_stdout(io.StringIO()):
            whole = best_time(lambda: compare.main([str(runs_dir), '--report_dir', str(report_dir),
                                                    '--no_samples']), args.repeat)
    load = os.getloadavg()[0]
    print(f'{n} runs ({args.groups} groups x {args.seeds} seeds, {args.evals + 1} evaluations each), '
          f'best of {args.repeat}, load average {load:.2f}:')
    print(f'  read and judge (tables): {judged:.2f} s')
    print(f'  whole report (no stories): {whole:.2f} s')


if __name__ == '__main__':
    main()
