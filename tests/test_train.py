"""train.py: real training on TinyStories, the run folder, exact resume, interruption, divergence,
overwrite refusal, configuration errors and DDP (torchrun with gloo on CPU)."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import CPU_MALLOC_ENV, REPO, run_script, train_run
from model import load_checkpoint
import runs

# a very small model: these tests check the loop, not what it learns
TINY = ['--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=64', '--batch_size=4', '--eval_windows=8',
        '--log_interval=5', '--eval_interval=10', '--warmup_iters=2', '--lr_decay_iters=40']
EXACT = ['iter', 'tokens_seen', 'lr', 'train_loss', 'val_loss', 'grad_norm', 'weight_norm']  # not timings


def rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def exact_columns(run_dir):
    return [{k: r[k] for k in EXACT} for r in rows(run_dir / 'metrics.csv')]


# -----------------------------------------------------------------------------
# a real smoke run and everything it leaves behind


def test_smoke_run_learns_and_leaves_a_complete_run_folder(smoke_runs):
    run_dir = smoke_runs / 'baseline_s1'
    config = json.loads((run_dir / 'config.json').read_text())
    assert config['model_name'] == 'baseline' and config['seed'] == 1 and config['max_iters'] == 30
    assert config['model_args']['n_layer'] == 2 and config['torch_version'] == torch.__version__
    assert config['device'] == 'cpu' and config['n_params'] > 0 and 'git_commit' in config

    metrics = rows(run_dir / 'metrics.csv')
    assert list(metrics[0]) == runs.METRIC_COLUMNS
    assert [int(r['iter']) for r in metrics] == [0, 5, 10, 15, 20, 25, 30]
    val = {int(r['iter']): float(r['val_loss']) for r in metrics if r['val_loss']}
    assert set(val) == {0, 10, 20, 30}
    assert val[0] > 10.5 and val[30] < val[0] - 2.5, val  # ln(50257) = 10.8 at init, then it learns
    train = [float(r['train_loss']) for r in metrics if r['train_loss']]
    assert train[-1] < train[0] - 2.0
    for r in metrics[1:]:
        assert float(r['grad_norm']) > 0 and float(r['weight_norm']) > 0 and float(r['tokens_per_s']) > 0
        assert int(r['tokens_seen']) == int(r['iter']) * 8 * 128
        assert r['mfu'] == ''  # no peak FLOPS known for a CPU

    norms = rows(run_dir / 'layer_norms.csv')
    layers = ['embed', 'block_0', 'block_1', 'final_norm']
    assert [r['layer'] for r in norms[:4]] == layers and len(norms) == 4 * len(metrics)
    assert all(float(r['grad_norm']) > 0 for r in norms if r['iter'] != '0')

    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['status'] == 'completed' and summary['iters'] == 30
    assert summary['final_val_loss'] == pytest.approx(val[30])
    assert summary['best_val_loss'] == pytest.approx(min(val.values()))
    assert summary['tokens_seen'] == 30 * 8 * 128 and summary['tokens_per_s_mean'] > 0

    for name in ('loss', 'lr', 'norms', 'layer_norms'):
        assert (run_dir / 'plots' / f'{name}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert list(runs.list_checkpoints(run_dir)) == [15, 30]
    model, ckpt = load_checkpoint(runs.list_checkpoints(run_dir)[30])
    assert ckpt['iter_num'] == 30 and model.config.model_name == 'baseline'

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / 'tb'))
    events.Reload()
    tags = set(events.Tags()['scalars'])
    assert {'loss/train', 'loss/val', 'lr', 'norm/grad', 'norm/weight', 'speed/tokens_per_s',
            'layer_grad_norm/block_0', 'layer_weight_norm/embed'} <= tags
    assert [e.step for e in events.Scalars('loss/val')] == [0, 10, 20, 30]
    assert events.Scalars('loss/val')[-1].value == pytest.approx(val[30], rel=1e-6)


def test_gqa_run_records_its_variant(smoke_runs):
    config = json.loads((smoke_runs / 'gqa_s2' / 'config.json').read_text())
    assert config['model_args']['n_kv_head'] == 2 and config['model_args']['n_head'] == 4


def test_same_seed_same_batches_different_variant_same_init_loss(smoke_runs):
    """Both variants start from ln(vocab) on the same validation windows: the val set is shared."""
    v1 = rows(smoke_runs / 'baseline_s1' / 'metrics.csv')[0]['val_loss']
    v2 = rows(smoke_runs / 'gqa_s1' / 'metrics.csv')[0]['val_loss']
    assert abs(float(v1) - float(v2)) < 0.05


# -----------------------------------------------------------------------------
# resume, interruption, divergence


@pytest.fixture(scope='module')
def straight_run(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp('straight')
    return train_run(small_data, out, 'straight', *TINY, '--max_iters=40')


def test_resume_continues_exactly(small_data, straight_run, tmp_path):
    run = train_run(small_data, tmp_path, 'split', *TINY, '--max_iters=20')
    assert json.loads((run / 'summary.json').read_text())['status'] == 'completed'
    # what a kill -9 during a later save leaves behind: a partial temporary file, never a checkpoint
    (run / 'checkpoints' / 'ckpt_000025.pt.tmp').write_bytes(b'PK\x03\x04 half a zip')
    train_run(small_data, tmp_path, 'split', *TINY, '--max_iters=40', '--init_from=resume')
    assert exact_columns(run) == exact_columns(straight_run)
    assert [{k: r[k] for k in ('iter', 'layer', 'grad_norm', 'weight_norm')} for r in rows(run / 'layer_norms.csv')] == \
        [{k: r[k] for k in ('iter', 'layer', 'grad_norm', 'weight_norm')} for r in rows(straight_run / 'layer_norms.csv')]
    a, _ = load_checkpoint(runs.list_checkpoints(run)[40])
    b, _ = load_checkpoint(runs.list_checkpoints(straight_run)[40])
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    config = json.loads((run / 'config.json').read_text())
    assert config['resumed_at'] == [20]


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_checkpoint_and_summary_then_resume_matches(small_data, straight_run, tmp_path, sig):
    out = tmp_path / 'out'
    cmd = [sys.executable, str(REPO / 'train.py'), 'config/smoke.py', f'--out_dir={out}', '--run_name=cut',
           f'--data_dir={small_data}', *TINY, '--max_iters=40']
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, **CPU_MALLOC_ENV), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = out / 'cut' / 'metrics.csv'
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:  # header, iter 0, iter 5
            break
        time.sleep(0.01)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    summary = json.loads((out / 'cut' / 'summary.json').read_text())
    assert summary['status'] == 'interrupted' and signal.Signals(sig).name in summary['message']
    stopped_at = summary['iters']
    assert 5 <= stopped_at < 40 and list(runs.list_checkpoints(out / 'cut')) == [stopped_at]
    assert '--init_from=resume' in stderr
    train_run(small_data, out, 'cut', *TINY, '--max_iters=40', '--init_from=resume')
    assert exact_columns(out / 'cut') == exact_columns(straight_run)
    assert json.loads((out / 'cut' / 'summary.json').read_text())['status'] == 'completed'


def test_divergence_stops_with_status_and_keeps_good_checkpoints(small_data, tmp_path):
    proc = run_script(REPO / 'train.py', 'config/smoke.py', f'--out_dir={tmp_path}', '--run_name=boom',
                      f'--data_dir={small_data}', *TINY, '--max_iters=40', '--log_interval=1',
                      '--learning_rate=1e9', '--warmup_iters=0', '--grad_clip=0', '--checkpoint_interval=1',
                      '--keep_checkpoints=0')
    assert proc.returncode == 1, proc.stderr
    assert 'diverged' in proc.stderr and 'last good checkpoint' in proc.stderr
    summary = json.loads((tmp_path / 'boom' / 'summary.json').read_text())
    assert summary['status'] == 'diverged' and summary['iters'] < 40
    for path in runs.list_checkpoints(tmp_path / 'boom').values():
        model, _ = load_checkpoint(path)
        assert all(p.isfinite().all() for p in model.parameters()), path


# -----------------------------------------------------------------------------
# run folders are never overwritten unless asked


def test_existing_run_folder_is_refused_then_replaced_with_overwrite(small_data, tmp_path):
    run = train_run(small_data, tmp_path, 'r', *TINY, '--max_iters=5')
    marker = run / 'notes.txt'
    marker.write_text('keep me')
    proc = run_script(REPO / 'train.py', 'config/smoke.py', f'--out_dir={tmp_path}', '--run_name=r',
                      f'--data_dir={small_data}', *TINY, '--max_iters=5')
    assert proc.returncode != 0 and 'already exists' in proc.stderr and '--overwrite=True' in proc.stderr
    assert marker.read_text() == 'keep me'
    train_run(small_data, tmp_path, 'r', *TINY, '--max_iters=5', '--overwrite=True')
    assert not marker.exists() and json.loads((run / 'summary.json').read_text())['status'] == 'completed'


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(small_data, tmp_path):
    (tmp_path / 'precious').mkdir()
    (tmp_path / 'precious' / 'thesis.tex').write_text('x')
    proc = run_script(REPO / 'train.py', 'config/smoke.py', f'--out_dir={tmp_path}', '--run_name=precious',
                      f'--data_dir={small_data}', *TINY, '--max_iters=5', '--overwrite=True')
    assert proc.returncode != 0 and 'not a run folder' in proc.stderr
    assert (tmp_path / 'precious' / 'thesis.tex').exists()


def test_resume_without_checkpoint_and_with_other_model_settings_is_refused(small_data, tmp_path):
    proc = run_script(REPO / 'train.py', 'config/smoke.py', f'--out_dir={tmp_path}', '--run_name=none',
                      f'--data_dir={small_data}', '--init_from=resume')
    assert proc.returncode != 0 and 'no checkpoint to resume' in proc.stderr
    train_run(small_data, tmp_path, 'r', *TINY, '--max_iters=5')
    proc = run_script(REPO / 'train.py', 'config/smoke.py', f'--out_dir={tmp_path}', '--run_name=r',
                      f'--data_dir={small_data}', *TINY, '--n_embd=64', '--max_iters=10', '--init_from=resume')
    assert proc.returncode != 0 and 'n_embd (checkpoint 32, now 64)' in proc.stderr

# -----------------------------------------------------------------------------
# configuration and input errors (these fail before any data is read)


@pytest.mark.parametrize('args, message', [
    (['--max_iter=5'], "unknown setting 'max_iter'; did you mean max_iters"),
    (['--max_iters=abc'], "--max_iters: max_iters='abc' has the wrong type: expected int"),
    (['--learning_rate=fast'], 'expected float'),
    (['--compile=maybe'], 'expected bool or None'),
    (['--n_kv_head=2.5'], 'expected int or None'),
    (['config/nope.py'], 'config/nope.py: config file not found'),
    (['--init_from=pretrained'], "--init_from='pretrained': expected scratch or resume"),
    (['--dataset_variant=medium'], 'expected small or full'),
])
def test_configuration_errors_are_one_clear_line(args, message):
    proc = run_script(REPO / 'train.py', *args)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text("n_layers = 4\n")
    proc = run_script(REPO / 'train.py', bad)
    assert proc.returncode != 0 and f"{bad}: unknown setting 'n_layers'; did you mean n_layer" in proc.stderr
    bad.write_text("batch_size = '32'\n")
    proc = run_script(REPO / 'train.py', bad)
    assert f"{bad}: batch_size='32' has the wrong type: expected int" in proc.stderr


def test_flags_win_over_the_config_file_wherever_they_stand(tmp_path):
    from configurator import configure
    cfg = tmp_path / 'c.py'
    cfg.write_text("batch_size = 8\nlearning_rate = 1\nrun_name = 'from_file'\n")
    ns = dict(batch_size=32, learning_rate=0.1, run_name='', n_kv_head=None,
              __annotations__=dict(batch_size=int, learning_rate=float, run_name=str, n_kv_head=int | None))
    assert configure(ns, ['--batch_size=4', str(cfg), '--n_kv_head=None', '--run_name=123']) == str(cfg)
    assert ns['batch_size'] == 4 and ns['learning_rate'] == 1.0 and isinstance(ns['learning_rate'], float)
    assert ns['run_name'] == '123' and ns['n_kv_head'] is None


def test_help_lists_the_settings():
    proc = run_script(REPO / 'train.py', '--help')
    assert proc.returncode == 0 and '--max_iters' in proc.stdout and 'int' in proc.stdout


def test_unknown_model_name_lists_the_variants(small_data, tmp_path):
    proc = run_script(REPO / 'train.py', 'config/smoke.py', f'--out_dir={tmp_path}', f'--data_dir={small_data}',
                      '--model_name=transformerxl')
    assert proc.returncode != 0 and "unknown model_name 'transformerxl'" in proc.stderr and 'gqa' in proc.stderr


def test_missing_data_names_the_prepare_command(tmp_path):
    proc = run_script(REPO / 'train.py', 'config/smoke.py', f'--out_dir={tmp_path}', f'--data_dir={tmp_path}/none')
    assert proc.returncode != 0 and 'python prepare.py --variant small' in proc.stderr
    assert not (tmp_path / 'smoke').exists()

# -----------------------------------------------------------------------------
# DDP: two processes (gloo on CPU) follow the single-process curve at the same global batch


def test_ddp_two_processes_match_one_process(small_data, tmp_path):
    common = [f'--data_dir={small_data}', f'--out_dir={tmp_path}', *TINY, '--max_iters=10',
              '--gradient_accumulation_steps=2']
    single = train_run(small_data, tmp_path, 'single', *TINY, '--max_iters=10', '--gradient_accumulation_steps=2')
    env = dict(os.environ, OMP_NUM_THREADS='1', **CPU_MALLOC_ENV)
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                           str(REPO / 'train.py'), 'config/smoke.py', '--run_name=ddp', *common],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = rows(single / 'metrics.csv'), rows(tmp_path / 'ddp' / 'metrics.csv')
    assert [r['iter'] for r in a] == [r['iter'] for r in b]  # one writer: no duplicated rows
    for ra, rb in zip(a, b):
        for key in ('train_loss', 'val_loss', 'grad_norm', 'weight_norm'):
            if ra[key]:
                assert math.isclose(float(ra[key]), float(rb[key]), rel_tol=1e-4), (key, ra, rb)
    config = json.loads((tmp_path / 'ddp' / 'config.json').read_text())
    assert config['world_size'] == 2 and config['tokens_per_iter'] == 2 * 4 * 64
