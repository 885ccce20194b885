"""sweep.py on a real SLURM cluster (single node, CPU partition: .ci/slurm_start.sh): a 4-run tiny bpe4k sweep
followed with --wait to its report, one of its tasks requeued mid-run (`scontrol requeue`, as a preemption)
ending with the metrics of an uninterrupted run, a run longer than its --time_min warned, checkpointed,
requeued and completed, and a bad partition as one line. One shared scenario keeps this under 4 minutes.

Where no cluster is up, the tests start one as root (.ci/slurm_start.sh); without root they skip with the
command that enables them, except in CI (CI=true), where they fail."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import runs
from conftest import CPU_MALLOC_ENV, REPO, run_script

START = REPO / '.ci' / 'slurm_start.sh'
# a model that trains a few hundred iterations in seconds on one core
TINY = ['--n_layer=1', '--n_embd=32', '--n_head=4', '--block_size=32', '--batch_size=4', '--eval_windows=8',
        '--warmup_iters=5', '--tensorboard=False']
ITERS = 300  # each run of the 4-run sweep
COMPARED = ('iter', 'train_loss', 'val_loss', 'val_bpb')  # what an interrupted run must reproduce exactly
# the time-limited run: 2 minutes, so SLURM warns it 60-90 s before the limit (sweep.signal_delay_s; slurmctld
# looks every 30 s), i.e. 30-60 s in: after train.py has started, however loaded the machine; its training
# takes longer than that, so it is always warned at least once
TIME_LIMIT_MIN = 2
JOB_NAMES = ('sweep_deadline', 'sweep_four')  # sweep.py names a sweep's jobs sweep_<name>
TIME_LIMIT_WORK_S = 75


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
    out = subprocess.run(['squeue', '--me', '--noheader', '--array', '--format=' + '|'.join(fields)],
                         capture_output=True, text=True, check=True)
    return [line.split('|') for line in out.stdout.splitlines()]


def release_requeued(names, stop):
    """SLURM holds a requeued job for 120 s before it may start again (its BeginTime); a cluster admin's
    `scontrol update StartTime=now` lets this test's tasks go at once."""
    while not stop.is_set():
        for task, name, state, reason in squeue('%i', '%j', '%T', '%r'):
            if name in names and state == 'PENDING' and reason == 'BeginTime':
                subprocess.run(['scontrol', 'update', f'jobid={task}', 'StartTime=now'], capture_output=True)
        stop.wait(1)


def losses(run_dir):
    with open(Path(run_dir) / 'metrics.csv') as f:
        return [{k: row[k] for k in COMPARED} for row in csv.DictReader(f)]


