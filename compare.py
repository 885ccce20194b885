"""
Compare training runs: is a variant better than the baseline, beyond seed noise, at equal tokens?

    python compare.py out                                   # every run in out/ -> comparisons/
    python compare.py out --x tokens                        # curves against tokens seen
    python compare.py out --runs 'gqa_*' 'baseline_*' --report_dir comparisons/gqa
    python compare.py out --baseline 'baseline_*'           # the seed group the others are compared to
    python compare.py out --metric val_bpb                  # judge on bits per byte instead of val loss
    python compare.py out/ladder_cpu --scaling              # loss vs FLOPs across sizes, compute multipliers
    python compare.py out/lr_sweep --tune learning_rate     # also: each variant at its own best learning rate

A run is a folder with config.json and metrics.csv (train.py writes them, runs.py reads them). Runs
whose settings differ only in the seed (runs.seed_groups) form a seed group. Writes into --report_dir:
    summary_table.csv / .md   one row per run: status, size, tokens, final and best val loss, bpb, speed
    groups.csv / .md          per seed group: mean and std of the final values, and the difference from
                              the baseline group with its 95% interval, p-value and verdict
    tuned.csv / .md, tuned.png   with --tune: each variant at its own best value of the tuned keys
    scaling.csv / .md, scaling.png   where a variant ran at 3+ sizes (or --scaling): final loss against training
                              FLOPs fitted per variant, compute multipliers against the baseline (stats.py);
                              lr_sensitivity.csv / .png where the learning rate varies as well
    *.png                     curves per seed group (mean, min-max band, runs), zoom, difference panel
    report.html               all of it on one self-contained page, with stories from each group

How a difference is judged (--metric, default val_loss):
- at equal tokens: the largest token count every run of both groups reached with a value (np.interp
  between eval points where their cadences differ); the final-value columns are kept beside it.
- paired by seed where >= 2 seeds pair up (same seed = same batches in train.py): the mean of the
  per-seed differences with a paired t-interval; otherwise Welch's t-interval; one run against a
  replicated group: that group's seed spread is taken as the noise of both (said in the table).
- Holm-Bonferroni across all the groups compared in one report: the verdict is adjusted, the 95%
  interval beside it is not (so ten variants do not produce a winner by chance).
- Runs on different tokenizers are compared on val_bpb (bits per byte) only, and the report says so.
Diverged runs are shown and left out of the statistics; a folder that cannot be read is named on
stderr and skipped.
"""
import argparse
import base64
import csv
import html
import io
import math
import os
import re
import sys
from datetime import datetime
from pathlib import Path

import numpy as np

import stats
from runs import (EXPECTED_TO_DIFFER, METRIC, METRICS, SEED_GROUP_IGNORED_KEYS, SIZE_KEYS, STATUSES, RunError,
                  _short, add_run_args, atomic_write_bytes, atomic_write_text, baselines_by_size, find_runs,
                  ladder_baseline, read_json, read_layer_norms, read_run, references, resolve_checkpoint,
                  seed_groups, size_label, size_of)
from runs import pick_baseline as pick_run_baseline

X_AXES = {'iter': 'iter', 'tokens': 'tokens_seen', 'time': 'elapsed_s'}  # --x: the metrics column on x
JUDGED = ['val_loss', 'val_bpb']  # what --metric may judge on
SPEED_PANELS = ('tokens_per_s', 'ms_per_iter', 'mfu')  # the panels a shared CPU distorts
STATUS_LABELS = {'completed': 'completed', 'running': 'running (in progress)', 'interrupted': 'interrupted',
                 'diverged': 'diverged', 'failed': 'failed', 'stale': 'stale (process gone; resume it)',
                 'unknown': 'unknown (no summary.json)'}
assert set(STATUS_LABELS) == set(STATUSES)
STORY_TOKENS, STORY_TEMPERATURE, STORY_TOP_K, STORY_SEED = 120, 0.8, 200, 1

RUN_COLUMNS = ['run', 'model_name', 'group', 'seed', 'status', 'tokenizer', 'n_params', 'iters',
               'tokens_seen', 'final_val_loss', 'final_val_bpb', 'final_val_tokens', 'best_val_loss',
               'best_val_iter', 'final_train_loss', 'wall_time_s', 'train_time_s', 'tokens_per_s', 'mfu']
STAT_COLUMNS = ['metric', 'compared_with', 'at_tokens', 'diff_vs_baseline', 'ci95_low', 'ci95_high', 'df', 'method', 'p_value',
                'p_holm', 'verdict', 'diverged']
GROUP_COLUMNS = ['group', 'model_name', 'runs', 'n', 'n_params', 'tokens_per_s', 'mean_final_val_loss', 'std_final_val_loss',
                 'mean_final_val_bpb', 'std_final_val_bpb'] + STAT_COLUMNS + ['notes']
TUNED_COLUMNS = ['variant', 'best_value', 'values_tried'] + GROUP_COLUMNS
# headers of the human tables (markdown, html) where the column name alone would not say enough
HEADERS = {'ci95_low': 'ci95_low (unadjusted)', 'ci95_high': 'ci95_high (unadjusted)',
           'p_holm': 'p (Holm-adjusted)', 'verdict': 'verdict (Holm-adjusted)'}


def fail(message):
    sys.exit(f'compare.py: error: {message}')


def label(column):
    """Axis label with its unit, from runs.METRICS."""
    return METRIC[column].label if column in METRIC else column

# -----------------------------------------------------------------------------
# which runs enter a verdict, at which point (the arithmetic is in stats.py)


def usable(run):
    """Diverged runs are shown, counted as an outcome ('k of n diverged') and left out of the values."""
    return run['status'] != 'diverged'


