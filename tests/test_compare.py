"""compare.py: intervals (Welch, paired, one run against a replicated baseline) and the Holm adjustment
checked by hand and against scipy called directly, equal-token verdicts, val_bpb, tokenizers, the tuned
table, statuses, every output file, bad input; and one end-to-end report with stories on real smoke runs."""
import base64
import json
import math
import re

import numpy as np
import pytest
from scipy import stats

import compare
import stats as seed_stats
from conftest import METRICS_HEADER, TOKENS_PER_ITER, REPO, make_metrics_run, read_csv, run_script

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
TABLES = ['summary_table.csv', 'summary_table.md', 'groups.csv', 'groups.md', 'report.html']
PLOTS = ['loss.png', 'zoom.png', 'diff_vs_baseline.png', 'lr.png', 'grad_norm.png', 'weight_norm.png',
         'tokens_per_s.png', 'layer_norms.png']


def group_rows(out, metric='val_loss', baseline=None):
    """compare.py's seed-group table of every run in out, without drawing anything: {group: row}."""
    loaded, _ = compare.load_runs(sorted(p for p in out.iterdir() if p.is_dir()))
    groups = compare.seed_groups(loaded)
    base, _ = compare.pick_baseline(groups, baseline)
    rows = {r['name']: compare.run_numbers(r) for r in loaded}
    return {row['group']: row for row in compare.group_table(groups, base, rows, metric)}


@pytest.fixture
def two_groups(tmp_path):
    """baseline 1.8 / 1.9 and gqa 2.0 / 2.2 final val loss, two seeds each."""
    out = tmp_path / 'out'
    make_metrics_run(out, 'baseline_s1', 1.8, seed=1)
    make_metrics_run(out, 'baseline_s2', 1.9, seed=2)
    make_metrics_run(out, 'gqa_s1', 2.0, model_name='gqa', seed=1)
    make_metrics_run(out, 'gqa_s2', 2.2, model_name='gqa', seed=2)
    return out

# -----------------------------------------------------------------------------
# statistics, by hand and against scipy called directly


def test_welch_interval_by_hand_and_against_scipy():
    # variances 0.02 and 0.005, n=2 each: se^2 = 0.01 + 0.0025, df = se^4 / (0.01^2 + 0.0025^2) = 25/17
    r = seed_stats.welch_interval([2.0, 2.2], [1.8, 1.9])
    assert r['diff'] == pytest.approx(0.25) and r['df'] == pytest.approx(25 / 17)
    half = stats.t.ppf(0.975, 25 / 17) * math.sqrt(0.0125)
    assert (r['low'], r['high']) == pytest.approx((0.25 - half, 0.25 + half))
    assert r['low'] < 0 < r['high']  # two seeds this far apart cannot show a 0.25 difference
    scipy_test = stats.ttest_ind([2.0, 2.2], [1.8, 1.9], equal_var=False)
    assert (r['low'], r['high']) == pytest.approx(tuple(scipy_test.confidence_interval(0.95)))
    assert r['p'] == pytest.approx(scipy_test.pvalue) and r['method'] == 'Welch (n=2 vs 2)'
    # equal spreads and sizes: df = 2(n-1) = 4, t = 2.776 (t table), se = sqrt(2 * 1e-4 / 3)
    r = seed_stats.welch_interval([2.0, 2.01, 2.02], [1.5, 1.51, 1.52])
    assert r['df'] == pytest.approx(4.0)
    half = 2.776 * math.sqrt(2e-4 / 3)
    assert (r['low'], r['high']) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-4)


@pytest.mark.parametrize('diffs, t_table', [
    ([0.1, 0.3], 12.706), ([0.1, 0.2, 0.4], 4.303), ([0.1, 0.2, 0.4, 0.0], 3.182),
    ([0.1, 0.2, 0.4, 0.0, 0.3, 0.2], 2.571), ([0.1, 0.2, 0.4, 0.0, 0.3, 0.2, 0.1, 0.5, 0.3, 0.2, 0.1], 2.228)])
def test_paired_interval_against_t_tables_and_scipy(diffs, t_table):
    """Seeds move both runs of a pair by up to 0.9: pairing cancels that, only the differences count."""
    base = [2.0 + 0.3 * (i % 4) for i in range(len(diffs))]
    values = [b + d for b, d in zip(base, diffs)]
    r = seed_stats.paired_interval(values, base, seeds=list(range(1, len(diffs) + 1)))
    n, sd = len(diffs), float(np.std(diffs, ddof=1))
    assert r['df'] == n - 1 and r['diff'] == pytest.approx(np.mean(diffs))
    assert (r['high'] - r['diff']) / (sd / math.sqrt(n)) == pytest.approx(t_table, abs=6e-4)
    scipy_test = stats.ttest_rel(values, base)
    assert (r['low'], r['high']) == pytest.approx(tuple(scipy_test.confidence_interval(0.95)))
    assert r['p'] == pytest.approx(scipy_test.pvalue)


def test_holm_adjustment_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1 = 0.04, 0.09, 0.08 -> 0.09 (not below the one before), 0.2
    assert seed_stats.holm([0.01, 0.04, 0.03, 0.20]) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert seed_stats.holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert seed_stats.holm([0.02]) == [0.02]  # one comparison: nothing to adjust


def test_single_run_against_replicated_baseline_by_hand():
    # baseline sd 0.01 (n=3): the run's noise is assumed the same: se = 0.01 * sqrt(1 + 1/3), df 2, t 4.303
    r = seed_stats.single_run_interval(1.4, [1.5, 1.51, 1.52])
    half = 4.303 * 0.01 * math.sqrt(4 / 3)
    assert r['diff'] == pytest.approx(-0.11) and r['df'] == 2
    assert (r['low'], r['high']) == pytest.approx((-0.11 - half, -0.11 + half), abs=1e-4)
    assert r['p'] == pytest.approx(2 * stats.t.sf(0.11 / (0.01 * math.sqrt(4 / 3)), 2))
    assert 'assumes the baseline seed spread' in r['method']


