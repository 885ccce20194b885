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


# -----------------------------------------------------------------------------
# scaling: final loss against training compute, L(C) = E + A * C**-alpha, and what a variant is worth in
# compute (the baseline's compute needed to reach its loss). Intervals: percentile bootstrap over seeds.

SCALING_BOOTSTRAP = 2000      # bootstrap replicates (vectorised: all refitted at once)
EXTRAPOLATION_LIMIT = 4.0     # a fit read beyond 4x the largest run (or a quarter of the smallest) is flagged
POOR_FIT_R2 = 0.9             # below this (on the seed means) a fit is called poor
ALPHA_BOUNDS = (1e-3, 3.0)    # exponents outside these are no power law a ladder of small runs can support


def power_law(fit, flops):
    """L(C) = E + A * C**-alpha, computed as E + B * (C / c0)**-alpha (c0: the largest run), in range."""
    return fit['E'] + fit['B'] * (np.asarray(flops, dtype=float) / fit['c0']) ** -fit['alpha']


def flops_for_loss(fit, loss):
    """The compute at which the fitted curve reaches `loss`; inf where it never does (loss <= E)."""
    if loss <= fit['E']:
        return math.inf
    return fit['c0'] * ((loss - fit['E']) / fit['B']) ** (-1.0 / fit['alpha'])


def _linear_part(alphas, x, y):
    """For a fixed exponent the law is linear in E and B. alphas (R, k), x (n,) = log(C / c0), y (R, n):
    for each curve and alpha, the least-squares E (kept in [0, lowest loss)) and B (> 0), and the sum of
    squared residuals; each (R, k)."""
    z = np.exp(-alphas[..., None] * x)
    y = y[:, None, :]
    zc = z - z.mean(-1, keepdims=True)
    b = (zc * (y - y.mean(-1, keepdims=True))).sum(-1) / (zc * zc).sum(-1)
    e = y.mean(-1) - b * z.mean(-1)
    e_high = y.min(-1) * (1 - 1e-9)
    clipped = (e < 0) | (e > e_high)  # then E sits at its bound and B alone is fitted
    e = np.clip(e, 0.0, e_high)
    b = np.where(clipped, (z * (y - e[..., None])).sum(-1) / (z * z).sum(-1), b)
    b = np.maximum(b, 1e-12)  # a loss that rises with compute is no power law: the fit ends at a bound
    return e, b, ((e[..., None] + b[..., None] * z - y) ** 2).sum(-1)


def fit_power_laws(flops, losses):
    """Least-squares fits of L(C) = E + A * C**-alpha to many curves at once (losses: (R, n), one curve a
    row, all at the same flops), with 0 <= E < the lowest loss and alpha in ALPHA_BOUNDS. For a given alpha,
    E and A are linear least squares, so only alpha is searched: a grid in log alpha, refined around each
    curve's best point until alpha is exact to ~1e-6 (vectorised, so a bootstrap refits in milliseconds).
    dict of (R,) arrays: E, B, alpha, sse; c0 = the largest flops."""
    c, y = np.asarray(flops, dtype=float), np.atleast_2d(np.asarray(losses, dtype=float))
    if len(np.unique(c)) < 3:
        raise ValueError(f"a scaling fit needs runs at 3 or more compute values; got {len(np.unique(c))}")
    x = np.log(c / c.max())
    lo, hi = np.log(ALPHA_BOUNDS)
    grid = np.tile(np.linspace(lo, hi, 64), (len(y), 1))
    rows = np.arange(len(y))
    for _ in range(6):
        e, b, sse = _linear_part(np.exp(grid), x, y)
        k = sse.argmin(1)
        step = grid[:, 1] - grid[:, 0]
        best = grid[rows, k]
        grid = np.clip(best[:, None] + step[:, None] * np.linspace(-1, 1, 17), lo, hi)
    return dict(E=e[rows, k], B=b[rows, k], alpha=np.exp(best), sse=sse[rows, k], c0=float(c.max()))


def fit_power_law(flops, losses):
    """One curve: fit_power_laws' fit as floats, with A (= B / c0**-alpha), n, r2 and rmse on these points,
    and at_bound: the parameters that ended at an edge of their range (no power law describes the points)."""
    f = {k: (float(v[0]) if k != 'c0' else v) for k, v in fit_power_laws(flops, [losses]).items()}
    y = np.asarray(losses, dtype=float)
    spread = float(np.sum((y - y.mean()) ** 2))
    bounds = (('E', f['E'], 0.0, float(y.min()) * (1 - 1e-9)), ('alpha', f['alpha'], *ALPHA_BOUNDS))
    at_bound = [name for name, v, low, high in bounds
                if min(abs(v - low), abs(high - v)) <= 1e-5 * max(1.0, v)]
    r2 = 1 - f['sse'] / spread if spread > 0 else math.nan
    return dict(f, A=f['B'] * f['c0'] ** f['alpha'], n=len(y), r2=r2, rmse=math.sqrt(f['sse'] / len(y)),
                at_bound=at_bound)


