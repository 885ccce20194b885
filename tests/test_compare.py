"""compare.py: Student t quantiles, Welch intervals, seed groups, tables that match the metrics,
labelled and skipped runs, every output file; and one end-to-end run on real smoke-trained runs."""
import base64
import csv
import json
import math
import re

import numpy as np
import pytest

import compare
from conftest import REPO, run_script

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
OUTPUTS = ['summary_table.csv', 'summary_table.md', 'groups.csv', 'groups.md', 'report.html', 'loss.png',
           'lr.png', 'grad_norm.png', 'weight_norm.png', 'tokens_per_s.png', 'layer_norms.png']
ITERS = [0, 10, 20, 30]
TOKENS_PER_ITER = 1024


def make_run(root, name, final_val, model_name='baseline', seed=1, status='completed', iters=ITERS,
             summary=True, **config_changes):
    """A run folder as train.py writes it: val loss on iters 0, 20 and the last; train loss from iter 10."""
    run = root / name
    run.mkdir(parents=True)
    config = dict(out_dir=str(root), run_name=name, seed=seed, model_name=model_name, n_layer=2, n_head=2,
                  n_embd=32, learning_rate=1e-3, max_iters=iters[-1], batch_size=4, block_size=256,
                  compile=False, device='cpu', eval_interval=10, started_at='2025-01-01T00:00:00',
                  model_args=dict(model_name=model_name, n_layer=2, attn_impl='sdpa'), n_params=12345,
                  tokens_per_iter=TOKENS_PER_ITER, data_dir='data/tinystories',
                  data=dict(variant='small', source='/data/ts', data_dir='data/tinystories',
                            source_files=dict(train=dict(path='/data/ts/train.txt', mtime_ns=1)),
                            train=dict(tokens=1000, sha256='abc')))
    config.update(config_changes)
    (run / 'config.json').write_text(json.dumps(config))
    lines = [','.join(['iter', 'tokens_seen', 'elapsed_s', 'lr', 'train_loss', 'val_loss', 'grad_norm',
                       'weight_norm', 'tokens_per_s', 'mfu'])]
    layer_lines = ['iter,layer,grad_norm,weight_norm']
    for k, it in enumerate(iters):
        val = final_val if it == iters[-1] else 10.0 - it / 10 if it in (0, 20) else ''
        train = '' if it == 0 else 9.0 - it / 10
        speed = '' if it == 0 else 1000.0 + 10 * k
        lines.append(f'{it},{it * TOKENS_PER_ITER},{it * 0.5},{1e-3 * (1 - it / 100)},{train},{val},'
                     f'{1.0 + k},{50.0 + k},{speed},')
        for layer in ('embed', 'block_0', 'block_1', 'final_norm'):
            layer_lines.append(f'{it},{layer},{0.1 * (k + 1)},{10.0 + k}')
    (run / 'metrics.csv').write_text('\n'.join(lines) + '\n')
    (run / 'layer_norms.csv').write_text('\n'.join(layer_lines) + '\n')
    if summary:
        (run / 'summary.json').write_text(json.dumps(dict(status=status, iters=iters[-1], run_name=name)))
    return run


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def compare_cli(*args):
    return run_script(REPO / 'compare.py', *args, timeout=120)


@pytest.fixture
def two_groups(tmp_path):
    """baseline 1.8 / 1.9 and gqa 2.0 / 2.2 final val loss, two seeds each."""
    out = tmp_path / 'out'
    make_run(out, 'baseline_s1', 1.8, seed=1)
    make_run(out, 'baseline_s2', 1.9, seed=2)
    make_run(out, 'gqa_s1', 2.0, model_name='gqa', seed=1)
    make_run(out, 'gqa_s2', 2.2, model_name='gqa', seed=2)
    return out

# -----------------------------------------------------------------------------
# statistics


@pytest.mark.parametrize('df, table', [(1, 12.706), (2, 4.303), (3, 3.182), (5, 2.571), (10, 2.228), (30, 2.042)])
def test_t_quantile_matches_t_tables(df, table):
    assert compare.t_quantile(0.975, df) == pytest.approx(table, abs=6e-4)
    assert compare.t_quantile(0.025, df) == pytest.approx(-table, abs=6e-4)


def test_t_quantile_closed_forms_and_normal_limit():
    for p in (0.6, 0.9, 0.975, 0.995):
        assert compare.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        assert compare.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    assert compare.t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(ValueError):
        compare.t_quantile(1.0, 3)