def test_pairing_narrows_the_interval_and_holm_adjusts_verdicts(tmp_path):
    """Seeds shift the loss by 0.3 each; the variant is 0.05 better on every seed. Paired by seed it
    is beyond noise; the same numbers on other seeds (Welch) are not. A third variant is beyond noise
    unadjusted but not after Holm over the three comparisons."""
    out = tmp_path / 'out'
    base = {1: 2.0, 2: 2.3, 3: 2.6}
    better = {1: 1.95, 2: 2.26, 3: 2.54}
    shifted = {1: 2.1, 2: 2.45, 3: 2.8}  # +0.10, +0.15, +0.20: paired p about 0.035
    for seed in base:
        make_metrics_run(out, f'baseline_s{seed}', base[seed], seed=seed)
        make_metrics_run(out, f'paired_s{seed}', better[seed], model_name='paired', seed=seed)
        make_metrics_run(out, f'unpaired_s{seed + 3}', better[seed], model_name='unpaired', seed=seed + 3)
        make_metrics_run(out, f'shifted_s{seed}', shifted[seed], model_name='shifted', seed=seed)
    rows = group_rows(out)
    paired, unpaired, shifted_row = rows['paired'], rows['unpaired'], rows['shifted']
    b, g = list(base.values()), list(better.values())
    rel, ind = stats.ttest_rel(g, b), stats.ttest_ind(g, b, equal_var=False)
    assert paired['method'] == 'paired by seed (1, 2, 3)' and unpaired['method'] == 'Welch (n=3 vs 3)'
    assert paired['diff_vs_baseline'] == pytest.approx(-0.05) == pytest.approx(unpaired['diff_vs_baseline'])
    assert (paired['ci95_low'], paired['ci95_high']) == pytest.approx(tuple(rel.confidence_interval()))
    assert (unpaired['ci95_low'], unpaired['ci95_high']) == pytest.approx(tuple(ind.confidence_interval()))
    assert paired['ci95_high'] - paired['ci95_low'] < (unpaired['ci95_high'] - unpaired['ci95_low']) / 10
    assert paired['df'] == 2 and paired['at_tokens'] == 30 * TOKENS_PER_ITER
    # Holm over three p-values, checked by hand from scipy's
    p_shift = stats.ttest_rel(list(shifted.values()), b).pvalue
    assert 0.025 < p_shift < 0.05 and shifted_row['ci95_low'] > 0  # beyond noise before the adjustment
    ps = sorted([rel.pvalue, ind.pvalue, p_shift])
    assert ps == [rel.pvalue, p_shift, ind.pvalue]
    assert paired['p_holm'] == pytest.approx(3 * rel.pvalue)
    assert shifted_row['p_holm'] == pytest.approx(max(3 * rel.pvalue, 2 * p_shift))
    assert unpaired['p_holm'] == pytest.approx(max(shifted_row['p_holm'], ind.pvalue))
    assert paired['verdict'] == 'lower val_loss than baseline, beyond noise at 30,720 tokens'
    assert unpaired['verdict'] == 'within noise at 30,720 tokens'
    assert shifted_row['verdict'] == ('within noise after Holm adjustment (unadjusted: higher val_loss than '
                                      'baseline) at 30,720 tokens')
    assert rows['baseline']['verdict'] == 'baseline' and rows['baseline']['p_holm'] is None


def test_verdict_at_equal_tokens_interpolates_between_eval_points(tmp_path):
    """The baseline evaluates every 10 iterations to 30; the variant at 0, 15, 25 and stopped at 25.
    The verdict is taken at 25 iterations' tokens, the baseline interpolated halfway between 20 and 30."""
    out = tmp_path / 'out'
    make_metrics_run(out, 'baseline_s1', 3.0, seed=1, vals={0: 10.0, 10: 6.0, 20: 4.0, 30: 3.0})
    make_metrics_run(out, 'baseline_s2', 3.1, seed=2, vals={0: 10.0, 10: 6.2, 20: 4.2, 30: 3.1})
    for seed, (mid, last) in enumerate([(5.0, 3.4), (5.2, 3.5)], start=1):
        make_metrics_run(out, f'late_s{seed}', last, model_name='late', seed=seed, status='running',
                 iters=[0, 5, 15, 25], vals={0: 10.0, 15: mid, 25: last}, max_iters=30)
    rows = group_rows(out)
    late = rows['late']
    assert late['at_tokens'] == 25 * TOKENS_PER_ITER
    # per seed: 3.4 - (4.0 + 3.0) / 2 = -0.1 and 3.5 - (4.2 + 3.1) / 2 = -0.15
    assert late['diff_vs_baseline'] == pytest.approx(-0.125)
    # no evaluation point in common after 0: interpolation cannot be avoided, and the method says so
    assert late['method'] == 'paired by seed (1, 2); interpolated between evaluations'
    assert late['verdict'].endswith('at 25,600 tokens')
    # the final-value columns stay final: they are not at equal tokens
    assert rows['baseline']['mean_final_val_loss'] == pytest.approx(3.05)
    assert late['mean_final_val_loss'] == pytest.approx(3.45)


def test_single_run_groups_against_a_replicated_baseline(tmp_path):
    out = tmp_path / 'out'
    for seed, loss in enumerate([1.5, 1.51, 1.52], start=1):
        make_metrics_run(out, f'baseline_s{seed}', loss, seed=seed)
    for seed, loss in enumerate([2.0, 2.01, 2.02], start=1):
        make_metrics_run(out, f'mqa_s{seed}', loss, model_name='mqa', seed=seed + 10)
    make_metrics_run(out, 'qk_s1', 1.4, model_name='qk_norm')
    make_metrics_run(out, 'lonely_s1', 1.6, model_name='lonely')
    rows = group_rows(out)
    assert rows['mqa']['verdict'] == 'higher val_loss than baseline, beyond noise at 30,720 tokens'
    assert rows['mqa']['ci95_low'] == pytest.approx(0.5 - 2.776 * math.sqrt(2e-4 / 3), abs=1e-4)
    single = rows['qk_norm']  # shares seed 1 with the baseline, but one pair is no paired estimate
    assert single['n'] == 1 and single['std_final_val_loss'] is None
    assert single['diff_vs_baseline'] == pytest.approx(1.4 - 1.51)
    assert 'assumes the baseline seed spread (n=3)' in single['method']
    half = 4.303 * 0.01 * math.sqrt(4 / 3)
    assert (single['ci95_low'], single['ci95_high']) == pytest.approx((-0.11 - half, -0.11 + half), abs=1e-4)
    assert single['verdict'].startswith('lower val_loss than baseline, beyond noise')
    # against a one-run baseline: a replicated group lends its spread (the mirror image); a single run has none
    rows = group_rows(out, baseline='lonely_s1')
    mirrored = seed_stats.single_run_interval(1.6, [2.0, 2.01, 2.02])
    assert rows['mqa']['method'] == "n=1; assumes the group's seed spread (n=3)"
    assert (rows['mqa']['ci95_low'], rows['mqa']['ci95_high']) == pytest.approx(
        (-mirrored['high'], -mirrored['low']))
    assert rows['mqa']['diff_vs_baseline'] == pytest.approx(0.41)
    alone = rows['qk_norm']
    assert alone['verdict'] == 'n=1: no seed noise estimate at 30,720 tokens' and alone['ci95_low'] is None
    assert alone['diff_vs_baseline'] == pytest.approx(1.4 - 1.6)


