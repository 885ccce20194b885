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


# -----------------------------------------------------------------------------
# compare.py's scaling section on run folders written by train.py, with planted final losses


def planted_ladder(source, out, curves, flops=FLOPS, lrs=None):
    """Copies of a real run folder (no checkpoints) as a ladder: for each variant in curves, each compute
    in flops (n_layer 1, 2, ... marks the size) and seeds 1 and 2 (noise +-0.01), a run whose config.json
    has that flops_per_token and whose val_loss column is the curve there. lrs: {(variant, size index):
    {learning rate: loss offset}} adds runs at other learning rates."""
    import csv
    import json
    import shutil
    base_lr = json.loads((source / 'config.json').read_text())['learning_rate']
    for variant, loss_at in curves.items():
        for i, c in enumerate(flops):
            for lr, offset in {base_lr: 0.0, **(lrs or {}).get((variant, i), {})}.items():
                for seed, noise in ((1, 0.01), (2, -0.01)):
                    run = out / f'{variant}_n{i + 1}_lr{lr:g}_s{seed}'
                    shutil.copytree(source, run, ignore=shutil.ignore_patterns('checkpoints', 'tb', 'plots'))
                    config = json.loads((run / 'config.json').read_text())
                    with open(run / 'metrics.csv', newline='') as f:
                        rows = list(csv.DictReader(f))
                    tokens = [int(r['tokens_seen']) for r in rows if r['val_loss']][-1]
                    config.update(model_name=variant, seed=seed, n_layer=i + 1, learning_rate=lr, run_name=run.name,
                                  flops_per_token=float(c) / tokens)
                    (run / 'config.json').write_text(json.dumps(config))
                    for r in rows:
                        r['val_loss'] = repr(float(loss_at(c)) + offset + noise) if r['val_loss'] else ''
                    with open(run / 'metrics.csv', 'w', newline='') as f:
                        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                        writer.writeheader()
                        writer.writerows(rows)
    return out


def test_compare_finds_the_planted_multiplier_and_learning_rate(smoke_runs, tmp_path):
    import compare
    from runs import find_runs, seed_groups
    lr = 3e-3  # config/smoke.py's
    out = planted_ladder(smoke_runs / 'baseline_s1', tmp_path / 'ladder',
                         dict(baseline=baseline_loss, better=lambda c: baseline_loss(2 * c)),
                         lrs={('baseline', 1): {lr * 3: 0.05, lr / 3: 0.08}})
    loaded, skipped = compare.load_runs(find_runs(out))
    assert len(loaded) == 20 and not skipped
    groups = seed_groups(loaded)
    rows = {run['name']: compare.run_numbers(run) for run in loaded}
    baseline = [g for g in groups if g['model_name'] == 'baseline'][0]
    report = compare.scaling_report(groups, baseline, rows, 'val_loss', forced=False)
    table = list(__import__('csv').DictReader(report['texts']['scaling.csv'].splitlines()))
    assert [r['variant'] for r in table] == ['better'] * 4
    for r in table:
        assert float(r['compute_multiplier']) == pytest.approx(2.0, rel=1e-3)  # the baseline at its best lr
        assert float(r['multiplier_low95']) < 2.0 < float(r['multiplier_high95'])
        assert r['multiplier_verdict'] == 'better than the baseline beyond seed noise'
    assert report['console'][0].startswith('better: 2.00x [')
    lr_row = list(__import__('csv').DictReader(report['texts']['lr_sensitivity.csv'].splitlines()))
    assert len(lr_row) == 1 and lr / 3 < float(lr_row[0]['best_lr']) < lr * 3
    assert {name for name, _, png in report['plots']} == {'scaling.png', 'lr_sensitivity.png'}
    assert all(png.startswith(b'\x89PNG') for _, _, png in report['plots'])
    assert '<h2>Scaling' in report['html'] and 'compute_multiplier' in report['html']