@pytest.fixture(scope='module')
def cluster_sweeps(bpe_data, tmp_path_factory):
    """A time-limited 1-run sweep submitted first; then, beside it, the 4-run sweep with --wait as a user
    runs it (its own process), whose baseline_s1 is requeued once it trains; then the first sweep's command
    again with --wait, which follows its task to the end."""
    require_cluster()
    tmp = tmp_path_factory.mktemp('slurm')
    common = [f'--data_dir={bpe_data}', f'--out_dir={tmp / "out"}', *TINY, '--launcher', 'slurm',
              '--partition', 'cpu', '--cpus_per_run', '1', '--mem_gb', '1']
    env = dict(os.environ, **CPU_MALLOC_ENV, OMP_NUM_THREADS='1')
    # the uninterrupted run that the requeued one must match, and the speed of this machine now
    reference = run_script('train.py', 'config/tiny_bpe4k.py', f'--data_dir={bpe_data}', f'--out_dir={tmp}',
                           '--run_name=reference', *TINY, f'--max_iters={ITERS}', '--eval_interval=100',
                           '--log_interval=10', '--checkpoint_interval=100', '--seed=1', env=env, check=True)
    with open(tmp / 'reference' / 'metrics.csv') as f:
        ms = min(float(r['ms_per_iter']) for r in csv.DictReader(f) if r['ms_per_iter'])
    long_iters = max(1000, round(TIME_LIMIT_WORK_S * 1000 / ms / 100) * 100)

    stop, procs = threading.Event(), []
    releaser = threading.Thread(target=release_requeued, args=(JOB_NAMES, stop), daemon=True)
    releaser.start()
    try:
        deadline_argv = [str(write_sweep(tmp, 'deadline', dict(seed=[1]))), *common, f'--max_iters={long_iters}',
                         f'--eval_interval={long_iters // 4}', f'--log_interval={long_iters // 20}',
                         f'--checkpoint_interval={long_iters // 4}', '--time_min', str(TIME_LIMIT_MIN), '--no_report']
        submitted = run_script('sweep.py', *deadline_argv, env=env, check=True)
        follow = subprocess.Popen([sys.executable, 'sweep.py', *deadline_argv, '--wait'], cwd=REPO, env=env,
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(follow)

        four_argv = [str(write_sweep(tmp, 'four', dict(model_name=['baseline', 'gqa'], seed=[1, 2]))), *common,
                     f'--max_iters={ITERS}', '--eval_interval=100', '--log_interval=10', '--checkpoint_interval=100',
                     '--time_min', '30', '--wait', '--report_dir', str(tmp / 'report')]
        proc = subprocess.Popen([sys.executable, 'sweep.py', *four_argv], cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(proc)
        four_dir = tmp / 'out' / 'four'
        metrics, started = four_dir / 'baseline_s1' / 'metrics.csv', time.time()
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) > 3):  # 20 iterations in
            assert proc.poll() is None and time.time() - started < 600, proc.communicate()[0]
            time.sleep(0.05)
        task = json.loads((four_dir / 'sweep.json').read_text())['slurm_tasks']['baseline_s1']
        subprocess.run(['scontrol', 'requeue', task], check=True)
        four_out = proc.communicate(timeout=900)[0]
        follow_out = follow.communicate(timeout=900)[0]
    finally:
        stop.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
        for name in JOB_NAMES:  # nothing of a failed test left on the cluster
            subprocess.run(['scancel', '--me', f'--name={name}'], capture_output=True)
    return dict(tmp=tmp, common=common, env=env, submitted=submitted.stdout, four=(proc.returncode, four_out),
                four_dir=four_dir, four_argv=four_argv, follow=(follow.returncode, follow_out),
                deadline_dir=tmp / 'out' / 'deadline', long_iters=long_iters)


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
    again = run_script('sweep.py', *cluster_sweeps['four_argv'], '--dry_run', env=cluster_sweeps['env'])
    assert again.returncode == 0 and '0 command(s) to run, 4 runs' in again.stdout, again.stdout + again.stderr


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
    run = runs.read_run(cluster_sweeps['deadline_dir'] / 'baseline')
    assert run['status'] == 'completed' and run['summary']['iters'] == cluster_sweeps['long_iters']
    assert run['config']['resumed_at'], "never requeued: the run ended within its time limit"
    job_log = '\n'.join(p.read_text() for p in (cluster_sweeps['deadline_dir'] / 'submitit').rglob('*_log.out'))
    assert 'Caught signal SIGUSR2' in job_log  # SLURM's warning before the limit, then a requeue
    assert 'DUE TO TIME LIMIT' not in job_log  # never killed by the limit itself


def test_a_bad_partition_is_one_line_and_records_nothing(cluster_sweeps):
    tmp = cluster_sweeps['tmp']
    bad = run_script('sweep.py', str(write_sweep(tmp, 'bad', dict(seed=[1, 2]))), *cluster_sweeps['common'],
                     '--partition', 'nowhere', '--time_min', '5', env=cluster_sweeps['env'])
    assert bad.returncode == 1 and bad.stdout.count('submitted') == 0, bad.stdout
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('sweep.py: error: sbatch refused the job array'), bad.stderr
    assert 'invalid partition' in lines[0].lower()
    record = json.loads((tmp / 'out' / 'bad' / 'sweep.json').read_text())
    assert 'slurm_tasks' not in record
