"""sweep.py on a real SLURM cluster (single node, CPU partition: .ci/slurm_start.sh): a 4-run tiny bpe4k sweep
followed with --wait to its report, one of its tasks requeued mid-run (`scontrol requeue`, as a preemption)
ending with the metrics of an uninterrupted run, a run that reaches its time limit while it trains warned
(SIGUSR2 before the limit), checkpointed, requeued and completed, never killed by the limit, and a bad
partition as one line. One shared scenario, everything in it at once (sweeps, jobs and the reference run).

The time limit without minutes of training: that run is submitted with --time_min 3 (SLURM is to warn it 90 s
before the limit, sweep.signal_delay_s); once it trains, its train.py is held (SIGSTOP: as if a step took
minutes, at no CPU cost) and the job's limit is cut to 2 minutes (`scontrol update TimeLimit`, as an admin
may), which puts it inside the warning window at once: slurmctld, which looks at time limits every 30 s (not
configurable), sends SIGUSR2 at its next look, with a SIGCONT. train.py goes on with the SIGTERM that the
warning makes sweep.py send it, saves a checkpoint and stops; the job requeues itself, its limit is set back to
3 minutes while it waits, and it resumes to the end.

Where no cluster is up, the tests start one as root (.ci/slurm_start.sh); without root they skip with the
command that enables them, except in CI (CI=true), where they fail. The scenario lengthens a job's time limit
again with scontrol: a SLURM operator's right (root here)."""
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import runs
from conftest import CPU_MALLOC_ENV, REPO, once_per_session, run_script, train_run

START = REPO / '.ci' / 'slurm_start.sh'
# a model that trains a hundred iterations in a second or two on one core (a run's start costs more)
TINY = ['--n_layer=1', '--n_embd=32', '--n_head=4', '--block_size=32', '--batch_size=4', '--eval_windows=8',
        '--warmup_iters=5', '--tensorboard=False', '--plots=False']
ITERS = 100  # each run of the 4-run sweep, and the reference
COMPARED = ('iter', 'train_loss', 'val_loss', 'val_bpb')  # what an interrupted run must reproduce exactly
STOP_AT = 10  # iterations logged when a run is requeued (baseline_s1) or held (the time-limited run)
DEADLINE_ITERS = 200  # the time-limited run: held at STOP_AT, however late the admin looks
DEADLINE_TIME_MIN = 3  # warned 90 s before the limit (+ up to 30 s: slurmctld's look), so not before 60 s in
SHORTENED_TIME_MIN = 2  # its end 120 s after its start: within the 90 s + 30 s before it, at once
WARNING_WAIT_S = 120   # slurmctld looks every 30 s: a warning later than this is a failure
REQUEUE_SETTLE_S = 2  # a requeued task is let start again this long after it is seen waiting
POLL_S = 0.05
T0 = time.time()


def say(message):  # the scenario's timeline, in a failure's captured output (not the in-process run's)
    print(f"{time.time() - T0:6.1f}s {message}", file=sys.__stdout__, flush=True)


def cluster_up():
    if shutil.which('sinfo') is None:
        return False
    out = subprocess.run(['sinfo', '--noheader', '--Node', '--format=%t'], capture_output=True, text=True)
    return out.returncode == 0 and any(s.strip() in ('idle', 'mix', 'alloc') for s in out.stdout.split())


def require_cluster():
    if cluster_up():
        return
    if os.geteuid() == 0:
        subprocess.run([str(START)], check=True, timeout=600)
        return
    hint = f"no SLURM cluster here: run `sudo {START.relative_to(REPO)}` to start a single-node one for these tests"
    if os.environ.get('CI') == 'true':
        pytest.fail(f"CI runs the SLURM tests: {hint}")
    pytest.skip(hint)


def write_sweep(folder, name, grid):
    path = Path(folder) / f'{name}.py'
    path.write_text(f"base = 'config/tiny_bpe4k.py'\ngrid = {grid!r}\n")
    return path