def test_seed_groups_ignore_bookkeeping_but_split_on_training_settings(tmp_path):
    out = tmp_path / 'out'
    make_metrics_run(out, 'a', 2.0, seed=1)
    moved = dict(variant='small', source='/elsewhere', data_dir='/scratch/ts',
                 source_files=dict(train=dict(path='/elsewhere/train.txt', mtime_ns=2)),
                 train=dict(tokens=1000, sha256='abc'))
    make_metrics_run(out, 'b', 2.1, seed=2, compile=True, device='cuda', eval_interval=5, started_at='later',
             data_dir='/scratch/ts', data=moved,
             model_args=dict(model_name='baseline', n_layer=2, attn_impl='math'))
    make_metrics_run(out, 'c', 2.2, seed=3, learning_rate=3e-3)
    make_metrics_run(out, 'd', 2.3, seed=4, model_args=dict(model_name='baseline', n_layer=3, attn_impl='sdpa'))
    make_metrics_run(out, 'e', 2.4, seed=5, data=dict(moved, train=dict(tokens=1000, sha256='other bins')))
    make_metrics_run(out, 'f', 2.5, seed=6, n_layer=4, n_params=99999,
             model_args=dict(model_name='baseline', n_layer=4, attn_impl='sdpa'))
    make_metrics_run(out, 'g', 2.6, seed=1)  # a's seed again: a rerun, not a new replicate
    loaded, skipped = compare.load_runs(sorted(out.iterdir()))
    groups = compare.seed_groups(loaded)
    assert [[r['name'] for r in g['runs']] for g in groups] == [['a', 'b', 'g'], ['c'], ['d'], ['e'], ['f']]
    # each label starts with what sets the group apart; model_args.n_layer only where it is not n_layer
    labels = [g['label'] for g in groups]
    assert labels[0] == 'baseline [learning_rate=0.001, n_layer=2, data.train.sha256=abc]'
    assert labels[1].startswith('baseline [learning_rate=0.003, ')
    assert labels[2].startswith('baseline [model_args.n_layer=3, ')
    assert labels[3].startswith('baseline [data.train.sha256=other bins, ')
    assert labels[4] == 'baseline [n_layer=4, learning_rate=0.001, data.train.sha256=abc]'
    rows = {r['name']: compare.run_numbers(r) for r in loaded}
    assert compare.group_notes(groups[0], rows) == ['g counted once with a (same settings and seed)',
                                                     'pooled across compile, device, eval_interval']
    # several groups share model_name 'baseline': the first is taken, and the reason says so
    baseline, why = compare.pick_baseline(groups, None)
    assert baseline is groups[0] and 'several groups' in why
    assert compare.pick_baseline(groups, 'c')[0] is groups[1]
    with pytest.raises(SystemExit, match='matches runs in 2 groups'):
        compare.pick_baseline(groups, '[bc]')

# -----------------------------------------------------------------------------
# issue 17: which runs enter a verdict, at which point, paired or not; floors and divergence

STALE = dict(host='another-host', pid=123, heartbeat_at='2020-01-01T00:00:00+00:00')


def test_a_killed_run_never_moves_the_comparison_point(tmp_path):
    """Case 1: a baseline run killed at iteration 10 (stale, not even in a pair) used to pull every
    verdict down to its last evaluation. It is named and left out; the point is where the completed runs are."""
    out = tmp_path / 'out'
    for seed in (1, 2, 3):
        make_metrics_run(out, f'baseline_s{seed}', 2.0 + 0.1 * seed, seed=seed)
        make_metrics_run(out, f'gqa_s{seed}', 2.1 + 0.1 * seed + 0.002 * seed, model_name='gqa', seed=seed)
    make_metrics_run(out, 'baseline_s9', 5.0, seed=9, status='running', iters=[0, 10], vals={0: 10.0, 10: 5.0},
             summary_fields=STALE, max_iters=30)
    rows = group_rows(out)
    gqa = rows['gqa']
    assert gqa['at_tokens'] == 30 * TOKENS_PER_ITER and gqa['n'] == 3
    assert gqa['method'] == 'paired by seed (1, 2, 3)'  # seed 9 never reached the point: all the others pair
    assert gqa['diff_vs_baseline'] == pytest.approx(0.104)
    assert 'baseline_s9 (stale (process gone; resume it)) did not reach 30,720 tokens' in gqa['notes']
    assert gqa['verdict'] == 'higher val_loss than baseline, beyond noise at 30,720 tokens'
    # the point is never the untrained model's: with no evaluation in common after 0 there is no verdict
    make_metrics_run(out, 'late_s1', 2.0, model_name='late', seed=1, iters=[0, 5], vals={0: 10.0, 5: 2.0})
    make_metrics_run(out, 'late_s2', 2.0, model_name='late', seed=2, iters=[0, 5], vals={0: 10.0, 5: 2.0})
    late = group_rows(out)['late']
    assert late['at_tokens'] == 5 * TOKENS_PER_ITER and 'interpolated' in late['method']


def test_partial_pairing_uses_every_run(tmp_path):
    """Case 2: 10 vs 10 runs sharing 2 seeds. A paired test on the 2 shared seeds threw 18 runs away;
    Welch on all 20 is the test, and n says 10."""
    out = tmp_path / 'out'
    rng = np.random.default_rng(0)
    base = {seed: 2.0 + 0.01 * rng.standard_normal() for seed in range(1, 11)}
    variant = {seed: 1.98 + 0.01 * rng.standard_normal() for seed in range(9, 19)}
    for seed, value in base.items():
        make_metrics_run(out, f'baseline_s{seed}', value, seed=seed)
    for seed, value in variant.items():
        make_metrics_run(out, f'rope_s{seed}', value, model_name='rope', seed=seed)
    rope = group_rows(out)['rope']
    check = stats.ttest_ind(list(variant.values()), list(base.values()), equal_var=False)
    assert rope['method'] == 'Welch (n=10 vs 10)' and rope['n'] == 10
    assert rope['p_value'] == pytest.approx(check.pvalue, rel=1e-9) and check.pvalue < 0.01
    assert (rope['ci95_low'], rope['ci95_high']) == pytest.approx(tuple(check.confidence_interval()))
    assert rope['verdict'].startswith('lower val_loss than baseline, beyond noise')


def test_a_copy_or_rerun_counts_once(tmp_path, capsys):
    """Case 3: the same settings and seed under two run names is one replicate (a rerun, a copied folder)."""
    out = tmp_path / 'out'
    base, gqa = {1: 2.0, 2: 2.3, 3: 2.1}, {1: 2.04, 2: 2.31, 3: 2.16}
    for seed in base:
        make_metrics_run(out, f'baseline_s{seed}', base[seed], seed=seed)
        make_metrics_run(out, f'gqa_s{seed}', gqa[seed], model_name='gqa', seed=seed)
    make_metrics_run(out, 'baseline_s1_copy', base[1], seed=1)
    make_metrics_run(out, 'gqa_s2_rerun', gqa[2], model_name='gqa', seed=2)
    # a stale first try of seed 3 and its completed rerun: the completed one is the replicate
    make_metrics_run(out, 'gqa_s3_try', 9.0, model_name='gqa', seed=3, status='running', iters=[0, 10],
             vals={0: 10.0, 10: 9.0}, summary_fields=STALE, max_iters=30)
    compare.main([str(out), '--report_dir', str(tmp_path / 'r'), '--no_samples', '--no_plots'])
    printed = capsys.readouterr().out
    groups = {g['group']: g for g in read_csv(tmp_path / 'r' / 'groups.csv')}
    row = groups['gqa']
    check = stats.ttest_rel(list(gqa.values()), list(base.values()))
    assert row['n'] == '3' and row['method'] == 'paired by seed (1, 2, 3)'
    assert float(row['p_value']) == pytest.approx(check.pvalue)
    assert groups['baseline']['n'] == '3'
    assert float(groups['gqa']['mean_final_val_loss']) == pytest.approx(np.mean(list(gqa.values())))
    assert 'baseline_s1_copy counted once: same settings and seed as baseline_s1 (a rerun or a copy)' in printed
    assert 'gqa_s3_try counted once: same settings and seed as gqa_s3' in printed
    assert 'gqa_s2_rerun counted once' in printed