def curve(run, key, x_key='tokens_seen'):
    """(x, y) of a run's metric where both are logged (older runs have no val_bpb: empty)."""
    m = run['metrics']
    x = np.asarray(m[x_key], dtype=float)
    y = np.asarray(m.get(key, [math.nan] * len(x)), dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def _last_tokens(run):
    for tokens in reversed(run['metrics']['tokens_seen']):
        if math.isfinite(tokens):
            return tokens
    return -1.0


def replicates(group):
    """One run per seed: a rerun or a copied folder of the same settings and seed is the same replicate.
    Keeps the run that got furthest (completed, then diverged, then the most tokens; the first listed on
    a tie). Returns (kept runs, [(dropped run, the run kept for its seed)])."""
    by_seed = {}
    for run in group['runs']:
        by_seed.setdefault(run['config'].get('seed'), []).append(run)
    rank = {'completed': 2, 'diverged': 1}
    kept, dropped = [], []
    for runs in by_seed.values():
        # max keeps the first on ties
        best = max(runs, key=lambda r: (rank.get(r['status'], 0), _last_tokens(r))) if len(runs) > 1 else runs[0]
        kept.append(best)
        dropped += [(r, best) for r in runs if r is not best]
    return kept, dropped


def divergence(group):
    """(diverged, runs with an outcome) over the group's replicates: completed and diverged runs count,
    unfinished ones have no outcome yet."""
    kept = replicates(group)[0]
    return (sum(r['status'] == 'diverged' for r in kept),
            sum(r['status'] in ('completed', 'diverged') for r in kept))


def value_at(x, y, point):
    """(value, interpolated) of a curve at `point`: its own evaluation there, else np.interp between the
    evaluations around it; (None, False) where the curve does not reach the point."""
    i = int(np.searchsorted(x, point))
    if i < len(x) and x[i] == point:
        return float(y[i]), False
    if len(x) and x[0] < point < x[-1]:
        return float(np.interp(point, x, y)), True
    return None, False


def comparison_point(curves):
    """(tokens, interpolated): the most tokens at which every curve has an evaluation (0, the untrained
    model, does not count); where their evaluations never coincide, the most tokens every curve reached,
    interpolated; None where they share no span after 0."""
    common = set(curves[0][0].tolist()).intersection(*(x.tolist() for x, _ in curves[1:]))
    common = [t for t in common if t > 0]
    if common:
        return max(common), False
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    return (float(hi), True) if hi > 0 and hi >= lo else (None, False)


def compare_groups(group, baseline, metric, min_effect=stats.MIN_EFFECT):
    """group minus baseline in `metric` at the comparison point: the most tokens at which every completed
    replicate of both groups was evaluated (unfinished runs never move it; a side with no completed run
    lets its unfinished ones set it). Runs that reached it enter stats.compare_values; the others are named.
    dict(stats.compare_values's keys, at_tokens, interpolated, left_out, entered: (the group's runs, the
    baseline's) that entered), or None where a side has no value."""
    sides = []
    for g in (group, baseline):
        runs = [r for r in replicates(g)[0] if usable(r)]
        sides.append([(r, x, y) for r in runs for x, y in [curve(r, metric)] if len(x)])
    if not all(sides):
        return None
    setters = []
    for side in sides:
        completed = [(x, y) for r, x, y in side if r['status'] == 'completed']
        setters += completed or [(x, y) for _, x, y in side]
    point, interpolated = comparison_point(setters)
    if point is None:
        return None
    values, left_out, entered = [{}, {}], [], ([], [])
    for by_seed, side, runs_in in zip(values, sides, entered):
        for r, x, y in side:
            value, between = value_at(x, y, point)
            if value is None:
                left_out.append(f"{r['name']} ({STATUS_LABELS[r['status']]}) did not reach {int(point):,} tokens")
                continue
            interpolated |= between
            by_seed[r['config'].get('seed')] = value
            runs_in.append(r)
    result = stats.compare_values(values[0], values[1], pairing_note=pairing_note(group, baseline, metric))
    if result is None:
        result = dict(diff=None, low=None, high=None, df=None, p=None, method=None, n=len(values[0]),
                      n_base=len(values[1]), paired=False)
    elif interpolated:
        result['method'] += '; interpolated between evaluations'
    return dict(result, at_tokens=int(point), interpolated=interpolated, left_out=left_out, entered=entered)


def pairing_note(group, baseline, metric):
    """What a pair of runs shares beyond its seed: the batches only where both ran on one tokenizer; across
    tokenizers val_bpb scores the same bytes only where config.json's val_bpb_text (train.py) agrees."""
    runs_ = group['runs'] + baseline['runs']
    if len({tokenizer_name(r['config']) for r in runs_}) == 1:
        return ''
    texts = {str((r['config'].get('val_bpb_text') or {}).get('sha256')) for r in runs_}
    if metric != 'val_bpb':
        return 'same seeds; different tokenizers, so not the same batches'
    if len(texts) == 1 and texts != {'None'}:
        return 'same seeds, val_bpb on the same validation bytes; different tokenizers, so not the same batches'
    return 'same seeds; different tokenizers, so not the same batches, and val_bpb not on the same bytes'


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


def tokenizer_name(config):
    """The tokenizer a run was trained on: its canonical name (runs.read_run reads every folder's
    config.json in today's shape, older ones included)."""
    return config['tokenizer']


def number(v):
    """v where it is a finite number, else None: run files are read as found, a bad field is left blank."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def run_numbers(run):
    """One summary-table row for a run, from its metrics.csv and summary.json (None where missing)."""
    m, config, summary = run['metrics'], run['config'], run['summary']
    last = lambda key: number(m[key][-1]) if m['iter'] else None
    tokens, vals = curve(run, 'val_loss')
    bpbs = curve(run, 'val_bpb')[1]
    best = int(np.argmin(vals)) if len(vals) else None
    trains = curve(run, 'train_loss')[1]
    iters, tokens_seen = last('iter'), last('tokens_seen')
    # an interrupted run saved a checkpoint after its last metrics row: summary.json has that iteration
    if isinstance(summary.get('iters'), int) and (iters is None or summary['iters'] > iters):
        iters = summary['iters']
        if number(summary.get('tokens_seen')) is not None:
            tokens_seen = summary['tokens_seen']
    # mean speed = total tokens / total training time, both from the same (last timed) row
    timed = [i for i in range(len(m['iter'])) if m['elapsed_s'][i] > 0 and math.isfinite(m['tokens_seen'][i])]
    tokens_per_s = m['tokens_seen'][timed[-1]] / m['elapsed_s'][timed[-1]] if timed else None
    # MFU weighted by each interval's time, so it averages like tokens/s does
    dt = np.diff(np.asarray(m['elapsed_s'], dtype=float), prepend=0.0)
    mfu = np.asarray(m['mfu'], dtype=float)
    ok = np.isfinite(mfu) & np.isfinite(dt) & (dt > 0)
    n_params = number(config.get('n_params', summary.get('n_params')))
    wall = number(summary.get('wall_time_s'))
    return dict(
        run=run['name'], model_name=config.get('model_name', summary.get('model_name', '')),
        seed=config.get('seed', summary.get('seed', '')), status=run['status'],
        tokenizer=tokenizer_name(config),
        n_params=int(n_params) if n_params is not None else None,
        iters=int(iters) if iters is not None else None,
        tokens_seen=int(tokens_seen) if tokens_seen is not None else None,
        final_val_loss=float(vals[-1]) if len(vals) else None,
        final_val_bpb=float(bpbs[-1]) if len(bpbs) else None,
        final_val_tokens=int(tokens[-1]) if len(vals) else None,
        best_val_loss=float(vals[best]) if best is not None else None,
        best_val_iter=int(curve(run, 'val_loss', 'iter')[0][best]) if best is not None else None,
        final_train_loss=float(trains[-1]) if len(trains) else None,
        # wall clock (evaluation included) from summary.json; a run that never wrote one: training time
        wall_time_s=wall if wall is not None else last('elapsed_s'),
        train_time_s=last('elapsed_s'), tokens_per_s=tokens_per_s,
        mfu=float((mfu[ok] * dt[ok]).sum() / dt[ok].sum()) if ok.any() else None,
    )

# -----------------------------------------------------------------------------
# seed groups, the baseline, and the tables of differences


def pick_baseline(groups, pattern):
    """runs.pick_baseline, its errors said in one line."""
    try:
        return pick_run_baseline(groups, pattern)
    except ValueError as e:
        fail(e)


def judged_metric(groups, metric):
    """--metric, unless the groups span tokenizers: a loss per token then means different things, and
    only bits per byte compares them. Returns (metric, note or None)."""
    names = sorted({tokenizer_name(r['config']) for g in groups for r in g['runs']})
    if len(names) < 2:
        return metric, None
    return 'val_bpb', (f"the runs use different tokenizers ({', '.join(names)}): judged on val_bpb (bits per "
                       f"byte) only, since a loss per token is not comparable across tokenizers")


def final_values(group, rows, column):
    """Final values of a column (final_val_loss, ...) of the group's usable replicates that have one."""
    values = [rows[r['name']][column] for r in replicates(group)[0] if usable(r)]
    return [v for v in values if v is not None]


def group_notes(group, rows):
    notes = []
    for r in group['runs']:
        if r['status'] == 'diverged':
            notes.append(f"{r['name']} diverged")
        elif r['status'] != 'completed':
            notes.append(f"{r['name']} {STATUS_LABELS[r['status']]}")
        elif rows[r['name']]['final_val_loss'] is None:
            notes.append(f"{r['name']} has no val loss")
    tokens = {rows[r['name']]['final_val_tokens'] for r in group['runs']
              if rows[r['name']]['final_val_tokens'] is not None}
    if len(tokens) > 1:
        notes.append(f'final values at {min(tokens):,}..{max(tokens):,} tokens')
    notes += [f"{r['name']} counted once with {kept['name']} (same settings and seed)"
              for r, kept in replicates(group)[1]]
    differing = sorted({k for r in group['runs'] for k in r['config'] if k in SEED_GROUP_IGNORED_KEYS
                        and k not in EXPECTED_TO_DIFFER
                        and len({_short(q['config'].get(k)) for q in group['runs']}) > 1})
    if differing:
        notes.append(f"pooled across {', '.join(differing)}")
    return notes


def group_table(groups, baseline, rows, metric, min_effect=stats.MIN_EFFECT, by_size=None):
    """One row per group (each baseline first, then the groups judged against it): final values over its
    replicates, and the difference from its baseline in `metric` at the comparison point with its interval;
    verdicts Holm-adjusted across all rows. by_size: a ladder's baseline per size (runs.baselines_by_size)."""
    table, results = [], []
    order, reference, is_base = references(groups, baseline, by_size)
    for group in order:
        ref = reference(group)
        result = compare_groups(group, ref, metric, min_effect) if ref is not None else None
        notes = group_notes(group, rows) + (result['left_out'] if result else [])
        k, n_outcomes = divergence(group)
        kept = replicates(group)[0]
        speeds = [rows[r['name']]['tokens_per_s'] for r in kept if rows[r['name']]['tokens_per_s'] is not None]
        row = dict(group=group['label'], model_name=group['model_name'],
                   runs=' '.join(r['name'] for r in group['runs']), metric=metric,
                   n=len(final_values(group, rows, f'final_{metric}')), n_params=rows[kept[0]['name']]['n_params'],
                   tokens_per_s=float(np.mean(speeds)) if speeds else None, diverged=f'{k} of {n_outcomes}',
                   notes='; '.join(notes), compared_with=ref['label'] if ref is not None else '')
        for column in ('val_loss', 'val_bpb'):
            summary = stats.describe(final_values(group, rows, f'final_{column}'))
            row[f'mean_final_{column}'], row[f'std_final_{column}'] = summary['mean'], summary['std']
        if result:
            row['n'] = result['n']  # the runs that entered the test
        result = result or {}
        row.update(at_tokens=result.get('at_tokens'), diff_vs_baseline=result.get('diff'),
                   ci95_low=result.get('low'), ci95_high=result.get('high'), df=result.get('df'),
                   method=result.get('method'), p_value=result.get('p'))
        table.append(row)
        results.append(result if result.get('diff') is not None else None)
    for row, p in zip(table, stats.holm([row['p_value'] for row in table])):
        row['p_holm'] = p
    for row, result, group in zip(table, results, order):
        ref = reference(group)
        row['is_baseline'] = is_base(group)
        if row['is_baseline']:
            row['verdict'] = f"baseline at {size_label(group['runs'][0]['config'])}" if by_size else 'baseline'
            continue
        if ref is None:
            row['verdict'] = f"no baseline group at {size_label(group['runs'][0]['config'])}"
            continue
        row['verdict'] = stats.verdict(result, row['p_holm'], metric, min_effect, divergence(group),
                                       divergence(ref))
        if row['at_tokens'] is not None and result is not None:
            row['verdict'] += f" at {row['at_tokens']:,} tokens"
    return table


def with_seeds(group, seeds):
    """The group restricted to runs of these seeds (all of them where seeds is None)."""
    if seeds is None:
        return group
    return dict(group, runs=[r for r in group['runs'] if r['config'].get('seed') in seeds])


def split_seeds(loaded, tune_seeds, report_seeds):
    """(tune seeds, report seeds, what was done): --tune_seeds / --report_seeds, each defaulting to the
    seeds the other leaves; neither: both None (selected and reported on the same runs)."""
    if tune_seeds is None and report_seeds is None:
        return None, None, ('best value chosen and reported on the same seeds: optimistic for variants tried '
                            'at more values (hold seeds out with --tune_seeds / --report_seeds)')
    seeds = {r['config'].get('seed') for r in loaded}
    tune = set(tune_seeds) if tune_seeds is not None else seeds - set(report_seeds)
    report = set(report_seeds) if report_seeds is not None else seeds - set(tune_seeds)
    if tune & report:
        fail(f"--tune_seeds and --report_seeds share seed {', '.join(map(str, sorted(tune & report)))}: "
             f"a held-out report needs seeds the choice did not see")
    for flag, chosen in (('--tune_seeds', tune), ('--report_seeds', report)):
        if not chosen & seeds:
            fail(f"{flag}: no run has seed {', '.join(map(str, sorted(chosen))) or '(none left)'} "
                 f"(seeds: {', '.join(map(str, sorted(seeds, key=str)))})")
    said = lambda xs: ', '.join(map(str, sorted(xs)))
    return tune, report, f'best value chosen on seeds {said(tune)}; reported on held-out seeds {said(report)}'


def tuned_table(loaded, groups, baseline, rows, metric, keys, tune_seeds=None, report_seeds=None,
                min_effect=stats.MIN_EFFECT, per_size=True):
    """Each variant (runs alike but for the tuned keys and the seed) at its own best value of the keys:
    the seed group with the lowest mean final metric over tune_seeds, compared with the baseline variant at
    its own best on report_seeds (None: all seeds); per_size: on a ladder, the baseline variant of each
    size (runs.baselines_by_size). Returns (table, variants): variants = [(label, [(value, group), ...],
    best group)]."""
    for key in keys:
        if key in SEED_GROUP_IGNORED_KEYS:
            fail(f"--tune {key}: {key} does not split seed groups ({SEED_GROUP_IGNORED_KEYS[key]}); "
                 f"tune a training setting such as learning_rate")
        if not any(key in r['config'] for r in loaded):
            keys_there = ', '.join(sorted(loaded[0]['config']))
            fail(f"--tune {key}: no run's config.json has {key} (keys: {keys_there})")
    stripped = [dict(r, config={k: v for k, v in r['config'].items() if k not in keys}) for r in loaded]
    value = lambda g: ', '.join(f"{k}={_short(g['runs'][0]['config'].get(k))}" for k in keys)
    mean_final = lambda g: np.mean(final_values(with_seeds(g, tune_seeds), rows, f'final_{metric}') or [math.inf])
    variants = []
    for variant in seed_groups(stripped):
        names = {r['name'] for r in variant['runs']}
        members = [g for g in groups if g['runs'][0]['name'] in names]
        members.sort(key=lambda g: [_sort_key(g['runs'][0]['config'].get(k)) for k in keys])
        variants.append((variant['label'], [(value(g), g) for g in members], min(members, key=mean_final)))
    base = next(i for i, (_, members, _) in enumerate(variants) if any(g is baseline for _, g in members))
    variants.insert(0, variants.pop(base))
    reported = [with_seeds(best, report_seeds) for _, _, best in variants]
    by_size = baselines_by_size(reported, reported[0]) if per_size else None
    table = group_table(reported, reported[0], rows, metric, min_effect, by_size)
    row_of = {row['group']: row for row in table}
    for group, (name, members, best) in zip(reported, variants):
        row = row_of[group['label']]
        tried = [v for v, _ in members]
        edge = len(tried) > 2 and best in (members[0][1], members[-1][1])
        notes = ['best at the edge of the values tried: the optimum may lie beyond'] if edge else []
        if len(tried) == 1:
            notes.append('one value tried')
        row.update(variant=name, best_value=value(best), values_tried='; '.join(tried),
                   notes='; '.join(notes + ([row['notes']] if row['notes'] else [])))
    return table, variants


def _sort_key(v):
    return (0, v, '') if isinstance(v, (int, float)) else (1, 0, _short(v))


def token_warnings(rows, size_by_run=None):
    """Final values at unequal training mix architecture and amount of training: say so. size_by_run (a
    ladder: run name -> its size): the token budget differs between sizes by design, so only the runs of
    one size are held to one count."""
    blocks = {}
    for n, row in rows.items():
        if row['status'] != 'diverged' and row['final_val_tokens'] is not None:
            blocks.setdefault(size_by_run[n] if size_by_run else None, {})[n] = row['final_val_tokens']
    warnings = []
    for measured in blocks.values():
        if len(set(measured.values())) < 2:
            continue
        per_run = ', '.join(f'{n} {tokens:,}' for n, tokens in measured.items())
        warnings.append(f'final values were measured after different numbers of tokens ({per_run}): '
                        'the final-value columns mix architecture and amount of training; the verdicts '
                        'compare at equal tokens (at_tokens)')
    unfinished = [n for n, row in rows.items() if row['status'] != 'completed']
    if unfinished:
        what = [f"{n}: {STATUS_LABELS[rows[n]['status']]}" for n in unfinished]
        warnings.append('not completed: ' + ', '.join(what))
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
    if column in ('tokens_seen', 'final_val_tokens', 'at_tokens'):
        return f'{v:,}'
    if column in ('tokens_per_s', 'mfu'):
        return format(v, METRIC[column].fmt)
    if column in ('wall_time_s', 'train_time_s', 'df'):
        return f'{v:.1f}'
    if column in ('p_value', 'p_holm'):
        return f'{v:.3g}'
    if isinstance(v, float):
        return f'{v:+.4f}' if column == 'diff_vs_baseline' else f'{v:.4f}'
    return str(v)


def to_markdown(table, columns):
    lines = ['| ' + ' | '.join(HEADERS.get(c, c) for c in columns) + ' |', '|' + '---|' * len(columns)]
    for row in table:
        lines.append('| ' + ' | '.join(_human(c, row[c]).replace('|', '\\|') for c in columns) + ' |')
    return '\n'.join(lines) + '\n'


def to_html_table(table, columns):
    head = ''.join(f'<th>{html.escape(HEADERS.get(c, c))}</th>' for c in columns)
    body = ''.join('<tr>' + ''.join(f'<td>{html.escape(_human(c, row[c]))}</td>' for c in columns) + '</tr>'
                   for row in table)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'

# -----------------------------------------------------------------------------
# plots: one colour per seed group; its mean (thick), min-max band over its seeds, each run (thin)


def _png(fig):
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=90, bbox_inches='tight')
    plt.close(fig)
    return buf.getvalue()