def squeue(*fields):
    """This user's jobs (array tasks one by one): their fields; none while squeue fails (asked again later)."""
    out = subprocess.run(['squeue', '--me', '--noheader', '--array', '--format=' + '|'.join(fields)],
                         capture_output=True, text=True)
    return [line.split('|') for line in out.stdout.splitlines()] if out.returncode == 0 else []


def scontrol(*args, check=True):
    out = subprocess.run(['scontrol', *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"scontrol {' '.join(args)}: {out.stderr.strip()}")


def slurm_tasks(sweep_dir):
    """{run name: SLURM task id} that sweep.py recorded for a sweep ({} before it submitted)."""
    try:
        return json.loads((Path(sweep_dir) / 'sweep.json').read_text()).get('slurm_tasks', {})
    except (OSError, ValueError):
        return {}


def logged_iter(run_dir):
    """The last iteration in a run's metrics.csv (-1 before its first row)."""
    try:
        lines = (Path(run_dir) / 'metrics.csv').read_text().splitlines()
        return int(lines[-1].split(',')[0]) if len(lines) > 1 else -1
    except (OSError, ValueError):
        return -1  # not there yet, or a row half written


def sigterm_reached(pid):
    """Whether process pid has a SIGTERM waiting (it is stopped), or has ended (slurmstepd sends a SIGCONT
    with the warning, so train.py may have gone on by itself, saved and stopped)."""
    try:
        with open(f'/proc/{pid}/status') as f:
            status = dict(line.split(':', 1) for line in f if ':' in line)
    except FileNotFoundError:
        return True
    return status['State'].split()[0] in 'ZX' or any(
        int(status[k], 16) & (1 << (signal.SIGTERM - 1)) for k in ('ShdPnd', 'SigPnd'))


def wait_until(condition, what, timeout=600):
    end = time.time() + timeout
    while not condition():
        assert time.time() < end, f"{what}: still waiting after {timeout} s"
        time.sleep(POLL_S)


def losses(run_dir):
    with open(Path(run_dir) / 'metrics.csv') as f:
        return [{k: row[k] for k in COMPARED} for row in csv.DictReader(f)]


class Admin(threading.Thread):
    """What the scenario does to the sweeps' jobs as they run, as a cluster admin would: requeues
    baseline_s1 of the 4-run sweep once it trains; holds the time-limited run's train.py once it trains and
    cuts its job's limit, then lets train.py go on once the warning has sent it its SIGTERM; and lets a
    requeued task start again at once (SLURM holds one for 120 s: its BeginTime), the cut limit set back."""

    def __init__(self, four_dir, deadline_dir):
        super().__init__(daemon=True)
        self.four_dir, self.deadline_dir = Path(four_dir), Path(deadline_dir)
        self.halt, self.error = threading.Event(), None
        self.requeued = self.held = self.shortened_job = None
        self.held_at = self.released_at = None
        self.next_queue_look, self.requeued_at = 0.0, {}

    def run(self):
        try:
            while not self.halt.is_set():
                self.step()
                self.halt.wait(POLL_S)
        except BaseException as e:  # the fixture raises it
            self.error = e

    def step(self):
        if self.requeued is None and logged_iter(self.four_dir / 'baseline_s1') >= STOP_AT:
            self.requeued = slurm_tasks(self.four_dir)['baseline_s1']
            scontrol('requeue', self.requeued)
            say(f"four: baseline_s1 requeued ({self.requeued})")
        if self.held is None and logged_iter(self.deadline_dir / 'baseline') >= STOP_AT:
            try:
                pid = int((self.deadline_dir / 'logs' / 'baseline.pid').read_text())
            except (OSError, ValueError):
                return  # between its start and its pid file: the next look
            os.kill(pid, signal.SIGSTOP)
            self.held, self.held_at = pid, time.time()
            self.shortened_job = slurm_tasks(self.deadline_dir)['baseline']
            scontrol('update', f'JobId={self.shortened_job}', f'TimeLimit={SHORTENED_TIME_MIN}')
            say(f"deadline: train.py held, the job's limit cut ({self.shortened_job})")
        if self.held is not None and self.released_at is None:
            if sigterm_reached(self.held) or time.time() - self.held_at > WARNING_WAIT_S:
                self.release()
        if time.time() >= self.next_queue_look:
            self.next_queue_look = time.time() + 0.25
            ours = {t.split('_')[0] for d in (self.four_dir, self.deadline_dir) for t in slurm_tasks(d).values()}
            for task, state, reason in squeue('%i', '%T', '%r'):
                if task.split('_')[0] not in ours or state != 'PENDING' or reason != 'BeginTime':
                    continue
                # not in the second its last start was cancelled in: slurmd would refuse the job's new
                # credential as revoked (the job fails)
                if time.time() - self.requeued_at.setdefault(task, time.time()) >= REQUEUE_SETTLE_S:
                    limit = [f'TimeLimit={DEADLINE_TIME_MIN}'] if task == self.shortened_job else []
                    scontrol('update', f'JobId={task}', 'StartTime=now', *limit, check=False)  # may race its start
                    say(f"{task} let start again")
                    del self.requeued_at[task]

    def release(self):
        self.released_at = time.time()
        say("deadline: train.py goes on")
        try:
            os.kill(self.held, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def stop(self):
        self.halt.set()
        self.join(timeout=30)
        if self.held is not None and self.released_at is None:
            self.release()  # never leave a train.py stopped


@pytest.fixture(scope='module')
def cluster_sweeps(bpe_data, tmp_path_factory):
    """What the scenario (below) left. Under pytest-xdist one worker runs it, and another that gets some of
    these tests waits for it and reads what it recorded (pytest -n 2 --dist loadscope keeps them on one)."""
    require_cluster()
    result = once_per_session(tmp_path_factory, 'slurm_scenario',
                              lambda: scenario(bpe_data, tmp_path_factory.mktemp('slurm')))
    return dict(result, **{k: Path(result[k]) for k in ('tmp', 'four_dir', 'deadline_dir')})


def scenario(bpe_data, tmp):
    """All at once: a time-limited 1-run sweep submitted first, then followed by the same command with
    --wait in its own process; the 4-run sweep with --wait as a user runs it, whose baseline_s1 is requeued
    once it trains; a sweep on a partition that does not exist; the uninterrupted reference run (here,
    in-process, one thread as the jobs); and once the 4-run sweep's runs have ended, its command again
    (--dry_run). Returns what the tests check (JSON: a worker may hand it to another)."""
    global T0
    T0 = time.time()
    common = [f'--data_dir={bpe_data}', f'--out_dir={tmp / "out"}', *TINY, '--launcher', 'slurm',
              '--partition', 'cpu', '--cpus_per_run', '1', '--mem_gb', '1']
    env = dict(os.environ, **CPU_MALLOC_ENV, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    four_dir, deadline_dir = tmp / 'out' / 'four', tmp / 'out' / 'deadline'
    deadline_argv = [str(write_sweep(tmp, 'deadline', dict(seed=[1]))), *common, f'--max_iters={DEADLINE_ITERS}',
                     '--eval_interval=50', '--log_interval=10', '--checkpoint_interval=50',
                     '--time_min', str(DEADLINE_TIME_MIN), '--no_report']
    # no checkpoints but the one a SIGTERM saves (baseline_s1's, which it resumes from): the report's
    # eval_harness.py evaluates that one run rather than four (its largest cost)
    four_argv = [str(write_sweep(tmp, 'four', dict(model_name=['baseline', 'gqa'], seed=[1, 2]))), *common,
                 f'--max_iters={ITERS}', '--eval_interval=50', '--log_interval=10', '--save_checkpoints=False',
                 '--time_min', '30', '--wait', '--report_dir', str(tmp / 'report')]
    bad_argv = [str(write_sweep(tmp, 'bad', dict(seed=[1, 2]))), *common, '--partition', 'nowhere', '--time_min', '5']

    def start(name, *argv, merged=True):  # its output in files: a pipe nobody reads yet could fill up
        with open(tmp / f'{name}.out', 'w') as out, open(tmp / f'{name}.err', 'w') as err:
            return subprocess.Popen([sys.executable, 'sweep.py', *argv], cwd=REPO, env=env, stdout=out,
                                    stderr=subprocess.STDOUT if merged else err)

    def wait(condition, what, timeout=600):  # what the admin thread stumbled on stops the scenario
        wait_until(lambda: condition() or admin.error is not None, what, timeout)
        if admin.error is not None:
            raise admin.error

    def output(name, proc):
        wait(lambda: proc.poll() is not None, f"sweep.py ({name})")
        return proc.returncode, (tmp / f'{name}.out').read_text(), (tmp / f'{name}.err').read_text()

    admin, procs = Admin(four_dir, deadline_dir), []
    try:
        submitted = run_script('sweep.py', *deadline_argv, env=env, check=True)  # first: it gets a CPU at once
        say("deadline submitted")
        admin.start()  # now: under load the run can be past STOP_AT before the next sweep is even submitted
        procs.append(start('four', *four_argv))
        four = procs[-1]
        wait(lambda: slurm_tasks(four_dir) or four.poll() is not None, "the 4-run sweep's submission")
        say("four submitted")  # its start had the cores to itself
        procs += [start('follow', *deadline_argv, '--wait'), start('bad', *bad_argv, merged=False)]
        follow, bad = procs[1:]
        import torch
        threads, cpu0 = torch.get_num_threads(), time.process_time()
        try:  # the uninterrupted run that the requeued one must match
            train_run(bpe_data, tmp, 'reference', *TINY, f'--max_iters={ITERS}', '--eval_interval=50',
                      '--log_interval=10', '--save_checkpoints=False', '--seed=1', '--num_threads=1',
                      config='config/tiny_bpe4k.py')
        finally:
            torch.set_num_threads(threads)
        say(f"reference trained ({time.process_time() - cpu0:.1f} s CPU)")
        bad_out = output('bad', bad)
        wait(lambda: re.search(r'^4 runs: ', (tmp / 'four.out').read_text(), re.M) or four.poll() is not None,
             "the 4-run sweep's runs")
        procs.append(start('again', *four_argv, '--dry_run', merged=False))  # the same command again, beside
        four_out = output('four', four)  # the report it writes now
        say("four ended")
        again_out = output('again', procs[-1])
        follow_out = output('follow', follow)
        say("deadline followed to its end")
    finally:
        admin.stop()
        for p in procs:
            if p.poll() is None:
                p.kill()
        jobs = {t.split('_')[0] for d in (four_dir, deadline_dir) for t in slurm_tasks(d).values()}
        if jobs:  # nothing of a failed test left on the cluster
            subprocess.run(['scancel', *sorted(jobs)], capture_output=True)
    if admin.error is not None:
        raise admin.error
    return dict(tmp=str(tmp), submitted=submitted.stdout, four=four_out[:2], four_dir=str(four_dir),
                again=again_out, follow=follow_out[:2], bad=bad_out, deadline_dir=str(deadline_dir),
                held=admin.held is not None, held_s=admin.held is not None and admin.released_at - admin.held_at)


def test_four_runs_on_the_cpu_partition_with_wait_to_a_report(cluster_sweeps):
    code, out = cluster_sweeps['four']
    assert code == 0, out
    assert 'submitted 4 run(s) as SLURM job' in out
    report = cluster_sweeps['tmp'] / 'report' / 'report.html'
    assert f"report: {report}" in out.splitlines() and report.is_file()
    for name in ('baseline_s1', 'baseline_s2', 'gqa_s1', 'gqa_s2'):
        run = runs.read_run(cluster_sweeps['four_dir'] / name)
        assert run['status'] == 'completed' and run['summary']['iters'] == ITERS, name
        assert re.search(rf'^\S+ {name}: completed \(SLURM task \d+_\d\)$', out, re.M), name
    assert re.search(r'^4 runs: 4 completed$', out, re.M)  # the final table
    # a CPU partition: no GPU asked for; the cores and memory given
    script = next((cluster_sweeps['four_dir'] / 'submitit').rglob('*_submission.sh')).read_text().splitlines()
    assert not any('gpu' in line for line in script if line.startswith('#SBATCH')), script
    for line in ('#SBATCH --partition=cpu', '#SBATCH --cpus-per-task=1', '#SBATCH --mem=1G', '#SBATCH --time=30'):
        assert line in script, line
    # the same command again: nothing queued, nothing submitted, the report again
    code, stdout, stderr = cluster_sweeps['again']
    assert code == 0 and '0 command(s) to run, 4 runs' in stdout, stdout + stderr


def test_a_requeued_task_resumes_to_the_metrics_of_an_uninterrupted_run(cluster_sweeps):
    run = runs.read_run(cluster_sweeps['four_dir'] / 'baseline_s1')
    resumed = run['config']['resumed_at']
    assert len(resumed) == 1 and 0 < resumed[0] < ITERS, resumed  # stopped mid-run, continued from there
    log = (cluster_sweeps['four_dir'] / 'logs' / 'baseline_s1.log').read_text()
    assert 'stopped by SIGTERM' in log and log.count('=== ') == 2
    assert losses(cluster_sweeps['four_dir'] / 'baseline_s1') == losses(cluster_sweeps['tmp'] / 'reference')


def test_a_run_longer_than_its_time_limit_is_requeued_and_completes(cluster_sweeps):
    assert 'submitted 1 run(s) as SLURM job' in cluster_sweeps['submitted']
    code, out = cluster_sweeps['follow']
    assert code == 0, out
    assert re.search(r'baseline: (pending|running) on SLURM \(\d+\): left alone', out), out
    assert re.search(r'^\S+ baseline: completed \(SLURM task \d+\)$', out, re.M), out
    assert 'submitted' not in out  # the queued task was followed, never submitted again
    assert cluster_sweeps['held'], "never held: the run did not train"
    assert cluster_sweeps['held_s'] < WARNING_WAIT_S, "no warning: train.py never had its SIGTERM"
    run = runs.read_run(cluster_sweeps['deadline_dir'] / 'baseline')
    assert run['status'] == 'completed' and run['summary']['iters'] == DEADLINE_ITERS
    resumed = run['config']['resumed_at']
    assert resumed and STOP_AT <= resumed[0] < DEADLINE_ITERS, resumed  # saved where it was held, continued
    assert 'stopped by SIGTERM' in (cluster_sweeps['deadline_dir'] / 'logs' / 'baseline.log').read_text()
    job_log = '\n'.join(p.read_text() for p in (cluster_sweeps['deadline_dir'] / 'submitit').rglob('*_log.out'))
    # SLURM's warning before the limit, which submitit counts as a time-out (not a preemption), then a requeue
    assert 'Caught signal SIGUSR2' in job_log and 'this job is timed-out' in job_log, job_log
    assert 'DUE TO TIME LIMIT' not in job_log  # never killed by the limit itself


def test_a_bad_partition_is_one_line_and_records_nothing(cluster_sweeps):
    code, stdout, stderr = cluster_sweeps['bad']
    assert code == 1 and stdout.count('submitted') == 0, stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('sweep.py: error: sbatch refused the job array'), stderr
    assert 'invalid partition' in lines[0].lower()
    record = json.loads((cluster_sweeps['tmp'] / 'out' / 'bad' / 'sweep.json').read_text())
    assert 'slurm_tasks' not in record
