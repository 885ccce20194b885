"""sweep.py: a tiny sweep through submitit's local launcher with 2 runs at once, stopped with Ctrl-C, its
rerun killed with kill -9, and continued (completed runs untouched); what a rerun plans for completed,
diverged, stale and changed runs; the report's tuned table; the SLURM job array with a stand-in sbatch;
each bad input as one line."""
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import runs
import sweep
from conftest import CPU_MALLOC_ENV, REPO, once_per_session

# a model that trains 30 iterations in well under a second on a CPU (n_head=4: gqa's 2 kv heads differ from
# it), on the bpe_data fixture's 4,096-token BPE (a step ~5x cheaper than GPT-2's vocabulary), without plots
TINY = ['--tokenizer=bpe4k', '--n_layer=1', '--n_embd=32', '--n_head=4', '--block_size=32', '--batch_size=2',
        '--eval_windows=8', '--max_iters=30', '--eval_interval=10', '--log_interval=2', '--tensorboard=False',
        '--plots=False']
VARIANTS_X_SEEDS = dict(model_name=['baseline', 'gqa'], seed=[1, 2])


def write_sweep(folder, file_stem, grid, **extra):
    lines = ["base = 'config/smoke.py'", f"grid = {grid!r}"] + [f"{k} = {v!r}" for k, v in extra.items()]
    path = Path(folder) / f'{file_stem}.py'
    path.write_text('\n'.join(lines) + '\n')
    return path


