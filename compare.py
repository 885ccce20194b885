"""
Compare training runs: overlay their curves, table them, and say which differences from the
baseline are beyond seed noise.

    python compare.py out                                   # every run in out/ -> comparisons/
    python compare.py out --x tokens                        # curves against tokens seen (equal data)
    python compare.py out --runs 'gqa_*' 'baseline_*' --report_dir comparisons/gqa
    python compare.py out --baseline 'baseline_*'           # which seed group the others are compared to

A run is a folder under the runs dir with config.json and metrics.csv (train.py writes them; runs.py
reads them). Writes into --report_dir:
    summary_table.csv / .md   one row per run: size, tokens, final and best val loss, speed, status
    groups.csv / .md          seed groups: n, mean and std of final val loss, difference from the
                              baseline group with a 95% Welch t-interval, "within noise" when it holds 0
    loss.png lr.png grad_norm.png weight_norm.png tokens_per_s.png layer_norms.png
    report.html               all of the above on one self-contained page (images embedded)

Seed groups: runs whose config.json is identical once the keys in SEED_GROUP_IGNORED_KEYS are
removed are replicates of one experiment, differing only in the seed. Each run is compared at its
final val loss (the last val_loss in metrics.csv); runs still going, interrupted, diverged or without
summary.json are shown and labelled, and a folder that cannot be read is named on stderr and skipped.
"""
import argparse
import base64
import csv
import fnmatch
import html
import io
import json
import math
import sys
from datetime import datetime
from pathlib import Path

import numpy as np

from runs import (DERIVED_KEYS, EXPECTED_TO_DIFFER, SEED_GROUP_IGNORED_KEYS, RunError, atomic_write_bytes,
                  atomic_write_text, find_runs, group_key, read_layer_norms, read_run, seed_groups, _flatten, _short)

X_AXES = {'iter': ('iter', 'iteration'), 'tokens': ('tokens_seen', 'tokens seen'),
          'time': ('elapsed_s', 'training seconds (evaluation excluded)')}
STATUS_LABELS = {'completed': 'completed', 'running': 'running (in progress)', 'interrupted': 'interrupted',
                 'diverged': 'diverged', 'unknown': 'unknown (no summary.json)'}
CONFIDENCE = 0.95
WITHIN_NOISE = 'within noise'
NO_NOISE_ESTIMATE = 'n=1: no seed noise estimate'

RUN_COLUMNS = ['run', 'model_name', 'group', 'seed', 'status', 'n_params', 'iters', 'tokens_seen',
               'final_val_loss', 'final_val_tokens', 'best_val_loss', 'best_val_iter', 'final_train_loss',
               'wall_time_s', 'train_time_s', 'tokens_per_s', 'mfu']
GROUP_COLUMNS = ['group', 'model_name', 'runs', 'n', 'mean_final_val_loss', 'std_final_val_loss',
                 'diff_vs_baseline', 'ci95_low', 'ci95_high', 'welch_df', 'verdict', 'notes']

# -----------------------------------------------------------------------------
# Student t quantiles (no scipy): the t CDF is a regularized incomplete beta function


def _beta_continued_fraction(a, b, x):
    """Continued fraction of I_x(a, b), evaluated with the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return h


def betainc(a, b, x):
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on this side; use symmetry otherwise
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with df (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p, df):
    """The t with P(T <= t) = p, by bisection on t_cdf (monotone), to ~1e-12."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile: need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def welch_interval(values, baseline_values, confidence=CONFIDENCE):
    """mean(values) - mean(baseline_values) with Welch's t-interval (unequal variances).
    Returns (diff, low, high, df); low/high/df are None when either side has fewer than 2 runs."""
    a, b = np.asarray(values, dtype=float), np.asarray(baseline_values, dtype=float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, None, None, None
    va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)  # squared standard errors of the means
    se = math.sqrt(va + vb)
    if se == 0.0:  # every replicate identical: no spread to scale an interval with
        return diff, diff, diff, None
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return diff, diff - half, diff + half, df

# -----------------------------------------------------------------------------
# loading runs and their per-run numbers