def on_grid(curves):
    """The x values any curve has, within the range every curve covers, and each curve there."""
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    return grid, np.array([np.interp(grid, x, y) for x, y in curves]).reshape(len(curves), len(grid))


def draw_groups(ax, groups, key, x_key, colors, baseline=None):
    """Each group's runs as thin lines, the mean over its usable runs with a min-max band; the baseline's
    mean last, dashed in black over the others, so no group's line hides it."""
    for g in [g for g in groups if g is not baseline] + ([baseline] if baseline else []):
        color = colors[g['label']]
        curves = []
        for r in g['runs']:
            x, y = curve(r, key, x_key)
            if len(x):
                ax.plot(x, y, color=color, lw=0.7, alpha=0.45)
                curves += [(x, y)] if usable(r) else []
        if curves:
            grid, ys = on_grid(curves)
            ax.plot(grid, ys.mean(0), color=color, lw=2, label=f"{g['label']} (n={len(curves)})",
                    marker='o' if len(grid) <= 25 else None, ms=3)
            if len(curves) > 1:
                ax.fill_between(grid, ys.min(0), ys.max(0), color=color, alpha=0.2, lw=0)
            if g is baseline:
                ax.plot(grid, ys.mean(0), color='black', lw=1.2, ls='--', zorder=5, label='baseline mean')


def _finish(fig, axes):
    handles = {}
    for ax in axes:
        ax.grid(alpha=0.3)
        for handle, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc='upper left', bbox_to_anchor=(1.0, 0.95),
                   fontsize='small')
    fig.tight_layout()
    return _png(fig)


def panel_figure(groups, columns, x_key, colors, note=None):
    """One subplot per metric of a METRICS panel; log y where the values span more than a factor of 20;
    note (a caveat) under each title."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(columns), figsize=(6.5 * len(columns), 4.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        draw_groups(ax, groups, column, x_key, colors)
        if ax.dataLim.y0 > 0 and ax.dataLim.y1 / ax.dataLim.y0 > 20:
            ax.set_yscale('log')
        ax.set(xlabel=label(x_key), ylabel=label(column), title=column + (f'\n({note})' if note else ''))
    return _finish(fig, axes[0])


def zoom_figure(groups, baseline, metric, x_key, colors):
    """The judged metric on the second half of training, y fitted to it: where the differences are."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    draw_groups(ax, groups, metric, x_key, colors, baseline)
    curves = [curve(r, metric, x_key) for g in groups for r in g['runs'] if usable(r)]
    curves = [(x, y) for x, y in curves if len(x)]
    x_max = max((x[-1] for x, _ in curves), default=0.0)
    if not curves:
        ax.text(0.5, 0.5, f'no {metric} logged yet', ha='center', va='center', transform=ax.transAxes)
    elif x_max > 0:
        tail = np.concatenate([y[x >= x_max / 2] for x, y in curves])
        pad = 0.08 * (tail.max() - tail.min()) or 0.01 * abs(tail.max()) or 0.01
        ax.set_xlim(x_max / 2, x_max)
        ax.set_ylim(tail.min() - pad, tail.max() + pad)
    ax.set(xlabel=label(x_key), ylabel=label(metric), title=f'{metric}, second half of training')
    return _finish(fig, [ax])