@pytest.mark.parametrize('df', [25 / 17, 3.7, 11.2])
def test_t_quantile_non_integer_df_against_integrated_density(df):
    """Welch's df is fractional: check the quantile by integrating the t density numerically."""
    q = compare.t_quantile(0.975, df)
    t = np.linspace(0.0, q, 400001)
    density = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi) \
        * (1 + t ** 2 / df) ** (-(df + 1) / 2)
    area = float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(t)))
    assert 0.5 + area == pytest.approx(0.975, abs=1e-7)


def test_welch_interval_computed_by_hand():
    # variances 0.02 and 0.005, n=2 each: se^2 = 0.01 + 0.0025, df = se^4 / (0.01^2 + 0.0025^2) = 25/17
    diff, low, high, df = compare.welch_interval([2.0, 2.2], [1.8, 1.9])
    assert diff == pytest.approx(0.25)
    assert df == pytest.approx(25 / 17)
    half = compare.t_quantile(0.975, 25 / 17) * math.sqrt(0.0125)
    assert (low, high) == pytest.approx((0.25 - half, 0.25 + half))
    assert low < 0 < high  # two seeds this far apart cannot show a 0.25 difference
    # equal spreads and sizes: df = 2(n-1) = 4, t = 2.776, se = sqrt(2 * 1e-4 / 3)
    diff, low, high, df = compare.welch_interval([2.0, 2.01, 2.02], [1.5, 1.51, 1.52])
    assert df == pytest.approx(4.0)
    assert (low, high) == pytest.approx((0.5 - 2.776 * math.sqrt(2e-4 / 3), 0.5 + 2.776 * math.sqrt(2e-4 / 3)),
                                        abs=1e-4)
    assert compare.welch_interval([2.0], [1.8, 1.9]) == (pytest.approx(0.15), None, None, None)

# -----------------------------------------------------------------------------
# the command on hand-built run folders


def test_tables_match_metrics_and_groups_by_hand(two_groups, tmp_path):
    report = tmp_path / 'report'
    proc = compare_cli(two_groups, '--report_dir', report)
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
        # the first logged interval (compilation, warm-up) is left out of the mean speed
        assert float(row['tokens_per_s']) == pytest.approx(np.mean([float(m['tokens_per_s']) for m in metrics
                                                                    if m['tokens_per_s']][1:])) == 1025.0
        assert row['mfu'] == ''  # never logged on CPU: blank, not 0
        assert row['n_params'] == '12345' and row['status'] == 'completed'
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
    half = compare.t_quantile(0.975, 25 / 17) * math.sqrt(0.0125)
    assert float(gqa['ci95_low']) == pytest.approx(0.25 - half)
    assert float(gqa['ci95_high']) == pytest.approx(0.25 + half)
    assert float(gqa['welch_df']) == pytest.approx(25 / 17)
    assert gqa['verdict'] == 'within noise'
    assert 'within noise' in (report / 'groups.md').read_text()


def test_difference_beyond_noise_and_single_run_groups(tmp_path):
    out = tmp_path / 'out'
    for seed, loss in enumerate([1.5, 1.51, 1.52], start=1):
        make_run(out, f'baseline_s{seed}', loss, seed=seed)
    for seed, loss in enumerate([2.0, 2.01, 2.02], start=1):
        make_run(out, f'mqa_s{seed}', loss, model_name='mqa', seed=seed)
    make_run(out, 'qk_s1', 1.4, model_name='qk_norm')
    proc = compare_cli(out, '--report_dir', tmp_path / 'r')
    assert proc.returncode == 0, proc.stderr
    groups = {g['group']: g for g in read_csv(tmp_path / 'r' / 'groups.csv')}
    assert groups['mqa']['verdict'] == 'higher loss than baseline, beyond noise'
    assert float(groups['mqa']['ci95_low']) == pytest.approx(0.5 - 2.776 * math.sqrt(2e-4 / 3), abs=1e-4)
    single = groups['qk_norm']
    assert single['n'] == '1' and single['std_final_val_loss'] == '' and single['ci95_low'] == ''
    assert float(single['diff_vs_baseline']) == pytest.approx(1.4 - 1.51)
    assert single['verdict'] == 'n=1: no seed noise estimate'


