"""train.py: real training on TinyStories, the run folder, exact resume (with one command),
interruption, divergence (NaN and the spike rule), failed starts that leave nothing behind,
environment errors, configuration errors and DDP (torchrun with gloo on CPU)."""
import csv
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CPU_MALLOC_ENV, REPO, run_script, run_train, snapshot, train_run
from prepare import load_bin, read_meta, variant_dir
from tokenizer import load_tokenizer
from runs import load_checkpoint
import runs

# a very small model on the 4,096-token BPE (bpe_data): these tests check the loop, not what it learns. GPT-2's
# 50,257-token lm_head would dominate its steps; test_val_bpb_scores_the_same_bytes_whatever_the_tokenizer trains
# on GPT-2 too. No plots (runs.plot_run, ~2 s a run): the smoke run draws them
TINY = ['--tokenizer=bpe4k', '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=2',
        '--eval_windows=4', '--log_interval=5', '--eval_interval=10', '--warmup_iters=2', '--lr_decay_iters=40',
        '--num_threads=1', '--plots=False']
BLOCK, WINDOWS = 32, 4  # TINY's block_size and eval_windows
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
    assert val[0] > 8.0 and val[30] < val[0] - 1.5, val  # ln(4096) = 8.3 at init (bpe4k), then it learns (to ~6.3)
    train = [float(r['train_loss']) for r in metrics if r['train_loss']]
    assert train[-1] < train[0] - 1.5, train
    for r in metrics[1:]:
        assert float(r['grad_norm']) > 0 and float(r['weight_norm']) > 0 and float(r['tokens_per_s']) > 0
        assert int(r['tokens_seen']) == int(r['iter']) * 4 * 128
        assert r['mfu'] == ''  # no peak FLOPS known for a CPU

    norms = rows(run_dir / 'layer_norms.csv')
    layers = ['embed', 'block_0', 'block_1', 'final_norm']
    assert [r['layer'] for r in norms[:4]] == layers and len(norms) == 4 * len(metrics)
    assert all(float(r['grad_norm']) > 0 for r in norms if r['iter'] != '0')

    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['status'] == 'completed' and summary['iters'] == 30
    assert summary['final_val_loss'] == pytest.approx(val[30])
    assert summary['best_val_loss'] == pytest.approx(min(val.values()))
    assert summary['tokens_seen'] == 30 * 4 * 128 and summary['tokens_per_s_mean'] > 0

    for name in ('metrics', 'layer_norms'):
        assert (run_dir / 'plots' / f'{name}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert list(runs.list_checkpoints(run_dir)) == [15, 30]
    best, best_ckpt = load_checkpoint(runs.best_checkpoint_path(run_dir))
    assert best_ckpt['iter_num'] == summary['best_val_iter'] and best_ckpt['val_loss'] == pytest.approx(min(val.values()))
    assert best_ckpt['tokenizer']['name'] == config['tokenizer'] == 'bpe4k'  # config.json: the canonical name
    assert config['tokenizer_info']['vocab_size'] == 4096 and best_ckpt['tokenizer'] == config['tokenizer_info']
    assert (run_dir / config['tokenizer_info']['file']).is_file()  # the run carries its tokenizer
    model, ckpt = load_checkpoint(runs.list_checkpoints(run_dir)[30])
    assert ckpt['iter_num'] == 30 and model.config.model_name == 'baseline'

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / 'tb'))
    events.Reload()
    tags = set(events.Tags()['scalars'])
    assert {'loss/train', 'loss/val', 'lr', 'norm/grad', 'norm/weight', 'speed/tokens_per_s',
            'layer_grad_norm/block_0', 'layer_weight_norm/embed', 'loss/val_bpb', 'speed/ms_per_iter'} <= tags
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
# bits per byte


def window_loss(model, data_dir, n_windows, block_size=BLOCK, tokenizer='bpe4k'):
    """Mean loss of `model` on the n evenly spaced validation windows (train.py's val_loss), computed here."""
    val = load_bin(data_dir, 'small', 'val', tokenizer=tokenizer)
    losses = []
    for start in np.linspace(0, len(val) - block_size - 1, n_windows).astype(np.int64):
        window = torch.from_numpy(val[start:start + block_size + 1].astype(np.int64))
        with torch.no_grad():
            losses.append(model(window[None, :-1], window[None, 1:], reduction='none')[1])
    return float(torch.cat(losses).mean())