def difference_curves(group, baseline, metric):
    """What the verdict tests, along training: the runs that entered the group's verdict against the
    baseline's, through stats.compare_values at each token count both cover. dict(grid, results (one per
    grid point), per_seed (each seed's difference where the test is paired, else []), verdict: the
    verdict's own result), or None where there is no difference to draw."""
    result = compare_groups(group, baseline, metric)
    if not result or result['diff'] is None:
        return None
    side, base = result['entered']
    seeds, base_seeds = [r['config'].get('seed') for r in side], [r['config'].get('seed') for r in base]
    grid, ys = on_grid([curve(r, metric) for r in side + base])
    g, b = ys[:len(side)], ys[len(side):]
    results = [stats.compare_values(dict(zip(seeds, g[:, j])), dict(zip(base_seeds, b[:, j])))
               for j in range(len(grid))]
    per_seed = [g[i] - b[base_seeds.index(seed)] for i, seed in enumerate(seeds)] if result['paired'] else []
    return dict(grid=grid, results=results, per_seed=per_seed, verdict=result)


def difference_figure(groups, baseline, metric, colors, by_size=None):
    """difference_curves per group against its baseline (by_size: a ladder's, of its own size): the
    difference (thick), its 95% interval (band), each seed's difference where paired (thin), and the
    verdict's own point and interval (a diamond with error bar)."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _, reference, _ = references(groups, baseline, by_size)
    for g in groups:
        d = difference_curves(g, reference(g), metric) if reference(g) is not None else None
        if d is None:
            continue
        color, grid, verdict_result = colors[g['label']], d['grid'], d['verdict']
        for diffs in d['per_seed']:
            ax.plot(grid, diffs, color=color, lw=0.6, alpha=0.5)
        paired = 'paired, ' if verdict_result['paired'] else ''
        ax.plot(grid, [r['diff'] for r in d['results']], color=color, lw=2,
                label=f"{g['label']} ({paired}n={verdict_result['n']})", marker='o' if len(grid) <= 25 else None, ms=3)
        bound = lambda key: np.array([np.nan if r[key] is None else r[key] for r in d['results']])
        ax.fill_between(grid, bound('low'), bound('high'), color=color, alpha=0.18, lw=0)
        if verdict_result['low'] is not None:
            diff = verdict_result['diff']
            ax.errorbar([verdict_result['at_tokens']], [diff], color=color, capsize=4, lw=1.5, fmt='D', ms=5,
                        yerr=[[diff - verdict_result['low']], [verdict_result['high'] - diff]])
    ax.axhline(0.0, color='black', lw=0.9)
    ax.set(xlabel=label('tokens_seen'), ylabel=f'difference in {label(metric)}',
           title=f"{metric} minus " + ("the baseline of its size" if by_size else f"baseline ({baseline['label']})")
           + ", below 0 = better")
    return _finish(fig, [ax])


def layer_color(cmap, depth, n_layers):
    """tab10's own colours one by one; a continuous map spread over the depth."""
    return cmap(depth) if cmap.N <= 10 else cmap(depth / max(1, n_layers - 1))


def log_axis_with_labelled_ends(axes):
    """Log y (shared by these axes) whose labelled ticks (1, 2, 5 per decade) enclose every value: none
    falls below the lowest label, as a plain log axis lets a value of 8 under a lowest label of 10."""
    from matplotlib import ticker
    ax = axes[0]
    ax.set_yscale('log')
    lo, hi = min(a.dataLim.y0 for a in axes), max(a.dataLim.y1 for a in axes)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
        return
    steps = lambda e: [m * 10.0 ** e for m in (1, 2, 5)]
    ticks = [t for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1) for t in steps(e)]
    ax.set_ylim(max(t for t in ticks if t <= lo), min(t for t in ticks if t >= hi and t > lo))
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f'{v:g}'))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def layer_norm_figure(loaded, x_key):
    """A row per run: grad and weight norm per layer on log axes, colour = depth, one labelled colourbar."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm, ListedColormap
    all_norms = []
    for run in loaded:
        try:
            all_norms.append(read_layer_norms(run['dir']))
        except RunError as e:
            print(f"compare.py: {run['name']}: layer norms not plotted: {e}", file=sys.stderr)
            all_norms.append(None)
    layer_lists = {tuple(dict.fromkeys(n['layer'])) for n in all_norms if n and n['iter']}
    most = max((len(names) for names in layer_lists), default=1)
    # distinct colours while they are few (viridis puts embed and block_0 in near-identical purples)
    cmap = plt.get_cmap('tab10' if most <= 10 else 'turbo')
    fig, axes = plt.subplots(len(loaded), 2, figsize=(12, 2.6 * len(loaded) + 0.8), squeeze=False,
                             sharex=True, sharey='col', layout='constrained')
    for i, (row, run, norms) in enumerate(zip(axes, loaded, all_norms)):
        if not norms or not norms['iter']:
            for ax in row:
                ax.text(0.5, 0.5, f"{run['name']}: no layer_norms.csv data", ha='center', va='center',
                        transform=ax.transAxes)
            continue
        m = run['metrics']
        layers = list(dict.fromkeys(norms['layer']))
        it = np.asarray(norms['iter'], dtype=float)
        # layer norms are logged by iteration; map onto the chosen x axis through metrics.csv
        xs = it if x_key == 'iter' else np.interp(it, m['iter'], m[x_key]) if m['iter'] else it * np.nan
        names = np.asarray(norms['layer'])
        for ax, key in zip(row, ('grad_norm', 'weight_norm')):
            values = np.asarray(norms[key], dtype=float)
            for depth, layer in enumerate(layers):
                sel = (names == layer) & np.isfinite(values) & (values > 0) & np.isfinite(xs)
                if sel.any():
                    ax.plot(xs[sel], values[sel], color=layer_color(cmap, depth, most), lw=1.1)
            status = '' if run['status'] == 'completed' else f" [{STATUS_LABELS[run['status']]}]"
            name = key.replace('_', ' ')
            ax.set(xlabel=label(x_key) if i == len(loaded) - 1 else None, ylabel=f'{name} (log)',
                   title=f"{run['name']}{status}: {name} per layer")
            ax.grid(alpha=0.3)
    for column in axes.T:  # the embedding's norm is far above the blocks': log keeps both readable
        log_axis_with_labelled_ends([ax for ax in column if ax.has_data()] or list(column))
    if len(layer_lists) == 1:  # every run has the same layers: name each colour
        names = next(iter(layer_lists))
        colors = ListedColormap([layer_color(cmap, d, most) for d in range(len(names))])
        bar = fig.colorbar(ScalarMappable(BoundaryNorm(np.arange(len(names) + 1) - 0.5, len(names)), colors),
                           ax=axes.ravel().tolist(), ticks=range(len(names)), shrink=0.6)
        bar.ax.set_yticklabels(names)
    else:
        bar = fig.colorbar(ScalarMappable(cmap=cmap), ax=axes.ravel().tolist(), ticks=[0, 1], shrink=0.6)
        bar.ax.set_yticklabels(['embeddings', 'final norm'])
    bar.set_label('layer (colour = depth in the model)')
    return _png(fig)


def tuned_figure(variants, keys, metric, rows, colors):
    """Final metric against the tuned value per variant: seeds as points, means joined by a line."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    numeric = len(keys) == 1 and all(isinstance(g['runs'][0]['config'].get(keys[0]), (int, float))
                                     for _, members, _ in variants for _, g in members)
    ticks = sorted({v for _, members, _ in variants for v, _ in members}) if not numeric else None
    for i, (name, members, best) in enumerate(variants):
        color = colors[i % len(colors)]
        means = []
        for value, g in members:
            x = g['runs'][0]['config'].get(keys[0]) if numeric else ticks.index(value)
            ys = final_values(g, rows, f'final_{metric}')
            ax.plot([x] * len(ys), ys, 'o', color=color, alpha=0.5, ms=4)
            if ys:
                means.append((x, float(np.mean(ys)), g is best))
        if means:
            ax.plot([x for x, _, _ in means], [y for _, y, _ in means], '-', color=color, lw=1.8, label=name)
            best_x, best_y = next((x, y) for x, y, b in means if b)
            ax.plot([best_x], [best_y], '*', color=color, ms=13, mec='black')
    if numeric:
        values = [g['runs'][0]['config'][keys[0]] for _, members, _ in variants for _, g in members]
        rate = 'lr' in keys[0] or 'learning_rate' in keys[0]
        if min(values) > 0 and (rate or max(values) / min(values) >= 10):
            ax.set_xscale('log')
        ax.set_xlabel(keys[0])
    else:
        ax.set_xticks(range(len(ticks)), ticks, rotation=20, ha='right')
        ax.set_xlabel(', '.join(keys))
    ax.set(ylabel=f'final {label(metric)}',
           title=f"final {metric} against {', '.join(keys)} (star: best per variant)")
    return _finish(fig, [ax])


