"""
Seed-group statistics: is a group of runs different from the baseline group beyond seed noise?
The one place compare.py, eval_harness.py and sweep.py take their intervals, p-values and verdicts from
(numpy and scipy underneath; no project module).

    import stats
    r = stats.compare_values({1: 2.01, 2: 1.98, 3: 2.05}, {1: 2.10, 2: 2.06, 3: 2.12})
    # r: dict(diff, low, high, df, p, method, n, n_base, paired); diff = group mean minus baseline mean
    p_adj = stats.holm([r['p'], ...])          # across every row of one table; None stays None
    stats.verdict(r, p_adj[0], what='val_loss', diverged=(0, 3), base_diverged=(0, 3))
    stats.describe([2.01, 1.98, 2.05])         # dict(mean, std, n) of one group's values

The inputs are {seed: value}, one value per seed: a rerun or a copy of a run is the same replicate, and
the caller keeps one of them (compare.replicates). How compare_values tests:
- paired by seed when both sides have the same seeds (>= 2): the mean of the per-seed differences with
  a paired t-interval (same seed = same initialisation and batch order, so that share of the noise cancels);
- otherwise Welch's t-interval on all values (>= 2 a side): pairing never drops runs;
- one value against a replicated side: that side's seed spread is taken as the noise of both (said in
  `method`); one against one: a difference without an interval (NO_NOISE_ESTIMATE).
- zero spread (every difference identical) gives no interval and p = None, never p = 0.
verdict() then reads the Holm-adjusted p against ALPHA, calls a difference smaller than min_effect (the
resolution floor, default MIN_EFFECT) "no difference" whatever its p-value, and treats divergence as an
outcome: a group that diverged more often than the baseline is never "within noise" on its survivors alone.
"""
import math

import numpy as np
from scipy import stats as _scipy

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
# The resolution floor: differences below it are "no difference". Float32 evaluation noise of a mean loss
# over the eval windows is ~1e-6..1e-5 nats (the same model at batch 4 x 2 vs 8 x 1 differs by 5e-7);
# 1e-4 sits above it and far below the effects worth a run (~1e-2).
MIN_EFFECT = 1e-4
WITHIN_NOISE = 'within noise'
NO_DIFFERENCE = 'no difference'
NO_NOISE_ESTIMATE = 'n=1: no seed noise estimate'
ZERO_SPREAD = 'zero spread: no noise estimate'


def describe(values):
    """mean, sample std (None below 2 values) and n of one group's values."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return dict(mean=float(v.mean()) if len(v) else None, std=float(v.std(ddof=1)) if len(v) >= 2 else None,
                n=len(v))


def t_interval(diff, se, df, method):
    """diff with its CONFIDENCE t-interval (standard error se, df degrees of freedom) and the two-sided
    p-value of 'no difference'. se == 0 (every replicate identical): no interval and p None, never 0."""
    diff = float(diff)
    if se == 0.0 or not math.isfinite(se):
        return dict(diff=diff, low=None, high=None, df=None, p=None, method=f'{method}; {ZERO_SPREAD}')
    half = float(_scipy.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    return dict(diff=diff, low=diff - half, high=diff + half, df=float(df),
                p=float(2 * _scipy.t.sf(abs(diff) / se, df)), method=method)


def welch_interval(values, base_values):
    """mean(values) - mean(base_values), unequal variances (Welch-Satterthwaite df); >= 2 values a side."""
    a, b = np.asarray(values, dtype=float), np.asarray(base_values, dtype=float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)  # squared standard errors of the means
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb > 0 else None
    return t_interval(a.mean() - b.mean(), math.sqrt(va + vb), df, f'Welch (n={len(a)} vs {len(b)})')


def paired_interval(values, base_values, seeds, note=''):
    """Mean of the per-seed differences: the seed's share of the noise (batch order, init) cancels."""
    d = np.asarray(values, dtype=float) - np.asarray(base_values, dtype=float)
    what = ', '.join(map(str, seeds)) + (f'; {note}' if note else '')
    return t_interval(d.mean(), d.std(ddof=1) / math.sqrt(len(d)), len(d) - 1, f'paired by seed ({what})')


def single_run_interval(value, base_values, spread_of='baseline'):
    """One run against a replicated group, assuming the run's seed noise equals the group's:
    Var(x - mean(b)) = s_b^2 (1 + 1/n_b), on n_b - 1 degrees of freedom."""
    b = np.asarray(base_values, dtype=float)
    return t_interval(value - b.mean(), b.std(ddof=1) * math.sqrt(1 + 1 / len(b)), len(b) - 1,
                      f'n=1; assumes the {spread_of} seed spread (n={len(b)})')


