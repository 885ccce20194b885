"""runs.py: the metrics list drives every output, readers accept old, new and half-written files,
atomic writes leave nothing half-done and never share a temporary, one process holds a run folder,
a run whose process is gone is stale, checkpoints resolve."""
import json
import math
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

import runs
from conftest import REPO, dead_pid


def test_a_metric_added_to_the_list_reaches_csv_tensorboard_console_and_plots(tmp_path, monkeypatch, capsys):
    """One entry in METRICS is all a new metric needs: the writer, the reader and plot_run follow it."""
    extra = runs.Metric('entropy', 'stats/entropy', '.3f', 'entropy', 'entropy (nats)')
    monkeypatch.setattr(runs, 'METRICS', runs.METRICS + [extra])
    monkeypatch.setattr(runs, 'METRIC', {m.column: m for m in runs.METRICS})
    monkeypatch.setattr(runs, 'METRIC_COLUMNS', [m.column for m in runs.METRICS])
    run = tmp_path / 'r'
    run.mkdir()
    writer = runs.RunWriter(run, max_iters=20, tensorboard=True)
    assert (run / 'metrics.csv').read_text().splitlines()[0].endswith(',entropy')  # header before any row
    for it in (0, 10, 20):
        writer.log(dict(iter=it, tokens_seen=it * 8, elapsed_s=it / 10, lr=1e-3, train_loss=5.0 - it / 10,
                        val_loss=5.1 - it / 10, entropy=2.0 + it / 100), ['embed', 'block_0'], [1.0, 2.0],
                   [0.1, 0.2] if it else None, eta_s=20 - it)
    writer.close()
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith('iter 20/20') and 'entropy 2.200' in line and 'train_loss 3.0000' in line
    assert runs.read_metrics(run)['entropy'] == [2.0, 2.1, 2.2]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / 'tb'))
    events.Reload()
    assert [e.value for e in events.Scalars('stats/entropy')] == pytest.approx([2.0, 2.1, 2.2])

    (run / 'config.json').write_text('{}')
    runs.plot_run(run)
    import matplotlib.image
    assert (run / 'plots' / 'metrics.png').read_bytes()[:4] == b'\x89PNG'
    before = matplotlib.image.imread(run / 'plots' / 'metrics.png').shape
    monkeypatch.setattr(runs, 'METRICS', runs.METRICS[:-1])  # without the metric: one panel fewer
    runs.plot_run(run)
    assert matplotlib.image.imread(run / 'plots' / 'metrics.png').shape != before

    import compare  # and compare.py draws it as a panel of its own, from the same list
    monkeypatch.setattr(compare, 'METRICS', runs.METRICS + [extra])
    monkeypatch.setattr(compare, 'METRIC', {m.column: m for m in runs.METRICS + [extra]})
    (run / 'config.json').write_text(json.dumps(dict(model_name='baseline', seed=1)))
    compare.main([str(tmp_path), '--report_dir', str(tmp_path / 'report'), '--no_samples'])
    assert (tmp_path / 'report' / 'entropy.png').read_bytes()[:4] == b'\x89PNG'


def test_readers_accept_older_newer_and_cut_files(tmp_path):
    run = tmp_path / 'r'
    run.mkdir()
    # an older folder: fewer columns than METRICS; a newer one: a column this code does not know
    (run / 'metrics.csv').write_text('iter,tokens_seen,train_loss,val_loss,future_metric\n'
                                     '0,0,,10.8,1\n5,40,9.0,,2\n10,80,8.0,7.9,3\n15,1')  # the last row is cut
    m = runs.read_metrics(run)
    assert m['iter'] == [0, 5, 10] and m['future_metric'] == [1, 2, 3] and m['val_loss'][2] == 7.9
    assert all(math.isnan(v) for v in m['val_bpb']) and len(m['ms_per_iter']) == 3
    (run / 'metrics.csv').write_text('iter,tokens_seen,val_loss\n0,0,1\n5,1\n10,2,3\n')
    with pytest.raises(runs.RunError, match='metrics.csv: line 3: expected 3 fields'):
        runs.read_metrics(run)  # a short row in the middle is damage, not a row being written
    (run / 'metrics.csv').write_text('iter,tokens_seen,val_loss\n0,0,1\n5,40,abc\n')
    with pytest.raises(runs.RunError, match="line 3: val_loss='abc' is not a number"):
        runs.read_metrics(run)


