"""Scaling verdicts (stats.py's scaling section): the power-law fit, the compute multiplier, its bootstrap
and the learning-rate sensitivity, each on synthetic curves whose answer is known by construction."""
import math

import numpy as np
import pytest

import stats

E, A, ALPHA = 1.8, 1500.0, 0.3
FLOPS = np.geomspace(1e12, 1e14, 4)  # a 4-size ladder, 100x in compute


def baseline_loss(c):
    return E + A * np.asarray(c, dtype=float) ** -ALPHA


def ladder(loss_at, noise=(0.01, -0.01), flops=FLOPS):
    """{size: (flops, {seed: loss})}: the curve loss_at, each seed shifted by its own noise."""
    return {f'size{i}': (float(c), {seed: float(loss_at(c)) + n for seed, n in enumerate(noise, 1)})
            for i, c in enumerate(flops)}


def test_fit_recovers_a_known_power_law():
    fit = stats.fit_power_law(FLOPS, baseline_loss(FLOPS))
    assert fit['E'] == pytest.approx(E, rel=1e-5)
    assert fit['alpha'] == pytest.approx(ALPHA, rel=1e-5)
    assert fit['A'] == pytest.approx(A, rel=1e-4)
    assert fit['r2'] > 0.999999 and fit['at_bound'] == []
    assert stats.flops_for_loss(fit, float(baseline_loss(3e13))) == pytest.approx(3e13, rel=1e-5)
    assert stats.flops_for_loss(fit, E - 0.01) == math.inf  # below the floor: never reached
    with pytest.raises(ValueError, match='3 or more compute values'):
        stats.fit_power_law(FLOPS[:2], baseline_loss(FLOPS[:2]))


def test_a_variant_worth_twice_the_compute_gives_2():
    """The variant's loss at C is the baseline's at 2C: multiplier 2.0 at every size, inside its interval;
    one at C/2 gives 0.5; the same curve with other seed noise gives 1 and 'within noise'."""
    cells = dict(baseline=ladder(baseline_loss), better=ladder(lambda c: baseline_loss(2 * c)),
                 worse=ladder(lambda c: baseline_loss(c / 2)), same=ladder(baseline_loss, noise=(-0.01, 0.01)))
    result = stats.scaling_analysis(cells, 'baseline', n_boot=500)
    by = {}
    for row in result['multipliers']:
        by.setdefault(row['variant'], []).append(row)
    for variant, truth, verdict in (('better', 2.0, 'better'), ('worse', 0.5, 'worse'), ('same', 1.0, 'within')):
        rows = by[variant]
        assert [r['size'] for r in rows] == list(cells['baseline']) and rows[-1]['largest']
        for r in rows:
            assert r['multiplier'] == pytest.approx(truth, rel=1e-4)
            assert r['low'] < truth < r['high']
            assert r['verdict'].startswith(verdict), r
            assert r['notes'] == ''  # all within the measured compute range
    assert by['better'][-1]['high'] / by['better'][-1]['low'] < 3  # an interval, not everything
    assert result['warnings'] == []


def test_the_bootstrap_over_two_seeds_spans_their_single_values():
    """Known data: with a noise-free baseline, a replicate's variant mean at a size is one seed, the other
    or their mean (probabilities 1/4, 1/4, 1/2), so the 95% interval is exactly the multipliers of the two
    single seeds."""
    delta = 0.004
    cells = dict(baseline=ladder(baseline_loss, noise=(0.0, 0.0)),
                 variant=ladder(lambda c: baseline_loss(2 * c), noise=(delta, -delta)))
    result = stats.scaling_analysis(cells, 'baseline', n_boot=500)
    for row in result['multipliers']:
        c = row['flops']
        true_base = dict(E=E, B=A * c ** -ALPHA, alpha=ALPHA, c0=c)  # the baseline's law, read from c
        worst = stats.flops_for_loss(true_base, float(baseline_loss(2 * c)) + delta) / c
        best = stats.flops_for_loss(true_base, float(baseline_loss(2 * c)) - delta) / c
        assert row['low'] == pytest.approx(worst, rel=1e-4) and row['high'] == pytest.approx(best, rel=1e-4)
    assert stats.interval(np.arange(1001) / 1000, 0.95) == (0.025, 0.975)
    assert stats.interval([1.0, 2.0] * 45 + [math.inf] * 10, 0.95)[1] == math.inf  # never reached sorts last


