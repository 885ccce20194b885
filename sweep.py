"""
A whole experiment (variants x seeds x learning rates) in one command that can be stopped and rerun,
on this machine or on a SLURM cluster. Each run is its own train.py process, launched by submitit.

    python sweep.py config/sweeps/smoke.py                          # 4 tiny runs on a CPU, a few minutes
    python sweep.py config/sweeps/variants.py --max_iters=200       # --key=value: a train.py setting, every run
    python sweep.py config/sweeps/lr.py --dry_run                   # print the train.py commands, start nothing
    python sweep.py config/sweeps/variants.py --parallel 2          # 2 runs at once (default: one per GPU)
    python sweep.py config/sweeps/lr.py --launcher slurm --partition gpu --gpus_per_run 1 --time_min 120
    python sweep.py config/sweeps/lr.py --launcher slurm --partition cpu --cpus_per_run 4 --time_min 60 --wait

A sweep file is plain Python, like a train config:

    base = 'config/baseline.py'                 # the train config every run starts from
    grid = dict(model_name=['baseline', 'gqa'], seed=[1, 2, 3])    # any train.py setting may vary
    overrides = dict(max_iters=1000)            # optional: settings for every run
    name = 'variants'                           # optional: default the file's name
    tune = ['learning_rate']                    # optional: tuned per variant in the report (default:
                                                # learning_rate where it varies)
    ladder = [dict(n_layer=2, n_embd=64, n_head=2, max_iters=250),   # optional: model sizes, each crossed
              dict(n_layer=4, n_embd=128, n_head=4, max_iters=400)]  # with the grid (names: gqa_4x128_s2)

Runs go to <out_dir>/<name>/<run name> (out/variants/gqa_s2), named by the values that vary. There too:
sweep.json (the grid, the base settings, each run's train.py command), sweep.log (progress), logs/
(each run's console) and submitit/ (the launcher's own files). The same command again skips completed
runs (their files untouched), resumes interrupted or stale ones from their newest checkpoint, leaves
diverged ones alone (--retry_diverged starts them again from scratch) and adds new grid points. Ctrl-C
stops every running run cleanly (train.py saves a checkpoint) and the same command continues them.
At the end compare.py and eval_harness.py write comparisons/<name>/ (--no_report skips them).

On SLURM the command submits one job array and returns; the same command again reports where the runs
are, submits nothing that is still queued, and writes the report once all have ended. With --wait it
follows the array to the end itself. A task signalled before its time limit, or preempted, saves a
checkpoint, is requeued and resumes. README: "Running on a cluster".
"""
import argparse
import contextlib
import ctypes
import difflib
import fcntl
import glob
import io
import itertools
import json
import math
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

import cloudpickle
import submitit

import runs
from configurator import ConfigError, configure, load_settings, read_python_file
from tokenizer import DataError, canonical_config, parse_tokenizer

REPO = Path(__file__).resolve().parent
SWEEP_KEYS = ('base', 'grid', 'overrides', 'name', 'tune', 'ladder')
SET_BY_SWEEP = ('run_name', 'init_from', 'overwrite')  # the sweep names each run's folder and how it starts
RESOLVED_BY_TRAIN = dict(device='auto', dtype='auto', compile=None, eval_stories=0)  # config.json: what these became
NAME_PREFIX = dict(learning_rate='lr', seed='s')       # in run names; model_name appears as its value
OWN_FOLDERS = ('logs', 'submitit')                     # the sweep's own folders next to the runs
OPTIONS = ('launcher', 'parallel', 'gpus_per_run', 'cpus_per_run', 'mem_gb', 'partition', 'time_min', 'account',
           'wait', 'dry_run', 'no_report', 'retry_diverged', 'report_dir')
LOCAL_TIMEOUT_MIN = 60 * 24 * 365  # submitit's local jobs stop after timeout_min (default 2): not here
SLURM_SIGNAL_DELAY_S = 120  # SLURM's warning (USR2) comes this long before the time limit (at most half of it)
SLURM_MAX_REQUEUES = 100    # a long run in short time slots is requeued this often at most
POLL_S = 0.1                # how often the local launcher looks for a finished run
SLURM_POLL_S = 5            # how often --wait asks squeue
PR_SET_PDEATHSIG = 1        # prctl(2): a signal for this process when its parent dies


class SweepError(ValueError):
    """Bad input; the message is one line naming the file, key or run at fault."""


def fail(message):
    sys.exit(f"sweep.py: error: {message}")

# -----------------------------------------------------------------------------
# a run as a submitit job (standard library only: submitit ships this object to the job's python)