def load_runs(paths):
    """read_run for every folder; a folder that cannot be read is named on stderr and skipped."""
    loaded, skipped = [], []
    for path in paths:
        try:
            loaded.append(read_run(path))
        except RunError as e:
            print(f"compare.py: skipping {path.name}: {e}", file=sys.stderr)
            skipped.append(f"{path.name}: {e}")
    return loaded, skipped


def _present(values):
    """(index, value) of the logged (non-blank) entries of a metrics column."""
    return [(i, v) for i, v in enumerate(values) if not math.isnan(v)]


def steady(m, key, resumed_at):
    """Logged values of a speed column without the first interval after the start and after each resume:
    it includes compilation and warm-up (train.py's tokens_per_s_mean leaves it out too). All of them
    where nothing else is left."""
    logged = _present(m[key])
    first = {next((i for i, _ in logged if m['iter'][i] > start), None) for start in [-1, *resumed_at]}
    return [v for i, v in logged if i not in first] or [v for _, v in logged]


def run_numbers(run):
    """One summary-table row for a run, every number taken from its metrics.csv (blank where missing)."""
    m, config, summary = run['metrics'], run['config'], run['summary']
    last = lambda key: m[key][-1] if m['iter'] and not math.isnan(m[key][-1]) else None
    vals = _present(m['val_loss'])
    best = min(vals, key=lambda iv: iv[1]) if vals else None
    trains = _present(m['train_loss'])
    speeds = steady(m, 'tokens_per_s', config.get('resumed_at') or [])
    mfus = steady(m, 'mfu', config.get('resumed_at') or [])
    n_params = config.get('n_params', summary.get('n_params'))
    return dict(
        run=run['name'], model_name=config.get('model_name', summary.get('model_name', '')),
        seed=config.get('seed', summary.get('seed', '')), status=run['status'],
        n_params=int(n_params) if isinstance(n_params, (int, float)) else None,
        iters=int(last('iter')) if last('iter') is not None else None,
        tokens_seen=int(last('tokens_seen')) if last('tokens_seen') is not None else None,
        final_val_loss=vals[-1][1] if vals else None,
        final_val_tokens=int(m['tokens_seen'][vals[-1][0]]) if vals else None,
        best_val_loss=best[1] if best else None,
        best_val_iter=int(m['iter'][best[0]]) if best else None,
        final_train_loss=trains[-1][1] if trains else None,
        # wall clock (evaluation included) from summary.json; a run that never wrote one: training time
        wall_time_s=summary.get('wall_time_s') if isinstance(summary.get('wall_time_s'), (int, float)) else last('elapsed_s'),
        train_time_s=last('elapsed_s'),
        tokens_per_s=float(np.mean(speeds)) if speeds else None,
        mfu=float(np.mean(mfus)) if mfus else None,
    )

# -----------------------------------------------------------------------------
# seed groups and the baseline


def pick_baseline(groups, pattern):
    """The baseline group and why it was chosen. pattern (a run name, a glob or a group label) wins;
    otherwise the one group with model_name 'baseline', otherwise the first group."""
    if pattern:
        hits = [g for g in groups if g['label'] == pattern
                or any(fnmatch.fnmatchcase(r['name'], pattern) for r in g['runs'])]
        if not hits:
            names = ', '.join(r['name'] for g in groups for r in g['runs'])
            raise SystemExit(f"compare.py: --baseline {pattern!r} matches no run or group (runs: {names})")
        if len(hits) > 1:
            raise SystemExit(f"compare.py: --baseline {pattern!r} matches runs in {len(hits)} groups "
                             f"({'; '.join(g['label'] for g in hits)}): name runs of one group")
        return hits[0], f'--baseline {pattern}'
    named = [g for g in groups if g['model_name'] == 'baseline']
    if len(named) == 1:
        return named[0], "the only group with model_name 'baseline'"
    why = "several groups have model_name 'baseline'" if named else "no group has model_name 'baseline'"
    return groups[0], f'{why}; took the first group (choose with --baseline)'


def group_values(group, rows):
    """Final val losses used for a group's statistics: finite ones of runs that did not diverge."""
    return [rows[r['name']]['final_val_loss'] for r in group['runs'] if r['status'] != 'diverged'
            and rows[r['name']]['final_val_loss'] is not None and math.isfinite(rows[r['name']]['final_val_loss'])]