def story_bpb(model, data_dir, tokenizer, n_stories, block_size=BLOCK):
    """(val bits per byte on the first n validation stories, their texts), computed here: each story
    after an end-of-text, predicted in chunks of at most block_size tokens; the nats of the tokens
    that stand for text, over ln 2 and the stories' UTF-8 bytes."""
    tok = load_tokenizer(read_meta(data_dir, 'small', tokenizer)['tokenizer_info'],
                         variant_dir(data_dir, 'small', tokenizer))
    val = load_bin(data_dir, 'small', 'val', tokenizer=tokenizer)
    lengths = torch.from_numpy(tok.token_byte_lengths())
    stories = np.split(np.asarray(val, dtype=np.int64), np.flatnonzero(val == tok.eot_token) + 1)[:n_stories]
    nats, texts = 0.0, []
    for story in stories:  # each ends with its end-of-text
        texts.append(tok.decode(story[:-1]))
        ids = torch.from_numpy(np.concatenate([[tok.eot_token], story]))
        for i in range(0, len(ids) - 1, block_size):
            chunk = ids[i:i + block_size + 1]
            x, y = chunk[None, :-1], chunk[None, 1:]
            with torch.no_grad():
                loss = model(x, y, reduction='none')[1]
            nats += float((loss * (lengths[y] > 0)).sum())
    return nats / math.log(2) / sum(len(t.encode()) for t in texts), texts


def test_val_bpb_scores_the_same_bytes_whatever_the_tokenizer(small_data, bpe_data, tmp_path):
    """Issue 17 case 8: fixed token windows of two tokenizers are different text (13% byte overlap).
    val_bpb is measured on the first eval_stories whole validation stories: the same bytes for GPT-2
    and bpe4k, and equal to a direct computation; val_loss stays on its fixed token windows."""
    texts = {}
    for tokenizer in ('gpt2', 'bpe4k'):  # the one real training on GPT-2 data in this file
        run = train_run(small_data, tmp_path, tokenizer, *TINY, '--max_iters=5', '--eval_windows=3',
                        '--eval_stories=5', f'--tokenizer={tokenizer}', '--tensorboard=False')
        assert json.loads((run / 'config.json').read_text())['tokenizer_info']['vocab_size'] == \
            {'gpt2': 50257, 'bpe4k': 4096}[tokenizer]
        last = rows(run / 'metrics.csv')[-1]
        model, _ = load_checkpoint(runs.list_checkpoints(run)[5])
        bpb, texts[tokenizer] = story_bpb(model, small_data, tokenizer, 5)
        assert float(last['val_bpb']) == pytest.approx(bpb, rel=1e-5)
        assert float(last['val_loss']) == pytest.approx(window_loss(model, small_data, 3, tokenizer=tokenizer), rel=1e-5)
    assert texts['gpt2'] == texts['bpe4k'] and len(texts['gpt2']) == 5
    recorded = [json.loads((tmp_path / t / 'config.json').read_text())['val_bpb_text'] for t in texts]
    assert recorded[0] == recorded[1] and recorded[0]['stories'] == 5
    assert recorded[0]['bytes'] == sum(len(t.encode()) for t in texts['gpt2'])

# -----------------------------------------------------------------------------
# resume with one command, interruption, divergence


# the exact-resume tests' run length: an interrupt sent after the row at iteration 5 lands with ~50 tiny
# iterations (and 5 evaluations) still to go
STRAIGHT = 60


@pytest.fixture(scope='module')
def straight_run(bpe_data, tmp_path_factory):
    out = tmp_path_factory.mktemp('straight')
    return train_run(bpe_data, out, 'straight', *TINY, f'--max_iters={STRAIGHT}')