def test_seed_groups_ignore_bookkeeping_but_split_on_training_settings(tmp_path):
    out = tmp_path / 'out'
    make_run(out, 'a', 2.0, seed=1)
    moved = dict(variant='small', source='/elsewhere', data_dir='/scratch/ts',
                 source_files=dict(train=dict(path='/elsewhere/train.txt', mtime_ns=2)),
                 train=dict(tokens=1000, sha256='abc'))
    make_run(out, 'b', 2.1, seed=2, compile=True, device='cuda', eval_interval=5, started_at='later',
             data_dir='/scratch/ts', data=moved, model_args=dict(model_name='baseline', n_layer=2, attn_impl='math'))
    make_run(out, 'c', 2.2, seed=3, learning_rate=3e-3)
    make_run(out, 'd', 2.3, seed=4, model_args=dict(model_name='baseline', n_layer=3, attn_impl='sdpa'))
    make_run(out, 'e', 2.4, seed=5, data=dict(moved, train=dict(tokens=1000, sha256='other bins')))
    make_run(out, 'f', 2.5, seed=6, n_layer=4, n_params=99999,
             model_args=dict(model_name='baseline', n_layer=4, attn_impl='sdpa'))
    make_run(out, 'g', 2.6, seed=1)  # a's seed again: a rerun, not a new replicate
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
    assert compare.group_notes(groups[0], rows) == 'seed 1 repeated; pooled across compile, device, eval_interval'
    # several groups share model_name 'baseline': the first is taken, and the reason says so
    baseline, why = compare.pick_baseline(groups, None)
    assert baseline is groups[0] and 'several groups' in why
    assert compare.pick_baseline(groups, 'c')[0] is groups[1]
    with pytest.raises(SystemExit, match='matches runs in 2 groups'):
        compare.pick_baseline(groups, '[bc]')


def test_baseline_flag_and_runs_glob_filter(two_groups, tmp_path):
    proc = compare_cli(two_groups, '--runs', 'gqa_*', 'baseline_s1', '--baseline', 'gqa_s*', '--report_dir',
                       tmp_path / 'r')
    assert proc.returncode == 0, proc.stderr
    assert [r['run'] for r in read_csv(tmp_path / 'r' / 'summary_table.csv')] == ['baseline_s1', 'gqa_s1', 'gqa_s2']
    groups = read_csv(tmp_path / 'r' / 'groups.csv')
    assert [g['group'] for g in groups] == ['gqa', 'baseline'] and groups[0]['verdict'] == 'baseline'
    assert groups[1]['verdict'] == 'n=1: no seed noise estimate'
    assert float(groups[1]['diff_vs_baseline']) == pytest.approx(1.8 - 2.1)
    proc = compare_cli(two_groups, '--runs', 'nothing*', '--report_dir', tmp_path / 'r2')
    assert proc.returncode != 0 and 'matches none' in proc.stderr and 'gqa_s1' in proc.stderr


def test_every_output_exists_and_parses(two_groups, tmp_path):
    report = tmp_path / 'report'
    for x in ('iter', 'tokens'):
        proc = compare_cli('--runs_dir', two_groups, '--x', x, '--report_dir', report / x)
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in (report / x).iterdir()) == sorted(OUTPUTS)  # no temp files left
        for name in OUTPUTS:
            data = (report / x / name).read_bytes()
            if name.endswith('.png'):
                assert data.startswith(PNG_MAGIC) and len(data) > 5000
            elif name.endswith('.csv'):
                assert len(read_csv(report / x / name)) in (2, 4)
        page = (report / x / 'report.html').read_text()
        images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
        assert len(images) == 6 and all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
        assert 'gqa_s2' in page and 'within noise' in page
    # the x axis really changes: iterations vs tokens seen (1024x larger) draw different curves
    assert 'tokens seen' in (report / 'tokens' / 'report.html').read_text()
    assert (report / 'iter' / 'loss.png').read_bytes() != (report / 'tokens' / 'loss.png').read_bytes()
    proc = compare_cli(two_groups, '--x', 'time', '--report_dir', report / 'time')
    assert proc.returncode == 0, proc.stderr