def group_notes(group, rows):
    notes = []
    for r in group['runs']:
        if r['status'] == 'diverged':
            notes.append(f"{r['name']} diverged (left out)")
        elif r['status'] != 'completed':
            notes.append(f"{r['name']} {STATUS_LABELS[r['status']]}")
        elif rows[r['name']]['final_val_loss'] is None:
            notes.append(f"{r['name']} has no val loss")
    tokens = {rows[r['name']]['final_val_tokens'] for r in group['runs']
              if rows[r['name']]['final_val_tokens'] is not None}
    if len(tokens) > 1:
        notes.append(f'final val loss at {min(tokens):,}..{max(tokens):,} tokens')
    seeds = [r['config'].get('seed') for r in group['runs']]
    repeated = sorted({str(s) for s in seeds if seeds.count(s) > 1})
    if repeated:
        notes.append(f"seed {', '.join(repeated)} repeated")
    differing = sorted({k for r in group['runs'] for k in r['config'] if k in SEED_GROUP_IGNORED_KEYS
                        and k not in EXPECTED_TO_DIFFER
                        and len({_short(q['config'].get(k)) for q in group['runs']}) > 1})
    if differing:
        notes.append(f"pooled across {', '.join(differing)}")
    return '; '.join(notes)


def group_table(groups, baseline, rows):
    """One row per group (baseline first): n, mean/std of final val loss, difference from the baseline."""
    base_values = group_values(baseline, rows)
    table = []
    for group in [baseline] + [g for g in groups if g is not baseline]:
        values = group_values(group, rows)
        row = dict(group=group['label'], model_name=group['model_name'],
                   runs=' '.join(r['name'] for r in group['runs']), n=len(values),
                   mean_final_val_loss=float(np.mean(values)) if values else None,
                   std_final_val_loss=float(np.std(values, ddof=1)) if len(values) >= 2 else None,
                   diff_vs_baseline=None, ci95_low=None, ci95_high=None, welch_df=None,
                   notes=group_notes(group, rows))
        if group is baseline:
            row['verdict'] = 'baseline'
        elif not values or not base_values:
            row['verdict'] = 'no val loss yet'
        else:
            diff, low, high, df = welch_interval(values, base_values)
            row.update(diff_vs_baseline=diff, ci95_low=low, ci95_high=high, welch_df=df)
            if low is None:
                row['verdict'] = NO_NOISE_ESTIMATE
            elif low <= 0.0 <= high:
                row['verdict'] = WITHIN_NOISE
            else:
                row['verdict'] = f"{'lower' if diff < 0 else 'higher'} loss than baseline, beyond noise"
        table.append(row)
    return table


def token_warnings(rows):
    """Differences at unequal training are not comparisons of the architectures alone: say so."""
    measured = {n: row['final_val_tokens'] for n, row in rows.items()
                if row['status'] != 'diverged' and row['final_val_tokens'] is not None}
    warnings = []
    if len(set(measured.values())) > 1:
        per_run = ', '.join(f'{n} {tokens:,}' for n, tokens in measured.items())
        warnings.append(f'final val losses were measured after different numbers of tokens ({per_run}): '
                        'the differences mix architecture and amount of training; compare curves with --x tokens')
    unfinished = [n for n, row in rows.items() if row['status'] != 'completed']
    if unfinished:
        warnings.append('not completed: ' + ', '.join(f"{n}: {STATUS_LABELS[rows[n]['status']]}" for n in unfinished))
    return warnings

# -----------------------------------------------------------------------------
# tables


def _csv_value(v):
    return '' if v is None else repr(float(v)) if isinstance(v, float) else str(v)  # repr: exact round trip


def to_csv(table, columns):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    writer.writerow(columns)
    for row in table:
        writer.writerow([_csv_value(row[c]) for c in columns])
    return buf.getvalue()