def make_plots(loaded, groups, baseline, rows, metric, x, tuned=None, speed_caveat=None, by_size=None):
    """[(file name, heading, png bytes)]: the loss panels, the zoom, the difference from the baseline,
    with --tune the tuned plot, a figure per other METRICS panel that has data, the per-layer norms."""
    import matplotlib
    matplotlib.use('Agg')
    colors = list(matplotlib.colormaps['tab10' if len(groups) <= 10 else 'tab20'].colors)
    group_colors = {g['label']: colors[i % len(colors)] for i, g in enumerate(groups)}
    x_key = X_AXES[x]
    panels = {}  # METRICS panel -> its columns that some run logged
    for m in METRICS:
        if m.panel and any(len(curve(r, m.column)[0]) for r in loaded):
            panels.setdefault(m.panel, []).append(m.column)

    def panel_plot(panel):
        columns = panels[panel]
        what = f'{columns[0]} ({label(columns[0])})' if len(columns) == 1 else ' and '.join(columns)
        heading = (f"{what} per seed group against {label(x_key)}: mean over its seeds (thick), min-max "
                   f"(band), each run (thin)")
        note = speed_caveat if panel in SPEED_PANELS else None
        if note:
            heading += f'. Caveat: {note}'
        short = 'runs shared a CPU: contention, not model speed' if note else None
        return f'{panel}.png', heading, panel_figure(groups, columns, x_key, group_colors, short)

    judged_panels = [p for p, columns in panels.items() if any(c in JUDGED for c in columns)]
    plots = [panel_plot(p) for p in judged_panels]
    plots.append(('zoom.png', f'{metric} over the second half of training (zoomed in: the differences are '
                  f'here; dashed black: the baseline mean)', zoom_figure(groups, baseline, metric, x_key,
                                                                          group_colors)))
    if len(groups) > 1:
        plots.append(('diff_vs_baseline.png', f"Difference from the baseline in {metric}, as the verdict tests "
                      f"it: at each token count the runs that entered the verdict, paired by seed where the "
                      f"table pairs them (thin: each seed's difference), else Welch; band: the "
                      f"{stats.CONFIDENCE:.0%} interval; diamond: the verdict's point and interval",
                      difference_figure(groups, baseline, metric, group_colors, by_size)))
    if tuned:
        variants, keys = tuned
        plots.append(('tuned.png', f"Final {metric} of each variant against {', '.join(keys)}: seeds as "
                      f"points, means joined, star = the value it is compared at",
                      tuned_figure(variants, keys, metric, rows, colors)))
    plots += [panel_plot(p) for p in panels if p not in judged_panels]
    # one run per group (its seeds look alike), and every diverged run: where it blew up is the question
    shown = [r for g in groups for r in g['runs'] if r is g['runs'][0] or not usable(r)]
    plots.append(('layer_norms.png', 'Gradient and weight norm of each layer (log scale): the first run of '
                  'each seed group, and every diverged run', layer_norm_figure(shown, x_key)))
    return plots


# -----------------------------------------------------------------------------
# stories: what each seed group's model writes


def draw_stories(groups, device):
    """[(group label, heading, continuations or None, note)]: generate.REPORT_PROMPTS continued by the first
    run with a checkpoint in each group (its newest checkpoint; fixed seed)."""
    out = []
    for g in groups:
        found = None
        for run in g['runs']:
            try:
                found = (run, resolve_checkpoint(run['dir'])[0])
                break
            except RunError:
                continue
        if found is None:
            out.append((g['label'], None, None, 'no checkpoints in any of its runs: nothing to sample from'))
            continue
        run, step = found
        import generate  # torch: only where there is a model to load
        import torch
        block_size = run['config'].get('block_size')
        max_new = min(STORY_TOKENS, block_size - 1) if isinstance(block_size, int) else STORY_TOKENS
        threads = torch.get_num_threads()
        if device == 'cpu':  # 3 short rows: threads do not pay, and on a busy CPU they spin (10x slower)
            torch.set_num_threads(1)
        try:
            texts = generate.generate_stories(run['dir'], generate.REPORT_PROMPTS, step=None, num_samples=1,
                                            max_new_tokens=max_new, temperature=STORY_TEMPERATURE,
                                            top_k=STORY_TOP_K, seed=STORY_SEED, device=device)
        except (ValueError, OSError) as e:  # RunError, CheckpointError, DataError: one line each
            out.append((g['label'], f"{run['name']}, checkpoint {step}", None, f'could not sample: {e}'))
            continue
        finally:
            torch.set_num_threads(threads)
        out.append((g['label'], f"{run['name']}, checkpoint {step}", texts, None))
    return out