def _train_signals(prctl):
    """In the train.py process, before it starts: Ctrl-C as usual (the local launcher ignores it and
    passes it on itself), SLURM's early warning ignored (it is for submitit: see checkpoint), and a
    SIGTERM (train.py saves a checkpoint and stops) if the job process above it dies, even by kill -9."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_for_end(pid, timeout):
    """Until the child process pid has ended, at most timeout seconds. Not Popen.wait(timeout): this runs in
    a signal handler that interrupted __call__'s Popen.wait(), which holds the lock that Popen.wait(timeout)
    waits for, so it would always wait the whole timeout, however soon train.py had saved and ended."""
    try:
        pidfd = os.pidfd_open(pid)  # readable once the process has ended (Linux 5.3)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        try:
            select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        return
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return  # ended, and reaped here (Popen then reads exit status 0)
        except ChildProcessError:
            return  # reaped already
        time.sleep(0.05)


class TrainJob(submitit.helpers.Checkpointable):
    """One run: train.py from scratch, or from the run's newest checkpoint when it has one, so a job
    requeued after a time limit or a preemption continues. Returns train.py's exit code."""

    def __init__(self, name, run_dir, scratch, resume, log_dir, cwd, env, restart=False, launcher_pid=None,
                 checkpoint_wait_s=90):
        self.name, self.run_dir, self.scratch, self.resume = name, run_dir, scratch, resume
        self.log_dir, self.cwd, self.env = log_dir, cwd, env
        self.restart = restart  # from scratch even where checkpoints exist (--retry_diverged)
        # local: the sweep.py process; train.py runs in its own session (a terminal's Ctrl-C reaches it
        # through the launcher only) and stops when that process dies (kill -9 included): no orphans
        self.launcher_pid = launcher_pid
        self.checkpoint_wait_s = checkpoint_wait_s  # SLURM: within the warning before the time limit
        self.attempts = 0
        self.proc = None

    def command(self):
        has_checkpoint = glob.glob(os.path.join(self.run_dir, 'checkpoints', 'ckpt_[0-9]*.pt'))
        if has_checkpoint and not self.restart:
            return self.resume
        if os.path.isfile(os.path.join(self.run_dir, 'config.json')):
            return self.scratch + ['--overwrite=True']  # no checkpoint, or a diverged run started again
        return self.scratch

    def __call__(self):
        summary = os.path.join(self.run_dir, 'summary.json')
        if self.attempts and os.path.isfile(summary):
            with open(summary) as f:
                if json.load(f).get('status') == 'completed':
                    return 0  # requeued just as it finished
        cmd = self.command()
        self.attempts, self.restart = self.attempts + 1, False  # a requeue continues what this started
        launcher = None
        if self.launcher_pid is not None:
            try:  # a pidfd: readable once that process has ended, whatever ended it (pid reuse cannot fool it)
                launcher = os.pidfd_open(self.launcher_pid)
            except ProcessLookupError:
                return 1  # the sweep that started this job is gone: start nothing
        os.makedirs(self.log_dir, exist_ok=True)
        pid_path = os.path.join(self.log_dir, f'{self.name}.pid')
        with open(os.path.join(self.log_dir, f'{self.name}.log'), 'a') as log:
            log.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} {shlex.join(cmd)}\n")
            log.flush()
            prctl = ctypes.CDLL(None).prctl if sys.platform.startswith('linux') else None  # looked up before fork
            self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=dict(os.environ, **self.env), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=launcher is not None,
                                         preexec_fn=lambda: _train_signals(prctl))
            if launcher is not None:
                threading.Thread(target=self._stop_with_launcher, args=(launcher,), daemon=True).start()
            with open(pid_path + '.tmp', 'w') as f:  # the local launcher sends Ctrl-C to this pid
                f.write(f'{self.proc.pid}\n')
            os.replace(pid_path + '.tmp', pid_path)
            try:
                return self.proc.wait()
            finally:
                os.remove(pid_path)

    def _stop_with_launcher(self, pidfd):
        """Local: once sweep.py has ended (killed, even with kill -9), train.py saves a checkpoint and stops,
        so that nothing trains unwatched and the same command resumes it."""
        select.select([pidfd], [], [])
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on SLURM's warning before the time limit, or on a preemption: train.py
        saves a checkpoint and stops (SIGTERM; torchrun passes it on), then the job is requeued with
        this object, which resumes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            _wait_for_end(self.proc.pid, self.checkpoint_wait_s)  # else it resumes from its newest checkpoint
        return submitit.helpers.DelayedSubmission(self)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != 'proc'}

    def __setstate__(self, state):
        self.__dict__.update(state, proc=None)


if __name__ != '__main__':  # imported (tests): the job's python may not find sweep.py, so ship TrainJob whole
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

# -----------------------------------------------------------------------------
# the sweep file and the runs it asks for


def read_sweep(path):
    """The sweep file's settings, checked for shape (their keys and types are checked in plan_runs)."""
    if not os.path.isfile(path):
        raise SweepError(f"{path}: sweep file not found (expected a file like config/sweeps/variants.py)")
    try:
        scope = read_python_file(path, 'sweep')
    except ConfigError as e:
        raise SweepError(str(e)) from None
    for key in scope:
        if key not in SWEEP_KEYS:
            close = difflib.get_close_matches(key, SWEEP_KEYS, n=1)
            hint = f"did you mean {close[0]}?" if close else f"expected {', '.join(SWEEP_KEYS)}"
            raise SweepError(f"{path}: unknown sweep setting {key!r}; {hint}")
    base, grid, overrides = scope.get('base'), scope.get('grid'), scope.get('overrides', {})
    name = scope.get('name', Path(path).stem)
    if base is not None and not isinstance(base, str):
        raise SweepError(f"{path}: base={base!r}: expected a train config's path, like 'config/baseline.py'")
    if not isinstance(grid, dict) or not grid:
        raise SweepError(f"{path}: grid: expected a dict of settings to lists of values, e.g. "
                         f"grid = dict(model_name=['baseline', 'gqa'], seed=[1, 2])")
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise SweepError(f"{path}: grid {key}={values!r}: expected a non-empty list of values")
        for v in values:
            if v is not None and not isinstance(v, (bool, int, float, str)):
                raise SweepError(f"{path}: grid {key}: {v!r} is a {type(v).__name__}; expected int, float, "
                                 f"str, bool or None values")
    if not isinstance(overrides, dict):
        raise SweepError(f"{path}: overrides={overrides!r}: expected a dict, like dict(max_iters=500)")
    ladder = scope.get('ladder')
    if ladder is not None and (not isinstance(ladder, (list, tuple)) or not ladder
                               or not all(isinstance(size, dict) and size for size in ladder)):
        raise SweepError(f"{path}: ladder: expected a list of model sizes, each a dict of settings, e.g. "
                         f"[dict(n_layer=2, n_embd=64, n_head=2, max_iters=250), ...]")
    for size in ladder or []:
        for key, v in size.items():
            if not isinstance(v, (bool, int, float, str)):
                raise SweepError(f"{path}: ladder {size}: {key}={v!r}; expected int, float, str or bool values")
            if key in grid or key in overrides:
                where = 'grid' if key in grid else 'overrides'
                raise SweepError(f"{path}: {key} is set by the ladder and by {where}: keep one")
    if not isinstance(name, str) or not re.fullmatch(r'[\w.+=-]+', name) or name in ('.', '..'):
        raise SweepError(f"{path}: name={name!r}: expected a plain folder name")
    varying = [k for k, v in grid.items() if len(v) > 1]
    tune = scope.get('tune', ['learning_rate'] if 'learning_rate' in varying else [])
    if not isinstance(tune, (list, tuple)) or not all(isinstance(k, str) for k in tune):
        raise SweepError(f"{path}: tune={tune!r}: expected a list of setting names, e.g. ['learning_rate']")
    for key in tune:
        if key not in varying:
            raise SweepError(f"{path}: tune lists {key!r}, which the grid does not vary (varied: "
                             f"{', '.join(varying) or 'nothing'})")
    return dict(path=path, base=base, grid=grid, overrides=overrides, name=name, tune=list(tune),
                ladder=list(ladder or []))


def short_value(v):
    """A value as it appears in a run name: 3e-3 rather than 0.003, 1 rather than 1.0."""
    if not isinstance(v, float) or not math.isfinite(v):
        return str(v)
    plain = repr(v).removesuffix('.0')
    mantissa, exponent = f'{v:.12e}'.split('e')
    sci = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return sci if len(sci) <= len(plain) else plain