def test_a_difference_below_the_floor_is_no_difference_and_zero_spread_no_p_value(tmp_path):
    """Case 4: batch 4 x 2 vs 8 x 1 is one model to float rounding (both differences 4.8e-7): 'no
    difference', not 'beyond noise'. Identical differences on every seed give no p-value, never p = 0."""
    out = tmp_path / 'out'
    for seed, value in ((1, 2.0), (7, 2.3)):
        make_metrics_run(out, f'baseline_s{seed}', value, seed=seed)
        make_metrics_run(out, f'accum_s{seed}', value + 4.8e-7, model_name='accum', seed=seed)
        make_metrics_run(out, f'exact_s{seed}', value + 0.5, model_name='exact', seed=seed)  # 2.5 - 2.0 == 2.8 - 2.3
    rows = group_rows(out)
    assert rows['accum']['verdict'] == 'no difference (|diff| < min_effect 0.0001) at 30,720 tokens'
    exact = rows['exact']
    assert exact['diff_vs_baseline'] == 0.5 and exact['p_value'] is None and exact['p_holm'] is None
    assert exact['ci95_low'] is None and exact['method'].endswith('zero spread: no noise estimate')
    assert exact['verdict'] == 'zero spread: no noise estimate at 30,720 tokens'
    # the floor is a flag: at 0, 4.8e-7 is judged like any difference
    loaded, _ = compare.load_runs(sorted(out.iterdir()))
    groups = compare.seed_groups(loaded)
    rows_ = {r['name']: compare.run_numbers(r) for r in loaded}
    table = compare.group_table(groups, groups[0], rows_, 'val_loss', min_effect=0.0)
    assert not table[1]['verdict'].startswith('no difference')
    with pytest.raises(SystemExit, match='--min_effect -1.0: expected a difference >= 0'):
        compare.main([str(out), '--min_effect', '-1'])


def test_divergence_is_an_outcome(tmp_path):
    """Case 5: 4 of 6 runs diverged at a high learning rate. The 2 survivors alone read 'within noise';
    the verdict says the group diverged more often (one-sided Fisher exact test) and how many; all
    diverged is said as such."""
    out = tmp_path / 'out'
    for seed in range(1, 7):
        make_metrics_run(out, f'baseline_s{seed}', 2.0 + 0.01 * seed, seed=seed)
        diverged = seed <= 4
        make_metrics_run(out, f'hot_s{seed}', math.inf if diverged else 2.0 + 0.01 * seed + 0.001 * (-1) ** seed,
                 model_name='hot', seed=seed, status='diverged' if diverged else 'completed')
        make_metrics_run(out, f'boom_s{seed}', math.inf, model_name='boom', seed=seed, status='diverged')
        make_metrics_run(out, f'rare_s{seed}', math.inf if seed == 1 else 2.0 + 0.01 * seed, model_name='rare',
                 seed=seed, status='diverged' if seed == 1 else 'completed')
    rows = group_rows(out)
    p = stats.fisher_exact([[4, 2], [0, 6]], alternative='greater')[1]
    assert p == pytest.approx(15 / 495)  # C(6,4) C(6,0) / C(12,4)
    assert rows['hot']['diverged'] == '4 of 6' and rows['hot']['n'] == 2
    assert rows['hot']['verdict'] == ('diverged more often than baseline (4 of 6 vs 0 of 6, Fisher p=0.03); '
                                      'survivors: within noise at 30,720 tokens')
    assert rows['boom']['verdict'] == 'all 6 runs diverged' and rows['boom']['diverged'] == '6 of 6'
    assert rows['rare']['verdict'].startswith('diverged more often than baseline (1 of 6 vs 0 of 6, Fisher p=0.5)')
    assert rows['baseline']['diverged'] == '0 of 6'


def test_verdicts_at_an_evaluation_every_run_has(tmp_path):
    """Case 6: the variant stopped at 30 iterations, the baseline evaluates every 20. Interpolating the
    baseline's convex curve at 30 biased the difference; the verdict is at 20, where both evaluated,
    and equals the planted -0.05 exactly."""
    out = tmp_path / 'out'
    loss = lambda it, seed: 2.0 + 8.0 / (1 + it / 5) + 0.1 * seed
    for seed in (1, 2, 3):
        make_metrics_run(out, f'baseline_s{seed}', loss(40, seed), seed=seed, iters=[0, 10, 20, 30, 40],
                 vals={it: loss(it, seed) for it in (0, 20, 40)})
        make_metrics_run(out, f'short_s{seed}', 0, model_name='short', seed=seed, iters=[0, 10, 20, 30],
                 vals={it: loss(it, seed) - 0.05 for it in (0, 10, 20, 30)})
    short = group_rows(out)['short']
    assert short['at_tokens'] == 20 * TOKENS_PER_ITER and 'interpolated' not in short['method']
    assert short['diff_vs_baseline'] == pytest.approx(-0.05, abs=1e-12)
    biased = np.mean([loss(30, s) - 0.05 - np.interp(30, [20, 40], [loss(20, s), loss(40, s)]) for s in (1, 2, 3)])
    assert biased < -0.1  # what interpolating the baseline at 30 would have said: three times the effect