def test_on_a_ladder_each_group_is_judged_against_the_baseline_of_its_own_size(smoke_runs, tmp_path, capsys):
    """Planted: 'same' is the baseline at every size (an A/A pair per size), 'better' the baseline at twice
    the compute. Against one baseline every bigger size would look like a large gain; against its own
    size's baseline, 'same' differs by 0 and 'better' by exactly the planted amount."""
    import csv
    import compare
    flops = FLOPS[:3]
    out = planted_ladder(smoke_runs / 'baseline_s1', tmp_path / 'ladder', dict(
        baseline=baseline_loss, same=baseline_loss, better=lambda c: baseline_loss(2 * c)), flops=flops)
    compare.main([str(out), '--report_dir', str(tmp_path / 'r'), '--no_samples', '--no_plots'])
    said = capsys.readouterr().out
    assert "baseline: baseline at each size (a ladder: the groups span 3 model sizes" in said
    table = list(csv.DictReader(open(tmp_path / 'r' / 'groups.csv', newline='')))
    assert [(r['model_name'], r['runs'].split('_')[1]) for r in table] == [
        (name, f'n{i}') for i in (1, 2, 3) for name in ('baseline', 'better', 'same')]  # each baseline first
    for i, c in enumerate(flops):
        base, better, same = table[3 * i:3 * i + 3]
        assert base['verdict'].startswith(f'baseline at {i + 1}x') and base['compared_with'] == ''
        assert same['compared_with'] == better['compared_with'] == base['group']
        assert float(same['diff_vs_baseline']) == pytest.approx(0.0, abs=1e-9)
        assert same['verdict'].startswith('no difference')
        planted = baseline_loss(2 * c) - baseline_loss(c)
        assert float(better['diff_vs_baseline']) == pytest.approx(planted, rel=1e-6)
    # one baseline for all, when asked: the 'same' groups of the larger sizes then 'gain' the size itself
    compare.main([str(out), '--report_dir', str(tmp_path / 'one'), '--no_samples', '--no_plots',
                  '--baseline', 'baseline_n1_*'])
    one = {r['group']: r for r in csv.DictReader(open(tmp_path / 'one' / 'groups.csv', newline=''))}
    same3 = next(r for r in one.values() if r['runs'].startswith('same_n3'))
    assert same3['compared_with'].startswith('baseline') and 'n_layer=1' in same3['compared_with']
    assert float(same3['diff_vs_baseline']) == pytest.approx(baseline_loss(flops[2]) - baseline_loss(flops[0]))
    # a ladder crossed with learning rates: --tune takes each variant and size at its best, against the
    # baseline's best at that size (the baseline at 3x the learning rate is worse by 0.05 at the first size)
    tuned = planted_ladder(smoke_runs / 'baseline_s1', tmp_path / 'tuned', dict(
        baseline=baseline_loss, better=lambda c: baseline_loss(2 * c)), flops=flops[:2],
        lrs={('baseline', 0): {9e-3: 0.05}})
    compare.main([str(tuned), '--report_dir', str(tmp_path / 't'), '--no_samples', '--no_plots',
                  '--tune', 'learning_rate'])
    rows = list(csv.DictReader(open(tmp_path / 't' / 'tuned.csv', newline='')))
    better = [r for r in rows if r['model_name'] == 'better']
    assert [r['compared_with'].split(' [')[0] for r in better] == ['baseline', 'baseline']
    assert better[0]['compared_with'] != better[1]['compared_with']
    for r, c in zip(better, flops[:2]):
        assert float(r['diff_vs_baseline']) == pytest.approx(baseline_loss(2 * c) - baseline_loss(c), rel=1e-6)


def test_token_budgets_that_differ_between_ladder_sizes_are_no_warning():
    import compare
    rows = {name: dict(status='completed', final_val_tokens=tokens)
            for name, tokens in (('a_n1', 100), ('b_n1', 100), ('a_n2', 200), ('b_n2', 200))}
    sizes = {name: name[-2:] for name in rows}
    assert compare.token_warnings(rows, sizes) == []
    assert 'different numbers of tokens (a_n1 100, b_n1 100, a_n2 200, b_n2 200)' in compare.token_warnings(rows)[0]
    rows['b_n2']['final_val_tokens'] = 150  # within one size: still said, naming that size's runs only
    assert [w.split(':')[0] for w in compare.token_warnings(rows, sizes)] == [
        'final values were measured after different numbers of tokens (a_n2 200, b_n2 150)']


def test_eval_harness_judges_each_ladder_size_against_its_own_baseline():
    import eval_harness
    from runs import baselines_by_size

    def group(model, size, seeds=(1, 2)):
        runs = [dict(name=f'{model}_n{size}_s{seed}', config=dict(model_name=model, n_layer=size, seed=seed))
                for seed in seeds]
        return dict(runs=runs, model_name=model, label=f'{model} [n_layer={size}]')
    groups = [group('baseline', 1), group('baseline', 2), group('gpt2', 1), group('gpt2', 2), group('gpt2', 3)]
    value = {('baseline', 1): 0.30, ('baseline', 2): 0.50, ('gpt2', 1): 0.35, ('gpt2', 2): 0.45, ('gpt2', 3): 0.9}
    numbers = {r['name']: {'prompts.accuracy': value[g['model_name'], r['config']['n_layer']]
                           + 0.01 * r['config']['seed'] * (1 + (g['model_name'] == 'gpt2'))}
               for g in groups for r in g['runs']}
    by_size = baselines_by_size(groups, groups[0])
    assert [g['label'] for g in by_size.values()] == ['baseline [n_layer=1]', 'baseline [n_layer=2]']
    rows = {r['group']: r for r in eval_harness.group_statistics(groups, numbers, groups[0], by_size)}
    assert rows['gpt2 [n_layer=1]']['compared_with'] == 'baseline [n_layer=1]'
    assert rows['gpt2 [n_layer=1]']['diff_vs_baseline'] == pytest.approx(0.05 + 0.015)
    assert rows['gpt2 [n_layer=2]']['diff_vs_baseline'] == pytest.approx(-0.05 + 0.015)
    assert rows['baseline [n_layer=2]']['verdict'].startswith("baseline at 2x")
    assert rows['gpt2 [n_layer=3]']['verdict'].startswith('no baseline group at 3x')
    assert rows['gpt2 [n_layer=3]']['diff_vs_baseline'] is None
    # one model_name at several sizes (a depth sweep of the baseline): one baseline, as before
    assert baselines_by_size(groups[:2], groups[0]) is None