def interval(values, confidence):
    """Percentile interval of bootstrap values; inf (a loss the baseline never reaches) sorts last."""
    tail = (1 - confidence) / 2
    values = np.asarray(values, dtype=float)
    low, high = np.quantile(values, tail, method='lower'), np.quantile(values, 1 - tail, method='higher')
    return float(low), float(high)


def multiplier_verdict(low, high):
    """Above 1: the baseline needs more compute than the variant for the same loss."""
    if low > 1:
        return 'better than the baseline beyond seed noise'
    if high < 1:
        return 'worse than the baseline beyond seed noise'
    return 'within noise'


def scaling_analysis(cells, baseline, confidence=CONFIDENCE, n_boot=SCALING_BOOTSTRAP, seed=0):
    """Power-law fits of each variant's final loss against training compute, and the compute multiplier of
    each variant against the baseline, with percentile-bootstrap intervals over seeds.

    cells: {variant: {size: (flops, {seed: final loss})}}: a size is a model (and its token budget) on the
    ladder; flops are its runs' training FLOPs. Each fit is to the seed means. A bootstrap replicate draws
    each size's seeds with replacement, the same draw for every variant that ran those seeds (paired: the
    same seed sees the same batches), and refits every curve.

    Returns dict(fits={variant: fit with E_ci, alpha_ci, points, warnings}, multipliers=[a row per variant
    and size both ran, smallest first], trends={variant: slope of the difference per 10x compute, with
    its interval}, warnings=[...]). A multiplier is the compute the baseline's fit needs to reach the
    variant's mean loss over the variant's own compute: 2.0 = the variant matches a baseline given twice
    the compute; below 1, the variant is worse."""
    if baseline not in cells:
        raise ValueError(f"baseline {baseline!r} is not among the variants ({', '.join(cells)})")
    rng = np.random.default_rng(seed)
    sizes = {v: sorted(by_size, key=lambda s: by_size[s][0]) for v, by_size in cells.items()}
    seeds = {v: {s: sorted(cells[v][s][1]) for s in sizes[v]} for v in cells}
    draws = {s: rng.integers(0, len(ids), size=(n_boot, len(ids))) for s, ids in seeds[baseline].items()}
    fits, boot, warnings = {}, {}, []
    for v in cells:
        if len(sizes[v]) < 3:
            warnings.append(f"{v}: runs at {len(sizes[v])} size(s); a scaling fit needs 3 or more")
            continue
        flops = [cells[v][s][0] for s in sizes[v]]
        losses = [np.array([cells[v][s][1][k] for k in seeds[v][s]]) for s in sizes[v]]
        fit = fit_power_law(flops, [l.mean() for l in losses])
        # a replicate's seed means: the baseline's draw where the seeds are the baseline's (paired)
        means = np.stack([l[draws[s]].mean(1) if s in draws and seeds[v][s] == seeds[baseline][s]
                          else l[rng.integers(0, len(l), size=(n_boot, len(l)))].mean(1)
                          for s, l in zip(sizes[v], losses)], axis=1)
        boot[v] = dict(fit_power_laws(flops, means), means=means)
        fit.update(E_ci=interval(boot[v]['E'], confidence), alpha_ci=interval(boot[v]['alpha'], confidence),
                   points=[(s, cells[v][s][0], float(l.mean()), l) for s, l in zip(sizes[v], losses)])
        problems = []
        if fit['n'] == 3:
            problems.append('3 sizes for 3 parameters: the curve passes through them, nothing tests its form')
        elif not fit['r2'] >= POOR_FIT_R2:
            problems.append(f"poor fit (R^2 {fit['r2']:.2f} on the seed means)")
        if fit['at_bound']:
            problems.append(f"{' and '.join(fit['at_bound'])} at the edge of its range (E: 0 to the lowest "
                            f"loss; alpha: {ALPHA_BOUNDS[0]:g} to {ALPHA_BOUNDS[1]:g}): the loss does not "
                            f"fall like a power law of compute here")
        fit['warnings'] = problems
        warnings += [f'{v}: {p}' for p in problems]
        fits[v] = fit
    if baseline not in fits:
        return dict(fits=fits, multipliers=[], trends={}, warnings=warnings)

    base, base_boot = fits[baseline], boot[baseline]
    base_flops = [p[1] for p in base['points']]
    rows, trends = [], {}
    for v in fits:
        if v == baseline:
            continue
        shared = [i for i, s in enumerate(sizes[v]) if s in seeds[baseline]]
        for i in shared:
            size, flops, loss, _ = fits[v]['points'][i]
            needed = flops_for_loss(base, loss)
            with np.errstate(divide='ignore', invalid='ignore'):  # a loss at or below E: never reached (inf)
                ratio = (boot[v]['means'][:, i] - base_boot['E']) / base_boot['B']
                needed_boot = base['c0'] * np.abs(ratio) ** (-1 / base_boot['alpha'])
                ms = np.where(ratio > 0, needed_boot / flops, np.inf)
            low, high = interval(ms, confidence)
            notes = []
            if math.isinf(needed):
                notes.append("the variant's loss is below the baseline fit's floor E: no compute reaches it")
            elif needed > EXTRAPOLATION_LIMIT * max(base_flops):
                notes.append(f"extrapolated: reads the baseline's fit at {needed / max(base_flops):.3g}x its "
                             f"largest run (beyond {EXTRAPOLATION_LIMIT:g}x the compute it was fitted on)")
            elif needed < min(base_flops) / EXTRAPOLATION_LIMIT:
                notes.append(f"extrapolated: reads the baseline's fit at {needed / min(base_flops):.3g}x its "
                             f"smallest run (below 1/{EXTRAPOLATION_LIMIT:g} of the compute it was fitted on)")
            rows.append(dict(variant=v, size=size, flops=flops, loss=loss,
                             baseline_loss=base['points'][sizes[baseline].index(size)][2],
                             multiplier=needed / flops, low=low, high=high,
                             verdict=multiplier_verdict(low, high),
                             largest=i == shared[-1], notes='; '.join(notes)))
            warnings += [f'{v} at {size}: {n}' for n in notes]
        if len(shared) >= 2:
            c = np.array([fits[v]['points'][i][1] for i in shared])
            x = np.log10(c)
            diff = np.array([fits[v]['points'][i][2] for i in shared]) - power_law(base, c)
            e, b, alpha = (base_boot[k][:, None] for k in ('E', 'B', 'alpha'))
            boot_base = e + b * (c / base['c0']) ** -alpha
            boot_diff = boot[v]['means'][:, shared] - boot_base
            slopes = np.polyfit(x, boot_diff.T, 1)[0]
            low, high = interval(slopes, confidence)
            trends[v] = dict(slope=float(np.polyfit(x, diff, 1)[0]), low=low, high=high)
    return dict(fits=fits, multipliers=rows, trends=trends, warnings=warnings)