def test_tuned_on_some_seeds_reported_on_others(tmp_path, capsys):
    """Case 7: gqa at lr 3e-3 is lucky on seeds 1 and 2 and no better than the baseline on 3 and 4.
    Chosen and tested on all seeds it looks 0.1 better; chosen on 1, 2 and reported on 3, 4 it is not."""
    out = tmp_path / 'out'
    finals = {('baseline', 1e-3): [2.0, 2.1, 2.0, 2.1], ('baseline', 3e-3): [2.2, 2.3, 2.2, 2.3],
              ('gqa', 1e-3): [2.05, 2.15, 2.05, 2.15], ('gqa', 3e-3): [1.80, 1.91, 2.01, 2.09]}
    for (model_name, lr), losses in finals.items():
        for seed, loss in enumerate(losses, start=1):
            make_metrics_run(out, f'{model_name}_lr{lr:g}_s{seed}', loss, model_name=model_name, seed=seed,
                     learning_rate=lr)
    loaded, _ = compare.load_runs(sorted(out.iterdir()))
    groups = compare.seed_groups(loaded)
    rows = {r['name']: compare.run_numbers(r) for r in loaded}
    tune_seeds, report_seeds, how = compare.split_seeds(loaded, None, None)
    assert tune_seeds is report_seeds is None and how.startswith('best value chosen and reported on the same seeds')
    same = compare.tuned_table(loaded, groups, groups[0], rows, 'val_loss', ['learning_rate'])[0][1]
    assert same['best_value'] == 'learning_rate=0.003' and same['method'] == 'paired by seed (1, 2, 3, 4)'
    assert same['diff_vs_baseline'] == pytest.approx(-0.0975)  # the lucky seeds 1, 2 make it look better
    r = tmp_path / 'r'
    compare.main([str(out), '--tune', 'learning_rate', '--tune_seeds', '1', '2', '--report_dir', str(r),
                  '--no_samples', '--no_plots'])
    held = read_csv(r / 'tuned.csv')[1]
    assert held['best_value'] == 'learning_rate=0.003' and held['method'] == 'paired by seed (3, 4)'
    assert held['n'] == '2' and float(held['diff_vs_baseline']) == pytest.approx(0.0)
    said = 'best value chosen on seeds 1, 2; reported on held-out seeds 3, 4'
    assert said in capsys.readouterr().out and said in (r / 'tuned.md').read_text()
    assert said in (r / 'report.html').read_text()
    with pytest.raises(SystemExit, match='--tune_seeds and --report_seeds share seed 2'):
        compare.main([str(out), '--tune', 'learning_rate', '--tune_seeds', '1', '2', '--report_seeds', '2', '3'])
    with pytest.raises(SystemExit, match='give --tune too'):
        compare.main([str(out), '--report_seeds', '3'])
    with pytest.raises(SystemExit, match=r'--report_seeds: no run has seed 9 \(seeds: 1, 2, 3, 4\)'):
        compare.main([str(out), '--tune', 'learning_rate', '--report_seeds', '9'])


def test_real_runs_a_killed_rerun_and_a_copy(smoke_runs, tmp_path, capsys):
    """Cases 1 and 3 on real runs: a copy of baseline_s1, and a baseline run of seed 3 killed after its
    evaluation at iteration 10 (stale). Verdicts are those of the four finished runs alone."""
    import shutil
    out = tmp_path / 'out'
    shutil.copytree(smoke_runs, out)
    shutil.copytree(out / 'baseline_s1', out / 'baseline_s1_copy')
    killed = out / 'baseline_s3'
    shutil.copytree(out / 'baseline_s2', killed)
    config = json.loads((killed / 'config.json').read_text())
    (killed / 'config.json').write_text(json.dumps(dict(config, seed=3, run_name='baseline_s3')))
    lines = (killed / 'metrics.csv').read_text().splitlines()
    kept = [line for line in lines[1:] if int(float(line.split(',')[0])) <= 10]  # iter is the first column
    assert 0 < len(kept) < len(lines) - 1
    (killed / 'metrics.csv').write_text('\n'.join(lines[:1] + kept) + '\n')
    summary = json.loads((killed / 'summary.json').read_text())
    (killed / 'summary.json').write_text(json.dumps(dict(summary, status='running', **STALE)))
    compare.main([str(out), '--report_dir', str(tmp_path / 'r'), '--no_samples', '--no_plots'])
    printed = capsys.readouterr().out
    groups = {g['group']: g for g in read_csv(tmp_path / 'r' / 'groups.csv')}
    gqa = groups['gqa']
    assert gqa['method'] == 'paired by seed (1, 2)' and gqa['n'] == '2'
    assert int(gqa['at_tokens']) == 30 * json.loads((out / 'gqa_s1' / 'config.json').read_text())['tokens_per_iter']
    final = lambda name: float(read_csv(out / name / 'metrics.csv')[-1]['val_loss'])
    diff = np.mean([final(f'gqa_s{s}') - final(f'baseline_s{s}') for s in (1, 2)])
    assert float(gqa['diff_vs_baseline']) == pytest.approx(diff)
    assert 'baseline_s3 (stale (process gone; resume it)) did not reach' in gqa['notes']
    assert 'baseline_s1_copy counted once: same settings and seed as baseline_s1' in printed


# -----------------------------------------------------------------------------
# the command on hand-built run folders