def run_name_of(point, varying, size=None):
    """gqa_lr3e-3_s2: model_name first, the seed last, each other varying setting as key+value; a ladder's
    size (its layers x width: 4x128) after model_name."""
    order = sorted(varying, key=lambda k: (k != 'model_name', k == 'seed'))
    parts = [str(point[k]) if k == 'model_name' else NAME_PREFIX.get(k, k) + short_value(point[k]) for k in order]
    if size is not None:
        tag = f"{size['n_layer']}x{size['n_embd']}" if 'n_layer' in size and 'n_embd' in size else None
        tag = tag or '_'.join(NAME_PREFIX.get(k, k) + short_value(v) for k, v in size.items())
        parts.insert(1 if 'model_name' in varying else 0, tag)
    return '_'.join(parts)


def flag(key, value):
    return f'--{key}={value}'  # str(): the text configurator parses back to the same value


def checked(settings, argv, where=None):
    """The settings after argv, through train.py's own configurator (its errors, its "did you mean")."""
    ns = dict(settings)
    try:
        configure(ns, argv)
    except ConfigError as e:
        raise SweepError(f"{where}: {e}" if where else str(e)) from None
    try:
        ns['tokenizer'] = parse_tokenizer(ns['tokenizer'])[0]  # its one shape, as train.py records it
    except DataError as e:
        raise SweepError(f"{where or '--tokenizer'}: {e}") from None
    return ns


def check_data(runs_to_start):
    """The prepared data every new run reads, checked once per folder before anything starts: a
    missing or damaged one is one line (with the prepare command), not a failed run per grid point."""
    from prepare import read_meta
    seen = set()
    for run in runs_to_start:
        s = run['settings']
        key = (s['data_dir'], s['dataset_variant'], s['tokenizer'])
        if key in seen:
            continue
        seen.add(key)
        try:
            read_meta(s['data_dir'], s['dataset_variant'], tokenizer=s['tokenizer'])
        except DataError as e:
            raise SweepError(f"{run['name']}: {e}") from None


def check_model(name, ns):
    """The run's model config, built as train.py builds it (GPTConfig checks its fields): a setting
    that cannot make a model (n_head=5 with n_embd=64) is one line naming the run, before anything starts."""
    from model import GPTConfig, make_config
    model_args = {f.name: ns[f.name] for f in fields(GPTConfig) if f.name not in ('model_name', 'vocab_size')}
    try:
        make_config(ns['model_name'], **model_args)  # vocab_size: the default; the data's is checked in check_data
    except ValueError as e:
        raise SweepError(f"{name}: {e}") from None


def plan_runs(spec, flags, settings, gpus_per_run):
    """Every run of the grid: name, grid values, resolved settings and train.py commands. Raises
    SweepError (one line) for any key or value train.py would refuse, and for run-name clashes."""
    path, grid, keys = spec['path'], spec['grid'], settings['__annotations__']
    override_flags = [flag(k, v) for k, v in spec['overrides'].items()]
    cli_keys = [f[2:].partition('=')[0] for f in flags]
    for where, given in ((f'{path}: overrides: ', spec['overrides']), (f'{path}: grid: ', grid),
                         ('--', cli_keys)):
        for key in given:
            if key in SET_BY_SWEEP:
                raise SweepError(f"{where}{key}: set by the sweep (a run's name comes from the grid)")
    if 'out_dir' in grid:
        raise SweepError(f"{path}: grid: out_dir cannot vary (a sweep's runs go to <out_dir>/{spec['name']}/)")
    base = spec['base']
    if base is not None and not os.path.isfile(base):
        if not (REPO / base).is_file():
            raise SweepError(f"{path}: base={base!r}: train config not found")
        base = os.path.relpath(REPO / base)
    base_argv = [base] if base else []
    checked(settings, override_flags, f'{path}: overrides')
    checked(settings, flags)
    for key in {k for size in spec['ladder'] for k in size}:
        if key in cli_keys or key in SET_BY_SWEEP:
            raise SweepError(f"{path}: ladder: {key} is set by the ladder and on the command line: keep one")
        for v in {size[key] for size in spec['ladder'] if key in size}:
            checked(settings, [flag(key, v)], f'{path}: ladder')
    for key in grid:
        if key in spec['overrides'] or key in cli_keys:
            raise SweepError(f"{key} is both varied by the grid of {path} and set for every run "
                             f"({'overrides' if key in spec['overrides'] else 'command line'}): keep one")
        for v in grid[key]:
            ns = checked(settings, [flag(key, v)], f'{path}: grid')
            if isinstance(v, str) != isinstance(ns[key], str) or ns[key] != v:
                raise SweepError(f"{path}: grid {key}={v!r} has the wrong type: expected "
                                 f"{getattr(keys[key], '__name__', keys[key])}")
    base_settings = checked(settings, base_argv + override_flags + flags)
    sweep_dir = Path(base_settings['out_dir']) / spec['name']
    varying = [k for k, v in grid.items() if len(v) > 1]
    train_py = os.path.relpath(REPO / 'train.py')
    python = [sys.executable, train_py]
    if gpus_per_run > 1:  # torchrun, as the same python
        python = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
                  f'--nproc_per_node={gpus_per_run}', train_py]
    passed = [f for f in override_flags + flags if not f.startswith('--out_dir=')]  # the sweep's out_dir wins
    planned, by_name = [], {}
    for size, values in itertools.product(spec['ladder'] or [None], itertools.product(*grid.values())):
        point = dict(size or {}, **dict(zip(grid, values)))  # a ladder's size, then the grid's values
        ns = checked(settings, base_argv + override_flags + flags + [flag(k, v) for k, v in point.items()])
        name = run_name_of(point, varying, size) if varying or size else ns['model_name']
        if name in by_name:
            raise SweepError(f"{path}: two grid points map to run name {name!r}: {by_name[name]} and {point} "
                             f"(a repeated value?)")
        if not re.fullmatch(r'[\w.+=-]+', name) or name in OWN_FOLDERS or name in ('.', '..'):
            raise SweepError(f"{path}: grid point {point} gives run name {name!r}: expected a plain folder "
                             f"name (not {' or '.join(OWN_FOLDERS)})")
        check_model(name, ns)
        if gpus_per_run > 1 and ns['gradient_accumulation_steps'] % gpus_per_run:
            raise SweepError(f"{name}: gradient_accumulation_steps={ns['gradient_accumulation_steps']} must be "
                             f"divisible by --gpus_per_run={gpus_per_run} (DDP splits it across the processes)")
        by_name[name] = point
        where = [flag('out_dir', sweep_dir), flag('run_name', name)]
        planned.append(dict(
            name=name, values=point, dir=sweep_dir / name, settings={k: ns[k] for k in keys},
            scratch=python + base_argv + passed + [flag(k, v) for k, v in point.items()] + where,
            resume=python + ['--init_from=resume'] + where))
    return sweep_dir, {k: base_settings[k] for k in keys}, planned

