"""
The sweep launcher's own cost on a CPU: from `python sweep.py ...` to the first run's train.py starting
and to its first iteration (against `python train.py` alone), and, one run at a time (--parallel 1),
the gap between one run's train.py ending and the next one's starting (submitit's job processes).

    python prepare.py --variant small --source sample       # once
    python bench/bench_sweep.py                             # 3 tiny runs of 5 iterations, one at a time
    python bench/bench_sweep.py --n_runs=5 --data_dir=data/tinystories --json_out=sweep_bench.json

A run's train.py starts when its pid file (out/<sweep>/logs/<run>.pid) appears and ends when it goes;
its first iteration is its first metrics.csv row (written as the training loop begins).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from configurator import ConfigError, configure  # noqa: E402

n_runs: int = 3                 # runs in the sweep (one seed each)
max_iters: int = 5              # iterations per run: the launcher's cost is what is measured
data_dir: str = 'data/tinystories'
json_out: str = ''              # also write the figures to this JSON file
try:
    configure(globals(), sys.argv[1:])
except ConfigError as e:
    sys.exit(f"bench_sweep.py: error: {e}")
if not (Path(data_dir) / 'small' / 'meta.json').is_file():
    sys.exit(f"bench_sweep.py: error: {data_dir}/small not found (python prepare.py --variant small)")

TINY = ['--n_layer=1', '--n_embd=32', '--n_head=2', '--block_size=32', '--batch_size=2', '--eval_windows=8',
        f'--max_iters={max_iters}', '--log_interval=1', '--tensorboard=False',
        f'--data_dir={os.path.abspath(data_dir)}']
ENV = dict(os.environ, MALLOC_MMAP_THRESHOLD_='4000000000', MALLOC_TRIM_THRESHOLD_='8000000000')


def has_row(metrics):
    try:
        return len(metrics.read_text().splitlines()) > 1
    except OSError:
        return False


def watch(cmd, events, done):
    """Start cmd and poll every 2 ms until it exits, calling events(now) each time."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    while proc.poll() is None or not done():
        events(time.perf_counter() - t0)
        if proc.poll() is not None and not done():
            sys.exit(f"bench_sweep.py: error: {' '.join(cmd[1:3])} exited {proc.returncode}: "
                     f"{proc.stderr.read()[-2000:]}")
        time.sleep(0.002)
    return time.perf_counter() - t0


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    # train.py alone: command to first iteration
    first_row = {}
    bare_metrics = tmp / 'bare' / 'solo' / 'metrics.csv'
    watch([sys.executable, 'train.py', 'config/smoke.py', *TINY, f'--out_dir={tmp / "bare"}', '--run_name=solo'],
          lambda t: first_row.setdefault('solo', t) if has_row(bare_metrics) else None, lambda: True)

    # the sweep, one run at a time
    (tmp / 'bench.py').write_text(f"base = 'config/smoke.py'\ngrid = dict(seed={list(range(1, n_runs + 1))})\n")
    sweep_dir = tmp / 'out' / 'bench'
    names = [f's{i}' for i in range(1, n_runs + 1)]
    started, ended = {}, {}

    def events(t):
        for name in names:
            running = (sweep_dir / 'logs' / f'{name}.pid').is_file()
            if running and name not in started:
                started[name] = t
            if name in started and not running and name not in ended:
                ended[name] = t
            if name not in first_row and has_row(sweep_dir / name / 'metrics.csv'):
                first_row[name] = t

    total = watch([sys.executable, 'sweep.py', str(tmp / 'bench.py'), *TINY, f'--out_dir={tmp / "out"}',
                   '--parallel', '1', '--no_report'], events, lambda: len(ended) == n_runs)

gaps = [started[b] - ended[a] for a, b in zip(names, names[1:])]
figures = dict(
    sweep_to_first_train_py_s=started[names[0]], sweep_to_first_iteration_s=first_row[names[0]],
    train_py_alone_to_first_iteration_s=first_row['solo'],
    run_end_to_next_start_s=dict(mean=sum(gaps) / len(gaps), min=min(gaps), max=max(gaps)) if gaps else None,
    sweep_total_s=total, n_runs=n_runs, max_iters=max_iters, cpus=os.cpu_count(),
    load_average_1m=os.getloadavg()[0])
print(f"sweep command -> first run's train.py starts:   {started[names[0]]:6.2f} s  (launcher)")
print(f"sweep command -> first run's first iteration:   {first_row[names[0]]:6.2f} s")
print(f"train.py alone -> its first iteration:          {first_row['solo']:6.2f} s")
if gaps:
    print(f"a run's train.py ends -> the next one starts:   {sum(gaps) / len(gaps):6.2f} s mean "
          f"(min {min(gaps):.2f}, max {max(gaps):.2f}, {len(gaps)} gaps, --parallel 1)")
print(f"whole sweep ({n_runs} runs x {max_iters} iterations):        {total:6.2f} s   "
      f"(load average {figures['load_average_1m']:.1f} on {figures['cpus']} CPUs)")
if json_out:
    with open(json_out, 'w') as f:
        json.dump(figures, f, indent=2)