def test_cli_tables_match_metrics_and_groups_by_hand(two_groups, tmp_path):
    """The one subprocess test: the command as a user runs it."""
    report = tmp_path / 'report'
    proc = run_script(REPO / 'compare.py', two_groups, '--report_dir', report, '--no_samples', '--no_plots',
                      timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "baseline: baseline (the only group with model_name 'baseline')" in proc.stdout
    rows = {r['run']: r for r in read_csv(report / 'summary_table.csv')}
    assert list(rows) == ['baseline_s1', 'baseline_s2', 'gqa_s1', 'gqa_s2']
    for name, final in [('baseline_s1', 1.8), ('baseline_s2', 1.9), ('gqa_s1', 2.0), ('gqa_s2', 2.2)]:
        row = rows[name]
        metrics = read_csv(two_groups / name / 'metrics.csv')
        vals = [(float(m['val_loss']), int(m['iter'])) for m in metrics if m['val_loss']]
        assert float(row['final_val_loss']) == final == vals[-1][0]
        assert (float(row['best_val_loss']), int(row['best_val_iter'])) == min(vals)
        assert int(row['tokens_seen']) == int(metrics[-1]['tokens_seen']) == 30 * TOKENS_PER_ITER
        assert int(row['iters']) == 30 and float(row['train_time_s']) == 15.0
        assert float(row['wall_time_s']) == 15.0  # no wall_time_s in this summary.json: training time
        assert float(row['final_train_loss']) == float(metrics[-1]['train_loss'])
        # mean speed = total tokens / total training time (not the mean of the per-interval rates, 1025)
        assert float(row['tokens_per_s']) == 30 * TOKENS_PER_ITER / 15.0
        assert row['mfu'] == '' and row['final_val_bpb'] == ''  # never logged: blank, not 0
        assert row['n_params'] == '12345' and row['status'] == 'completed' and row['tokenizer'] == 'gpt2'
    assert rows['gqa_s1']['group'] == 'gqa' and rows['baseline_s2']['group'] == 'baseline'

    groups = read_csv(report / 'groups.csv')
    assert [g['group'] for g in groups] == ['baseline', 'gqa']
    base, gqa = groups
    assert base['runs'] == 'baseline_s1 baseline_s2' and base['n'] == '2' and base['verdict'] == 'baseline'
    assert float(base['mean_final_val_loss']) == pytest.approx(1.85)
    assert float(base['std_final_val_loss']) == pytest.approx(math.sqrt(0.005))
    assert float(gqa['mean_final_val_loss']) == pytest.approx(2.1)
    assert float(gqa['std_final_val_loss']) == pytest.approx(math.sqrt(0.02))
    assert float(gqa['diff_vs_baseline']) == pytest.approx(0.25)
    # seeds 1 and 2 pair up: differences 0.2 and 0.3, sd 0.0707, df 1, t 12.706
    half = 12.706 * math.sqrt(0.005) / math.sqrt(2)
    assert float(gqa['ci95_low']) == pytest.approx(0.25 - half, abs=1e-3)
    assert float(gqa['ci95_high']) == pytest.approx(0.25 + half, abs=1e-3)
    assert gqa['method'] == 'paired by seed (1, 2)' and gqa['df'] == '1.0' and gqa['metric'] == 'val_loss'
    assert gqa['verdict'] == 'within noise at 30,720 tokens' and gqa['p_holm'] == gqa['p_value']
    md = (report / 'groups.md').read_text()
    assert 'within noise' in md and 'ci95_low (unadjusted)' in md and 'verdict (Holm-adjusted)' in md
    page = (report / 'report.html').read_text()  # --no_plots: the tables, no figure drawn or written
    assert 'ran with --no_plots' in page and '<img' not in page and not list(report.glob('*.png'))


def test_every_output_exists_and_parses(two_groups, tmp_path):
    report = tmp_path / 'report'
    for x in ('iter', 'tokens'):
        compare.main(['--runs_dir', str(two_groups), '--x', x, '--report_dir', str(report / x), '--no_samples'])
        assert sorted(p.name for p in (report / x).iterdir()) == sorted(TABLES + PLOTS)  # no temp files left
        for name in TABLES + PLOTS:
            data = (report / x / name).read_bytes()
            if name.endswith('.png'):
                assert data.startswith(PNG_MAGIC) and len(data) > 5000
            elif name.endswith('.csv'):
                assert len(read_csv(report / x / name)) in (2, 4)
        page = (report / x / 'report.html').read_text()
        images = re.findall(r'<h3>([^<]*)</h3><img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">',
                            page)
        assert [alt for _, alt, _ in images] == PLOTS
        assert all(base64.b64decode(data).startswith(PNG_MAGIC) for _, _, data in images)
        assert all(not heading.endswith('.png') and len(heading) > 30 for heading, _, _ in images)  # says what
        assert 'gqa_s2' in page and 'within noise' in page and 'Stories' not in page
        assert page.count('<div class="scroll"><table>') == 2  # wide tables scroll inside the page
    # the x axis really changes: iterations vs tokens seen (1024x larger) draw different curves
    assert 'tokens seen' in (report / 'tokens' / 'report.html').read_text()
    assert (report / 'iter' / 'loss.png').read_bytes() != (report / 'tokens' / 'loss.png').read_bytes()


def test_statuses_are_labelled_and_figures_match_the_files(tmp_path, capsys):
    out = tmp_path / 'out'
    make_metrics_run(out, 'base_done', 1.8, seed=1)
    make_metrics_run(out, 'base_running', 2.5, seed=2, status='running', iters=[0, 10, 20], max_iters=30)
    # Ctrl-C at iteration 24: the last metrics row is 20, the checkpoint and summary.json say 24
    make_metrics_run(out, 'base_interrupted', 1.95, seed=3, status='interrupted', iters=[0, 10, 20], max_iters=30,
             summary_fields=dict(iters=24, tokens_seen=24 * TOKENS_PER_ITER))
    make_metrics_run(out, 'base_diverged', float('inf'), seed=4, status='diverged')
    make_metrics_run(out, 'base_nosummary', 1.85, seed=5, summary=False)
    # summary.json says running, but its host has not been heard from since 2020
    make_metrics_run(out, 'base_stale', 1.9, seed=6, status='running',
             summary_fields=dict(host='another-host', pid=123, heartbeat_at='2020-01-01T00:00:00+00:00'))
    make_metrics_run(out, 'base_failed', 1.97, seed=7, status='failed', summary_fields=dict(message='disk full'))
    started = make_metrics_run(out, 'gqa_started', 0, model_name='gqa', status='running',
                       summary_fields=dict(iters=0, tokens_seen=0))
    (started / 'metrics.csv').write_text(','.join(METRICS_HEADER) + '\n')  # no step logged yet
    compare.main([str(out), '--report_dir', str(tmp_path / 'r')])
    err = capsys.readouterr().err
    rows = {r['run']: r for r in read_csv(tmp_path / 'r' / 'summary_table.csv')}
    assert {n: r['status'] for n, r in rows.items()} == dict(
        base_diverged='diverged', base_done='completed', base_failed='failed', base_interrupted='interrupted',
        base_nosummary='unknown', base_running='running', base_stale='stale', gqa_started='running')
    assert rows['base_running']['iters'] == '20' and rows['base_running']['final_val_loss'] == '2.5'
    assert rows['base_interrupted']['iters'] == '24' and rows['base_interrupted']['tokens_seen'] == str(24 * 1024)
    assert rows['base_interrupted']['final_val_tokens'] == str(20 * 1024)  # its last val loss was at 20
    assert float(rows['base_interrupted']['tokens_per_s']) == 20 * TOKENS_PER_ITER / 10.0
    assert all(rows['gqa_started'][c] == '' for c in ('final_val_loss', 'best_val_loss', 'train_time_s'))
    assert rows['gqa_started']['iters'] == '0' == rows['gqa_started']['tokens_seen']  # from its summary.json
    table = (tmp_path / 'r' / 'summary_table.md').read_text()
    for text in ('running (in progress)', 'unknown (no summary.json)', 'stale (process gone', '| failed |'):
        assert text in table
    groups = {g['group']: g for g in read_csv(tmp_path / 'r' / 'groups.csv')}
    base = groups['baseline']
    assert base['n'] == '6'  # the diverged run is left out of the mean, and the notes say so
    assert float(base['mean_final_val_loss']) == pytest.approx(np.mean([1.8, 2.5, 1.95, 1.85, 1.9, 1.97]))
    assert 'base_diverged diverged' in base['notes']
    assert base['diverged'] == '1 of 2'  # an outcome; the runs not finished have none yet
    assert 'base_running running (in progress)' in base['notes'] and 'base_stale stale' in base['notes']
    assert groups['gqa']['verdict'] == 'no val_loss yet'
    # the running run stopped 10 iterations short: final values are not at equal tokens, and it says so
    assert 'warning: final values were measured after different numbers of tokens' in err
    page = (tmp_path / 'r' / 'report.html').read_text()
    assert 'different numbers of tokens' in page
    # stories are on by default; these hand-made runs have no checkpoints, and each group says so
    assert page.count('no checkpoints in any of its runs') == 2


def test_metric_val_bpb_and_older_runs_without_it(tmp_path, capsys):
    out = tmp_path / 'out'
    make_metrics_run(out, 'baseline_s1', 1.8, seed=1, bpb=0.60)
    make_metrics_run(out, 'baseline_s2', 1.9, seed=2, bpb=0.62)
    make_metrics_run(out, 'gqa_s1', 2.0, model_name='gqa', seed=1, bpb=0.70)
    make_metrics_run(out, 'gqa_s2', 2.2, model_name='gqa', seed=2, bpb=0.71)
    make_metrics_run(out, 'gqa_s3', 2.1, model_name='gqa', seed=3)  # written before val_bpb was logged
    compare.main([str(out), '--metric', 'val_bpb', '--x', 'time', '--report_dir', str(tmp_path / 'r'),
                  '--no_samples', '--no_plots'])
    assert 'curves against training time (s, evaluation excluded)' in (tmp_path / 'r' / 'report.html').read_text()
    rows = {r['run']: r for r in read_csv(tmp_path / 'r' / 'summary_table.csv')}
    assert float(rows['gqa_s1']['final_val_bpb']) == 0.70 and rows['gqa_s3']['final_val_bpb'] == ''
    assert rows['gqa_s3']['final_val_loss'] == '2.1'
    gqa = {g['group']: g for g in read_csv(tmp_path / 'r' / 'groups.csv')}['gqa']
    assert gqa['metric'] == 'val_bpb' and gqa['n'] == '2'  # gqa_s3 has no val_bpb to judge on
    assert float(gqa['mean_final_val_bpb']) == pytest.approx(0.705)
    assert float(gqa['mean_final_val_loss']) == pytest.approx(2.1)  # val loss still shown, over 3 runs
    assert float(gqa['diff_vs_baseline']) == pytest.approx(((0.70 - 0.60) + (0.71 - 0.62)) / 2)
    assert gqa['method'] == 'paired by seed (1, 2)' and gqa['verdict'].startswith('higher val_bpb than baseline')
    assert 'mean_final_val_bpb' in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        compare.main([str(out), '--metric', 'bpb', '--report_dir', str(tmp_path / 'r2')])
    assert str(e.value.code) == "compare.py: error: --metric 'bpb': expected one of val_loss, val_bpb"
    assert not (tmp_path / 'r2').exists()


def test_runs_on_different_tokenizers_are_judged_on_bits_per_byte(tmp_path):
    out = tmp_path / 'out'
    bpe = dict(name='bpe4k', vocab_size=4096, eot_token=0, sha256='f00', file='tokenizer.json')
    make_metrics_run(out, 'baseline_s1', 7.0, seed=1, bpb=0.60)
    make_metrics_run(out, 'baseline_s2', 7.1, seed=2, bpb=0.61)
    make_metrics_run(out, 'bpe_s1', 3.0, seed=1, bpb=0.64, tokenizer=bpe)
    make_metrics_run(out, 'bpe_s2', 3.1, seed=2, bpb=0.66, tokenizer=bpe)
    loaded, _ = compare.load_runs(sorted(out.iterdir()))
    groups = compare.seed_groups(loaded)
    assert len(groups) == 2  # the tokenizer is a setting: it splits groups
    metric, note = compare.judged_metric(groups, 'val_loss')
    assert metric == 'val_bpb' and 'different tokenizers (bpe4k, gpt2)' in note and 'val_bpb' in note
    rows = {r['name']: compare.run_numbers(r) for r in loaded}
    assert rows['bpe_s1']['tokenizer'] == 'bpe4k' and rows['baseline_s1']['tokenizer'] == 'gpt2'
    table = compare.group_table(groups, groups[0], rows, metric)
    # a loss per token 4 nats lower is not a better model: in bits per byte it is worse
    assert table[1]['diff_vs_baseline'] == pytest.approx(0.045) and table[1]['metric'] == 'val_bpb'
    # same seeds, but a token window of one tokenizer is not the other's: the label says what was paired
    assert table[1]['method'] == ('paired by seed (1, 2; same seeds; different tokenizers, so not the same batches, '
                                  'and val_bpb not on the same bytes)')  # runs from before val_bpb_text
    text = dict(stories=500, bytes=400000, sha256='a1')
    for run in loaded:
        run['config']['val_bpb_text'] = text  # train.py's record of the validation text its val_bpb scored
    table = compare.group_table(groups, groups[0], rows, metric)
    assert table[1]['method'] == ('paired by seed (1, 2; same seeds, val_bpb on the same validation bytes; '
                                  'different tokenizers, so not the same batches)')
    assert note in compare.groups_markdown(table, 'baseline', 'why', [], [note])
    assert compare.judged_metric(groups[:1], 'val_loss') == ('val_loss', None)


def test_tuned_table_compares_each_variant_at_its_own_best_learning_rate(tmp_path, capsys):
    out = tmp_path / 'out'
    finals = {('baseline', 1e-3): [2.0, 2.1], ('baseline', 3e-3): [1.8, 1.9],   # best 3e-3, mean 1.85
              ('gqa', 1e-3): [1.7, 1.82], ('gqa', 3e-3): [2.2, 2.3]}           # best 1e-3, mean 1.76
    for (model_name, lr), losses in finals.items():
        for seed, loss in enumerate(losses, start=1):
            make_metrics_run(out, f'{model_name}_lr{lr:g}_s{seed}', loss, model_name=model_name, seed=seed,
                     learning_rate=lr)
    compare.main([str(out), '--tune', 'learning_rate', '--report_dir', str(tmp_path / 'r'), '--no_samples'])
    tuned = read_csv(tmp_path / 'r' / 'tuned.csv')
    assert [(t['variant'], t['best_value'], t['values_tried']) for t in tuned] == [
        ('baseline', 'learning_rate=0.003', 'learning_rate=0.001; learning_rate=0.003'),
        ('gqa', 'learning_rate=0.001', 'learning_rate=0.001; learning_rate=0.003')]
    base, gqa = tuned
    assert base['verdict'] == 'baseline' and base['runs'] == 'baseline_lr0.003_s1 baseline_lr0.003_s2'
    assert float(base['mean_final_val_loss']) == pytest.approx(1.85)
    assert float(gqa['mean_final_val_loss']) == pytest.approx(1.76)
    # paired by seed: 1.7 - 1.8 and 1.82 - 1.9
    assert float(gqa['diff_vs_baseline']) == pytest.approx(-0.09) and gqa['method'] == 'paired by seed (1, 2)'
    check = stats.ttest_rel([1.7, 1.82], [1.8, 1.9])
    assert float(gqa['ci95_low']) == pytest.approx(check.confidence_interval().low)
    # the seed-group table still has one row per learning rate and variant, against the tuned baseline
    groups = read_csv(tmp_path / 'r' / 'groups.csv')
    assert [g['group'] for g in groups] == ['baseline [learning_rate=0.003]', 'baseline [learning_rate=0.001]',
                                            'gqa [learning_rate=0.001]', 'gqa [learning_rate=0.003]']
    assert (tmp_path / 'r' / 'tuned.png').read_bytes().startswith(PNG_MAGIC)
    assert 'Tuned: each variant at its own best value' in (tmp_path / 'r' / 'report.html').read_text()
    assert '| gqa | learning_rate=0.001 |' in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"--tune warmup: no run's config.json has warmup \(keys: "):
        compare.main([str(out), '--tune', 'warmup', '--report_dir', str(tmp_path / 'r2')])


