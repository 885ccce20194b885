"""compare.py's report.html as a researcher reads it: the verdict table first, inside the first 1,280 x 800
pixels of a real headless browser (Debian chromium) with every image loaded; the leaderboard's ranking;
the difference plot drawing what the test tests; the speed caveat; eval_harness results linked; the
figures' colours, ticks and titles (runs.plot_run too)."""
import json
import re
import shutil
import subprocess

import matplotlib
import numpy as np
import pytest

import compare
import runs
from conftest import TOKENS_PER_ITER, make_metrics_run, read_csv

matplotlib.use('Agg')
VIEWPORT = (1280, 800)
# records where the verdict table is and whether each image decoded, into the DOM chromium dumps
PROBE = """<script>window.addEventListener('load', () => {
  const r = document.getElementById('verdicts').getBoundingClientRect();
  const images = [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}));
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({table: {top: r.top, bottom: r.bottom, left: r.left, right: r.right},
    scroll_width: document.documentElement.scrollWidth, images: images});
  document.body.appendChild(out);
});</script>"""


def many_groups(out):
    """The zoo's shape: a baseline and 5 variants of 3 seeds (a long label, a diverging one), CPU runs."""
    rng = np.random.default_rng(1)
    for seed in (1, 2, 3):
        make_metrics_run(out, f'baseline_s{seed}', 2.0 + 0.02 * seed, seed=seed)
    effects = {'gqa': -0.03, 'alibi_with_a_long_name': 0.01, 'rope': -0.05, 'moe_top2': 0.04}
    for name, effect in effects.items():
        for seed in (1, 2, 3):
            make_metrics_run(out, f'{name}_s{seed}', 2.0 + 0.02 * seed + effect + 0.003 * rng.standard_normal(),
                     model_name=name, seed=seed)
    for seed in (1, 2, 3):
        diverged = seed < 3
        make_metrics_run(out, f'hot_s{seed}', np.inf if diverged else 2.05, model_name='hot', seed=seed,
                 status='diverged' if diverged else 'completed')


@pytest.fixture(scope='module')
def zoo_report(tmp_path_factory):
    root = tmp_path_factory.mktemp('zoo')
    many_groups(root / 'out')
    compare.main([str(root / 'out'), '--report_dir', str(root / 'r'), '--no_samples'])
    return root / 'r'