def stories_html(stories):
    import generate
    prompts = generate.REPORT_PROMPTS
    head = ''.join(f'<th>{html.escape(name)}<br><small>{html.escape(where or "")}</small></th>'
                   for name, where, _, _ in stories)
    body = ''
    for i, prompt in enumerate(prompts):
        cells = ''
        for _, _, texts, note in stories:
            if texts:
                cells += f'<td class="story"><b>{html.escape(prompt)}</b>{html.escape(texts[i])}</td>'
            elif i == 0:  # one note down the whole column
                cells += f'<td class="story" rowspan="{len(prompts)}"><i>{html.escape(note)}</i></td>'
        body += f'<tr>{cells}</tr>'
    return (f"<p>Each group's model continues the same {len(prompts)} prompts (bold): temperature "
            f"{STORY_TEMPERATURE}, top_k {STORY_TOP_K}, seed {STORY_SEED}, up to {STORY_TOKENS} tokens, from "
            f"the newest checkpoint of its first run that has one.</p>"
            f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>')

# -----------------------------------------------------------------------------
# scaling: final loss against training compute across model sizes (the math: stats.scaling_analysis)

SCALING_COLUMNS = ['variant', 'size', 'train_flops', 'final', 'baseline_final', 'compute_multiplier',
                   'multiplier_low95', 'multiplier_high95', 'multiplier_verdict', 'notes']
FIT_COLUMNS = ['variant', 'sizes', 'E', 'E_ci95', 'A', 'alpha', 'alpha_ci95', 'r2', 'trend_per_10x',
               'trend_ci95', 'notes']
LR_COLUMNS = ['variant', 'size', 'learning_rates', 'best_lr', 'best_lr_ci95', 'best_final', 'rise_at_2x',
              'rise_at_half', 'notes']
HOW_TO_READ_SCALING = (
    "Each variant's final {metric} (mean over seeds) is fitted against its training FLOPs with "
    "L(C) = E + A*C^-alpha. compute_multiplier: the compute the baseline's fit needs to reach the variant's "
    "loss, over the variant's own compute: 2.0 = the variant is worth doubling the baseline's compute, 0.5 = "
    "it wastes half. Its interval is a percentile bootstrap over seeds (the same seeds drawn for both: same "
    "seed, same batches); the verdict holds where the whole interval is on one side of 1. trend_per_10x: "
    "the variant's loss minus the baseline's fitted loss at the same compute, per 10x compute (negative: the "
    "variant gains with scale). Trust it less with 3 sizes (the fit passes through them), with 2 seeds (the "
    "bootstrap then sees only 3 values per size and its interval is too narrow), and where a note says the "
    "baseline's fit was read beyond 4x its largest run.")


def train_flops(run, row):
    """Training FLOPs up to the final val loss: config.json's flops_per_token (train.py, from
    model.flops_per_token: 6 x parameters plus attention) times the tokens seen there. None for runs
    trained before FLOPs were recorded."""
    per_token = number(run['config'].get('flops_per_token'))
    tokens = row['final_val_tokens']
    return per_token * tokens if per_token is not None and tokens is not None else None


def scaling_cells(groups, rows, metric):
    """{variant (model_name): {size label: {learning rate: [(seed, final metric, flops)]}}} over the usable
    completed runs (one per seed), and the runs or groups left out, as warnings."""
    cells, warnings, seen = {}, [], {}
    for g in groups:
        cfg = g['runs'][0]['config']
        key = (g['model_name'], tuple(cfg.get(k) for k in SIZE_KEYS), cfg.get('learning_rate'))
        if key in seen:
            warnings.append(f"scaling: {g['label']} left out: same model_name, size and learning rate as "
                            f"{seen[key]} (tell them apart by model_name)")
            continue
        seen[key] = g['label']
        points = []
        for run in replicates(g)[0]:
            row = rows[run['name']]
            flops, value = train_flops(run, row), row[f'final_{metric}']
            if run['status'] != 'completed' or value is None:
                continue
            if flops is None:
                warnings.append(f"scaling: {run['name']} left out: its config.json has no flops_per_token "
                                f"(trained before FLOPs were recorded)")
                continue
            points.append((run['config'].get('seed'), value, flops))
        if points:
            by_size = cells.setdefault(g['model_name'], {}).setdefault(size_label(cfg), {})
            by_size[cfg.get('learning_rate')] = points
    return cells, warnings


def scaling_report(groups, baseline, rows, metric, forced, draw=True):
    """The scaling section: fits, compute multipliers and (where the learning rate varies) learning-rate
    sensitivity, as tables and two plots. None where no variant has runs at 3 sizes (unless forced:
    --scaling, then an error). dict(texts, plots, html, console, warnings)."""
    cells, warnings = scaling_cells(groups, rows, metric)
    base_variant = baseline['model_name']
    if max((len(s) for s in cells.values()), default=0) < 3 or base_variant not in cells:
        if forced:
            have = '; '.join(f"{v}: {len(s)}" for v, s in cells.items()) or 'no completed runs with FLOPs'
            fail(f"--scaling needs the baseline ({base_variant}) and a variant completed at 3 or more sizes "
                 f"(sizes per model_name: {have})")
        return None
    fmt = lambda v, spec='.4g': '' if v is None else format(v, spec)
    span = lambda ci, spec='.4g': f'[{fmt(ci[0], spec)}, {fmt(ci[1], spec)}]'
    times = lambda m: f'{m:.3g}x' if math.isfinite(m) else 'never (below E)'  # E: the baseline fit's floor
    # learning rates: each (variant, size) at its best; its sensitivity where there are several
    by_variant, lr_rows = {}, []
    for variant, sizes in cells.items():
        for size, by_lr in sizes.items():
            means = {lr: np.mean([v for _, v, _ in pts]) for lr, pts in by_lr.items()}
            best = min(means, key=means.get)
            seeds = {seed: value for seed, value, _ in by_lr[best]}
            by_variant.setdefault(variant, {})[size] = (float(np.mean([f for _, _, f in by_lr[best]])), seeds)
            if len(by_lr) >= 2 and all(isinstance(lr, (int, float)) for lr in by_lr):
                s = stats.lr_sensitivity({lr: {seed: v for seed, v, _ in pts} for lr, pts in by_lr.items()})
                lr_rows.append(dict(variant=variant, size=size,
                                    learning_rates=', '.join(f'{lr:g}' for lr in s['lrs']),
                                    best_lr=fmt(s['best_lr'], '.3g'),
                                    best_lr_ci95=span((s['low'], s['high']), '.3g'),
                                    best_final=fmt(s['best_loss']), rise_at_2x=fmt(s['up_2x'], '+.4f'),
                                    rise_at_half=fmt(s['down_half'], '+.4f'),
                                    notes='best at the edge of the values tried' if s['at_edge'] else '',
                                    _curve=s))
    result = stats.scaling_analysis(by_variant, base_variant)
    warnings += [f'scaling: {w}' for w in result['warnings']]
    if lr_rows:
        warnings.append('scaling: each variant and size at its best learning rate, picked on the same runs '
                        '(a slight bias to variants tried at more values)')
    fit_rows = []
    for variant, fit in result['fits'].items():
        trend = result['trends'].get(variant)
        fit_rows.append(dict(variant=variant, sizes=fit['n'], E=fmt(fit['E']), E_ci95=span(fit['E_ci']),
                             A=fmt(fit['A']), alpha=fmt(fit['alpha'], '.3g'),
                             alpha_ci95=span(fit['alpha_ci'], '.3g'),
                             r2=fmt(fit['r2'], '.4f'), trend_per_10x=fmt(trend and trend['slope'], '+.4f'),
                             trend_ci95=span((trend['low'], trend['high']), '+.4f') if trend else '',
                             notes='; '.join(fit['warnings'])))
    csv_rows, shown = [], []
    for r in result['multipliers']:
        csv_rows.append(dict(variant=r['variant'], size=r['size'], train_flops=r['flops'], final=r['loss'],
                             baseline_final=r['baseline_loss'], compute_multiplier=r['multiplier'],
                             multiplier_low95=r['low'], multiplier_high95=r['high'],
                             multiplier_verdict=r['verdict'], notes=r['notes']))
        shown.append(dict(csv_rows[-1], train_flops=f"{r['flops']:.3g}", final=fmt(r['loss']),
                          baseline_final=fmt(r['baseline_loss']),
                          compute_multiplier=times(r['multiplier']), multiplier_low95=times(r['low']),
                          multiplier_high95=times(r['high']),
                          size=r['size'] + (' (largest)' if r['largest'] else '')))
    headline = [f"{r['variant']}: {r['multiplier']:.2f}x [{r['low']:.2f}, {r['high']:.2f}] at {r['size']}: "
                f"{r['verdict']}" for r in result['multipliers'] if r['largest']]
    how = HOW_TO_READ_SCALING.format(metric=metric)
    md = [f'# Scaling: final {metric} against training FLOPs', '', f'Baseline: **{base_variant}**.', '', how, '',
          '## Compute multipliers', ''] + [f'- {h}' for h in headline]
    md += ['', to_markdown(shown, SCALING_COLUMNS), '## Fits', '', to_markdown(fit_rows, FIT_COLUMNS)]
    parts = [f'<h2>Scaling: final {metric} against training FLOPs</h2>', f'<p>{html.escape(how)}</p>',
             '<ul>' + ''.join(f'<li><b>{html.escape(h)}</b></li>' for h in headline) + '</ul>',
             to_html_table(shown, SCALING_COLUMNS), to_html_table(fit_rows, FIT_COLUMNS)]
    texts = {'scaling.csv': to_csv(csv_rows, SCALING_COLUMNS)}
    if lr_rows:
        md += ['## Learning-rate sensitivity', '', to_markdown(lr_rows, LR_COLUMNS)]
        parts += ['<h3>Learning-rate sensitivity</h3>', to_html_table(lr_rows, LR_COLUMNS)]
        texts['lr_sensitivity.csv'] = to_csv(lr_rows, LR_COLUMNS)
    if warnings:
        md += ['## Warnings', ''] + [f'- {w}' for w in warnings] + ['']
    texts['scaling.md'] = '\n'.join(md)
    heading = (f"Final {metric} against training FLOPs (log-log): seed means with their min-max, each "
               f"variant's fit L(C) = E + A*C^-alpha (dashed: extrapolated, beyond the largest run), and the "
               f"compute multiplier against the baseline with its {stats.CONFIDENCE:.0%} interval")
    plots = [('scaling.png', heading, scaling_figure(result, base_variant, metric))] if draw else []
    if lr_rows:
        heading = (f"Final {metric} against the learning rate, each variant and size (seed means; star: the "
                   f"best learning rate, from a parabola in log lr)")
        plots += [('lr_sensitivity.png', heading, lr_figure(lr_rows, metric))] if draw else []
    return dict(texts=texts, plots=plots, html='\n'.join(parts), console=headline, warnings=warnings)


def scaling_figure(result, base_variant, metric):
    import matplotlib.pyplot as plt
    from matplotlib import ticker
    fig, (ax, mx) = plt.subplots(1, 2, figsize=(13, 4.6))
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for i, (variant, fit) in enumerate(result['fits'].items()):
        color = 'black' if variant == base_variant else colors[i % len(colors)]
        c = np.array([p[1] for p in fit['points']])
        mean = np.array([p[2] for p in fit['points']])
        lo, hi = mean - [p[3].min() for p in fit['points']], [p[3].max() for p in fit['points']] - mean
        ax.errorbar(c, mean, yerr=[lo, hi], fmt='o', color=color, capsize=3, label=f'{variant} (seed means)')
        inside = np.geomspace(c.min(), c.max(), 100)
        beyond = np.geomspace(c.max(), c.max() * stats.EXTRAPOLATION_LIMIT, 30)
        ax.plot(inside, stats.power_law(fit, inside), color=color, lw=1.5,
                label=f"{variant} fit: E={fit['E']:.3g}, alpha={fit['alpha']:.3g}")
        ax.plot(beyond, stats.power_law(fit, beyond), color=color, lw=1.5, ls='--',
                label=f'{variant} fit, extrapolated' if i == 0 else None)
        rows = [r for r in result['multipliers'] if r['variant'] == variant]
        if rows:
            x = [r['flops'] for r in rows]
            finite = [v for r in rows for v in (r['multiplier'], r['low'], r['high']) if math.isfinite(v)]
            cap = 4 * max(finite + [1.0])  # 'never' (below the baseline fit's floor) is drawn up to here
            m, low, high = (np.minimum([r[k] for r in rows], cap) for k in ('multiplier', 'low', 'high'))
            mx.errorbar(x, m, yerr=np.clip([m - low, high - m], 0, None), fmt='o-', color=color, capsize=3,
                        label=variant)
            for xi, r in zip(x, rows):
                if math.isinf(r['high']):
                    mx.annotate('never', (xi, cap), xytext=(4, -4), textcoords='offset points', color=color,
                                fontsize='small')
    ax.set(xscale='log', yscale='log', xlabel='training FLOPs', ylabel=f'final {label(metric)}',
           title='loss against compute (dashed: extrapolated)')
    mx.axhline(1.0, color='black', lw=1, ls=':')
    mx.set(xscale='log', yscale='log', xlabel='training FLOPs (the variant\'s)',
           ylabel=f'compute multiplier vs {base_variant}', title='compute multiplier (above 1: better)')
    low_y, high_y = mx.get_ylim()
    mx.set_yticks([t for t in 2.0 ** np.arange(-10, 11) if low_y <= t <= high_y])  # 1/2, 1, 2, 4...
    mx.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter('%.3g'))  # a loss axis spans less than 10x
    for a in (ax, mx):
        a.yaxis.set_major_formatter(ticker.FormatStrFormatter('%.3g'))
        a.xaxis.set_minor_formatter(ticker.NullFormatter())
        a.grid(alpha=0.3, which='both')
        a.legend(fontsize='small')
    fig.tight_layout()
    return _png(fig)


def lr_figure(lr_rows, metric):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for r in lr_rows:
        s = r['_curve']
        line, = ax.plot(s['lrs'], s['means'], marker='o', label=f"{r['variant']} {r['size']}")
        ax.plot([s['best_lr']], [s['best_loss']], marker='*', ms=12, color=line.get_color())
    ax.set(xscale='log', xlabel='learning rate', ylabel=f'final {label(metric)} (seed mean)',
           title='learning-rate sensitivity')
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize='small')
    fig.tight_layout()
    return _png(fig)

# -----------------------------------------------------------------------------
# the report

HOW_TO_READ = (
    "Runs whose config.json differs only in the seed (and bookkeeping keys: runs.SEED_GROUP_IGNORED_KEYS) "
    "form a seed group; a rerun or copy of the same settings and seed counts once (notes). "
    "diff_vs_baseline is the group's judged metric minus the baseline group's (compared_with; on a ladder, the "
    "baseline of the group's own size) at at_tokens: the most tokens "
    "at which every completed run of both groups was evaluated (negative: lower than the baseline). "
    "Unfinished runs never move that point; those that did not reach it are left out and named in notes; n "
    f"is the number of the group's runs that entered the test. method says how its {stats.CONFIDENCE:.0%} "
    "interval (ci95_low..ci95_high, unadjusted) was made: paired by seed when both groups have the same "
    "seeds (the mean of the per-seed differences; same seed = same initialisation and batches on one "
    "tokenizer), else Welch on all runs, or, for a single run against a replicated group, that group's seed "
    "spread taken as the noise of both (an assumption); 'interpolated' where evaluations did not coincide. "
    "The verdict is Holm-Bonferroni adjusted across all groups in the table "
    f"(p_holm < {stats.ALPHA:.2g}), so many variants do not yield a winner by chance. '{stats.WITHIN_NOISE}': "
    "these runs cannot tell the difference from seed noise (which is not proof that there is none). "
    f"'{stats.NO_DIFFERENCE}': smaller than the resolution floor --min_effect whatever the p-value. "
    "Diverged runs are an outcome (diverged: k of n runs that finished); a group that diverged more often "
    "than the baseline is said so (one-sided Fisher exact test) before the verdict on its survivors. "
    f"'{stats.NO_NOISE_ESTIMATE}': no side has two runs; train more seeds.")