def compare_values(values_by_seed, base_values_by_seed, pairing_note=''):
    """The group's values minus the baseline's, {seed: value} each (one value per seed): paired by seed
    when both sides have the same >= 2 seeds, else Welch on all, else one run against the other side's
    spread. pairing_note is added to a paired method (what the pairing shares, e.g. 'different
    tokenizers: not the same batches'). dict(diff, low, high, df, p, method, n, n_base, paired), or None
    where a side has no value."""
    g, b = dict(values_by_seed), dict(base_values_by_seed)
    if not g or not b:
        return None
    g_values, b_values = list(g.values()), list(b.values())
    paired = len(g) >= 2 and set(g) == set(b) and None not in g
    if paired:
        seeds = sorted(g, key=str)
        result = paired_interval([g[s] for s in seeds], [b[s] for s in seeds], seeds, pairing_note)
    elif len(g) >= 2 and len(b) >= 2:
        result = welch_interval(g_values, b_values)
    elif len(g) == 1 and len(b) >= 2:
        result = single_run_interval(g_values[0], b_values)
    elif len(b) == 1 and len(g) >= 2:  # the mirror image: a one-run baseline, the group's spread
        r = single_run_interval(b_values[0], g_values, spread_of="group's")
        result = dict(r, diff=-r['diff'], low=None if r['high'] is None else -r['high'],
                      high=None if r['low'] is None else -r['low'])
    else:
        result = dict(diff=float(g_values[0] - b_values[0]), low=None, high=None, df=None, p=None,
                      method=NO_NOISE_ESTIMATE)
    return dict(result, n=len(g), n_base=len(b), paired=paired)


def holm(p_values):
    """Holm-Bonferroni adjusted p-values, in the given order: the k-th smallest (k from 0) times
    (m - k), never below the one before it, at most 1. None (no test) stays None and does not count."""
    tested = [i for i, p in enumerate(p_values) if p is not None]
    adjusted, running = [None] * len(p_values), 0.0
    for k, j in enumerate(np.argsort([p_values[i] for i in tested], kind='stable')):
        i = tested[j]
        running = max(running, min(1.0, (len(tested) - k) * p_values[i]))
        adjusted[i] = running
    return adjusted


def diverged_more_often(diverged, base_diverged):
    """One-sided Fisher exact p-value that the group diverges more often than the baseline, from
    (diverged, runs) of each; None where its share is not higher."""
    (k, n), (kb, nb) = diverged, base_diverged
    if n == 0 or nb == 0 or k / n <= kb / nb:
        return None
    return float(_scipy.fisher_exact([[k, n - k], [kb, nb - kb]], alternative='greater')[1])


def verdict(result, p_holm, what='val_loss', min_effect=MIN_EFFECT, diverged=(0, 0), base_diverged=(0, 0)):
    """One line: the group against the baseline. result from compare_values (None: no value), p_holm its
    adjusted p-value, diverged / base_diverged = (diverged runs, runs) of the group and the baseline."""
    k, n = diverged
    if n and k == n:
        return f'all {n} runs diverged'
    survivors = _survivors_verdict(result, p_holm, what, min_effect)
    p_div = diverged_more_often(diverged, base_diverged)
    if p_div is not None:
        kb, nb = base_diverged
        return (f'diverged more often than baseline ({k} of {n} vs {kb} of {nb}, Fisher p={p_div:.2g}); '
                f'survivors: {survivors}')
    return f'{survivors}; {k} of {n} diverged' if k else survivors


def _survivors_verdict(result, p_holm, what, min_effect):
    if result is None:
        return f'no {what} yet'
    diff, p = result['diff'], result['p']
    if abs(diff) < min_effect:
        return f'{NO_DIFFERENCE} (|diff| < min_effect {min_effect:g})'
    if p is None:
        return ZERO_SPREAD if result['method'].endswith(ZERO_SPREAD) else NO_NOISE_ESTIMATE
    direction = f"{'lower' if diff < 0 else 'higher'} {what} than baseline"
    if p_holm is not None and p_holm < ALPHA:
        return f'{direction}, beyond noise'
    if p < ALPHA:
        return f'{WITHIN_NOISE} after Holm adjustment (unadjusted: {direction})'
    return WITHIN_NOISE