def test_unfinished_and_diverged_runs_are_labelled(tmp_path):
    out = tmp_path / 'out'
    make_run(out, 'base_done', 1.8, seed=1)
    make_run(out, 'base_running', 2.5, seed=2, status='running', iters=[0, 10, 20], max_iters=30)
    make_run(out, 'base_interrupted', 1.95, seed=3, status='interrupted')
    make_run(out, 'base_diverged', float('inf'), seed=4, status='diverged')
    make_run(out, 'base_nosummary', 1.85, seed=5, summary=False)
    started = make_run(out, 'gqa_started', 0, model_name='gqa', status='running')
    (started / 'metrics.csv').write_text('iter,tokens_seen,elapsed_s,lr,train_loss,val_loss,grad_norm,'
                                         'weight_norm,tokens_per_s,mfu\n')  # no step logged yet
    proc = compare_cli(out, '--report_dir', tmp_path / 'r')
    assert proc.returncode == 0, proc.stderr
    rows = {r['run']: r for r in read_csv(tmp_path / 'r' / 'summary_table.csv')}
    assert {n: r['status'] for n, r in rows.items()} == dict(
        base_diverged='diverged', base_done='completed', base_interrupted='interrupted',
        base_nosummary='unknown', base_running='running', gqa_started='running')
    assert rows['base_running']['iters'] == '20' and rows['base_running']['final_val_loss'] == '2.5'
    assert all(rows['gqa_started'][c] == '' for c in ('iters', 'tokens_seen', 'final_val_loss', 'best_val_loss'))
    table = (tmp_path / 'r' / 'summary_table.md').read_text()
    assert 'running (in progress)' in table and 'unknown (no summary.json)' in table
    groups = {g['group']: g for g in read_csv(tmp_path / 'r' / 'groups.csv')}
    base = groups['baseline']
    assert base['n'] == '4'  # the diverged run is left out of the mean, and the notes say so
    assert float(base['mean_final_val_loss']) == pytest.approx(np.mean([1.8, 2.5, 1.95, 1.85]))
    assert 'base_diverged diverged (left out)' in base['notes']
    assert 'base_running running (in progress)' in base['notes']
    assert groups['gqa']['verdict'] == 'no val loss yet'
    # the running run stopped 10 iterations short: the comparison is not at equal tokens
    assert 'warning: final val losses were measured after different numbers of tokens' in proc.stderr
    assert 'different numbers of tokens' in (tmp_path / 'r' / 'report.html').read_text()


def test_malformed_folders_are_named_and_skipped(two_groups, tmp_path):
    bad = make_run(two_groups, 'bad_metrics', 2.0, seed=9)
    (bad / 'metrics.csv').write_text('iter,tokens_seen,elapsed_s,lr,train_loss,val_loss,grad_norm,weight_norm,'
                                     'tokens_per_s,mfu\n0,0,0,0.001,,oops,1,1,,\n')
    (make_run(two_groups, 'bad_config', 2.0, seed=8) / 'config.json').write_text('{"seed": 1,')
    proc = compare_cli(two_groups, '--report_dir', tmp_path / 'r')
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith('compare.py: skipping')]
    assert len(skipped) == 2
    assert 'bad_config' in skipped[0] and 'config.json' in skipped[0]
    assert 'bad_metrics' in skipped[1] and "val_loss='oops'" in skipped[1]
    assert 'Traceback' not in proc.stderr
    assert [r['run'] for r in read_csv(tmp_path / 'r' / 'summary_table.csv')] == [
        'baseline_s1', 'baseline_s2', 'gqa_s1', 'gqa_s2']


def test_empty_or_missing_runs_dir_is_one_clear_line(tmp_path):
    (tmp_path / 'empty').mkdir()
    for folder, expected in [(tmp_path / 'empty', 'no runs in'), (tmp_path / 'missing', 'not found')]:
        proc = compare_cli(folder, '--report_dir', tmp_path / 'r')
        assert proc.returncode != 0
        assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr
        assert 'Traceback' not in proc.stderr
    assert not (tmp_path / 'r').exists()

# -----------------------------------------------------------------------------
# end to end on real runs


def test_compare_real_smoke_runs(smoke_runs, tmp_path):
    report = tmp_path / 'report'
    proc = compare_cli(smoke_runs, '--report_dir', report, '--x', 'tokens')
    assert proc.returncode == 0, proc.stderr
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
        assert float(row['tokens_per_s']) == pytest.approx(summary['tokens_per_s_mean'], rel=1e-6)
    groups = {g['group']: g for g in read_csv(report / 'groups.csv')}
    assert sorted(groups) == ['baseline', 'gqa']
    assert groups['baseline']['runs'] == 'baseline_s1 baseline_s2' and groups['baseline']['n'] == '2'
    assert groups['gqa']['runs'] == 'gqa_s1 gqa_s2' and groups['gqa']['n'] == '2'
    gqa = [float(rows[n]['final_val_loss']) for n in ('gqa_s1', 'gqa_s2')]
    base = [float(rows[n]['final_val_loss']) for n in ('baseline_s1', 'baseline_s2')]
    diff, low, high, _ = compare.welch_interval(gqa, base)
    assert float(groups['gqa']['diff_vs_baseline']) == pytest.approx(diff)
    if low != high:
        assert float(groups['gqa']['ci95_low']) == pytest.approx(low)
    for name in OUTPUTS:
        assert (report / name).stat().st_size > 0