HOW_TO_READ_TUNED = (
    "A variant is a set of runs alike but for the tuned keys and the seed. Each is shown at its own best "
    "value (lowest mean final metric over the tuning seeds) and compared, as above, on the report seeds "
    "with the baseline at the baseline's best.")


def groups_markdown(table, baseline_label, why, warnings, notes):
    lines = ['# Seed groups', '', f'Baseline: **{baseline_label}** ({why}).', '']
    lines += [f'{n}\n' for n in notes] + [HOW_TO_READ, '', to_markdown(table, GROUP_COLUMNS)]
    if warnings:
        lines += ['## Warnings', ''] + [f'- {w}' for w in warnings] + ['']
    return '\n'.join(lines)


STYLE = ('body{font-family:sans-serif;margin:1.2em 2em;max-width:1400px}table{border-collapse:collapse;'
         'font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;'
         'vertical-align:top}th{background:#f3f3f3}.warn{color:#a40}.scroll{overflow-x:auto}'
         'h1{font-size:1.4em;margin:0.3em 0}p.lead{margin:0.3em 0;max-width:1150px}'
         'table.board td{max-width:330px;overflow-wrap:anywhere;padding:2px 6px}table.board td.num{text-align:right;'
         'white-space:nowrap}tr.base td{font-weight:bold;background:#f7f7f7}td.better{color:#070}'
         'td.worse{color:#b00}td.story{min-width:260px;max-width:420px;white-space:pre-wrap;font-size:12px}'
         'img{max-width:100%;display:block;margin:1em 0}')
BOARD_HEADERS = ['#', 'group', 'n', 'params', 'diff [95% interval]', 'p (Holm)', 'verdict', 'diverged', 'tokens/s']


def leaderboard(table):
    """The group table ranked by the difference from its baseline (lowest first, the baseline at 0), within
    each baseline's block (a ladder: one per size); groups without a difference last in their block.
    [(rank in the block, row)]."""
    blocks = {}
    for row in table:  # table order: each baseline, then the groups judged against it
        blocks.setdefault(row['group'] if row['is_baseline'] else row['compared_with'], len(blocks))
    block = lambda row: blocks[row['group'] if row['is_baseline'] else row['compared_with']]

    def key(row):
        if row['is_baseline']:
            return (block(row), 0, 0.0)
        diff = row['diff_vs_baseline']
        return (block(row), 1, 0.0) if diff is None else (block(row), 0, diff)
    ranked, counts = [], {}
    for row in sorted(table, key=key):
        counts[block(row)] = counts.get(block(row), 0) + 1
        ranked.append((counts[block(row)], row))
    return ranked


def leaderboard_html(table, baseline_label, metric, speed_caveat):
    """The answer first: one line per seed group, ranked by its difference from the baseline."""
    e = html.escape
    points = {row['at_tokens'] for row in table if not row['is_baseline'] and row['at_tokens'] is not None}
    at = f' at {next(iter(points)):,} tokens' if len(points) == 1 else ' at each row\'s at_tokens (full table)'
    lines = []
    for rank, row in leaderboard(table):
        diff, low, high = row['diff_vs_baseline'], row['ci95_low'], row['ci95_high']
        if row['is_baseline']:
            shown = '0 (baseline)'
        elif diff is None:
            shown = ''
        elif low is None:
            shown = f'{diff:+.4f}'
        else:
            shown = f'{diff:+.4f} [{low:+.4f}, {high:+.4f}]'
        verdict = row['verdict']
        if len(points) == 1:
            verdict = re.sub(r' at [\d,]+ tokens$', '', verdict)
        beyond = 'beyond noise' in verdict.split('survivors:')[-1]
        worse = 'diverged more often' in verdict or verdict.startswith('all ') or (beyond and 'higher' in verdict)
        tone = 'worse' if worse else 'better' if beyond and 'lower' in verdict else ''
        cells = [(str(rank), 'num'), (row['group'], ''), (str(row['n']), 'num'),
                 (_human('n_params', row['n_params']), 'num'), (shown, 'num'),
                 (_human('p_holm', row['p_holm']), 'num'), (verdict, tone), (row['diverged'], 'num'),
                 (_human('tokens_per_s', row['tokens_per_s']), 'num')]
        tds = ''.join(f'<td class="{c}">{e(v)}</td>' for v, c in cells)
        lines.append(f'<tr class="base">{tds}</tr>' if row['is_baseline'] else f'<tr>{tds}</tr>')
    head = ''.join(f'<th>{e(h)}{"*" if h == "tokens/s" and speed_caveat else ""}</th>' for h in BOARD_HEADERS)
    caveat = f'<p class="lead warn">* {e(speed_caveat)}</p>' if speed_caveat else ''
    return (f'<p class="lead">Each seed group against the baseline <b>{e(baseline_label)}</b> in {e(metric)}{at}, '
            f'ranked by the difference (negative: lower {e(metric)} than the baseline). Interval '
            f'{stats.CONFIDENCE:.0%}, unadjusted; p and verdict Holm-adjusted over the table; n: runs in the '
            f'test. How it is judged: below the table.</p>'
            f'<table id="verdicts" class="board"><tr>{head}</tr>{"".join(lines)}</table>{caveat}')


def shared_cpu(loaded):
    """The speed caveat, or None: CPU runs whose training overlapped in time on one host measured the
    contention as much as the model."""
    spans = []
    for run in loaded:
        config, summary = run['config'], run['summary']
        if 'cpu' not in (str(config.get('device')), str(config.get('device_name'))):
            continue
        try:
            start = datetime.fromisoformat(str(config.get('started_at'))).timestamp()
        except ValueError:
            continue
        seconds = number(summary.get('wall_time_s'))
        if seconds is None:
            elapsed = [t for t in run['metrics']['elapsed_s'] if math.isfinite(t)]
            seconds = elapsed[-1] if elapsed else 0.0
        spans.append((run['name'], summary.get('host'), start, start + seconds))
    overlapping = sorted({a for a, host_a, s_a, e_a in spans for b, host_b, s_b, e_b in spans
                          if a != b and host_a == host_b and s_a < e_b and s_b < e_a})
    if not overlapping:
        return None
    shown = ', '.join(overlapping[:6]) + (f' and {len(overlapping) - 6} more' if len(overlapping) > 6 else '')
    return (f'{len(overlapping)} CPU runs trained at the same time on one machine ({shown}): their tokens/s and '
            f'ms/iter show how they shared the cores, not the models\' speed (bench/bench_train.py measures one '
            f'alone)')


def eval_results_html(eval_dir, report_dir, names):
    """eval_harness.py's results where its report is in eval_dir: a link, which of these runs it evaluated,
    and its seed-group table (stats.py's statistics, as here). '' where there is none."""
    e = html.escape
    settings_path = Path(eval_dir) / 'settings.json'
    if not settings_path.is_file():
        return ''
    try:
        settings = read_json(settings_path)
        with open(Path(eval_dir) / 'groups.csv', newline='', encoding='utf-8') as f:
            eval_rows = list(csv.DictReader(f))
    except (RunError, OSError, csv.Error, UnicodeDecodeError) as err:
        return f'<h2>Eval harness</h2><p class="warn">{e(str(eval_dir))}: cannot read its results: {e(str(err))}</p>'
    evaluated = {str(x.get('run') if isinstance(x, dict) else x) for x in settings.get('evaluated', [])}
    ours = [n for n in names if n in evaluated]
    missing = [n for n in names if n not in evaluated]
    link = os.path.relpath(Path(eval_dir) / 'report.html', report_dir)
    said = (f'<p>eval_harness.py evaluated {len(ours)} of these {len(names)} runs '
            f'({e(str(settings.get("created", "")))}): <a href="{e(link)}">its report</a>, {e(str(eval_dir))}.'
            + (f' Not evaluated: {e(", ".join(missing))}.' if missing else '') + '</p>')
    wanted = ['number', 'group', 'n', 'mean', 'diff_vs_baseline', 'ci95_low', 'ci95_high', 'p_holm', 'verdict']
    columns = [c for c in wanted if eval_rows and c in eval_rows[0]]
    head = ''.join(f'<th>{e(c)}</th>' for c in columns)
    body = ''.join('<tr>' + ''.join(f'<td>{e(r[c] or "")}</td>' for c in columns) + '</tr>' for r in eval_rows)
    return f'<h2>Eval harness</h2>{said}<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def report_html(run_table, table, tuned, plots, stories, baseline_label, why, warnings, notes, runs_dir, x,
                speed_caveat=None, eval_html='', scaling_html=''):
    e = html.escape
    metric = table[0]['metric']
    parts = [f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Run comparison</title>'
             f'<style>{STYLE}</style></head><body>', f'<h1>Run comparison: {e(str(runs_dir))}</h1>',
             leaderboard_html(table, baseline_label, metric, speed_caveat),
             f'<p>{len(run_table)} runs in {len(table)} seed groups, generated '
             f'{datetime.now().isoformat(timespec="seconds")} by compare.py; baseline: <b>{e(baseline_label)}</b> '
             f'({e(why)}); curves against {e(label(X_AXES[x]))}.</p>']
    parts += [f'<p class="warn">{e(n)}</p>' for n in notes]
    if warnings:
        items = ''.join(f'<li class="warn">{e(w)}</li>' for w in warnings)
        parts.append(f'<h2>Warnings</h2><ul>{items}</ul>')
    parts += ['<h2>Seed groups against the baseline: the full table</h2>', f'<p>{e(HOW_TO_READ)}</p>',
              to_html_table(table, GROUP_COLUMNS)]
    if tuned is not None:
        parts += ['<h2>Tuned: each variant at its own best value</h2>', f'<p>{e(HOW_TO_READ_TUNED)}</p>',
                  to_html_table(tuned, TUNED_COLUMNS)]
    parts += [scaling_html, eval_html]
    if stories is not None:
        parts += ['<h2>Stories: what each seed group writes</h2>', stories_html(stories)]
    parts += ['<h2>Runs</h2>', to_html_table(run_table, RUN_COLUMNS), '<h2>Curves</h2>']
    if not plots:
        parts.append('<p>No figures: compare.py ran with --no_plots.</p>')
    for name, heading, png in plots:
        data = base64.b64encode(png).decode('ascii')
        parts.append(f'<h3>{e(heading)}</h3><img alt="{e(name)}" src="data:image/png;base64,{data}">')
    parts.append('</body></html>\n')
    return '\n'.join(parts)