# -----------------------------------------------------------------------------
# what each run's folder holds, and so what this command does with it


def differing(wanted, stored, settings):
    """{key: (run's value, sweep's value)} for the settings in which a run folder's config.json is not
    what the sweep asks for now."""
    out = {}
    for key in settings['__annotations__']:
        want = wanted[key]
        if key in SET_BY_SWEEP or key == 'out_dir':
            continue
        unresolved = RESOLVED_BY_TRAIN.get(key, ...)
        if type(want) is type(unresolved) and want == unresolved:  # type: compile=False is no 0
            continue
        if key == 'lr_decay_iters' and want == 0:  # 0: the end train.py fixed when max_iters was raised
            continue  # (passing --lr_decay_iters=0 on resume would stretch the schedule mid-run)
        have = stored.get(key, settings[key])  # an older folder lacks newer settings: they had the default
        if have != want:
            out[key] = (have, want)
    return out


def examine(run, settings, retry_diverged):
    """(action, detail, extra resume flags) for one run: start, restart (from scratch: its folder holds
    no checkpoint, or it diverged and --retry_diverged), resume, extend (completed, max_iters raised),
    or leave it: completed, diverged, running. Settings that differ raise SweepError."""
    d = run['dir']
    # train.py's lock file alone: a start stopped before it wrote anything
    if not d.is_dir() or not any(n != runs.LOCK_FILE for _, _, names in os.walk(d) for n in names):
        return 'start', 'from scratch', []
    if not (d / 'config.json').is_file():
        raise SweepError(f"{d}: not a run folder (no config.json) and not empty: the sweep will not replace "
                         f"it; move it away")
    stored = canonical_config(runs.read_json(d / 'config.json'))  # older folders: the tokenizer in today's shape
    try:
        info = runs.read_run(d)
        status, summary = info['status'], info['summary']
    except runs.RunError:  # killed before its first metrics row
        status, summary = 'unknown', {}
    checkpoints = runs.list_checkpoints(d)
    diff = differing(run['settings'], stored, settings)
    fixed = {k: hw for k, hw in diff.items() if k not in settings['resume_may_change']}
    want_iters = run['settings']['max_iters']
    if status == 'completed' and 'max_iters' in diff and want_iters < diff['max_iters'][0]:
        fixed['max_iters'] = diff['max_iters']  # cannot be undone
    if fixed:
        raise SweepError(f"{d}: trained with other settings than the sweep asks for: " + ', '.join(
            f"{k} (run {h!r}, sweep {w!r})" for k, (h, w) in fixed.items())
            + "; move the folder away, or give the sweep another name or out_dir")
    changes = [flag(k, w) for k, (h, w) in diff.items()]  # what a resume may change: given to train.py
    newest = max(checkpoints) if checkpoints else None
    if newest is not None and want_iters < newest and status != 'completed':
        raise SweepError(f"{d}: max_iters={want_iters} but its newest checkpoint is at iteration {newest}")
    if status == 'completed':
        if want_iters > (summary.get('iters') or 0):
            if newest is None:
                raise SweepError(f"{d}: cannot train on to max_iters={want_iters}: the run has no checkpoint")
            return 'extend', f"resuming from iteration {newest} to max_iters={want_iters}", changes
        return 'completed', 'completed: skipped', []
    if status == 'diverged':
        if retry_diverged:
            return 'restart', 'from scratch (diverged; --retry_diverged)', []
        return 'diverged', 'diverged: left alone (--retry_diverged starts it again)', []
    if status == 'running':
        return 'running', f"running (pid {summary.get('pid')} on {summary.get('host')}): left alone", []
    if newest is None:
        return 'restart', f"from scratch ({status}, no checkpoint)", []
    return 'resume', f"resuming from iteration {newest} ({status})", changes


class QueueUnknown(SweepError):
    """squeue could not say what is queued: a submitted run may still be, so it is neither done nor free."""


def slurm_queued(tasks):
    """{run name: (task id, SLURM state)} of this sweep's SLURM tasks that squeue lists (pending, running,
    requeued...). Raises QueueUnknown when squeue fails: that is never read as "nothing queued"."""
    if not tasks:
        return {}
    if shutil.which('squeue') is None:
        raise QueueUnknown("squeue is not on PATH here")
    # all of this user's tasks, filtered here: squeue -j fails for ids SLURM has already forgotten
    try:
        out = subprocess.run(['squeue', '--me', '--noheader', '--array', '--format=%i %T'], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise QueueUnknown(f"squeue failed: {e}") from None
    if out.returncode != 0:
        raise QueueUnknown(f"squeue failed: {last_line(out.stderr) or f'exit status {out.returncode}'}")
    states = dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)
    return {name: (t, states[t]) for name, t in tasks.items() if t in states}

# -----------------------------------------------------------------------------
# progress: the status table


class Progress:
    """The runs' status table: redrawn in place on a terminal; always written as plain lines to
    sweep.log (each event, and the table every minute and at the end)."""

    def __init__(self, log_path, planned):
        self.tty = sys.stdout.isatty()
        self.log = open(log_path, 'a', encoding='utf-8')
        self.max_iters = {r['name']: r['settings']['max_iters'] for r in planned}
        self.rows = {r['name']: dict(status='queued', iter=None, val_loss=None, eta_s=None) for r in planned}
        self.drawn, self.last_draw, self.last_log = 0, 0.0, time.time()

    def read(self, name, run_dir, status=None, since=None):
        """Refresh one row from its run folder. `status` where the folder says nothing yet, or only what
        a previous attempt wrote (a summary.json older than `since`, when the launcher started this one)."""
        row = self.rows[name]
        try:
            info = runs.read_run(run_dir)
        except (runs.RunError, OSError):
            row['status'] = status or row['status']
            return row
        summary = Path(run_dir) / 'summary.json'
        current = since is None or (summary.is_file() and summary.stat().st_mtime >= since)
        row['status'] = info['status'] if info['summary'] and current else status or row['status']
        row['message'] = info['summary'].get('message') if current else None
        m = info['metrics']
        row['iter'] = int(m['iter'][-1]) if m['iter'] else None
        vals = [v for v in m['val_loss'] if not math.isnan(v)]
        row['val_loss'] = vals[-1] if vals else None
        elapsed = m['elapsed_s'][-1] if m['elapsed_s'] else math.nan
        row['eta_s'] = None
        if row['status'] == 'running' and row['iter'] and elapsed > 0:
            row['eta_s'] = (self.max_iters[name] - row['iter']) * elapsed / row['iter']
        return row

    def lines(self):
        width = max(len(n) for n in self.rows)
        out = [f"{'run':<{width}}  {'status':<11} {'iter':>13}  {'val loss':>8}  ETA"]
        for name, r in self.rows.items():
            it = '-' if r['iter'] is None else f"{r['iter']}/{self.max_iters[name]}"
            val = runs.format_value('val_loss', r['val_loss'])
            eta = runs.format_duration(r['eta_s']) if r['eta_s'] is not None else '-'
            out.append(f"{name:<{width}}  {r['status']:<11} {it:>13}  {val:>8}  {eta}")
        counts = {}
        for r in self.rows.values():
            counts[r['status']] = counts.get(r['status'], 0) + 1
        out.append(f"{len(self.rows)} runs: " + ', '.join(f"{n} {s}" for s, n in counts.items()))
        return out

    def _clear(self):
        if self.tty and self.drawn:
            sys.stdout.write(f'\x1b[{self.drawn}F\x1b[J')
            self.drawn = 0

    def event(self, text):
        line = f"{datetime.now().strftime('%H:%M:%S')} {text}"
        self.log.write(line + '\n')
        self.log.flush()
        self._clear()
        print(line, flush=True)
        self.last_draw = 0.0

    def show(self, final=False):
        now = time.time()
        if final or now - self.last_log >= 60:
            self.log.write('\n'.join(self.lines()) + '\n')
            self.log.flush()
            self.last_log = now
        if final and not self.tty:
            print('\n'.join(self.lines()), flush=True)
        if self.tty and (final or now - self.last_draw >= 1.0):
            self._clear()
            lines = self.lines()
            sys.stdout.write('\n'.join(lines) + '\n')
            sys.stdout.flush()
            self.drawn, self.last_draw = len(lines), now
        if final:
            self.drawn = 0