def test_resume_rewrites_an_older_csv_with_the_current_header(tmp_path):
    run = tmp_path / 'r'
    run.mkdir()
    (run / 'metrics.csv').write_text('iter,tokens_seen,val_loss\n0,0,10.8\n5,40,\n10,80,7.9\n')
    writer = runs.RunWriter(run, max_iters=20, resume_after=5, tensorboard=False)
    writer.log(dict(iter=10, tokens_seen=80, val_loss=7.5, val_bpb=2.5))
    writer.close()
    lines = (run / 'metrics.csv').read_text().splitlines()
    assert lines[0] == ','.join(runs.METRIC_COLUMNS) and len(lines) == 4  # the old row 10 was redone
    assert runs.read_metrics(run)['val_bpb'][1:] == [pytest.approx(float('nan'), nan_ok=True), 2.5]


def test_atomic_write_leaves_the_old_file_and_no_tmp_when_the_write_fails(tmp_path):
    path = tmp_path / 'summary.json'
    runs.atomic_write_json(path, dict(a=1))

    def half_then_fail(f):
        f.write(b'{"a": 2, "b"')
        raise OSError(28, 'No space left on device')
    with pytest.raises(OSError):
        runs.atomic_write(path, half_then_fail)
    assert json.loads(path.read_text()) == dict(a=1) and list(tmp_path.iterdir()) == [path]


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path):
    """Issue 17 case 9b: with one fixed `<file>.tmp`, a second writer's rename took the first one's
    temporary away (`summary.json.tmp: No such file`). Each write has its own; permissions as open()'s."""
    path = tmp_path / 'summary.json'

    def first(f):
        f.write(b'{"writer": "A"}')
        runs.atomic_write_json(path, dict(writer='B'))  # B writes while A's temporary is open
    runs.atomic_write(path, first)
    assert json.loads(path.read_text()) == dict(writer='A') and list(tmp_path.iterdir()) == [path]
    assert path.stat().st_mode & 0o777 == 0o666 & ~runs.UMASK


HOLD_LOCK = ("import runs, sys, time; lock = runs.RunLock(sys.argv[1]).acquire(); lock.claim(); "
             "print('locked', flush=True); time.sleep(120)")


def test_one_process_per_run_folder_and_a_held_lock_reads_as_running(tmp_path):
    run = tmp_path / 'r'
    holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(runs.RunError, match=f"r: in use by pid {holder.pid} on {socket.gethostname()} since"):
            runs.RunLock(run).acquire(tries=2)
        assert runs.lock_holder(run).startswith(f'pid {holder.pid} on ')
        (run / 'config.json').write_text('{}')
        (run / 'metrics.csv').write_text('iter,tokens_seen,val_loss\n')
        (run / 'summary.json').write_text(json.dumps(summary(pid=dead_pid(), pid_started=None)))
        assert runs.read_run(run)['status'] == 'running'  # its summary names a dead pid: the lock says otherwise
    finally:
        holder.kill()
        holder.wait()
    assert runs.lock_holder(run) is None and runs.read_run(run)['status'] == 'stale'  # released by the kernel
    text = (run / runs.LOCK_FILE).read_text()
    lock = runs.RunLock(run).acquire(tries=1)
    assert (run / runs.LOCK_FILE).read_text().startswith(f'pid {os.getpid()} on ')  # named while it is held
    lock.release()
    assert (run / runs.LOCK_FILE).read_text() == text  # never claimed: the file it found is as it was
    new = tmp_path / 'new' / 'run'
    lock = runs.RunLock(new).acquire()
    assert (new / runs.LOCK_FILE).is_file()
    lock.release()  # never claimed: what acquire() made is removed (the missing parent folder was made)
    assert not new.exists() and (tmp_path / 'new').is_dir()