def _human(column, v):
    if v is None:
        return ''
    if column == 'status':
        return STATUS_LABELS.get(v, v)
    if column == 'n_params':
        return f'{v / 1e6:.2f}M' if v >= 1e5 else f'{v:,}'
    if column in ('tokens_seen', 'final_val_tokens'):
        return f'{v:,}'
    if column in ('tokens_per_s',):
        return f'{v:,.0f}'
    if column == 'mfu':
        return f'{100 * v:.1f}%'
    if column in ('wall_time_s', 'train_time_s', 'welch_df'):
        return f'{v:.1f}'
    if isinstance(v, float):
        return f'{v:+.4f}' if column == 'diff_vs_baseline' else f'{v:.4f}'
    return str(v)


def to_markdown(table, columns):
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for row in table:
        lines.append('| ' + ' | '.join(_human(c, row[c]).replace('|', '\\|') for c in columns) + ' |')
    return '\n'.join(lines) + '\n'


def to_html_table(table, columns):
    head = ''.join(f'<th>{html.escape(c)}</th>' for c in columns)
    body = ''.join('<tr>' + ''.join(f'<td>{html.escape(_human(c, row[c]))}</td>' for c in columns) + '</tr>'
                   for row in table)
    return f'<table><tr>{head}</tr>{body}</table>'

# -----------------------------------------------------------------------------
# plots: one colour per seed group, one line style per run inside it


def _styles(groups):
    import matplotlib
    colors = matplotlib.colormaps['tab10' if len(groups) <= 10 else 'tab20'].colors
    dashes = ['-', '--', ':', '-.']
    return {r['name']: (colors[i % len(colors)], dashes[j % len(dashes)])
            for i, g in enumerate(groups) for j, r in enumerate(g['runs'])}


def _label(run):
    return run['name'] if run['status'] == 'completed' else f"{run['name']} [{STATUS_LABELS[run['status']]}]"


def _png(fig):
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100, bbox_inches='tight')
    plt.close(fig)
    return buf.getvalue()


def _draw(ax, run, key, x_key, style):
    m = run['metrics']
    x, y = np.asarray(m[x_key], dtype=float), np.asarray(m[key], dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return False
    color, dash = style
    ax.plot(x[ok], y[ok], color=color, linestyle=dash, label=_label(run), marker='o' if ok.sum() <= 25 else None,
            ms=3, lw=1.4)
    return True


def overlay_figure(loaded, styles, panels, x):
    """One figure with a panel per (metric, title, log_y); legend to the right, outside the curves.
    log_y: a log axis where the values span more than a factor of 20."""
    import matplotlib.pyplot as plt
    x_key, x_label = X_AXES[x]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    for ax, (key, panel_title, log_y) in zip(axes[0], panels):
        drawn = [_draw(ax, run, key, x_key, styles[run['name']]) for run in loaded]
        if not any(drawn):
            ax.text(0.5, 0.5, f'no {key} logged', ha='center', va='center', transform=ax.transAxes)
        elif log_y and ax.dataLim.y0 > 0 and ax.dataLim.y1 / ax.dataLim.y0 > 20:  # log only where it spans decades
            ax.set_yscale('log')
        ax.set(xlabel=x_label, title=panel_title)
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc='upper left', bbox_to_anchor=(1.0, 0.95), fontsize='small')
    fig.tight_layout()
    return _png(fig)