# -----------------------------------------------------------------------------
# launchers


def visible_gpus():
    """This machine's GPU indices, as CUDA numbers them (CUDA_VISIBLE_DEVICES if set, else nvidia-smi)."""
    env = os.environ.get('CUDA_VISIBLE_DEVICES')
    if env is not None:
        ids = [s.strip() for s in env.split(',') if s.strip()]
        ids = ids[:ids.index('-1')] if '-1' in ids else ids  # CUDA stops at the first invalid id
        if not all(s.isdigit() for s in ids):
            raise SweepError(f"CUDA_VISIBLE_DEVICES={env}: the local launcher needs GPU indices (not UUIDs)")
        return [int(s) for s in ids]
    if shutil.which('nvidia-smi') is None:
        return []
    try:
        out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return list(range(sum(line.startswith('GPU ') for line in out.splitlines())))


def signal_run(log_dir, name, signum):
    """Send a signal to a run's train.py (its pid file is there while it runs). True if sent."""
    try:
        pid = int((log_dir / f'{name}.pid').read_text())
        os.kill(pid, signum)
        return True
    except (OSError, ValueError):
        return False


def last_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1].strip() if lines else ''


def last_line_of(path):
    try:
        return last_line(Path(path).read_text(errors='replace'))
    except OSError:
        return ''


def run_local(jobs, sweep_dir, parallel, gpus, gpus_per_run, progress):
    """Run the jobs through submitit's LocalExecutor, at most `parallel` at once, each slot with its own
    GPUs (CUDA_VISIBLE_DEVICES). Ctrl-C: each running train.py gets one SIGINT per Ctrl-C (the first
    saves a checkpoint and stops it; a second stops it at once) and the launcher waits for them.
    Returns True if Ctrl-C stopped it."""
    executor = submitit.LocalExecutor(folder=sweep_dir / 'submitit')  # its controller takes a '%j' literally
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
    slots = [[gpus[(k * gpus_per_run + j) % len(gpus)] for j in range(gpus_per_run)] if gpus else []
             for k in range(parallel)]
    free, pending, active = list(range(parallel)), list(jobs), {}
    stops, sent, announced, refreshed = 0, {}, False, 0.0
    log_dir = sweep_dir / 'logs'

    def on_sigint(signum, frame):
        nonlocal stops
        stops += 1

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        while (pending and not stops) or active:
            while pending and free and not stops:
                name, job, detail = pending.pop(0)
                slot = free.pop(0)
                executor.update_parameters(gpus_per_node=len(slots[slot]), visible_gpus=slots[slot])
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the job's processes, not train.py
                try:
                    (log_dir / f'{name}.pid').unlink(missing_ok=True)  # a killed job's: never signal it
                    active[name] = (executor.submit(job), slot, time.time())
                finally:
                    signal.signal(signal.SIGINT, on_sigint)
                progress.rows[name]['status'] = 'starting'
                progress.event(f"started {name}: {detail}" + (f" (GPU {','.join(map(str, slots[slot]))})"
                                                              if slots[slot] else ''))
            for name in active:
                if sent.get(name, 0) < stops and signal_run(log_dir, name, signal.SIGINT):
                    sent[name] = sent.get(name, 0) + 1
            for name, (job, slot, since) in list(active.items()):
                if not job.done():
                    continue
                del active[name]
                free.append(slot)
                row = progress.read(name, sweep_dir / name, 'interrupted' if stops else 'failed', since)
                message = row.get('message')
                if row['status'] != 'completed':
                    message = message or last_line_of(log_dir / f'{name}.log') or last_line_of(job.paths.stderr)
                progress.event(f"{name}: {row['status']}" + (f" ({message})" if message else '')
                               + (f"; console in {log_dir / name}.log" if row['status'] == 'failed' else ''))
            if stops and not announced:
                announced = True
                progress.event(f"Ctrl-C: stopping {len(active)} running run(s) (each saves a checkpoint); "
                               f"Ctrl-C again stops them at once")
            if time.time() - refreshed >= 1.0:
                for name, (_, _, since) in active.items():
                    progress.read(name, sweep_dir / name, 'starting', since)
                progress.show()
                refreshed = time.time()
            time.sleep(POLL_S)
    finally:
        signal.signal(signal.SIGINT, previous)
    return bool(stops)