def test_compare_scaling_says_what_is_missing(smoke_runs, tmp_path, capsys):
    import compare
    out = planted_ladder(smoke_runs / 'baseline_s1', tmp_path / 'ladder', dict(baseline=baseline_loss),
                         flops=FLOPS[:2])
    with pytest.raises(SystemExit) as e:
        compare.main([str(out), '--report_dir', str(tmp_path / 'report'), '--no_samples', '--scaling'])
    assert e.value.code == ('compare.py: error: --scaling needs the baseline (baseline) and a variant completed '
                            'at 3 or more sizes (sizes per model_name: baseline: 2)')
    assert not (tmp_path / 'report').exists()


# -----------------------------------------------------------------------------
# train.py: the wsd schedule and the FLOPs a run records; sweep.py: a ladder crossed with the grid


def test_wsd_schedule_holds_the_peak_then_decays_linearly_and_flops_are_recorded(bpe_data, tmp_path):
    import csv
    import json
    from conftest import run_train, train_run
    run = train_run(bpe_data, tmp_path, 'wsd', '--tokenizer=bpe4k', '--max_iters=20', '--warmup_iters=2',
                    '--lr_schedule=wsd', '--decay_fraction=0.5', '--learning_rate=3e-3', '--min_lr=3e-4',
                    '--log_interval=1', '--eval_interval=20', '--save_checkpoints=False', '--tensorboard=False')

    def expected(it):  # warmup to step 2, the peak to step 10 (half of 20 left), then linear to min_lr
        if it < 2:
            return 3e-3 * (it + 1) / 3
        return 3e-3 if it < 10 else 3e-3 + (it - 10) / 10 * (3e-4 - 3e-3)
    with open(run / 'metrics.csv', newline='') as f:
        rows = [r for r in csv.DictReader(f) if r['lr']]
    assert len(rows) == 21
    for r in rows:  # the row of iteration n logs the rate of the step that led to it
        assert float(r['lr']) == pytest.approx(expected(max(int(r['iter']) - 1, 0)), rel=1e-5), r['iter']
    summary, config = (json.loads((run / f).read_text()) for f in ('summary.json', 'config.json'))
    assert config['lr_schedule'] == 'wsd' and summary['flops_per_token'] == config['flops_per_token'] > 0
    assert summary['train_flops'] == summary['flops_per_token'] * summary['tokens_seen'] > 0
    bad = run_train('config/smoke.py', f'--data_dir={bpe_data}', f'--out_dir={tmp_path}', '--lr_schedule=linear')
    assert bad.returncode == 1 and "--lr_schedule='linear': expected cosine or wsd" in bad.stderr


def dry_run(argv):
    import contextlib
    import io
    import sweep
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = sweep.main(argv + ['--dry_run'])
    return code, out.getvalue()


def test_a_ladder_crosses_model_sizes_with_the_grid(tmp_path, capsys):
    import re
    import sweep
    code, out = dry_run(['config/sweeps/ladder_cpu.py', f'--out_dir={tmp_path}'])
    names = re.findall(r'^# (\S+): from scratch$', out, re.M)
    sizes = ['2x64', '3x96', '4x128', '5x160']
    assert code == 0 and names == [f'{m}_{size}_s{s}' for size in sizes for m in ('baseline', 'gpt2') for s in (1, 2)]
    command = out.split('# gpt2_4x128_s2: from scratch\n')[1].splitlines()[0]
    for setting in ('--n_layer=4', '--n_embd=128', '--n_head=4', '--max_iters=240', '--model_name=gpt2', '--seed=2'):
        assert setting in command.split()
    bad = tmp_path / 'bad.py'
    for ladder, message in (
            ("[dict(n_layer=2, seed=3)]", f"{bad}: seed is set by the ladder and by grid: keep one"),
            ("dict(n_layer=2)", f"{bad}: ladder: expected a list of model sizes, each a dict of settings"),
            ("[dict(n_layer='two')]", f"{bad}: ladder: --n_layer: n_layer='two' has the wrong type"),
            ("[dict(n_layer=2, n_embd=64, n_head=5)]", '2x64_s1: n_embd=64 must be divisible by n_head=5')):
        bad.write_text(f"base = 'config/smoke.py'\ngrid = dict(seed=[1, 2])\nladder = {ladder}\n")
        with pytest.raises(SystemExit) as e:
            sweep.main([str(bad), '--dry_run'])
        assert e.value.code.startswith('sweep.py: error: ') and message in e.value.code, e.value.code