def test_baseline_flag_and_runs_glob_filter(two_groups, tmp_path):
    compare.main([str(two_groups), '--run_names', 'gqa_*', 'baseline_s1', '--baseline', 'gqa_s*', '--out_dir',
                  str(two_groups), '--report_dir', str(tmp_path / 'r'), '--no_samples', '--no_plots'])
    runs = [r['run'] for r in read_csv(tmp_path / 'r' / 'summary_table.csv')]
    assert runs == ['baseline_s1', 'gqa_s1', 'gqa_s2']
    groups = read_csv(tmp_path / 'r' / 'groups.csv')
    assert [g['group'] for g in groups] == ['gqa', 'baseline'] and groups[0]['verdict'] == 'baseline'
    assert float(groups[1]['diff_vs_baseline']) == pytest.approx(1.8 - 2.1)
    assert 'assumes the baseline seed spread (n=2)' in groups[1]['method']
    with pytest.raises(SystemExit, match="matches none of the runs.*gqa_s1"):
        compare.main([str(two_groups), '--runs', 'nothing*', '--report_dir', str(tmp_path / 'r2')])
    with pytest.raises(SystemExit, match='two runs dirs given'):
        compare.main([str(two_groups), '--runs_dir', str(tmp_path), '--report_dir', str(tmp_path / 'r2')])