# -----------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('runs_dir_arg', nargs='?', metavar='RUNS_DIR', help='the runs folder (default: out)')
    add_run_args(ap)
    ap.set_defaults(runs_dir=None)  # out, unless the positional names one
    ap.add_argument('--report_dir', default='comparisons', help='folder of the report (default: comparisons)')
    ap.add_argument('--x', choices=list(X_AXES), default='iter', help='x axis of the curves (default: iter)')
    ap.add_argument('--baseline', metavar='NAME_OR_GLOB',
                    help="run name, glob or label of the baseline group (default: model_name 'baseline'; on a "
                         "ladder, its group at each size)")
    ap.add_argument('--metric', default='val_loss', help=f"judge on {' or '.join(JUDGED)} (default val_loss)")
    ap.add_argument('--tune', nargs='+', metavar='KEY', default=None,
                    help='also compare each variant at its own best value of these keys, e.g. learning_rate')
    ap.add_argument('--tune_seeds', nargs='+', type=int, metavar='SEED', default=None,
                    help='with --tune: choose the best value on these seeds only (default: all, or those '
                         'that --report_seeds leaves)')
    ap.add_argument('--report_seeds', nargs='+', type=int, metavar='SEED', default=None,
                    help='with --tune: compare the chosen values on these held-out seeds (default: the seeds '
                         '--tune_seeds leaves)')
    ap.add_argument('--min_effect', type=float, default=stats.MIN_EFFECT,
                    help=f'resolution floor: a smaller difference is "no difference" whatever its p-value '
                         f'(default {stats.MIN_EFFECT:g}, above float noise of a mean val loss)')
    ap.add_argument('--eval_dir', default=None,
                    help="eval_harness.py's --report_dir for these runs, shown and linked in report.html when "
                         "it is there (default: REPORT_DIR/eval_harness)")
    ap.add_argument('--scaling', action='store_true',
                    help='require the scaling section (fits of final loss against training FLOPs, compute '
                         'multipliers); it appears by itself where a variant ran at 3 or more sizes')
    ap.add_argument('--no_samples', action='store_true', help='leave the stories out of report.html')
    ap.add_argument('--no_plots', action='store_true',
                    help='tables and verdicts only: no figures (drawing them is most of a report\'s time)')
    ap.add_argument('--device', default='auto', help='device the stories are sampled on (default: auto)')
    ap.error = fail  # one line and exit 1, not a usage dump
    args = ap.parse_args(argv)
    if args.runs_dir_arg and args.runs_dir and args.runs_dir_arg != args.runs_dir:
        fail(f'two runs dirs given: {args.runs_dir_arg} and --runs_dir {args.runs_dir}')
    args.runs_dir = Path(args.runs_dir_arg or args.runs_dir or 'out')
    if args.metric not in JUDGED:
        fail(f"--metric {args.metric!r}: expected one of {', '.join(JUDGED)}")
    if not (math.isfinite(args.min_effect) and args.min_effect >= 0):
        fail(f'--min_effect {args.min_effect}: expected a difference >= 0 in the judged metric, e.g. 1e-4')
    if (args.tune_seeds or args.report_seeds) and not args.tune:
        fail('--tune_seeds / --report_seeds choose and report the best value of --tune KEY: give --tune too')
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        paths = find_runs(args.runs_dir)
    except RunError as e:
        fail(e)
    if not paths:
        fail(f'no runs in {args.runs_dir} (a run is a folder with config.json and metrics.csv; train one '
             f'with python train.py)')
    if args.runs:
        chosen = find_runs(args.runs_dir, args.runs)
        if not chosen:
            fail(f"--runs {' '.join(args.runs)} matches none of the runs in {args.runs_dir} "
                 f"({', '.join(p.name for p in paths)})")
        paths = chosen
    loaded, skipped = load_runs(paths)
    if not loaded:
        fail(f'none of the {len(paths)} runs in {args.runs_dir} could be read')
    device = None
    if not args.no_samples:
        from model import pick_device
        try:
            device = pick_device(args.device)
        except ValueError as e:
            fail(f'--device: {e}')

    groups = seed_groups(loaded)
    baseline, why = pick_baseline(groups, args.baseline)
    rows = {run['name']: run_numbers(run) for run in loaded}
    for group in groups:
        for run in group['runs']:
            rows[run['name']]['group'] = group['label']
    run_table = [rows[run['name']] for run in loaded]
    metric, note = judged_metric(groups, args.metric)
    notes = [note] if note else []
    tuned = variants = None
    if args.tune:
        tune_seeds, report_seeds, how = split_seeds(loaded, args.tune_seeds, args.report_seeds)
        tuned, variants = tuned_table(loaded, groups, baseline, rows, metric, args.tune, tune_seeds, report_seeds,
                                      args.min_effect, per_size=not args.baseline)
        notes.append(f'--tune: {how}')
    if tuned and not args.baseline:  # every group is then compared with the baseline at its best value too
        baseline = variants[0][2]
        why = f"the baseline variant ({variants[0][0]}) at its best {', '.join(args.tune)}"
    by_size = None if args.baseline else baselines_by_size(groups, baseline)
    baseline_label = baseline['label']
    if by_size:
        baseline_label, why = ladder_baseline(groups, baseline)
    table = group_table(groups, baseline, rows, metric, args.min_effect, by_size)
    notes += [f"{r['name']} counted once: same settings and seed as {kept['name']} (a rerun or a copy)"
              for g in groups for r, kept in replicates(g)[1]]
    size_by_run = {r['name']: size_of(g) for g in groups for r in g['runs']} if by_size else None
    warnings = token_warnings(rows, size_by_run) + [f'skipped {s}' for s in skipped]
    scaling = scaling_report(groups, baseline, rows, metric, args.scaling, draw=not args.no_plots)  # None: < 3 sizes
    warnings += scaling['warnings'] if scaling else []

    report_dir = Path(args.report_dir)
    try:  # before the slow part: an unwritable report dir is said at once
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f'cannot write the report to {report_dir}: {e.strerror or e}')
    stories = draw_stories(groups, device) if not args.no_samples else None
    tuned_plot = (variants, args.tune) if tuned else None
    speed_caveat = shared_cpu(loaded)
    plots = [] if args.no_plots else make_plots(loaded, groups, baseline, rows, metric, args.x, tuned_plot,
                                                 speed_caveat, by_size)
    plots += scaling['plots'] if scaling else []
    eval_dir = Path(args.eval_dir) if args.eval_dir else report_dir / 'eval_harness'
    eval_html = eval_results_html(eval_dir, report_dir, [r['name'] for r in loaded])

    # everything is rendered before anything is written: a failure on the way leaves the old report as it was
    texts = {'summary_table.csv': to_csv(run_table, RUN_COLUMNS),
             'summary_table.md': '# Runs\n\n' + to_markdown(run_table, RUN_COLUMNS),
             'groups.csv': to_csv(table, GROUP_COLUMNS),
             'groups.md': groups_markdown(table, baseline_label, why, warnings, notes)}
    if tuned:
        texts['tuned.csv'] = to_csv(tuned, TUNED_COLUMNS)
        texts['tuned.md'] = (f"# Tuned: {', '.join(args.tune)}\n\n{HOW_TO_READ_TUNED} {how}.\n\n"
                             + to_markdown(tuned, TUNED_COLUMNS))
    if scaling:
        texts.update(scaling['texts'])
    texts['report.html'] = report_html(run_table, table, tuned, plots, stories, baseline_label, why,
                                       warnings, notes, args.runs_dir, args.x, speed_caveat, eval_html,
                                       scaling['html'] if scaling else '')
    try:
        for name, _, png in plots:
            atomic_write_bytes(report_dir / name, png)
        for name, text in texts.items():
            atomic_write_text(report_dir / name, text)
    except OSError as e:
        fail(f'cannot write the report to {report_dir}: {e.strerror or e}')

    print(f"compared {len(loaded)} runs in {len(groups)} seed groups; baseline: {baseline_label} ({why})")
    for n in notes:
        print(f'compare.py: note: {n}')
    print(to_markdown(table, ['group', 'n', f'mean_final_{metric}', 'diff_vs_baseline', 'ci95_low',
                              'ci95_high', 'method', 'verdict']))
    if tuned:
        print(to_markdown(tuned, ['variant', 'best_value', f'mean_final_{metric}', 'diff_vs_baseline',
                                  'verdict']))
    for line in scaling['console'] if scaling else []:
        print(f'scaling: {line}')
    for w in warnings:
        if not w.startswith('skipped '):  # those were named on stderr as they were met
            print(f'compare.py: warning: {w}', file=sys.stderr)
    tables = 'summary_table.csv, groups.csv' + (', tuned.csv' if tuned else '')
    tables += ', scaling.csv' if scaling else ''
    print(f'wrote {report_dir}/report.html (tables: {tables})')


if __name__ == '__main__':
    main()