def test_warnings_name_extrapolation_and_a_fit_that_is_no_power_law():
    flat_then_up = {f's{i}': (c, {1: 2.0 + 0.02 * i, 2: 2.0 + 0.02 * i + 0.001}) for i, c in enumerate(FLOPS)}
    cells = dict(baseline=ladder(baseline_loss), tenfold=ladder(lambda c: baseline_loss(10 * c)),
                 rising=flat_then_up, short=dict(list(ladder(baseline_loss).items())[:3]),
                 two=dict(list(ladder(baseline_loss).items())[:2]))
    result = stats.scaling_analysis(cells, 'baseline', n_boot=500)
    largest = [r for r in result['multipliers'] if r['variant'] == 'tenfold' and r['largest']][0]
    assert largest['multiplier'] == pytest.approx(10.0, rel=1e-3)
    assert largest['notes'].startswith('extrapolated') and '10x its largest run' in largest['notes']
    text = '\n'.join(result['warnings'])
    assert 'rising: ' in text and 'does not fall like a power law' in text
    assert 'short: 3 sizes for 3 parameters' in text
    assert 'two: runs at 2 size(s)' in text and 'two' not in result['fits']


def test_the_trend_tells_a_constant_gain_from_one_that_grows_with_scale():
    """Slope of (variant - baseline fit) per 10x compute: ~0 for a constant offset, -0.02 for an offset that
    grows by 0.02 per decade."""
    grows = lambda c: baseline_loss(c) - 0.02 * np.log10(c / FLOPS[0]) - 0.01
    cells = dict(baseline=ladder(baseline_loss), constant=ladder(lambda c: baseline_loss(c) - 0.03),
                 grows=ladder(grows))
    trends = stats.scaling_analysis(cells, 'baseline', n_boot=500)['trends']
    assert trends['constant']['slope'] == pytest.approx(0.0, abs=1e-6)
    assert trends['constant']['low'] <= 0.0 <= trends['constant']['high']
    assert trends['grows']['slope'] == pytest.approx(-0.02, rel=1e-3)
    assert trends['grows']['high'] < 0


def test_learning_rate_sensitivity_on_a_known_parabola():
    """Loss = 2 + 0.1 * log2(lr / best)^2: the best lr is recovered between grid points; with a factor-2
    grid centred on it, 2x and 0.5x each cost exactly 0.1; a best lr at the edge is said."""
    lrs = [2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3]
    parabola = lambda lr, best: 2 + 0.1 * math.log2(lr / best) ** 2
    off_grid = stats.lr_sensitivity({lr: {1: parabola(lr, 1.3e-3) + 0.01, 2: parabola(lr, 1.3e-3) - 0.01}
                                     for lr in lrs})
    assert off_grid['best_lr'] == pytest.approx(1.3e-3, rel=1e-9) and not off_grid['at_edge']
    assert off_grid['low'] <= 1.3e-3 <= off_grid['high']
    on_grid = stats.lr_sensitivity({lr: {1: parabola(lr, 1e-3)} for lr in lrs})
    assert on_grid['up_2x'] == pytest.approx(0.1) and on_grid['down_half'] == pytest.approx(0.1)
    edge = stats.lr_sensitivity({lr: {1: parabola(lr, 1e-2)} for lr in lrs})
    assert edge['at_edge'] and edge['best_lr'] == pytest.approx(4e-3) and edge['up_2x'] is None
    with pytest.raises(ValueError, match='2 or more learning rates'):
        stats.lr_sensitivity({1e-3: {1: 2.0}})