def test_malformed_folders_are_named_and_skipped(two_groups, capsys):
    bad = make_metrics_run(two_groups, 'bad_metrics', 2.0, seed=9)
    (bad / 'metrics.csv').write_text(','.join(METRICS_HEADER) + '\n0,0,0,0.001,,oops,1,1,,\n')
    (make_metrics_run(two_groups, 'bad_config', 2.0, seed=8) / 'config.json').write_text('{"seed": 1,')
    loaded, skipped = compare.load_runs(compare.find_runs(two_groups))
    err = capsys.readouterr().err
    assert [r['name'] for r in loaded] == ['baseline_s1', 'baseline_s2', 'gqa_s1', 'gqa_s2']
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith('compare.py: skipping') for line in lines)
    assert 'bad_config' in lines[0] and 'config.json' in lines[0]
    assert 'bad_metrics' in lines[1] and "val_loss='oops'" in lines[1]
    assert len(skipped) == 2


def test_bad_input_is_one_clear_line(two_groups, tmp_path):
    (tmp_path / 'empty').mkdir()
    for folder, expected in [(tmp_path / 'empty', 'no runs in'), (tmp_path / 'missing', 'not found')]:
        with pytest.raises(SystemExit) as e:
            compare.main([str(folder), '--report_dir', str(tmp_path / 'r')])
        assert str(e.value.code).startswith('compare.py: error: ') and expected in str(e.value.code)
        assert '\n' not in str(e.value.code)
    assert not (tmp_path / 'r').exists()
    # a report dir that cannot be a folder: named, before any plot is drawn
    (tmp_path / 'a_file').write_text('x')
    with pytest.raises(SystemExit) as e:
        compare.main([str(two_groups), '--report_dir', str(tmp_path / 'a_file' / 'report')])
    where = tmp_path / 'a_file' / 'report'
    assert str(e.value.code) == f"compare.py: error: cannot write the report to {where}: Not a directory"
    with pytest.raises(SystemExit, match=r"--device: device 'cuda:7'"):
        compare.main([str(two_groups), '--device', 'cuda:7', '--report_dir', str(tmp_path / 'r')])

# -----------------------------------------------------------------------------
# end to end on real runs


def test_compare_real_smoke_runs_with_stories(smoke_runs, tmp_path):
    import sample
    report = tmp_path / 'report'
    compare.main([str(smoke_runs), '--report_dir', str(report), '--x', 'tokens', '--device', 'cpu'])
    rows = {r['run']: r for r in read_csv(report / 'summary_table.csv')}
    assert sorted(rows) == ['baseline_s1', 'baseline_s2', 'gqa_s1', 'gqa_s2']
    for name, row in rows.items():
        metrics = read_csv(smoke_runs / name / 'metrics.csv')
        vals = [float(m['val_loss']) for m in metrics if m['val_loss']]
        assert row['status'] == 'completed'
        assert float(row['final_val_loss']) == vals[-1] and float(row['best_val_loss']) == min(vals)
        assert int(row['tokens_seen']) == int(float(metrics[-1]['tokens_seen'])) > 0
        assert int(row['iters']) == int(float(metrics[-1]['iter'])) == 30
        config = json.loads((smoke_runs / name / 'config.json').read_text())
        assert int(row['n_params']) == config['n_params'] and row['model_name'] == config['model_name']
        summary = json.loads((smoke_runs / name / 'summary.json').read_text())  # train.py's own totals agree
        assert float(row['final_val_loss']) == pytest.approx(summary['final_val_loss'], rel=1e-7)
        assert float(row['wall_time_s']) == pytest.approx(summary['wall_time_s'])
        assert float(row['train_time_s']) == pytest.approx(summary['train_time_s'], abs=1e-3)
        assert summary['wall_time_s'] >= summary['train_time_s']
        speed = summary['tokens_seen'] / summary['train_time_s']  # total tokens / total training time
        assert float(row['tokens_per_s']) == pytest.approx(speed, rel=1e-3)
    groups = {g['group']: g for g in read_csv(report / 'groups.csv')}
    assert sorted(groups) == ['baseline', 'gqa']
    assert groups['baseline']['runs'] == 'baseline_s1 baseline_s2' and groups['baseline']['n'] == '2'
    assert groups['gqa']['runs'] == 'gqa_s1 gqa_s2' and groups['gqa']['n'] == '2'
    diffs = [float(rows[f'gqa_s{s}']['final_val_loss']) - float(rows[f'baseline_s{s}']['final_val_loss'])
             for s in (1, 2)]
    assert float(groups['gqa']['diff_vs_baseline']) == pytest.approx(np.mean(diffs))
    assert groups['gqa']['method'] == 'paired by seed (1, 2)'
    assert int(groups['gqa']['at_tokens']) == int(rows['gqa_s1']['tokens_seen'])
    for name in TABLES + PLOTS:
        assert (report / name).stat().st_size > 0
    # stories: every prompt continued by each group's model, side by side, none failed
    page = (report / 'report.html').read_text()
    stories = page[page.index('<h2>Stories'):page.index('<h2>Runs')]
    assert 'could not sample' not in stories and 'no checkpoints' not in stories
    assert 'baseline_s1, checkpoint 30' in stories and 'gqa_s1, checkpoint 30' in stories
    cells = re.findall(r'<td class="story"><b>([^<]*)</b>([^<]*)</td>', stories)
    assert [prompt for prompt, _ in cells] == [p for p in sample.REPORT_PROMPTS for _ in range(2)]
    assert all(text.strip() for _, text in cells)
