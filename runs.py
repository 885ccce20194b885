"""
Run folders: the one place that writes files atomically and reads what train.py leaves in
out/<run_name>/. compare.py, eval_harness.py and train.py itself use it; nothing else parses a run.

A run folder holds:
    config.json        every resolved setting, model_args, torch version, device, git commit
    metrics.csv        one row per log/eval step (METRIC_COLUMNS); val_loss only on eval steps
    layer_norms.csv    iter, layer, grad_norm, weight_norm: per block, the embeddings, the final norm
    summary.json       status (running/completed/interrupted/diverged), final/best val loss, totals
    tb/                TensorBoard event files with the same scalars
    plots/             loss.png, lr.png, norms.png, layer_norms.png
    checkpoints/       ckpt_<iter>.pt (model.py's format), when checkpoints are on
"""
import csv
import fnmatch
import json
import math
import os
import re
from pathlib import Path

METRIC_COLUMNS = ['iter', 'tokens_seen', 'elapsed_s', 'lr', 'train_loss', 'val_loss', 'grad_norm',
                  'weight_norm', 'tokens_per_s', 'mfu']
LAYER_NORM_COLUMNS = ['iter', 'layer', 'grad_norm', 'weight_norm']
STATUSES = ('running', 'completed', 'interrupted', 'diverged')
CHECKPOINT_RE = re.compile(r'^ckpt_(\d+)\.pt$')


class RunError(ValueError):
    """A run folder or one of its files is missing or malformed; the message names the file."""


# -----------------------------------------------------------------------------
# writing

def atomic_write_bytes(path, data):
    """Temporary name, fsync, rename: readers see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode('utf-8'))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + '\n')


def checkpoint_path(run_dir, iter_num):
    return Path(run_dir) / 'checkpoints' / f'ckpt_{iter_num:06d}.pt'

# -----------------------------------------------------------------------------
# reading


def is_run_dir(path):
    path = Path(path)
    return (path / 'config.json').is_file() and (path / 'metrics.csv').is_file()


def find_runs(runs_dir, patterns=None):
    """Run folders directly under runs_dir (sorted by name), optionally only names matching any glob."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise RunError(f"{runs_dir}: runs folder not found (train.py writes runs to out/<run_name>/)")
    runs = [p for p in sorted(runs_dir.iterdir()) if p.is_dir() and is_run_dir(p)]
    if patterns:
        runs = [p for p in runs if any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns)]
    return runs


def read_json(path):
    path = Path(path)
    try:
        with open(path, encoding='utf-8') as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _number(text, path, line, column):
    if text == '' or text is None:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise RunError(f"{path}: line {line}: {column}={text!r} is not a number") from None


def read_csv_columns(path, required, text_columns=()):
    """A CSV file as {column: list}; numbers as floats (empty -> nan). Raises RunError naming the file."""
    path = Path(path)
    try:
        with open(path, encoding='utf-8', newline='') as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise RunError(f"{path}: missing column(s) {', '.join(missing)} (header: {','.join(header) or 'empty'})")
            cols = {c: [] for c in header}
            for line, row in enumerate(reader, start=2):
                if None in row or any(v is None for v in row.values()):
                    raise RunError(f"{path}: line {line}: expected {len(header)} fields")
                for c in header:
                    cols[c].append(row[c] if c in text_columns else _number(row[c], path, line, c))
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise RunError(f"{path}: not a readable CSV ({e})") from None
    return cols


def read_metrics(run_dir):
    """metrics.csv as {column: [floats]}, one entry per logged step, iterations increasing."""
    path = Path(run_dir) / 'metrics.csv'
    cols = read_csv_columns(path, METRIC_COLUMNS)
    iters = cols['iter']
    if any(b <= a for a, b in zip(iters, iters[1:])):
        raise RunError(f"{path}: iterations are not increasing")
    return cols