def run_main(argv):
    """sweep.main in this process: (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as mp:
        for k, v in CPU_MALLOC_ENV.items():
            mp.setenv(k, v)
        code = sweep.main(argv)
    return code, out.getvalue()


def error_of(argv, capsys):
    """The one-line error and exit 1 of a bad command."""
    with pytest.raises(SystemExit) as e:
        sweep.main(argv)
    message = e.value.code
    assert isinstance(message, str) and message.startswith('sweep.py: error: '), message  # str: exit status 1
    assert '\n' not in message and 'Traceback' not in capsys.readouterr().err
    return message


def file_hashes(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob('*')) if p.is_file()}


def link_run(src, dst):
    """A copy of a run folder that costs nothing (hard links; every writer replaces files, never edits)."""
    shutil.copytree(src, dst, copy_function=os.link)


def signal_pending(pid, signum):
    """True once signum waits for the process (stopped, it cannot take it yet): /proc/<pid>/status."""
    try:
        status = Path(f'/proc/{pid}/status').read_text()
    except FileNotFoundError:
        raise AssertionError(f"process {pid} ended before {signal.Signals(signum).name} reached it") from None
    masks = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(('SigPnd:', 'ShdPnd:'))]
    return any(mask >> (signum - 1) & 1 for mask in masks)


def metrics_lines(run_dir):
    path = Path(run_dir) / 'metrics.csv'
    return path.read_text().splitlines() if path.is_file() else []


@contextlib.contextmanager
def frozen_in_training(proc, sweep_dir, names, deadline):
    """{name: pid}: each run's train.py stopped (SIGSTOP) as soon as it adds a row to its metrics.csv, that is
    in its training loop, where a signal makes it save a checkpoint: it stays mid-training however short the
    run and however busy the machine. On leaving, each gets SIGCONT, then takes what was sent meanwhile."""
    frozen = {}
    rows_before = {name: len(metrics_lines(sweep_dir / name)) for name in names}

    def thaw():
        for pid in frozen.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    try:
        while len(frozen) < len(names):
            if proc.poll() is not None or time.time() > deadline:
                thaw()
                proc.kill()
                raise AssertionError(f"sweep.py ended or timed out before {names} trained (frozen: {frozen}):\n"
                                     + proc.communicate(timeout=60)[0])
            for name in names:
                if name not in frozen and len(metrics_lines(sweep_dir / name)) > max(1, rows_before[name]):
                    # the pid file is written before train.py starts
                    frozen[name] = int((sweep_dir / 'logs' / f'{name}.pid').read_text())
                    os.kill(frozen[name], signal.SIGSTOP)
                    assert runs.read_run(sweep_dir / name)['status'] == 'running', name  # not at its end yet
            time.sleep(0.01)
        yield frozen
    finally:
        thaw()


def wait_until_pending(pids, signum, deadline):
    """Until signum waits for each of these stopped processes."""
    while not all(signal_pending(pid, signum) for pid in pids):
        assert time.time() < deadline, f"{signal.Signals(signum).name} never reached {pids}"
        time.sleep(0.01)


def alive(pid):
    """True while the process runs (a zombie has ended)."""
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


@pytest.fixture(scope='module')
def stopped_sweep(bpe_data, tmp_path_factory):
    """What stop_and_continue (below) left. Under pytest-xdist one worker runs it and the others that get some
    of these tests wait for it and read what it recorded, rather than run it a second time beside it."""
    result = once_per_session(tmp_path_factory, 'stopped_sweep',
                              lambda: stop_and_continue(bpe_data, tmp_path_factory.mktemp('sweep')))
    return dict(result, dir=Path(result['dir']))


def stop_and_continue(bpe_data, tmp):
    """2 variants x 2 seeds, 2 runs at once, as a user runs it: sweep.py in its own process, Ctrl-C once
    the second pair is training; the same command again, killed (kill -9) once that pair trains again;
    then the same command once more (in this process), to the end. Returns what the tests check (JSON: a
    worker may hand it to another)."""
    argv = [str(write_sweep(tmp, 'tiny', VARIANTS_X_SEEDS)), f'--data_dir={bpe_data}',
            f'--out_dir={tmp / "out"}', *TINY, '--parallel', '2', '--no_report']
    sweep_dir, second_pair = tmp / 'out' / 'tiny', ('gqa_s1', 'gqa_s2')
    deadline = time.time() + 300

    def start():
        return subprocess.Popen([sys.executable, 'sweep.py', *argv], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=dict(os.environ, **CPU_MALLOC_ENV))

    # the gqa runs start as the baseline runs end; Ctrl-C reaches them (through sweep.py) mid-training
    proc = start()
    with frozen_in_training(proc, sweep_dir, second_pair, deadline) as frozen:
        proc.send_signal(signal.SIGINT)
        wait_until_pending(frozen.values(), signal.SIGINT, deadline)
    first_out, first_code = proc.communicate(timeout=300)[0], proc.returncode
    completed = {name: file_hashes(sweep_dir / name) for name in ('baseline_s1', 'baseline_s2')}
    stopped_status = {name: runs.read_run(sweep_dir / name)['status'] for name in second_pair}
    # the same command resumes them; kill -9 of sweep.py while they train: nothing else tells them to stop
    proc = start()
    with frozen_in_training(proc, sweep_dir, second_pair, deadline) as frozen:
        killed_pids = list(frozen.values())
        proc.kill()
        proc.wait()  # not its output yet: the launcher's processes hold the pipe until their train.py ends
        wait_until_pending(killed_pids, signal.SIGTERM, deadline)
    while any(alive(pid) for pid in killed_pids) and time.time() < deadline:
        time.sleep(0.05)
    left_running = [pid for pid in killed_pids if alive(pid)]
    killed_out = proc.communicate(timeout=60)[0] if not left_running else ''
    killed_summary = {name: runs.read_run(sweep_dir / name)['summary'] for name in second_pair}
    code, out = run_main(argv)
    return dict(dir=str(sweep_dir), argv=argv, first=(first_code, first_out), second=(code, out),
                completed=completed, stopped_status=stopped_status, killed_out=killed_out,
                left_running=left_running, killed_summary=killed_summary)


@pytest.mark.slow
def test_sweep_runs_stops_and_continues(stopped_sweep):
    sweep_dir = stopped_sweep['dir']
    (code1, out1), (code2, out2) = stopped_sweep['first'], stopped_sweep['second']
    assert code1 == 130, out1
    assert 'Ctrl-C: stopping 2 running run(s)' in out1 and 'the same command continues' in out1
    first_end = min(out1.index('baseline_s1: completed'), out1.index('baseline_s2: completed'))
    assert out1.index('started baseline_s2: from scratch') < first_end  # 2 at once
    # a checkpoint saved by train.py
    assert stopped_sweep['stopped_status'] == dict(gqa_s1='interrupted', gqa_s2='interrupted'), out1
    assert code2 == 0, out2
    assert 'gqa_s1: resuming from iteration' in out2 and 'gqa_s2: resuming from iteration' in out2
    assert 'started baseline' not in stopped_sweep['killed_out'] + out2  # completed: not started again
    for name in ('baseline_s1', 'baseline_s2', 'gqa_s1', 'gqa_s2'):
        run = runs.read_run(sweep_dir / name)
        assert run['status'] == 'completed' and run['summary']['iters'] == 30
        assert run['config']['model_name'] == name.split('_')[0] and run['config']['seed'] == int(name[-1])
        assert run['config']['n_layer'] == 1 and run['config']['n_embd'] == 32  # the command-line settings
        assert run['metrics']['val_loss'][-1] < run['metrics']['val_loss'][0]
    for name, hashes in stopped_sweep['completed'].items():
        assert file_hashes(sweep_dir / name) == hashes, f"{name} was touched"
    assert runs.read_run(sweep_dir / 'gqa_s1')['config']['resumed_at'][0] > 0  # continued, not restarted
    record = json.loads((sweep_dir / 'sweep.json').read_text())
    assert record['grid'] == VARIANTS_X_SEEDS and record['base_settings']['n_layer'] == 1
    assert [r['name'] for r in record['runs']] == ['baseline_s1', 'baseline_s2', 'gqa_s1', 'gqa_s2']
    command = record['runs'][3]['command']
    assert re.search(r'train\.py \S*config/smoke\.py --', command) and ' --n_layer=1 ' in command
    assert '--model_name=gqa --seed=2' in command
    assert f"--out_dir={sweep_dir} --run_name=gqa_s2" in command
    log = (sweep_dir / 'sweep.log').read_text()  # the three commands' events and final tables
    assert log.count('started gqa_s1') == 3 and re.search(r'^gqa_s2 +completed +30/30 ', log, re.M)
    assert (sweep_dir / 'logs' / 'gqa_s1.log').read_text().count('=== ') == 3  # 3 attempts, one console log


@pytest.mark.slow
def test_rerun_plans_skip_extend_diverged_stale_and_refuses_changed_settings(stopped_sweep, tmp_path, capsys):
    argv = stopped_sweep['argv']
    code, out = run_main(argv + ['--dry_run'])
    assert code == 0 and out.strip().splitlines()[-1].startswith('0 command(s) to run, 4 runs')
    code, out = run_main(argv + ['--dry_run', '--max_iters=40'])
    assert code == 0 and '4 extend' in out
    assert '--init_from=resume' in out and '--run_name=gqa_s2 --max_iters=40' in out
    bigger = write_sweep(tmp_path, 'bigger', dict(model_name=['baseline', 'gqa'], seed=[1, 2, 3]), name='tiny')
    code, out = run_main([str(bigger)] + argv[1:] + ['--dry_run'])  # a third seed: only its runs are added
    assert out.strip().splitlines()[-1].endswith(f"6 runs in {stopped_sweep['dir']}: 4 completed, 2 start")
    assert '--seed=3 ' in out and '--seed=1 ' not in out
    # a copy of the sweep in which one run diverged and another's process died
    out_dir = tmp_path / 'out'
    for name in ('baseline_s1', 'baseline_s2', 'gqa_s1', 'gqa_s2'):
        link_run(stopped_sweep['dir'] / name, out_dir / 'tiny' / name)
    summary = runs.read_json(out_dir / 'tiny' / 'gqa_s1' / 'summary.json')
    runs.atomic_write_json(out_dir / 'tiny' / 'gqa_s1' / 'summary.json', dict(summary, status='diverged'))
    runs.atomic_write_json(out_dir / 'tiny' / 'gqa_s2' / 'summary.json', dict(
        summary, status='running', host=socket.gethostname(), pid=2 ** 22 + 12345, pid_started='1'))
    argv = [a if not a.startswith('--out_dir=') else f'--out_dir={out_dir}' for a in argv]
    code, out = run_main(argv + ['--dry_run'])
    assert '# gqa_s1: diverged: left alone' in out and '# gqa_s2: resuming from iteration 30 (stale)' in out
    assert '1 command(s) to run' in out
    code, out = run_main(argv + ['--dry_run', '--retry_diverged'])
    assert '# gqa_s1: from scratch (diverged; --retry_diverged)' in out
    assert '--run_name=gqa_s1 --overwrite=True' in out
    # other settings than the folder was trained with: an error naming the run and the key
    message = error_of(argv + ['--learning_rate=0.01'], capsys)
    assert 'tiny/baseline_s1: trained with other settings' in message
    assert 'learning_rate (run 0.003, sweep 0.01)' in message and '(and 3 more run(s))' in message


def report_in_this_process(monkeypatch):
    """The report's commands (sweep.make_report: python compare.py ..., python eval_harness.py ...) run by
    those scripts' main() in this process, as given (torch, scipy and matplotlib are imported once, not
    once per command), except that eval_harness.py takes its length probe only (its others cost ~10 s of
    CPU here; tests/test_eval_harness.py runs them all). Returns the list of commands, filled as they run."""
    import compare
    import eval_harness
    real_run, commands = subprocess.run, []

    def run(cmd, *args, **kwargs):
        script = Path(cmd[1]).resolve() if len(cmd) > 1 and cmd[0] == sys.executable else None
        if script not in (REPO / 'compare.py', REPO / 'eval_harness.py'):
            return real_run(cmd, *args, **kwargs)
        commands.append(cmd)
        module = compare if script.name == 'compare.py' else eval_harness
        argv = cmd[2:] + (['--probes', 'length'] if module is eval_harness else [])
        try:
            code = module.main(argv) or 0
        except SystemExit as e:  # a one-line error, as the script would exit with it
            print(e.code, file=sys.stderr)
            code = e.code if isinstance(e.code, int) else 1
        return subprocess.CompletedProcess(cmd, code)

    monkeypatch.setattr(sweep.subprocess, 'run', run)
    return commands


@pytest.mark.slow
def test_tuned_table_picks_each_variants_best_learning_rate(stopped_sweep, bpe_data, tmp_path, monkeypatch):
    # the stopped sweep's seed-1 runs are this sweep's learning_rate=3e-3 runs (the smoke config's); one seed
    # does not vary, so it is not in the run names
    out_dir, report = tmp_path / 'out', tmp_path / 'report'
    for model_name in ('baseline', 'gqa'):
        link_run(stopped_sweep['dir'] / f'{model_name}_s1', out_dir / 'lr' / f'{model_name}_lr3e-3')
    grid = dict(model_name=['baseline', 'gqa'], learning_rate=[3e-3, 1e-2], seed=[1])
    argv = [str(write_sweep(tmp_path, 'lr', grid)), f'--data_dir={bpe_data}', f'--out_dir={out_dir}', *TINY,
            '--parallel', '2', '--report_dir', str(report)]
    commands = report_in_this_process(monkeypatch)
    code, out = run_main(argv)
    assert code == 0, out
    assert out.count('started ') == 2 and 'started baseline_lr1e-2' in out and 'started gqa_lr1e-2' in out
    # compare.py with the tuned table, then eval_harness.py, on the sweep's runs, into the report folder
    assert [c[2:] for c in commands] == [
        [str(out_dir / 'lr'), '--report_dir', str(report), '--tune', 'learning_rate'],
        ['--runs_dir', str(out_dir / 'lr'), '--report_dir', str(report / 'eval_harness')]]
    assert f"report: {report / 'report.html'}" in out.splitlines()
    assert (report / 'report.html').is_file()
    assert any((report / 'eval_harness').iterdir())
    # by hand: each variant's learning rate with the lower final val loss
    best = {}
    for model_name in ('baseline', 'gqa'):
        losses = {lr: runs.read_run(out_dir / 'lr' / f'{model_name}_lr{lr}')['summary']['final_val_loss']
                  for lr in ('3e-3', '1e-2')}
        assert all(math.isfinite(v) for v in losses.values())
        best[model_name] = float(min(losses, key=losses.get))
    with open(report / 'tuned.csv') as f:
        rows = list(csv.DictReader(f))
    assert sorted(r['variant'] for r in rows) == ['baseline', 'gqa']
    for row in rows:
        assert float(row['best_value'].split('=')[1]) == best[row['variant']], row


def stand_in_slurm(folder, monkeypatch, sbatch='echo "Submitted batch job 1234"', squeue='exit 0'):
    """SLURM's commands as shell snippets, first on PATH (tests/test_slurm.py runs the real ones). sbatch
    also copies the script it is given to sbatch_script.sh and counts its calls in sbatch_calls."""
    bin_dir = Path(folder) / 'bin'
    bin_dir.mkdir()
    scripts = dict(sbatch=f'cp "$1" {folder}/sbatch_script.sh\necho x >> {folder}/sbatch_calls\n{sbatch}',
                   srun='exit 1', squeue=squeue, sinfo='echo "(null)"')  # srun: submitit looks for it, never runs it
    for name, body in scripts.items():
        (bin_dir / name).write_text(f'#!/bin/sh\n{body}\n')
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv('PATH', f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


@pytest.mark.slow
def test_a_killed_sweep_leaves_no_run_training_and_a_rerun_resumes(stopped_sweep):
    """kill -9 of sweep.py while 2 runs train (the stopped sweep's second command, resuming the gqa runs):
    each train.py saves a checkpoint and stops (nothing trains unwatched beside the next sweep), and the
    same command resumes both."""
    sweep_dir, out = stopped_sweep['dir'], stopped_sweep['killed_out']
    assert stopped_sweep['left_running'] == [], "train.py still running after its sweep was killed"
    for name in ('gqa_s1', 'gqa_s2'):
        assert re.search(rf'started {name}: resuming from iteration [1-9]\d* \(interrupted\)', out), out
        summary = stopped_sweep['killed_summary'][name]
        assert summary['status'] == 'interrupted', summary  # saved its checkpoint on the way out
        assert 'stopped by SIGTERM' in summary['message']
    code, out = stopped_sweep['second']
    assert code == 0, out
    for name in ('gqa_s1', 'gqa_s2'):
        assert re.search(rf'started {name}: resuming from iteration [1-9]\d* \(interrupted\)', out), out
        run = runs.read_run(sweep_dir / name)
        assert run['summary']['iters'] == 30
        first, second = run['config']['resumed_at']  # from the Ctrl-C's checkpoint, then from the kill's
        assert 0 < first < second, run['config']['resumed_at']


def test_slurm_job_array_with_a_stand_in_sbatch(bpe_data, tmp_path, monkeypatch):
    """No cluster here: a stand-in sbatch records the script it is given and answers a job id."""
    bin_dir = stand_in_slurm(tmp_path, monkeypatch)
    out_dir = tmp_path / 'out'
    argv = [str(write_sweep(tmp_path, 'tiny', VARIANTS_X_SEEDS)), f'--data_dir={bpe_data}',
            f'--out_dir={out_dir}', *TINY, '--gradient_accumulation_steps=2', '--launcher', 'slurm',
            '--partition', 'gpu',            '--gpus_per_run', '2', '--time_min', '30', '--account', 'acme']
    code, out = run_main(argv)
    assert code == 0 and 'submitted 4 run(s) as SLURM job 1234' in out
    script = (tmp_path / 'sbatch_script.sh').read_text()
    for line in ('#SBATCH --array=0-3%4', '#SBATCH --gpus-per-node=2', '#SBATCH --partition=gpu',
                 '#SBATCH --time=30', '#SBATCH --account=acme', '#SBATCH --requeue', '#SBATCH --nodes=1',
                 '#SBATCH --ntasks-per-node=1', f'#SBATCH --signal=USR2@{sweep.SLURM_SIGNAL_DELAY_S}'):
        assert line in script.splitlines(), line
    assert '-m submitit.core._submit' in script
    record = json.loads((out_dir / 'tiny' / 'sweep.json').read_text())
    assert record['slurm_tasks'] == {'baseline_s1': '1234_0', 'baseline_s2': '1234_1', 'gqa_s1': '1234_2',
                                     'gqa_s2': '1234_3'}
    for i, run in enumerate(record['runs']):
        # each array task holds its run's job: train.py under torchrun on the 2 GPUs
        with open(out_dir / 'tiny' / 'submitit' / f'1234_{i}' / f'1234_{i}_submitted.pkl', 'rb') as f:
            job = pickle.load(f).function
        assert job.name == run['name'] and job.scratch == run['command'].split(' ')
        assert job.scratch[1:5] == ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
        assert Path(job.scratch[5]) == Path(os.path.relpath(REPO / 'train.py'))
        assert '--gradient_accumulation_steps=2' in job.scratch and f"--run_name={run['name']}" in job.scratch
        assert job.resume[6:] == ['--init_from=resume', f"--out_dir={out_dir / 'tiny'}",
                                  f"--run_name={run['name']}"]
    assert not any((out_dir / 'tiny' / name).exists() for name in record['slurm_tasks'])  # nothing ran
    # the same command again while squeue still lists two tasks: those are left alone, the others resubmitted
    (bin_dir / 'squeue').write_text('#!/bin/sh\necho 1234_0 PENDING\necho 99_1 RUNNING\necho 1234_3 RUNNING\n')
    code, out = run_main(argv + ['--dry_run'])
    assert '# baseline_s1: pending on SLURM (1234_0): left alone' in out
    assert '# gqa_s2: running on SLURM (1234_3): left alone' in out
    assert out.strip().splitlines()[-1].startswith('2 command(s) to run')
    # squeue fails: the submitted runs may still be queued, so none is submitted again
    (bin_dir / 'squeue').write_text('#!/bin/sh\necho "slurm_load_jobs error: Unable to contact slurm controller '
                                    '(connect failure)" >&2\nexit 1\n')
    code, out = run_main(argv)
    assert code == 1 and (tmp_path / 'sbatch_calls').read_text().count('x') == 1, out  # the first submission only
    assert '4 run(s) submitted earlier cannot be accounted for' in out
    assert ('baseline_s1: submitted as SLURM task 1234_0, and squeue failed: slurm_load_jobs error: Unable to '
            'contact slurm controller (connect failure): it may still be queued, so it is left alone') in out
    assert re.search(r'^4 runs: 4 unknown$', out, re.M)
    assert json.loads((out_dir / 'tiny' / 'sweep.json').read_text())['slurm_tasks'] == record['slurm_tasks']


def test_slurm_cpu_runs_and_submit_errors_with_a_stand_in_sbatch(bpe_data, tmp_path, monkeypatch, capsys):
    """A CPU partition (sinfo lists no GPU): no GPU asked for, the cores and memory given; a refused sbatch
    is one line with its reason, and no run is recorded as submitted."""
    refusal = 'sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified'
    bin_dir = stand_in_slurm(tmp_path, monkeypatch, sbatch=f'echo "{refusal}" >&2\nexit 1')
    out_dir = tmp_path / 'out'
    slurm = ['--launcher', 'slurm', '--partition', 'cpu', '--cpus_per_run', '3', '--mem_gb', '2.5', '--account',
             'nobody', '--parallel', '2']
    argv = [str(write_sweep(tmp_path, 'tiny', VARIANTS_X_SEEDS)), f'--data_dir={bpe_data}', f'--out_dir={out_dir}',
            *TINY, *slurm]
    code, out = run_main(argv + ['--time_min', '10', '--dry_run'])
    assert out.splitlines()[0] == ("# slurm: partition cpu, 4 task(s), 2 at once, 10 min each (warned 120 s before, "
                                   "then requeued), per run: 0 GPU(s), CPU cores 3, memory 2.5 GB, account nobody")
    code, out = run_main(argv + ['--time_min', '1', '--dry_run'])  # the warning: at most half the time limit
    assert '1 min each (warned 30 s before' in out.splitlines()[0]
    (bin_dir / 'sinfo').write_text('#!/bin/sh\necho "gpu:a100:4(S:0-1)"\n')  # a GPU partition: one per run
    code, out = run_main(argv + ['--time_min', '10', '--dry_run'])
    assert 'per run: 1 GPU(s), CPU cores 3' in out.splitlines()[0]
    (bin_dir / 'sinfo').write_text('#!/bin/sh\necho "(null)"\n')
    message = error_of(argv + ['--time_min', '10'], capsys)
    assert message == f"sweep.py: error: sbatch refused the job array, nothing was submitted: {refusal}"
    assert 'slurm_tasks' not in json.loads((out_dir / 'tiny' / 'sweep.json').read_text())
    script = (tmp_path / 'sbatch_script.sh').read_text().splitlines()
    assert not [line for line in script if 'gpu' in line] and '#SBATCH --cpus-per-task=3' in script
    assert '#SBATCH --mem=2560M' in script and '#SBATCH --signal=USR2@120' in script


def test_a_requeued_job_stops_train_py_and_resumes(tmp_path):
    """What submitit does on SLURM's warning before the time limit: checkpoint() stops train.py with
    SIGTERM and hands back the same job, which then continues from the newest checkpoint."""
    run_dir = tmp_path / 'run'
    child = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(143)); "
             "print('training', flush=True); time.sleep(60)")
    job = sweep.TrainJob('r', str(run_dir), [sys.executable, '-c', child], ['resume-command'],
                         str(tmp_path / 'logs'), str(tmp_path), {}, restart=True)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault('code', job()))
    thread.start()
    log = tmp_path / 'logs' / 'r.log'
    while 'training' not in (log.read_text().splitlines() if log.is_file() else []):
        time.sleep(0.01)  # its SIGTERM handler is set, as train.py's is once it trains
    requeued = job.checkpoint()
    thread.join(10)
    assert result['code'] == 143 and not (tmp_path / 'logs' / 'r.pid').exists()
    again = pickle.loads(pickle.dumps(requeued)).function  # as submitit stores it for the requeued job
    assert again.proc is None and again.attempts == 1 and not again.restart
    (run_dir / 'checkpoints').mkdir(parents=True)
    (run_dir / 'checkpoints' / 'ckpt_000010.pt').write_bytes(b'')
    (run_dir / 'config.json').write_text('{}')
    assert again.command() == ['resume-command']
    job.restart = True  # --retry_diverged: from scratch, replacing the folder
    assert job.command() == [sys.executable, '-c', child, '--overwrite=True']


def test_the_warning_handler_returns_once_train_py_has_stopped(tmp_path):
    """submitit calls checkpoint() from its SIGUSR2 handler, in the thread that waits in job()'s
    Popen.wait(): the handler must return as soon as train.py has saved and ended, not after the whole
    checkpoint_wait_s (Popen.wait(timeout) there waits for a lock the interrupted wait() holds)."""
    child = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(143)); "
             "print('training', flush=True); time.sleep(60)")
    job = sweep.TrainJob('r', str(tmp_path / 'run'), [sys.executable, '-c', child], ['resume-command'],
                         str(tmp_path / 'logs'), str(tmp_path), {}, restart=True)
    job.checkpoint_wait_s = 30
    handled = {}

    def on_warning(signum, frame):
        started = time.monotonic()
        handled['requeued'] = job.checkpoint()
        handled['seconds'] = time.monotonic() - started

    log = tmp_path / 'logs' / 'r.log'

    def warn_once_training():
        while 'training' not in (log.read_text().splitlines() if log.is_file() else []):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGUSR2)  # as SLURM warns the job's process

    previous = signal.signal(signal.SIGUSR2, on_warning)
    try:
        threading.Thread(target=warn_once_training, daemon=True).start()
        code = job()  # its Popen.wait() is where the handler runs
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert code == 143 and isinstance(handled['requeued'], sweep.submitit.helpers.DelayedSubmission)
    assert handled['seconds'] < 10, handled  # train.py ended within a second; the whole wait would be 30 s


def test_each_local_slot_gets_its_own_gpus(tmp_path, monkeypatch):
    """--parallel 2 on a machine with GPUs 3 and 5 (CUDA numbering): each run sees only its slot's GPU."""
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3,5')
    assert sweep.visible_gpus() == [3, 5]
    show = ("import os, time; print('CUDA_VISIBLE_DEVICES=' + os.environ['CUDA_VISIBLE_DEVICES']); "
            "time.sleep(.2)")
    jobs = [(name, sweep.TrainJob(name, str(tmp_path / name), [sys.executable, '-c', show], [],
                                  str(tmp_path / 'logs'), str(tmp_path), {}, launcher_pid=os.getpid()), 'test')
            for name in ('a', 'b')]
    progress = sweep.Progress(tmp_path / 'sweep.log', [dict(name=n, settings=dict(max_iters=1)) for n in 'ab'])
    with contextlib.redirect_stdout(io.StringIO()):
        stopped = sweep.run_local(jobs, tmp_path, 2, [3, 5], 1, progress)
    progress.log.close()
    seen = sorted(l for n in 'ab' for l in (tmp_path / 'logs' / f'{n}.log').read_text().splitlines()
                  if l.startswith('CUDA_VISIBLE_DEVICES='))
    assert seen == ['CUDA_VISIBLE_DEVICES=3', 'CUDA_VISIBLE_DEVICES=5'] and not stopped
    for value in ('', '-1'):
        monkeypatch.setenv('CUDA_VISIBLE_DEVICES', value)
        assert sweep.visible_gpus() == []


@pytest.mark.parametrize('grid, extra, flags, expected', [
    (dict(lerning_rate=[1e-3]), {}, [],
     "grid: --lerning_rate: unknown setting 'lerning_rate'; did you mean learning_rate"),
    (dict(seed=[1]), dict(overrides=dict(n_layers=2)), [],
     "overrides: --n_layers: unknown setting 'n_layers'; did you mean n_layer"),
    (dict(seed=[1]), {}, ['--max_iter=5'], "--max_iter: unknown setting 'max_iter'; did you mean max_iters"),
    (dict(seed=[1]), {}, ['--paralel=2'], "--paralel: unknown option; did you mean --parallel?"),
    (dict(seed=[]), {}, [], "grid seed=[]: expected a non-empty list of values"),
    (dict(seed=1), {}, [], "grid seed=1: expected a non-empty list of values"),
    (dict(learning_rate=['fast']), {}, [], "learning_rate='fast' has the wrong type: expected float"),
    (dict(model_name=[3]), {}, [], "grid model_name=3 has the wrong type: expected str"),
    (dict(learning_rate=[1e-3, 0.001]), {}, [], "two grid points map to run name 'lr1e-3'"),
    (dict(seed=[1, 2]), dict(grdi=1), [], "unknown sweep setting 'grdi'; did you mean grid?"),
    (dict(seed=[1, 2]), {}, ['--seed=3'], "seed is both varied by the grid"),
    (dict(seed=[1, 2]), {}, ['--run_name=x'], "--run_name: set by the sweep"),
    (dict(seed=[1]), {}, ['--parallel', '0'], "--parallel=0: expected at least 1"),
    (dict(seed=[1, 2]), {}, ['--data_dir=/nowhere'], "s1: /nowhere/small/meta.json not found: run python prepare.py"),
    (dict(seed=[1, 2]), {}, ['--tokenizer=bpe9'], "--tokenizer: tokenizer 'bpe9': 9 tokens is below 257"),
    (dict(n_head=[4, 5]), {}, ['--n_embd=64'], "n_head5: n_embd=64 must be divisible by n_head=5"),
    (dict(seed=[1]), {}, ['--gpus_per_run=-1'], "--gpus_per_run=-1: expected at least 0"),
    (dict(seed=[1]), {}, ['--mem_gb=4'], "--mem_gb is for --launcher slurm"),
])
def test_bad_input_is_one_line_and_starts_nothing(tmp_path, capsys, grid, extra, flags, expected):
    argv = [str(write_sweep(tmp_path, 'bad', grid, **extra)), f'--out_dir={tmp_path / "out"}', *flags]
    assert expected in error_of(argv, capsys)
    assert not (tmp_path / 'out').exists()


def test_missing_sweep_file_and_slurm_without_sbatch(tmp_path, capsys, monkeypatch):
    message = error_of([str(tmp_path / 'nope.py')], capsys)
    assert f"{tmp_path / 'nope.py'}: sweep file not found" in message
    monkeypatch.setenv('PATH', str(tmp_path))  # no sbatch here
    argv = [str(write_sweep(tmp_path, 'ok', dict(seed=[1, 2]))), f'--out_dir={tmp_path / "out"}', '--launcher',
            'slurm', '--partition', 'gpu', '--time_min', '10']
    assert '--launcher slurm: sbatch and srun not found on PATH' in error_of(argv, capsys)
    assert not (tmp_path / 'out').exists()


def test_a_folder_holding_only_train_lock_starts_from_scratch(tmp_path):
    """A start stopped before train.py wrote anything leaves its lock file (runs.RunLock): not a run to
    refuse or resume."""
    (tmp_path / 'r').mkdir()
    (tmp_path / 'r' / runs.LOCK_FILE).write_text('host 123\n')
    assert sweep.examine(dict(dir=tmp_path / 'r'), {}, False) == ('start', 'from scratch', [])
    (tmp_path / 'r' / 'other.txt').write_text('x')
    with pytest.raises(sweep.SweepError, match='not a run folder'):
        sweep.examine(dict(dir=tmp_path / 'r'), {}, False)


def test_run_names_say_what_varies():
    point = dict(seed=2, learning_rate=3e-3, model_name='gqa', n_layer=4)
    assert sweep.run_name_of(point, ['seed', 'learning_rate', 'model_name']) == 'gqa_lr3e-3_s2'
    assert sweep.run_name_of(point, ['seed', 'n_layer']) == 'n_layer4_s2'
    assert [sweep.short_value(v) for v in (3e-4, 0.001, 0.01, 0.1, 1.0, 1500.0, 2.5e-05, 4, True)] == \
        ['3e-4', '1e-3', '1e-2', '0.1', '1', '1500', '2.5e-5', '4', 'True']