def follow_slurm(tasks, sweep_dir, progress):
    """--wait: the status table from squeue and the run folders, refreshed until squeue lists none of the
    tasks ({run name: task id}); a failing squeue is waited out, never read as "all ended". Returns True if
    Ctrl-C stopped the following (the tasks go on)."""
    ended, problem = set(), None
    try:
        while len(ended) < len(tasks):
            try:
                listed = slurm_queued(tasks)
            except QueueUnknown as e:
                if str(e) != problem:
                    progress.event(f"{e}: waiting for it to answer")
                problem = str(e)
                listed = None
            for name, task in tasks.items():
                if listed is None or name in ended:
                    continue
                if name in listed:
                    row = progress.read(name, sweep_dir / name, 'starting')
                    if listed[name][1] == 'PENDING':  # not yet started, or requeued and waiting to go on
                        row['status'] = 'queued' if row['iter'] is None else 'requeued'
                    elif row['status'] in ('interrupted', 'failed', 'stale'):  # what the last attempt left
                        row['status'] = 'starting'
                    continue
                ended.add(name)
                row = progress.read(name, sweep_dir / name, 'failed')
                message = row.get('message')
                if row['status'] != 'completed':
                    message = message or last_line_of(sweep_dir / 'logs' / f'{name}.log') or last_line_of(
                        sweep_dir / 'submitit' / task / f'{task}_0_log.out')
                progress.event(f"{name}: {row['status']} (SLURM task {task})" + (f" ({message})" if message else ''))
            progress.show()
            if len(ended) < len(tasks):
                time.sleep(SLURM_POLL_S)
    except KeyboardInterrupt:
        progress.event("Ctrl-C: stopped following; the SLURM tasks go on: the same command (with --wait) "
                       "follows them again")
        return True
    return False


def run_slurm(jobs, sweep_dir, name, args):
    """Submit the jobs as one SLURM job array through submitit; returns {run name: array task id}.
    Each task runs train.py (under torchrun for more than one GPU); at SLURM's warning before the time
    limit, or on a preemption, it saves a checkpoint and is requeued, and resumes."""
    executor = submitit.SlurmExecutor(folder=sweep_dir / 'submitit' / '%j', max_num_timeout=SLURM_MAX_REQUEUES)
    executor.update_parameters(**slurm_parameters(args, name, len(jobs)))
    submitted = []
    try:  # submitit prints a refused sbatch's whole stderr: the one line below says it
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            for _, job, _ in jobs:
                submitted.append(executor.submit(job))
    except (OSError, subprocess.SubprocessError, submitit.core.utils.FailedJobError,
            submitit.core.utils.FailedSubmissionError) as e:
        raise SweepError(f"sbatch refused the job array, nothing was submitted: {sbatch_error(e)}") from None
    return {run_name: j.job_id for (run_name, _, _), j in zip(jobs, submitted)}


def slurm_parameters(args, name, n_jobs):
    """submitit's SlurmExecutor parameters: one node, one task, the GPUs, CPUs and memory asked for (no GPU
    request at all for 0: a CPU partition refuses any), and the warning before the time limit."""
    params = dict(job_name=f'sweep_{name}', partition=args.partition, time=args.time_min, nodes=1,
                  ntasks_per_node=1, signal_delay_s=signal_delay_s(args.time_min),
                  array_parallelism=args.parallel or n_jobs, stderr_to_stdout=True,
                  additional_parameters=dict(requeue=True))
    mem = None
    if args.mem_gb is not None:  # SLURM's units: whole G, else M
        mem = f"{int(args.mem_gb)}G" if args.mem_gb == int(args.mem_gb) else f"{math.ceil(args.mem_gb * 1024)}M"
    for key, value in (('gpus_per_node', args.gpus_per_run or None), ('cpus_per_task', args.cpus_per_run),
                       ('mem', mem), ('account', args.account)):
        if value is not None:
            params[key] = value
    return params