# -----------------------------------------------------------------------------
# learning-rate sensitivity: where the final loss is lowest, and how fast it rises either side


def best_lrs(lrs, losses):
    """The lowest point of the parabola in log(lr) through the lowest mean and its two neighbours, for
    each row of losses (R, len(lrs)); at the edge of the values tried, that edge (the optimum may lie
    beyond)."""
    x, y = np.log(np.asarray(lrs, dtype=float)), np.atleast_2d(np.asarray(losses, dtype=float))
    k = np.clip(y.argmin(1), 1, len(x) - 2) if len(x) >= 3 else np.zeros(len(y), dtype=int)
    best = x[y.argmin(1)]
    if len(x) >= 3:
        rows = np.arange(len(y))
        (x0, x1, x2), (y0, y1, y2) = (x[k - 1], x[k], x[k + 1]), (y[rows, k - 1], y[rows, k], y[rows, k + 1])
        num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
        den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
        inside = (y.argmin(1) > 0) & (y.argmin(1) < len(x) - 1) & (den != 0)
        with np.errstate(divide='ignore', invalid='ignore'):
            best = np.where(inside, x1 - 0.5 * num / den, best)
    return np.exp(best)


def lr_sensitivity(cells, confidence=CONFIDENCE, n_boot=SCALING_BOOTSTRAP, seed=0):
    """cells: {lr: {seed: final loss}} of one variant at one size. dict(lrs, means, best_lr with its
    bootstrap interval over seeds (low, high), at_edge, best_loss (the lowest mean), up_2x and down_half:
    the loss at 2x and 0.5x the best lr (linear in log lr between the means) minus the lowest mean, None
    where that lr lies outside the values tried)."""
    lrs = sorted(cells)
    if len(lrs) < 2:
        raise ValueError(f"learning-rate sensitivity needs 2 or more learning rates; got {len(lrs)}")
    values = [np.array(list(cells[lr].values()), dtype=float) for lr in lrs]
    means = np.array([v.mean() for v in values])
    best = float(best_lrs(lrs, means)[0])
    rng = np.random.default_rng(seed)
    drawn = np.stack([v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1) for v in values], axis=1)
    low, high = interval(best_lrs(lrs, drawn), confidence)
    x = np.log(lrs)

    def rise(factor):
        at = math.log(best * factor)
        if at < x[0] - 1e-9 or at > x[-1] + 1e-9:
            return None
        return float(np.interp(at, x, means) - means.min())
    return dict(lrs=lrs, means=means.tolist(), best_lr=best, low=low, high=high,
                at_edge=int(means.argmin()) in (0, len(lrs) - 1), best_loss=float(means.min()),
                up_2x=rise(2.0), down_half=rise(0.5))