def layer_norm_figure(loaded, x):
    """Small multiples: a row per run, grad and weight norm per layer (colour = depth), shared y axes."""
    import matplotlib.pyplot as plt
    x_key, x_label = X_AXES[x]
    legend_drawn = False
    fig, axes = plt.subplots(len(loaded), 2, figsize=(12, 2.6 * len(loaded) + 0.6), squeeze=False,
                             sharex=True, sharey='col')
    for row, run in zip(axes, loaded):
        try:
            norms = read_layer_norms(run['dir'])
        except RunError as e:
            print(f"compare.py: {run['name']}: layer norms not plotted: {e}", file=sys.stderr)
            norms = None
        if not norms or not norms['iter']:
            for ax in row:
                ax.text(0.5, 0.5, f"{run['name']}: no layer_norms.csv data", ha='center', va='center',
                        transform=ax.transAxes)
            continue
        m = run['metrics']
        layers = list(dict.fromkeys(norms['layer']))
        colors = plt.get_cmap('viridis')(np.linspace(0, 0.95, len(layers)))
        it = np.asarray(norms['iter'], dtype=float)
        # layer norms are logged by iteration; map onto the chosen x axis through metrics.csv
        xs = it if x_key == 'iter' else np.interp(it, m['iter'], m[x_key]) if m['iter'] else it * np.nan
        names = np.asarray(norms['layer'])
        for ax, key in zip(row, ('grad_norm', 'weight_norm')):
            values = np.asarray(norms[key], dtype=float)
            for layer, color in zip(layers, colors):
                sel = (names == layer) & np.isfinite(values) & (values > 0) & np.isfinite(xs)
                if sel.any():
                    ax.plot(xs[sel], values[sel], color=color, lw=1.1, label=layer)
            if key == 'grad_norm':  # grad norms span decades; weight norms are easier to read as they are
                ax.set_yscale('log')
            ax.set(xlabel=x_label if run is loaded[-1] else None,
                   title=f"{_label(run)}: {key.replace('_', ' ')} per layer")
            ax.grid(alpha=0.3)
        handles, labels = row[1].get_legend_handles_labels()
        if handles and not legend_drawn:  # layer colours are the same in every row: one legend
            legend_drawn = True
            row[1].legend(handles, labels, loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize='x-small',
                          ncol=max(1, math.ceil(len(labels) / 14)))
    fig.tight_layout()
    return _png(fig)


def make_plots(loaded, groups, x):
    import matplotlib
    matplotlib.use('Agg')
    styles = _styles(groups)
    return {
        'loss.png': overlay_figure(loaded, styles, [('train_loss', 'train loss', False),
                                                    ('val_loss', 'val loss', False)], x),
        'lr.png': overlay_figure(loaded, styles, [('lr', 'learning rate', False)], x),
        'grad_norm.png': overlay_figure(loaded, styles, [('grad_norm', 'global grad norm (before clipping)', True)], x),
        'weight_norm.png': overlay_figure(loaded, styles, [('weight_norm', 'global weight norm', False)], x),
        'tokens_per_s.png': overlay_figure(loaded, styles, [('tokens_per_s', 'tokens/s', False)], x),
        'layer_norms.png': layer_norm_figure(loaded, x),
    }

# -----------------------------------------------------------------------------
# the report

HOW_TO_READ = (
    f'Runs whose config.json differs only in the seed (and bookkeeping keys: SEED_GROUP_IGNORED_KEYS in '
    f'compare.py) form a seed group. diff_vs_baseline = mean final val loss of the group minus that of the '
    f'baseline group (negative: lower loss than the baseline); ci95_low..ci95_high is its {CONFIDENCE:.0%} '
    f"Welch t-interval from the seed-to-seed spread of both groups. '{WITHIN_NOISE}': the interval contains 0, "
    f'so these runs cannot tell the difference from seed noise (which is not proof that there is none). '
    f"'{NO_NOISE_ESTIMATE}': one side has a single run, so the noise is unknown; train more seeds.")


def groups_markdown(table, baseline_label, why, warnings):
    lines = ['# Seed groups', '', f'Baseline: **{baseline_label}** ({why}).', '', HOW_TO_READ, '',
             to_markdown(table, GROUP_COLUMNS)]
    if warnings:
        lines += ['## Warnings', ''] + [f'- {w}' for w in warnings] + ['']
    return '\n'.join(lines)