def signal_delay_s(time_min):
    """Seconds before the time limit that SLURM warns a task: SLURM_SIGNAL_DELAY_S, at most half the limit.
    slurmctld looks every 30 s, so the warning comes up to 30 s earlier still, never later."""
    return min(SLURM_SIGNAL_DELAY_S, time_min * 60 // 2)


def sbatch_error(e):
    """The line of a failed sbatch that says why (its first error line), from any of submitit's errors."""
    text = getattr(e, 'stderr', None) or getattr(e, 'output', None) or str(e)
    text = text.decode(errors='replace') if isinstance(text, bytes) else str(text)
    errors = [l.strip() for l in text.splitlines() if 'error' in l.lower()]
    return (errors[0] if errors else last_line(text)) or type(e).__name__


def make_report(sweep_dir, names, tune, report_dir):
    """compare.py (with the tuned table where a setting is tuned), then eval_harness.py, on the runs."""
    others = {p.name for p in runs.find_runs(sweep_dir)} - set(names)
    select = ['--runs', *names] if others else []  # folders of an older, larger grid stay out
    compare = [sys.executable, os.path.relpath(REPO / 'compare.py'), str(sweep_dir), '--report_dir',
               str(report_dir), *select] + (['--tune', *tune] if tune else [])
    harness = [sys.executable, os.path.relpath(REPO / 'eval_harness.py'), '--runs_dir', str(sweep_dir),
               '--report_dir', str(report_dir / 'eval_harness'), *select]
    for cmd in (compare, harness):
        print(f"$ {shlex.join(cmd)}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise SweepError(f"{os.path.basename(cmd[1])} failed (above); the runs are complete: rerun the "
                             f"command shown, or this sweep, to try the report again")
    print(f"report: {report_dir / 'report.html'}")

# -----------------------------------------------------------------------------
# the command


def parse_args(argv):
    ap = argparse.ArgumentParser(prog='sweep.py', allow_abbrev=False, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Any other --key=value is a train.py setting for every run "
                                        "(python train.py --help lists them).")
    ap.add_argument('sweep_file', help='a sweep file, e.g. config/sweeps/variants.py')
    ap.add_argument('--launcher', choices=('local', 'slurm'), default='local',
                    help='where the runs go (default: local)')
    ap.add_argument('--parallel', type=int, default=None,
                    help='runs at once (local default: one per visible GPU, 1 without; slurm: array tasks)')
    ap.add_argument('--gpus_per_run', type=int, default=None,
                    help='GPUs per run; 0: none (CPU); more than 1 trains under torchrun (DDP). Default: 1 where '
                         'there are GPUs (this machine, or the SLURM partition), else 0')
    ap.add_argument('--cpus_per_run', type=int, default=None,
                    help="CPU cores per run: SLURM's cpus-per-task, and the run's OMP_NUM_THREADS (default: "
                         "SLURM's default; local: the cores shared among parallel runs)")
    ap.add_argument('--mem_gb', type=float, default=None,
                    help="memory per run in GB (SLURM's --mem; default: the partition's)")
    ap.add_argument('--partition', help='SLURM partition (--launcher slurm)')
    ap.add_argument('--time_min', type=int,
                    help='SLURM time limit per job in minutes; a longer run is requeued and resumes (slurm)')
    ap.add_argument('--account', help='SLURM account to charge (--launcher slurm)')
    ap.add_argument('--wait', action='store_true',
                    help='slurm: follow the job array until every run has ended, then write the report (exit '
                         'status 0 only if no run failed); without it the command returns once submitted. '
                         'The local launcher always waits')
    ap.add_argument('--dry_run', action='store_true',
                    help='print the train.py commands and their count; start nothing')
    ap.add_argument('--no_report', action='store_true', help='skip compare.py and eval_harness.py at the end')
    ap.add_argument('--retry_diverged', action='store_true', help='start diverged runs again from scratch')
    ap.add_argument('--report_dir', help='where the report goes (default: comparisons/<sweep name>)')

    def error(message):
        raise SweepError(message)

    ap.error = error
    args, extra = ap.parse_known_args(argv)
    flags = []
    for arg in extra:
        key, sep, _ = arg[2:].partition('=')
        if not arg.startswith('--') or not sep:
            close = difflib.get_close_matches(key, OPTIONS, n=1) if arg.startswith('--') else []
            hint = f"did you mean --{close[0]}?" if close else "train.py settings are given as --key=value"
            raise SweepError(f"{arg}: unknown argument; {hint}")
        flags.append(arg)
    if args.parallel is not None and args.parallel < 1:
        raise SweepError(f"--parallel={args.parallel}: expected at least 1")
    for opt, least in (('gpus_per_run', 0), ('cpus_per_run', 1), ('mem_gb', 0.001)):
        value = getattr(args, opt)
        if value is not None and not value >= least:
            raise SweepError(f"--{opt}={value}: expected at least {least:g}")
    if args.launcher == 'local' and args.mem_gb is not None:
        raise SweepError("--mem_gb is for --launcher slurm (the local launcher does not limit memory)")
    if args.launcher == 'slurm':
        missing = [opt for opt in ('partition', 'time_min') if getattr(args, opt) is None]
        if missing:
            raise SweepError(f"--launcher slurm needs {' and '.join('--' + m for m in missing)}")
        if args.time_min < 1:
            raise SweepError(f"--time_min={args.time_min}: expected at least 1 minute")
        if not args.dry_run and not (shutil.which('sbatch') and shutil.which('srun')):
            raise SweepError("--launcher slurm: sbatch and srun not found on PATH (run on a SLURM login node)")
    return args, flags


def unknown_flag_hint(flags, settings):
    """A flag that is no train.py setting but looks like one of sweep.py's own options."""
    for f in flags:
        key = f[2:].partition('=')[0]
        if key not in settings['__annotations__']:
            close = difflib.get_close_matches(key, OPTIONS, n=1, cutoff=0.8)
            if close:
                raise SweepError(f"--{key}: unknown option; did you mean --{close[0]}?")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return sweep(argv)
    except (SweepError, runs.RunError) as e:
        fail(e)
    except OSError as e:  # an out_dir that cannot be written, a full disk
        fail(f"{e.filename}: {e.strerror}" if e.filename else e)
    except KeyboardInterrupt:  # before any run started (run_local handles Ctrl-C itself)
        return 130


def sweep(argv):
    args, flags = parse_args(argv)
    spec = read_sweep(args.sweep_file)
    settings = load_settings(REPO / 'train.py')
    unknown_flag_hint(flags, settings)
    if args.gpus_per_run is None:
        args.gpus_per_run = default_gpus_per_run(args)
    sweep_dir, base_settings, planned = plan_runs(spec, flags, settings, args.gpus_per_run)
    record_path = sweep_dir / 'sweep.json'
    todo = decide(planned, read_record(record_path), settings, args.retry_diverged)

    if args.dry_run:
        print(f"# {launch_settings(args, len(todo))}")
        for run in planned:
            cmd = run['resume'] + run['changes'] if run['action'] in ('resume', 'extend') else run['scratch']
            if run['action'] == 'restart':
                cmd = cmd + ['--overwrite=True']
            print(f"# {run['name']}: {run['detail']}")
            if run in todo:
                print(shlex.join(cmd))
        counts = {}
        for run in planned:
            counts[run['action']] = counts.get(run['action'], 0) + 1
        print(f"{len(todo)} command(s) to run, {len(planned)} runs in {sweep_dir}: "
              + ', '.join(f"{n} {a}" for a, n in counts.items()))
        return 0

    check_data(r for r in todo if r['action'] in ('start', 'restart'))
    gpus = visible_gpus() if args.launcher == 'local' else []
    if args.launcher == 'local' and args.gpus_per_run > len(gpus):
        raise SweepError(f"--gpus_per_run={args.gpus_per_run}: this machine has {len(gpus)} visible GPU(s)")
    parallel = args.parallel or max(1, len(gpus) // max(1, args.gpus_per_run))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / 'sweep.lock', 'w') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when this process ends, however
        except BlockingIOError:
            raise SweepError(f"{sweep_dir}: another sweep.py is running this sweep (sweep.lock)") from None
        # again under the lock: what another sweep.py submitted or ran since is never started twice
        record = read_record(record_path)
        todo = decide(planned, record, settings, args.retry_diverged)
        record.update(name=spec['name'], sweep_file=spec['path'], base=spec['base'], grid=spec['grid'],
                      overrides=spec['overrides'], flags=flags, tune=spec['tune'], base_settings=base_settings,
                      runs=[dict(name=r['name'], values=r['values'], command=shlex.join(r['scratch']),
                                 resume_command=shlex.join(r['resume'])) for r in planned],
                      updated_at=datetime.now(timezone.utc).isoformat(timespec='seconds'))
        runs.atomic_write_json(record_path, record)
        progress = Progress(sweep_dir / 'sweep.log', planned)
        try:
            return launch(args, spec, sweep_dir, planned, todo, record, gpus, parallel, progress)
        finally:
            progress.log.close()


def read_record(path):
    return runs.read_json(path) if path.is_file() else {}


def decide(planned, record, settings, retry_diverged):
    """Sets each run's action, detail and extra resume flags (examine), after asking squeue about the runs
    this sweep submitted to SLURM: one still queued or running there is left alone, and so is one that
    squeue cannot account for (it fails). Returns the runs to start; raises SweepError for the first run
    that cannot go on (and counts the others)."""
    tasks = record.get('slurm_tasks', {})
    try:
        queued, unknown = slurm_queued(tasks), None
    except QueueUnknown as e:
        queued, unknown = {}, str(e)
    problems = []
    for run in planned:
        run['changes'] = []
        if run['name'] in queued:
            task, state = queued[run['name']]
            run['action'], run['detail'] = 'queued', f"{state.lower()} on SLURM ({task}): left alone"
            continue
        try:
            run['action'], run['detail'], run['changes'] = examine(run, settings, retry_diverged)
        except SweepError as e:
            problems.append(str(e))
            continue
        if unknown and run['name'] in tasks and run['action'] not in ('completed', 'diverged'):
            run['action'], run['changes'] = 'unknown', []
            run['detail'] = (f"submitted as SLURM task {tasks[run['name']]}, and {unknown}: it may still be "
                             f"queued, so it is left alone; run this command again once squeue works")
    if problems:
        raise SweepError(problems[0] + (f" (and {len(problems) - 1} more run(s))" if len(problems) > 1 else ''))
    return [r for r in planned if r['action'] in ('start', 'restart', 'resume', 'extend')]


def default_gpus_per_run(args):
    """1 where there are GPUs (this machine's, or the SLURM partition's GRES), else 0."""
    if args.launcher == 'local':
        return 1 if visible_gpus() else 0
    if shutil.which('sinfo') is None:
        if not args.dry_run:
            raise SweepError("--launcher slurm: sinfo not found on PATH to tell whether partition "
                             f"{args.partition} has GPUs: pass --gpus_per_run")
        return 0
    try:
        out = subprocess.run(['sinfo', '--noheader', f'--partition={args.partition}', '--format=%G'],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise SweepError(f"sinfo failed ({e}): pass --gpus_per_run") from None
    if out.returncode != 0:
        raise SweepError(f"sinfo failed ({last_line(out.stderr) or out.returncode}): pass --gpus_per_run")
    return 1 if 'gpu' in out.stdout else 0


def launch_settings(args, n_todo):
    """What each run is given, in words (the dry run's first line)."""
    if args.launcher == 'local':
        cpus = f", {args.cpus_per_run} CPU cores" if args.cpus_per_run else ''
        return f"local: {args.parallel or 'one per GPU, or 1'} at once, {args.gpus_per_run} GPU(s){cpus} per run"
    cpus = args.cpus_per_run or "the partition's default"
    mem = f"{args.mem_gb:g} GB" if args.mem_gb else "the partition's default"
    return (f"slurm: partition {args.partition}, {n_todo} task(s), {args.parallel or 'all'} at once, "
            f"{args.time_min} min each (warned {signal_delay_s(args.time_min)} s before, then requeued), "
            f"per run: {args.gpus_per_run} GPU(s), CPU cores {cpus}, memory {mem}"
            + (f", account {args.account}" if args.account else ''))


def launch(args, spec, sweep_dir, planned, todo, record, gpus, parallel, progress):
    """Start the runs to do, follow them to the end, then the report. Returns the exit code."""
    names = [r['name'] for r in planned]
    local, on_cpu = args.launcher == 'local', args.gpus_per_run == 0
    env = {'PYTHONUNBUFFERED': '1'}
    if args.cpus_per_run:
        env['OMP_NUM_THREADS'] = str(args.cpus_per_run)
    elif local and on_cpu and parallel > 1 and 'OMP_NUM_THREADS' not in os.environ:
        env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // parallel))  # runs share the cores
    if on_cpu and sys.platform.startswith('linux'):
        # glibc would unmap and refault the logits every step: CPU steps twice as slow (BENCHMARKS.md)
        for key, value in (('MALLOC_MMAP_THRESHOLD_', '4000000000'), ('MALLOC_TRIM_THRESHOLD_', '8000000000')):
            env[key] = os.environ.get(key, value)
    wait_s = signal_delay_s(args.time_min) * 3 // 4 if args.time_min else 90  # train.py's time to save, at most
    jobs = [(r['name'], TrainJob(r['name'], str(r['dir']), r['scratch'], r['resume'] + r['changes'],
                                 str(sweep_dir / 'logs'), os.getcwd(), env, restart=r['action'] == 'restart',
                                 launcher_pid=os.getpid() if local else None, checkpoint_wait_s=wait_s),
             r['detail']) for r in todo]
    for run in planned:
        progress.read(run['name'], run['dir'], status='queued' if run in todo else run['action'])
        if run['action'] == 'unknown':
            progress.rows[run['name']]['status'] = 'unknown'
    left = [r for r in planned if r not in todo and r['action'] != 'completed']
    progress.event(f"sweep {spec['name']}: {len(planned)} runs in {sweep_dir}, {len(todo)} to run"
                   + (f" ({parallel} at once)" if args.launcher == 'local' and todo else '')
                   + ''.join(f"; {r['name']}: {r['detail']}" for r in left))
    if local:
        if run_local(jobs, sweep_dir, parallel, gpus, args.gpus_per_run, progress):
            progress.show(final=True)
            progress.event("stopped: the same command continues the interrupted runs from their checkpoints")
            return 130
    else:
        if todo:
            tasks = run_slurm(jobs, sweep_dir, spec['name'], args)
            record['slurm_tasks'] = dict(record.get('slurm_tasks', {}), **tasks)
            runs.atomic_write_json(sweep_dir / 'sweep.json', record)
            job_id = next(iter(tasks.values())).split('_')[0]
            progress.event(f"submitted {len(tasks)} run(s) as SLURM job {job_id} (logs in {sweep_dir / 'submitit'})"
                           + ('' if args.wait else "; run this command again to see where they are and, once all "
                                                   "are complete, to write the report"))
            if not args.wait:
                return 0
        follow = {r['name']: record['slurm_tasks'][r['name']] for r in planned if r in todo or r['action'] == 'queued'}
        if args.wait and follow and follow_slurm(follow, sweep_dir, progress):
            return 130
    for run in planned:
        if run not in todo and run['action'] != 'unknown':
            progress.read(run['name'], run['dir'], status=run['action'])
    progress.show(final=True)
    statuses = [progress.rows[n]['status'] for n in names]
    unknown = [n for n, s in zip(names, statuses) if s == 'unknown']
    if unknown:
        progress.event(f"{len(unknown)} run(s) submitted earlier cannot be accounted for ({unknown[0]}: "
                       f"{next(r['detail'] for r in planned if r['name'] == unknown[0])}); no report yet")
        return 1
    busy = [n for n, s in zip(names, statuses) if s in ('running', 'queued', 'starting', 'requeued')]
    if busy:
        progress.event(f"{len(busy)} run(s) still running or queued elsewhere: no report yet; run this command "
                       f"again once they are complete")
        return 0
    if not args.no_report and 'completed' in statuses:
        make_report(sweep_dir, [n for n, s in zip(names, statuses) if s in ('completed', 'diverged')],
                    spec['tune'], Path(args.report_dir or Path('comparisons') / spec['name']))
    failed = [n for n, s in zip(names, statuses) if s not in ('completed', 'diverged')]
    if failed:
        progress.event(f"{len(failed)} run(s) did not complete: {', '.join(failed)} (console in "
                       f"{sweep_dir / 'logs'}/); the same command tries them again")
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