def test_the_verdict_table_is_on_the_first_screen_of_a_real_browser(zoo_report, tmp_path):
    page = (zoo_report / 'report.html').read_text()
    probed = tmp_path / 'probed.html'
    probed.write_text(page.replace('</body>', PROBE + '</body>'))
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    assert chromium, 'chromium is not installed: .ci/run installs it (apt-get install -y chromium)'
    dom = subprocess.run([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                          f'--window-size={VIEWPORT[0]},{VIEWPORT[1]}', '--virtual-time-budget=10000',
                          '--dump-dom', probed.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f'the probe did not run; chromium printed: {dom[-500:]}'
    probe = json.loads(found.group(1).replace('&quot;', '"').replace('&amp;', '&'))
    table = probe['table']
    assert 0 <= table['top'] and table['bottom'] <= VIEWPORT[1], table  # every row, no scrolling down
    assert 0 <= table['left'] and table['right'] <= VIEWPORT[0], table
    assert probe['scroll_width'] <= VIEWPORT[0]  # the page itself never scrolls sideways (wide tables scroll inside)
    images = probe['images']
    assert len(images) == page.count('<img ') >= 8
    assert all(i['complete'] and i['width'] > 0 for i in images), [i for i in images if not i['width']]


def test_the_leaderboard_ranks_by_difference_and_says_the_verdict(zoo_report):
    page = (zoo_report / 'report.html').read_text()
    assert page.index('id="verdicts"') < page.index('Seed groups against the baseline: the full table')
    board = page[page.index('id="verdicts"'):page.index('</table>', page.index('id="verdicts"'))]
    rows = re.findall(r'<tr[^>]*>(.*?)</tr>', board)[1:]
    cells = [re.findall(r'<td[^>]*>(.*?)</td>', row) for row in rows]
    groups = {g['group']: g for g in read_csv(zoo_report / 'groups.csv')}
    order = [c[1] for c in cells]
    ranked = sorted((float(g['diff_vs_baseline'] or 0), name) for name, g in groups.items()
                    if g['diff_vs_baseline'] or name == 'baseline')
    assert order == [name for _, name in ranked] and len(order) == 6
    rope = cells[order.index('rope')]
    g = groups['rope']
    assert rope[2] == '3' and rope[4] == (f"{float(g['diff_vs_baseline']):+.4f} [{float(g['ci95_low']):+.4f}, "
                                           f"{float(g['ci95_high']):+.4f}]")
    assert rope[6] == 'lower val_loss than baseline, beyond noise'  # the point is said once, above the table
    assert f'at {30 * TOKENS_PER_ITER:,} tokens' in page[:page.index('id="verdicts"')]
    hot = cells[order.index('hot')]
    assert hot[7] == '2 of 3' and hot[6].startswith('diverged more often than baseline (2 of 3 vs 0 of 3')
    assert cells[order.index('baseline')][4] == '0 (baseline)'
    # every make_run run is a CPU run started at the same moment: the speeds carry the caveat
    assert '<th>tokens/s*</th>' in board and 'trained at the same time on one machine' in page


def test_the_difference_plot_draws_what_the_test_tests(tmp_path):
    """The band is the verdict's own interval, not each run minus the baseline's mean: at the comparison
    point it equals the table's numbers, and each thin line is one seed's paired difference."""
    out = tmp_path / 'out'
    base, gqa = {1: 2.0, 2: 2.3, 3: 2.6}, {1: 1.88, 2: 2.36, 3: 2.50}  # per seed -0.12, +0.06, -0.10
    for seed in base:
        make_metrics_run(out, f'baseline_s{seed}', base[seed], seed=seed)
        make_metrics_run(out, f'gqa_s{seed}', gqa[seed], model_name='gqa', seed=seed)
        make_metrics_run(out, f'mqa_s{seed + 5}', gqa[seed], model_name='mqa', seed=seed + 5)
    loaded, _ = compare.load_runs(sorted(out.iterdir()))
    groups = compare.seed_groups(loaded)
    rows = {r['name']: compare.run_numbers(r) for r in loaded}
    table = {row['group']: row for row in compare.group_table(groups, groups[0], rows, 'val_loss')}
    d = compare.difference_curves(groups[1], groups[0], 'val_loss')
    at = list(d['grid']).index(30 * TOKENS_PER_ITER)
    row = table['gqa']
    assert (d['results'][at]['low'], d['results'][at]['high']) == pytest.approx((row['ci95_low'], row['ci95_high']))
    assert row['ci95_low'] < 0 < row['ci95_high']  # noise, and the band says so too
    assert [diffs[at] for diffs in d['per_seed']] == pytest.approx([-0.12, 0.06, -0.10])
    welch = compare.difference_curves(groups[2], groups[0], 'val_loss')
    assert welch['per_seed'] == [] and welch['results'][at]['method'] == 'Welch (n=3 vs 3)'
    assert welch['results'][at]['low'] == pytest.approx(table['mqa']['ci95_low'])


def test_speed_caveat_only_where_cpu_runs_overlapped(tmp_path):
    out = tmp_path / 'out'
    make_metrics_run(out, 'a', 2.0, seed=1, started_at='2025-01-01T00:00:00', summary_fields=dict(wall_time_s=60.0))
    make_metrics_run(out, 'b', 2.0, seed=2, started_at='2025-01-01T00:00:30', summary_fields=dict(wall_time_s=60.0))
    make_metrics_run(out, 'c', 2.0, seed=3, started_at='2025-01-01T01:00:00', summary_fields=dict(wall_time_s=60.0))
    make_metrics_run(out, 'd', 2.0, seed=4, started_at='2025-01-01T00:00:10', device='cuda', device_name='NVIDIA H100')
    loaded, _ = compare.load_runs(sorted(out.iterdir()))
    caveat = compare.shared_cpu(loaded)
    assert caveat.startswith('2 CPU runs trained at the same time on one machine (a, b)')
    assert compare.shared_cpu([r for r in loaded if r['name'] != 'b']) is None


def test_eval_harness_results_of_the_same_runs_are_shown_and_linked(tmp_path):
    out, report = tmp_path / 'out', tmp_path / 'r'
    for seed in (1, 2):
        make_metrics_run(out, f'baseline_s{seed}', 2.0 + 0.1 * seed, seed=seed)
        make_metrics_run(out, f'gqa_s{seed}', 2.05 + 0.1 * seed, model_name='gqa', seed=seed)
    evals = report / 'eval_harness'
    evals.mkdir(parents=True)
    (evals / 'settings.json').write_text(json.dumps(dict(evaluated=[dict(run='baseline_s1'), dict(run='gqa_s1'),
                                                                    dict(run='gqa_s2')], created='2026-12-03')))
    (evals / 'groups.csv').write_text('number,group,n,mean,diff_vs_baseline,verdict\n'
                                      'copy.accuracy,gqa,2,0.61,+0.04,within noise\n')
    (evals / 'report.html').write_text('<html></html>')
    compare.main([str(out), '--report_dir', str(report), '--no_samples', '--no_plots'])
    page = (report / 'report.html').read_text()
    section = page[page.index('<h2>Eval harness</h2>'):]
    assert 'evaluated 3 of these 4 runs' in section and 'Not evaluated: baseline_s2.' in section
    assert '<a href="eval_harness/report.html">' in section
    assert '<td>copy.accuracy</td><td>gqa</td><td>2</td><td>0.61</td><td>+0.04</td><td>within noise</td>' in section
    # elsewhere (--eval_dir), the link is relative to the report; none there: no section
    moved = tmp_path / 'evals'
    shutil.move(str(evals), moved)
    names = ['baseline_s1', 'gqa_s1']
    assert '<a href="../evals/report.html">' in compare.eval_results_html(moved, report, names)
    assert compare.eval_results_html(evals, report, names) == ''
    (moved / 'groups.csv').write_bytes(b'\xff\xfe')
    assert 'cannot read its results' in compare.eval_results_html(moved, report, names)


@pytest.fixture
def figures(monkeypatch):
    """Every matplotlib figure closed while the test runs, kept open for inspection."""
    import matplotlib.pyplot as plt
    kept = []
    monkeypatch.setattr(plt, 'close', lambda fig=None: kept.append(fig))
    return kept


def test_zoom_draws_the_baseline_over_the_others_and_layer_colours_are_distinct(tmp_path, figures):
    out = tmp_path / 'out'
    for seed in (1, 2):
        make_metrics_run(out, f'baseline_s{seed}', 2.0, seed=seed)
        make_metrics_run(out, f'gqa_s{seed}', 2.0, model_name='gqa', seed=seed)  # the same curve: it used to hide it
    loaded, _ = compare.load_runs(sorted(out.iterdir()))
    groups = compare.seed_groups(loaded)
    colors = {g['label']: c for g, c in zip(groups, ['tab:blue', 'tab:orange'])}
    compare.zoom_figure(groups, groups[0], 'val_loss', 'iter', colors)
    lines = figures[-1].axes[0].get_lines()
    top = max(lines, key=lambda line: line.get_zorder())
    assert top.get_label() == 'baseline mean' and top.get_linestyle() == '--' and top is lines[-1]
    # a real run's weight norms: the embedding 36..90, the blocks 12, final_norm 8 (below a plain log axis's 10)
    norms = ['iter,layer,grad_norm,weight_norm'] + [
        f'{it},{layer},0.1,{w}' for it in (0, 10, 20, 30)
        for layer, w in (('embed', 36 + 2 * it), ('block_0', 12.0), ('block_1', 12.1), ('final_norm', 8.0))]
    (out / 'baseline_s1' / 'layer_norms.csv').write_text('\n'.join(norms) + '\n')
    compare.layer_norm_figure(loaded[:1], 'iter')
    ax = figures[-1].axes[1]  # weight norms, all four layers
    colours = [tuple(line.get_color()) for line in ax.get_lines()]
    assert len(set(colours)) == len(colours) == 4
    labelled = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    low = min(y for line in ax.get_lines() for y in line.get_ydata())
    assert min(labelled) <= low  # no value below the lowest labelled tick


def test_per_run_plots_title_what_they_draw_and_tick_iterations_evenly(tmp_path, figures):
    run = make_metrics_run(tmp_path, 'r', 2.0, bpb=1.1, iters=[0, 25, 50, 75, 100, 150, 200])
    runs.plot_run(run)
    metrics_fig, norms_fig = figures[-2:]
    titles = [ax.get_title() for ax in metrics_fig.axes if ax.has_data()]
    assert 'val_bpb' in titles and 'train_loss and val_loss' in titles and 'val loss' not in titles
    ticks = [t for t in norms_fig.axes[0].get_xticks() if 0 <= t <= 200]
    assert len(set(np.diff(ticks))) == 1 and ticks[0] == 0  # evenly spaced iterations, not 0, 25, 75, ...
    assert (run / 'plots' / 'metrics.png').stat().st_size > 0