def summary(**kw):
    now = datetime.now(timezone.utc)
    return dict(dict(status='running', host=socket.gethostname(), pid=os.getpid(),
                     pid_started=runs.process_start_time(os.getpid()), heartbeat_at=now.isoformat()), **kw)


def test_a_run_whose_process_is_gone_is_stale():
    assert runs.run_status(summary()) == 'running'
    dead = dead_pid()
    assert runs.run_status(summary(pid=dead, pid_started=None)) == 'stale'
    # the pid lives but is another process (reused pid): stale too
    assert runs.run_status(summary(pid=1, pid_started='not-its-start-time')) == 'stale'
    old = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
    assert runs.run_status(summary(host='elsewhere', heartbeat_at=old)) == 'stale'
    assert runs.run_status(summary(host='elsewhere')) == 'running'
    assert runs.run_status(summary(status='completed', pid=dead)) == 'completed'
    assert runs.run_status(dict(status='weird')) == 'unknown' and runs.run_status({}) == 'unknown'


def test_checkpoints_resolve_by_step_newest_and_best(tmp_path):
    run = tmp_path / 'r'
    with pytest.raises(runs.RunError, match='r: no checkpoints in'):
        runs.resolve_checkpoint(run)
    (run / 'checkpoints').mkdir(parents=True)
    for name in ('ckpt_000010.pt', 'ckpt_000020.pt', 'ckpt_000030.pt.tmp', 'ckpt_best.pt'):
        (run / 'checkpoints' / name).write_bytes(b'x')
    assert runs.resolve_checkpoint(run) == (20, run / 'checkpoints' / 'ckpt_000020.pt')
    assert runs.resolve_checkpoint(run, 10)[0] == 10 and runs.resolve_checkpoint(run, 'best')[0] == 'best'
    with pytest.raises(runs.RunError, match=r'r: no checkpoint at step 15 \(has 10, 20, best\)'):
        runs.resolve_checkpoint(run, 15)
    assert runs.parse_step('best') == 'best' and runs.parse_step('7') == 7


def test_seed_groups_pool_replicates_and_split_real_differences():
    def run(name, **cfg):
        return dict(name=name, config=dict(dict(seed=1, model_name='baseline', n_layer=2, run_name=name), **cfg))
    groups = runs.seed_groups([run('a', seed=1), run('b', seed=2), run('c', n_layer=4), run('d', model_name='gqa')])
    assert [[r['name'] for r in g['runs']] for g in groups] == [['a', 'b'], ['c'], ['d']]
    assert groups[0]['label'] == 'baseline [n_layer=2]' and groups[2]['label'] == 'gqa'


def test_the_baseline_is_a_baseline_group_even_when_another_sorts_first():
    from runs import pick_baseline
    group = lambda model, label, name: dict(model_name=model, label=label, runs=[dict(name=name)])
    groups = [group('alibi', 'alibi', 'alibi_s1'), group('baseline', 'baseline [n_layer=2]', 'baseline_2_s1'),
              group('baseline', 'baseline [n_layer=4]', 'baseline_4_s1')]
    chosen, why = pick_baseline(groups)
    assert chosen is groups[1] and why.startswith("several groups have model_name 'baseline'; took the first of them")
    assert pick_baseline(groups, 'baseline_4_*')[0] is groups[2]
    assert pick_baseline(groups[:1])[0] is groups[0]  # no baseline at all: the first group, said so
    assert 'no group has model_name' in pick_baseline(groups[:1])[1]
    with pytest.raises(ValueError, match=r"--baseline 'baseline_\*' matches runs in 2 groups"):
        pick_baseline(groups, 'baseline_*')