def read_layer_norms(run_dir):
    """layer_norms.csv as {column: list} (layer names as text), or None where the run has none."""
    path = Path(run_dir) / 'layer_norms.csv'
    if not path.is_file():
        return None
    return read_csv_columns(path, LAYER_NORM_COLUMNS, text_columns=('layer',))


def list_checkpoints(run_dir):
    """{iteration: path} of the run's complete checkpoints, in iteration order."""
    folder = Path(run_dir) / 'checkpoints'
    found = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m:
                found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def read_run(run_dir):
    """Everything compare/eval need from one run folder. A missing summary.json means the run never
    wrote one (killed before its first write): status 'unknown'."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / 'config.json')
    metrics = read_metrics(run_dir)
    summary = read_json(run_dir / 'summary.json') if (run_dir / 'summary.json').is_file() else {}
    status = summary.get('status', 'unknown')
    return dict(name=run_dir.name, dir=run_dir, config=config, metrics=metrics, summary=summary,
                status=status if status in STATUSES else 'unknown', checkpoints=list_checkpoints(run_dir))

# -----------------------------------------------------------------------------
# per-run plots (train.py calls this at the end of a run)


def plot_run(run_dir):
    """PNGs of loss, lr, grad/weight norms and a per-layer norm heatmap into run_dir/plots/."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    run_dir = Path(run_dir)
    out = run_dir / 'plots'
    out.mkdir(exist_ok=True)
    m = {k: np.asarray(v, dtype=float) for k, v in read_metrics(run_dir).items()}

    def save(fig, name):
        fig.tight_layout()
        tmp = out / f'{name}.tmp.png'
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, out / f'{name}.png')

    def series(ax, key, label):
        ok = ~np.isnan(m[key])
        if ok.any():
            ax.plot(m['iter'][ok], m[key][ok], label=label, marker='o' if ok.sum() < 20 else None, ms=3)

    fig, ax = plt.subplots(figsize=(7, 4))
    series(ax, 'train_loss', 'train')
    series(ax, 'val_loss', 'val')
    ax.set(xlabel='iteration', ylabel='loss', title=f'{run_dir.name}: loss')
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, 'loss')

    fig, ax = plt.subplots(figsize=(7, 3))
    series(ax, 'lr', 'lr')
    ax.set(xlabel='iteration', ylabel='learning rate', title=f'{run_dir.name}: learning rate')
    ax.grid(alpha=0.3)
    save(fig, 'lr')

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    series(axes[0], 'grad_norm', 'grad norm (before clipping)')
    series(axes[1], 'weight_norm', 'weight norm')
    for ax, t in zip(axes, ('global grad norm', 'global weight norm')):
        ax.set(xlabel='iteration', title=t)
        ax.grid(alpha=0.3)
    save(fig, 'norms')

    norms = read_layer_norms(run_dir)
    if norms and norms['iter']:
        layers = list(dict.fromkeys(norms['layer']))
        iters = sorted(set(norms['iter']))
        fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(layers) + 2.5))
        for ax, key in zip(axes, ('grad_norm', 'weight_norm')):
            grid = np.full((len(layers), len(iters)), np.nan)
            col = {it: j for j, it in enumerate(iters)}
            row = {name: i for i, name in enumerate(layers)}
            for it, name, v in zip(norms['iter'], norms['layer'], norms[key]):
                grid[row[name], col[it]] = v
            im = ax.imshow(np.log10(np.maximum(grid, 1e-12)), aspect='auto', interpolation='nearest', cmap='viridis')
            ax.set_yticks(range(len(layers)), layers)
            ticks = np.linspace(0, len(iters) - 1, min(6, len(iters))).astype(int)
            ax.set_xticks(ticks, [f'{int(iters[t])}' for t in ticks])
            ax.set(xlabel='iteration', title=f'log10 {key.replace("_", " ")} per layer')
            fig.colorbar(im, ax=ax)
        save(fig, 'layer_norms')