def report_html(run_table, table, plots, baseline_label, why, warnings, runs_dir, x):
    style = ('body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;'
             'font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}'
             'th{background:#f3f3f3}.warn{color:#a40}img{max-width:100%;display:block;margin:1em 0}')
    parts = [f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Run comparison</title>'
             f'<style>{style}</style></head><body>',
             f'<h1>Run comparison: {html.escape(str(runs_dir))}</h1>',
             f'<p>{len(run_table)} runs, generated {datetime.now().isoformat(timespec="seconds")} by compare.py; '
             f'curves against {html.escape(X_AXES[x][1])}.</p>']
    if warnings:
        parts.append('<h2>Warnings</h2><ul>' + ''.join(f'<li class="warn">{html.escape(w)}</li>' for w in warnings)
                     + '</ul>')
    parts += [f'<h2>Seed groups</h2><p>Baseline: <b>{html.escape(baseline_label)}</b> ({html.escape(why)}).</p>',
              f'<p>{html.escape(HOW_TO_READ)}</p>', to_html_table(table, GROUP_COLUMNS),
              '<h2>Runs</h2>', to_html_table(run_table, RUN_COLUMNS), '<h2>Curves</h2>']
    for name, png in plots.items():
        data = base64.b64encode(png).decode('ascii')
        parts.append(f'<h3>{html.escape(name)}</h3><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
    parts.append('</body></html>\n')
    return '\n'.join(parts)


# -----------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('runs_dir', nargs='?', help="folder holding run folders (default: out)")
    parser.add_argument('--runs_dir', dest='runs_dir_flag', metavar='RUNS_DIR', help='the same as the positional argument')
    parser.add_argument('--runs', nargs='+', metavar='NAME_OR_GLOB', help="only these runs, e.g. 'gqa_*' baseline_s1")
    parser.add_argument('--report_dir', default='comparisons', help='where the report goes (default: comparisons)')
    parser.add_argument('--x', choices=list(X_AXES), default='iter', help='x axis of the curves (default: iter)')
    parser.add_argument('--baseline', metavar='NAME_OR_GLOB',
                        help="run name, glob or group label of the baseline group (default: model_name 'baseline')")
    args = parser.parse_args(argv)
    if args.runs_dir and args.runs_dir_flag and args.runs_dir != args.runs_dir_flag:
        parser.error(f'two runs dirs given: {args.runs_dir} and --runs_dir {args.runs_dir_flag}')
    args.runs_dir = Path(args.runs_dir or args.runs_dir_flag or 'out')
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        paths = find_runs(args.runs_dir)
    except RunError as e:
        raise SystemExit(f'compare.py: {e}') from None
    if not paths:
        raise SystemExit(f'compare.py: no runs in {args.runs_dir} (a run is a folder with config.json and '
                         f'metrics.csv; train one with python train.py)')
    if args.runs:
        chosen = find_runs(args.runs_dir, args.runs)
        if not chosen:
            raise SystemExit(f"compare.py: --runs {' '.join(args.runs)} matches none of the runs in "
                             f"{args.runs_dir} ({', '.join(p.name for p in paths)})")
        paths = chosen
    loaded, skipped = load_runs(paths)
    if not loaded:
        raise SystemExit(f'compare.py: none of the {len(paths)} runs in {args.runs_dir} could be read')

    groups = seed_groups(loaded)
    baseline, why = pick_baseline(groups, args.baseline)
    rows = {run['name']: run_numbers(run) for run in loaded}
    for group in groups:
        for run in group['runs']:
            rows[run['name']]['group'] = group['label']
    run_table = [rows[run['name']] for run in loaded]
    table = group_table(groups, baseline, rows)
    warnings = token_warnings(rows) + [f'skipped {s}' for s in skipped]
    plots = make_plots(loaded, groups, args.x)

    # everything is rendered before anything is written: a failure on the way leaves the old report as it was
    texts = {'summary_table.csv': to_csv(run_table, RUN_COLUMNS),
             'summary_table.md': '# Runs\n\n' + to_markdown(run_table, RUN_COLUMNS),
             'groups.csv': to_csv(table, GROUP_COLUMNS),
             'groups.md': groups_markdown(table, baseline['label'], why, warnings),
             'report.html': report_html(run_table, table, plots, baseline['label'], why, warnings,
                                        args.runs_dir, args.x)}
    report_dir = Path(args.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        atomic_write_bytes(report_dir / name, png)
    for name, text in texts.items():
        atomic_write_text(report_dir / name, text)

    print(f"compared {len(loaded)} runs in {len(groups)} seed groups; baseline: {baseline['label']} ({why})")
    print(to_markdown(table, ['group', 'n', 'mean_final_val_loss', 'std_final_val_loss', 'diff_vs_baseline',
                              'ci95_low', 'ci95_high', 'verdict']))
    for w in warnings:
        if not w.startswith('skipped '):  # those were named on stderr as they were met
            print(f'compare.py: warning: {w}', file=sys.stderr)
    print(f'wrote {report_dir}/report.html (tables: summary_table.csv, groups.csv)')


if __name__ == '__main__':
    main()