def test_resume_with_only_the_run_name_continues_exactly(bpe_data, straight_run, tmp_path):
    run = train_run(bpe_data, tmp_path, 'split', *TINY, f'--max_iters={STRAIGHT // 2}')
    assert json.loads((run / 'summary.json').read_text())['status'] == 'completed'
    # what a kill -9 during a later save leaves behind: a partial temporary file, never a checkpoint
    (run / 'checkpoints' / 'ckpt_000035.pt.tmp').write_bytes(b'PK\x03\x04 half a zip')
    result = run_train('--init_from=resume', '--run_name=split', f'--out_dir={tmp_path}', f'--max_iters={STRAIGHT}')
    assert result.returncode == 0, result.stderr
    assert exact_columns(run) == exact_columns(straight_run)
    assert [{k: r[k] for k in ('iter', 'layer', 'grad_norm', 'weight_norm')} for r in rows(run / 'layer_norms.csv')] == \
        [{k: r[k] for k in ('iter', 'layer', 'grad_norm', 'weight_norm')} for r in rows(straight_run / 'layer_norms.csv')]
    a, _ = load_checkpoint(runs.list_checkpoints(run)[STRAIGHT])
    b, _ = load_checkpoint(runs.list_checkpoints(straight_run)[STRAIGHT])
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    config = json.loads((run / 'config.json').read_text())
    assert config['resumed_at'] == [STRAIGHT // 2] and config['n_embd'] == 32 and config['max_iters'] == STRAIGHT


def test_raising_max_iters_on_resume_keeps_the_schedule_and_says_so(bpe_data, tmp_path):
    common = [a for a in TINY if not a.startswith('--lr_decay_iters')]
    run = train_run(bpe_data, tmp_path, 'sched', *common, '--max_iters=20', '--min_lr=2e-4')
    (tmp_path / 'sched.py').write_text('max_iters = 30\n')  # a config file names the run, as at the start
    result = run_train(tmp_path / 'sched.py', '--init_from=resume', f'--out_dir={tmp_path}')
    assert result.returncode == 0, result.stderr
    assert 'max_iters 20 -> 30: the cosine schedule still ends at iteration 20' in result.stdout
    lrs = {int(r['iter']): float(r['lr']) for r in rows(run / 'metrics.csv')}
    assert lrs[25] == pytest.approx(2e-4) and lrs[30] == pytest.approx(2e-4) and lrs[20] > 2e-4
    # settings that change the arithmetic of the steps taken are refused, naming them; nothing changes
    before = snapshot(run)
    result = run_train('--init_from=resume', '--run_name=sched', f'--out_dir={tmp_path}', '--max_iters=40',
                       '--batch_size=8', '--learning_rate=0.5')
    assert result.returncode == 1 and 'batch_size (checkpoint 2, now 8)' in result.stderr
    assert 'learning_rate (checkpoint 0.003, now 0.5)' in result.stderr and snapshot(run) == before


def start_train(out_dir, run_name, *args, env=None):
    """train.py config/smoke.py as its own process (stdout and stderr piped)."""
    cmd = [sys.executable, str(REPO / 'train.py'), 'config/smoke.py', f'--out_dir={out_dir}', f'--run_name={run_name}',
           *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env or dict(os.environ, **CPU_MALLOC_ENV), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_rows(proc, run_dir, n):
    """Until the running train.py has logged n metric rows (or has ended)."""
    metrics = run_dir / 'metrics.csv'
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= n + 1:
            return
        time.sleep(0.005)


def test_lowering_max_iters_on_resume_stops_there_and_says_so(bpe_data, tmp_path):
    """Issue 23 item 9: the message said the run goes on at min_lr; it stopped at the new max_iters."""
    common = [a for a in TINY if not a.startswith('--lr_decay_iters')]
    run = train_run(bpe_data, tmp_path, 'lower', *common, '--max_iters=10', '--checkpoint_interval=5')
    os.remove(runs.list_checkpoints(run)[10])  # as if it had been stopped at iteration 5
    result = run_train('--init_from=resume', '--run_name=lower', f'--out_dir={tmp_path}', '--max_iters=8')
    assert result.returncode == 0, result.stderr
    said = re.search(r'max_iters 10 -> 8: the run stops at iteration 8 with the learning rate at ([0-9.e-]+), '
                     r'on the cosine schedule that reaches min_lr=0.0003 at iteration 10', result.stdout)
    assert said, result.stdout
    last = rows(run / 'metrics.csv')[-1]
    assert int(last['iter']) == 8 and float(last['lr']) == pytest.approx(float(said.group(1)), rel=1e-2)
    assert float(last['lr']) > 3e-4 and json.loads((run / 'summary.json').read_text())['iters'] == 8


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_then_the_printed_command_resumes_exactly(bpe_data, straight_run, tmp_path, sig):
    out = tmp_path / 'out'
    proc = start_train(out, 'cut', f'--data_dir={bpe_data}', *TINY, f'--max_iters={STRAIGHT}')
    wait_for_rows(proc, out / 'cut', 2)  # iter 0 and iter 5
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    summary = json.loads((out / 'cut' / 'summary.json').read_text())
    assert summary['status'] == 'interrupted' and signal.Signals(sig).name in summary['message']
    stopped_at = summary['iters']
    assert 5 <= stopped_at < STRAIGHT and list(runs.list_checkpoints(out / 'cut')) == [stopped_at]
    assert runs.lock_holder(out / 'cut') is None  # released on the way out
    hint = stderr.strip().splitlines()[-1].split('continue with: ')[1]
    assert hint == f'python train.py --init_from=resume --run_name=cut --out_dir={out}'
    result = run_train(*hint.split()[2:])  # exactly as printed, nothing added
    assert result.returncode == 0, result.stderr
    assert exact_columns(out / 'cut') == exact_columns(straight_run)
    assert json.loads((out / 'cut' / 'summary.json').read_text())['status'] == 'completed'


def test_nan_divergence_stops_with_status_and_keeps_good_checkpoints(bpe_data, tmp_path):
    result = run_train('config/smoke.py', f'--out_dir={tmp_path}', '--run_name=boom', f'--data_dir={bpe_data}',
                       *TINY, '--max_iters=40', '--log_interval=1', '--learning_rate=1e9', '--warmup_iters=0',
                       '--grad_clip=0', '--checkpoint_interval=1', '--keep_checkpoints=0')
    assert result.returncode == 1 and 'diverged' in result.stderr
    summary = json.loads((tmp_path / 'boom' / 'summary.json').read_text())
    assert summary['status'] == 'diverged' and summary['iters'] < 40
    saved = runs.list_checkpoints(tmp_path / 'boom')
    for path in saved.values():
        model, _ = load_checkpoint(path)
        assert all(p.isfinite().all() for p in model.parameters()), path
    line = result.stderr.strip().splitlines()[-1]
    assert ('newest good checkpoint' in line) == bool(saved) and ('no good checkpoint' in line) == (not saved), line


def test_a_finite_loss_spike_is_divergence_and_the_best_checkpoint_survives_rotation(bpe_data, tmp_path):
    """lr 1 first lowers the loss, then blows it up to finite values above ln(vocab) + 1: stopped as
    diverged by the spike rule; keep_checkpoints=1 rotates the numbered ones, ckpt_best.pt (lowest val
    loss) is kept and named."""
    result = run_train('config/smoke.py', f'--out_dir={tmp_path}', '--run_name=spike', f'--data_dir={bpe_data}',
                       *TINY, '--max_iters=40', '--log_interval=1', '--eval_interval=1', '--learning_rate=1',
                       '--warmup_iters=10', '--checkpoint_interval=1', '--keep_checkpoints=1')
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert 'the spike rule' in line and 'newest good checkpoint' in line and 'ckpt_best.pt' in line, line
    run = tmp_path / 'spike'
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['status'] == 'diverged'
    losses = [float(r['train_loss']) for r in rows(run / 'metrics.csv') if r['train_loss']]
    assert all(math.isfinite(v) for v in losses)  # it never got to NaN: the rule caught it before
    best, ckpt = load_checkpoint(runs.best_checkpoint_path(run))
    assert ckpt['iter_num'] == summary['best_val_iter'] and ckpt['val_loss'] == pytest.approx(summary['best_val_loss'])
    saved = runs.list_checkpoints(run)
    named = re.search(r'newest good checkpoint is (\S+) ', line)
    assert 1 <= len(saved) <= 2 and named and Path(named.group(1)) in saved.values()  # the newest, and the lowest
    good, _ = load_checkpoint(named.group(1))
    assert all(p.isfinite().all() for p in good.parameters())


def test_divergence_never_checkpoints_blown_up_weights_and_names_a_good_one(bpe_data, tmp_path):
    """Issue 17 case 10: lr 3 with warmup, a checkpoint every step, keep 1. A checkpoint was saved
    without its weights being measured, the good one was rotated away, and the message named a
    checkpoint whose val loss was above the limit. Now each checkpoint's weights are measured on the
    val windows first; rotation keeps the lowest-loss one; the one named is under the limit. (On bpe4k
    with a 20-step warmup, step 1 still lowers the val loss and step 2 blows it past ln(4096) + 1.)"""
    result = run_train('config/smoke.py', f'--out_dir={tmp_path}', '--run_name=lr3', f'--data_dir={bpe_data}',
                       *TINY, '--max_iters=40', '--log_interval=1', '--learning_rate=3', '--warmup_iters=20',
                       '--checkpoint_interval=1', '--keep_checkpoints=1')
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    limit = float(re.search(r'is above ([0-9.]+) \(the spike rule\)', line).group(1))
    saved = runs.list_checkpoints(tmp_path / 'lr3')
    assert 1 <= len(saved) <= 2, saved
    for it, path in saved.items():
        model, ckpt = load_checkpoint(path)
        assert ckpt['checkpoint_losses'][it] == pytest.approx(window_loss(model, bpe_data, WINDOWS), rel=1e-5)
    named = re.search(r'newest good checkpoint is (\S+) \(val loss ([0-9.]+)\)', line)
    assert named, line
    model, _ = load_checkpoint(named.group(1))
    assert window_loss(model, bpe_data, WINDOWS) <= limit and float(named.group(2)) <= limit
    assert json.loads((tmp_path / 'lr3' / 'summary.json').read_text())['status'] == 'diverged'


# -----------------------------------------------------------------------------
# a failed start leaves everything as it was


BAD_SETTINGS = [['--model_name=gqa_typo'], ['--n_head=5'], ['--device=cuda:7'], ['--tokenizer=bpe_nope'],
                ['--batch_size=0'], ['--dtype=float8']]


# -----------------------------------------------------------------------------
# one process per run folder: real concurrent processes (issue 17 case 9)


def test_a_live_run_refuses_a_second_start_an_overwrite_and_a_resume(bpe_data, tmp_path):
    """9a: --overwrite=True on a live run deleted it; 9c: a resume beside it trained into the same
    files. Each is now one line naming the host and pid of the live run, and the run goes on untouched.
    Then it is killed (kill -9): its summary still says running, but the run is reported stale, not
    running, and the kernel has released its lock. (A SIGTERM'd run: test_interrupt_saves_then_...)"""
    run_dir = tmp_path / 'live'
    live = start_train(tmp_path, 'live', f'--data_dir={bpe_data}', *TINY, '--max_iters=100000', '--seed=7',
                       '--tensorboard=False')
    try:
        wait_for_rows(live, run_dir, 1)
        live.send_signal(signal.SIGSTOP)  # alive and holding its lock, without burning a CPU while we wait
        config = (run_dir / 'config.json').read_bytes()
        for extra in ([], ['--overwrite=True'], ['--init_from=resume']):
            result = run_train('config/smoke.py', f'--out_dir={tmp_path}', '--run_name=live', f'--data_dir={bpe_data}',
                               *TINY, '--max_iters=10', '--seed=8', *extra)
            assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert f"live: in use by pid {live.pid} on {socket.gethostname()}" in result.stderr, result.stderr
        assert (run_dir / 'config.json').read_bytes() == config
        assert runs.read_run(run_dir)['status'] == 'running'
        live.send_signal(signal.SIGCONT)
        logged = len((run_dir / 'metrics.csv').read_text().splitlines()) - 1
        wait_for_rows(live, run_dir, logged + 1)  # it goes on, in its own folder
        assert live.poll() is None and len(rows(run_dir / 'metrics.csv')) > logged
        assert runs.read_run(run_dir)['status'] == 'running'
    finally:
        live.kill()
        live.communicate(timeout=120)
    run = runs.read_run(run_dir)
    assert run['summary']['status'] == 'running' and run['summary']['seed'] == 7 and run['status'] == 'stale'
    assert runs.lock_holder(run_dir) is None  # released with the process


def test_two_starts_of_one_run_at_once_one_trains_the_other_stops(bpe_data, tmp_path):
    """9b: two starts with one name at the same moment: one exited 0 with its files gone, the other
    failed on a shared temporary file. Now one trains, the other stops at the lock. Both start without
    the malloc setting and a thread count: train.py applies the one and picks the other, and says so."""
    env = {k: v for k, v in os.environ.items() if k not in CPU_MALLOC_ENV and k != 'OMP_NUM_THREADS'}
    args = [f'--data_dir={bpe_data}', *[a for a in TINY if not a.startswith('--num_threads')], '--max_iters=20',
            '--tensorboard=False']
    procs = {seed: start_train(tmp_path, 'same', *args, f'--seed={seed}', env=env) for seed in (1, 2)}
    outs = {seed: proc.communicate(timeout=300) for seed, proc in procs.items()}
    assert sorted(proc.returncode for proc in procs.values()) == [0, 1], outs
    winner = [seed for seed, proc in procs.items() if proc.returncode == 0][0]
    loser = 3 - winner
    line = outs[loser][1].strip()
    assert f"same: in use by pid {procs[winner].pid} on {socket.gethostname()}" in line or 'already exists' in line, line
    run = tmp_path / 'same'
    config = json.loads((run / 'config.json').read_text())
    summary = json.loads((run / 'summary.json').read_text())
    assert config['seed'] == winner and summary['seed'] == winner and summary['status'] == 'completed'
    assert summary['iters'] == 20 and list(runs.list_checkpoints(run)) == [20] and not list(run.rglob('*.tmp'))
    start = outs[winner][0].splitlines()[0]
    assert re.search(r'cpu float32, \d+ CPU thread\(s\) \((busy|load) [0-9.]+ of \d+ CPUs\), malloc thresholds set', start), start
    assert config['torch_threads'] >= 1 and config['num_threads'] == 0


def test_a_bad_setting_changes_nothing_with_or_without_overwrite(bpe_data, tmp_path):
    train_run(bpe_data, tmp_path, 'r', *TINY, '--max_iters=5')
    before = snapshot(tmp_path)
    for bad in BAD_SETTINGS:
        for extra in ([], ['--overwrite=True']):
            for name in ('r', 'new'):
                result = run_train('config/smoke.py', f'--out_dir={tmp_path}', f'--run_name={name}',
                                   f'--data_dir={bpe_data}', *TINY, '--max_iters=5', *bad, *extra)
                assert result.returncode == 1 and 'Traceback' not in result.stderr, (bad, result.stderr)
                assert len(result.stderr.strip().splitlines()) == 1, result.stderr
                # the complete run is untouched, even with --overwrite=True; no stub where there was nothing
                assert snapshot(tmp_path) == before and not (tmp_path / 'new').exists(), (bad, extra, name)


def test_existing_run_folder_is_refused_then_replaced_with_overwrite(bpe_data, tmp_path):
    run = train_run(bpe_data, tmp_path, 'r', *TINY, '--max_iters=5')
    marker = run / 'notes.txt'
    marker.write_text('keep me')
    result = run_train('config/smoke.py', f'--out_dir={tmp_path}', '--run_name=r', f'--data_dir={bpe_data}',
                       *TINY, '--max_iters=5')
    assert result.returncode != 0 and 'already exists' in result.stderr and '--overwrite=True' in result.stderr
    assert f'python train.py --init_from=resume --run_name=r --out_dir={tmp_path}' in result.stderr
    assert marker.read_text() == 'keep me'
    (run / 'checkpoints').rename(tmp_path / 'away')  # nothing to continue from: no resume command offered
    result = run_train('config/smoke.py', f'--out_dir={tmp_path}', '--run_name=r', f'--data_dir={bpe_data}',
                       *TINY, '--max_iters=5')
    assert 'already exists' in result.stderr and '--init_from=resume' not in result.stderr, result.stderr
    (tmp_path / 'away').rename(run / 'checkpoints')
    # a leftover of an old version's failed start (empty folders only) is not a run: it is reused
    (tmp_path / 'stub' / 'checkpoints').mkdir(parents=True)
    train_run(bpe_data, tmp_path, 'stub', *TINY, '--max_iters=5')
    train_run(bpe_data, tmp_path, 'r', *TINY, '--max_iters=5', '--overwrite=True')
    assert not marker.exists() and json.loads((run / 'summary.json').read_text())['status'] == 'completed'


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(bpe_data, tmp_path):
    (tmp_path / 'precious').mkdir()
    (tmp_path / 'precious' / 'thesis.tex').write_text('x')
    result = run_train('config/smoke.py', f'--out_dir={tmp_path}', '--run_name=precious', f'--data_dir={bpe_data}',
                       *TINY, '--max_iters=5', '--overwrite=True')
    assert result.returncode != 0 and 'not a run folder' in result.stderr
    assert (tmp_path / 'precious' / 'thesis.tex').exists()


def test_resume_without_checkpoint_or_run_name_and_with_other_model_settings_is_refused(bpe_data, tmp_path):
    result = run_train('config/smoke.py', f'--out_dir={tmp_path}', '--run_name=none', f'--data_dir={bpe_data}',
                       '--init_from=resume')
    assert result.returncode != 0 and 'no checkpoint to resume' in result.stderr
    result = run_train('--init_from=resume')
    assert result.returncode != 0 and '--init_from=resume needs --run_name' in result.stderr
    train_run(bpe_data, tmp_path, 'r', *TINY, '--max_iters=5')
    result = run_train('config/smoke.py', f'--out_dir={tmp_path}', '--run_name=r', f'--data_dir={bpe_data}',
                       *TINY, '--n_embd=64', '--max_iters=10', '--init_from=resume')
    assert result.returncode != 0 and 'n_embd (checkpoint 32, now 64)' in result.stderr


def test_an_older_run_folder_resumes_with_a_consistent_csv(bpe_data, tmp_path):
    """A run written before val_bpb and ms_per_iter existed: its metrics.csv is rewritten with the
    current header on resume (old rows blank in the new columns), and it still reads."""
    run = train_run(bpe_data, tmp_path, 'old', *TINY, '--max_iters=10')
    old_columns = [c for c in runs.METRIC_COLUMNS if c not in ('val_bpb', 'ms_per_iter')]
    old_rows = rows(run / 'metrics.csv')
    with open(run / 'metrics.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, old_columns, extrasaction='ignore')
        w.writeheader()
        w.writerows(old_rows)
    assert math.isnan(runs.read_metrics(run)['val_bpb'][-1])  # older folders read, with blanks
    train_run(bpe_data, tmp_path, 'old', *TINY, '--max_iters=20', '--init_from=resume', config=None)
    new = rows(run / 'metrics.csv')
    assert list(new[0]) == runs.METRIC_COLUMNS and [int(r['iter']) for r in new] == [0, 5, 10, 15, 20]
    assert new[2]['val_bpb'] == '' and new[4]['val_bpb'] != ''
    assert runs.read_run(run)['status'] == 'completed'

# -----------------------------------------------------------------------------
# environment errors: one line, a summary that says failed, nothing half-written


def test_an_unwritable_out_dir_is_one_line(bpe_data, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('a file where the out_dir should be')
    result = run_train('config/smoke.py', f'--out_dir={blocker}/out', f'--data_dir={bpe_data}', *TINY, '--max_iters=5')
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f'{blocker}/out' in result.stderr and 'cannot write the run folder' in result.stderr
    if os.geteuid() != 0:  # root writes through permission bits
        ro = tmp_path / 'ro'
        ro.mkdir(mode=0o500)
        result = run_train('config/smoke.py', f'--out_dir={ro}', f'--data_dir={bpe_data}', *TINY, '--max_iters=5')
        assert result.returncode == 1 and str(ro) in result.stderr


def test_a_checkpoint_write_that_fails_midway_leaves_no_tmp_and_says_failed(bpe_data, tmp_path):
    """A file size limit stands in for a full disk: the first checkpoint (ckpt_best.pt at iteration 0, the tiny
    model's ~0.6 MB of weights) cannot be written; the run's other files (the 0.1 MB tokenizer copy) can."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
    cmd = [sys.executable, str(REPO / 'train.py'), 'config/smoke.py', f'--out_dir={tmp_path}', '--run_name=full',
           f'--data_dir={bpe_data}', *TINY, '--max_iters=10', '--checkpoint_interval=5', '--tensorboard=False']
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, **CPU_MALLOC_ENV), capture_output=True, text=True,
                          preexec_fn=limit, timeout=300)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert '.pt: could not be written (' in line and 'continue with' not in line, line
    run = tmp_path / 'full'
    assert not list(run.rglob('*.tmp')) and runs.list_checkpoints(run) == {}
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['status'] == 'failed' and 'could not be written' in summary['message']
    # nothing to resume from: the printed command starts the run again, and works as printed (issue 17 case 10)
    command = line.split('no checkpoint was saved; start again with: ')[1]
    assert command.startswith('python train.py config/smoke.py') and command.endswith(' --overwrite=True')
    result = run_train(*shlex.split(command)[2:])
    assert result.returncode == 0 and json.loads((run / 'summary.json').read_text())['status'] == 'completed'
    assert list(runs.list_checkpoints(run)) == [5, 10]

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
def test_configuration_errors_are_one_clear_line(args, message, tmp_path):
    result = run_train(*args, f'--out_dir={tmp_path}')
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr and not list(tmp_path.iterdir())


def test_a_user_error_is_one_line_from_the_command_line_too():
    proc = run_script(REPO / 'train.py', '--max_iter=5')
    assert proc.returncode == 1 and proc.stderr.strip() == \
        "train.py: error: --max_iter: unknown setting 'max_iter'; did you mean max_iters or warmup_iters?"


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text("n_layers = 4\n")
    result = run_train(bad)
    assert result.returncode != 0 and f"{bad}: unknown setting 'n_layers'; did you mean n_layer" in result.stderr
    bad.write_text("batch_size = '32'\n")
    result = run_train(bad)
    assert f"{bad}: batch_size='32' has the wrong type: expected int" in result.stderr


def test_flags_win_over_the_config_file_wherever_they_stand(tmp_path):
    from configurator import configure
    cfg = tmp_path / 'c.py'
    cfg.write_text("batch_size = 8\nlearning_rate = 1\nrun_name = 'from_file'\n")
    ns = dict(batch_size=32, learning_rate=0.1, run_name='', n_kv_head=None,
              __annotations__=dict(batch_size=int, learning_rate=float, run_name=str, n_kv_head=int | None))
    assert configure(ns, ['--batch_size=4', str(cfg), '--n_kv_head=None', '--run_name=123']) == str(cfg)
    assert ns['batch_size'] == 4 and ns['learning_rate'] == 1.0 and isinstance(ns['learning_rate'], float)
    assert ns['run_name'] == '123' and ns['n_kv_head'] is None


def test_every_gptconfig_field_is_a_typed_setting_with_a_description():
    """GPTConfig is the one declaration: each field (but the data's vocab_size) is a train.py setting,
    settable with its type, rejected with another, and described in --help."""
    from dataclasses import fields
    from configurator import ConfigError, configure, load_settings
    from model import GPTConfig
    settings = load_settings(str(REPO / 'train.py'))
    samples = {int: ('3', 'x3'), float: ('0.5', 'half'), bool: ('True', 'maybe'), str: ('layernorm', None)}
    for f in fields(GPTConfig):
        if f.name == 'vocab_size':
            assert f.name not in settings['__annotations__']
            continue
        assert f.name in settings['__annotations__'] and settings['setting_help'].get(f.name), f.name
        base = f.type if isinstance(f.type, type) else [t for t in f.type.__args__ if t is not type(None)][0]
        good, bad = samples[base]
        ns = dict(settings)
        configure(ns, [f'--{f.name}={good}'])
        assert isinstance(ns[f.name], base) and str(ns[f.name]) == good, f.name
        if bad is not None:
            with pytest.raises(ConfigError, match=f"--{f.name}: {f.name}='{bad}' has the wrong type"):
                configure(dict(settings), [f'--{f.name}={bad}'])


def test_help_lists_the_settings_with_descriptions():
    result = run_train('--help')
    assert result.returncode == 0 and '--max_iters' in result.stdout and 'int' in result.stdout
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip().startswith('--')}
    assert 'grouped-query' in lines['--n_kv_head'] and 'default 10000.0' in lines['--rope_base']


def test_unknown_model_name_lists_the_variants(bpe_data, tmp_path):
    result = run_train('config/smoke.py', f'--out_dir={tmp_path}', f'--data_dir={bpe_data}', '--tokenizer=bpe4k',
                       '--model_name=transformerxl')
    assert result.returncode != 0 and "unknown model_name 'transformerxl'" in result.stderr and 'gqa' in result.stderr


def test_missing_data_names_the_prepare_command(tmp_path):
    result = run_train('config/smoke.py', f'--out_dir={tmp_path}', f'--data_dir={tmp_path}/none')
    assert result.returncode != 0 and 'python prepare.py --variant small' in result.stderr
    assert not (tmp_path / 'smoke').exists()

# -----------------------------------------------------------------------------
# DDP: two processes (gloo on CPU) follow the single-process curve at the same global batch


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(bpe_data, tmp_path):
    common = [*TINY, '--max_iters=10', '--gradient_accumulation_steps=2', '--tensorboard=False']
    single = train_run(bpe_data, tmp_path, 'single', *common)
    env = dict(os.environ, OMP_NUM_THREADS='1', **CPU_MALLOC_ENV)
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                           str(REPO / 'train.py'), 'config/smoke.py', '--run_name=ddp', f'--data_dir={bpe_data}',
                           f'--out_dir={tmp_path}', *common],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = rows(single / 'metrics.csv'), rows(tmp_path / 'ddp' / 'metrics.csv')
    assert [r['iter'] for r in a] == [r['iter'] for r in b]  # one writer: no duplicated rows
    for ra, rb in zip(a, b):
        for key in ('train_loss', 'val_loss', 'val_bpb', 'grad_norm', 'weight_norm'):
            if ra[key]:
                assert math.isclose(float(ra[key]), float(rb[key]), rel_tol=1e-4), (key, ra, rb)
    config = json.loads((tmp_path / 'ddp' / 'config.json').read_text())
    assert config['world_size'] == 2 and config['tokens_per_iter'] == 2 * 2 * BLOCK
