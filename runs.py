"""
Run folders: the one owner of what train.py leaves in out/<run_name>/. It declares the metrics,
writes them (RunWriter), writes every file atomically, locks a folder to one process (RunLock),
saves and loads checkpoints (save_checkpoint, load_checkpoint), reads runs back for compare.py,
eval_harness.py, sample.py and sweep.py, groups them into seed groups and loads a run's model with
its own tokenizer. Nothing else parses a run folder.

A run folder holds:
    config.json        every resolved setting, model_args, tokenizer (its name) and tokenizer_info, torch
                       version, device, git commit
    metrics.csv        one row per logged step, the columns of METRICS; val_* only on eval steps
    layer_norms.csv    iter, layer, grad_norm, weight_norm: the embeddings, each block, the final norm
    summary.json       status, final/best val loss, totals, host/pid/heartbeat while it runs
    tokenizer-<sha>.json  the run's tokenizer file, when it is not GPT-2's (tokenizer.load_tokenizer;
                       tokenizer.json in older runs)
    tb/                TensorBoard event files with the same scalars
    plots/             loss.png, lr.png, norms.png, layer_norms.png
    checkpoints/       ckpt_<iter>.pt and ckpt_best.pt (lowest val loss), save_checkpoint's format
    train.lock         RunLock: held by the one train.py writing the folder; names it
"""
import csv
import fnmatch
import json
import math
import os
import re
import socket
import sys
import tempfile
import time
from collections import namedtuple
from datetime import datetime, timezone
from pathlib import Path

# -----------------------------------------------------------------------------
# the metrics: one entry each. train.py computes them, RunWriter writes CSV, TensorBoard and the
# console from this list, plot_run and compare.py draw them on their `panel`, readers accept older
# folders with fewer columns and newer ones with more.
#   column: metrics.csv header; tb: TensorBoard tag (None: not a scalar worth plotting there)
#   fmt: how a person reads it (console, tables); panel: the plot it is drawn on (None: not drawn)
#   label: axis label, with its unit

Metric = namedtuple('Metric', 'column tb fmt panel label')
METRICS = [
    Metric('iter', None, 'd', None, 'iteration'),
    Metric('tokens_seen', None, ',d', None, 'tokens seen'),
    Metric('elapsed_s', None, '.1f', None, 'training time (s, evaluation excluded)'),
    Metric('lr', 'lr', '.2e', 'lr', 'learning rate'),
    Metric('train_loss', 'loss/train', '.4f', 'loss', 'loss (nats/token)'),
    Metric('val_loss', 'loss/val', '.4f', 'loss', 'loss (nats/token)'),
    Metric('val_bpb', 'loss/val_bpb', '.4f', 'bpb', 'val loss (bits per UTF-8 byte)'),
    Metric('grad_norm', 'norm/grad', '.3g', 'grad_norm', 'global grad norm, before clipping'),
    Metric('weight_norm', 'norm/weight', '.4g', 'weight_norm', 'global weight norm'),
    Metric('tokens_per_s', 'speed/tokens_per_s', ',.0f', 'tokens_per_s', 'tokens/s (training)'),
    Metric('ms_per_iter', 'speed/ms_per_iter', ',.0f', 'ms_per_iter', 'ms per iteration (training)'),
    Metric('mfu', 'speed/mfu', '.1%', 'mfu', 'model FLOPs utilisation (fraction of peak)'),
    Metric('aux_loss', 'loss/moe_aux', '.4f', 'aux_loss', 'MoE load-balancing loss (1 = balanced), last step'),
]
METRIC = {m.column: m for m in METRICS}
METRIC_COLUMNS = [m.column for m in METRICS]
REQUIRED_COLUMNS = ['iter', 'tokens_seen', 'val_loss']  # what a folder needs to be compared at all
LAYER_NORM_COLUMNS = ['iter', 'layer', 'grad_norm', 'weight_norm']
STATUSES = ('running', 'completed', 'interrupted', 'diverged', 'failed', 'stale', 'unknown')
CHECKPOINT_RE = re.compile(r'^ckpt_(\d+)\.pt$')
BEST_CHECKPOINT = 'ckpt_best.pt'
STALE_HEARTBEAT_S = 1800  # a run on another host whose heartbeat is older than this is stale
LOCK_FILE = 'train.lock'  # RunLock: one process per run folder
UMASK = os.umask(0o022)
os.umask(UMASK)  # read once: files are created with the permissions open() gives them
# glibc's default malloc maps and unmaps the large logits tensors at every step: CPU steps ~2x slower
CPU_MALLOC_ENV = {'MALLOC_MMAP_THRESHOLD_': '4000000000', 'MALLOC_TRIM_THRESHOLD_': '8000000000'}


def busy_cpus(sample_s=0.2):
    """How many CPUs other processes (not niced) keep busy now: /proc/stat over sample_s (Linux), else the
    1-minute load average. The average lags: a sweep's previous run still counts in it for minutes after
    it ended, and a run started then would take fewer threads than the idle machine gives it."""
    def ticks():
        with open('/proc/stat') as f:
            values = [int(v) for v in f.readline().split()[1:]]
        # all (guest time is inside user); idle, iowait and nice: a niced process yields its CPU to a run
        return sum(values[:8]), values[1] + values[3] + values[4]
    try:
        (total0, idle0), _ = ticks(), time.sleep(sample_s)
        total1, idle1 = ticks()
    except (OSError, ValueError, IndexError):
        return (os.getloadavg()[0] if hasattr(os, 'getloadavg') else 0.0), 'load'
    cpus = os.cpu_count() or 1
    return cpus * (1 - (idle1 - idle0) / max(1, total1 - total0)), 'busy'


class RunError(ValueError):
    """A run folder or one of its files is missing or malformed; the message names the file."""


def format_value(column, value):
    """A metric as a person reads it: METRICS' format, '-' where there is none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '-' if value is None or math.isnan(value) else str(value)
    fmt = METRIC[column].fmt if column in METRIC else 'g'
    if fmt.endswith('d'):
        value = int(value)
    return format(value, fmt)

# -----------------------------------------------------------------------------
# writing: every file that is rewritten goes to a temporary name first


def atomic_write(path, write):
    """Call write(f) on a temporary file, fsync, rename over path. A reader sees the old file or the
    new one; a failure (disk full, kill) leaves no temporary file behind and the old file whole. The
    temporary name is unique (<name>.<random>.tmp): two writers never share one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp')
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # as open() would create it, not mkstemp's 0600
        with open(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.name == 'posix':  # make the rename durable; Windows cannot open a folder
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path, data):
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode('utf-8'))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + '\n')


def checkpoint_path(run_dir, iter_num):
    return Path(run_dir) / 'checkpoints' / f'ckpt_{iter_num:06d}.pt'


def best_checkpoint_path(run_dir):
    return Path(run_dir) / 'checkpoints' / BEST_CHECKPOINT


def _csv_value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ''
    return format(v, '.9g') if isinstance(v, float) else str(v)


def git_commit():
    """The commit of the code that wrote a run (None outside a git checkout)."""
    import subprocess
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=os.path.dirname(os.path.abspath(__file__)),
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def process_start_time(pid):
    """The kernel's start time of a process (Linux), so a reused pid is not taken for the run's."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class RunLock:
    """One process per run folder: an exclusive flock on run_dir/train.lock, taken before train.py
    writes anything there and released by the kernel when the process dies (kill -9 included). The
    file stays in the folder, so --overwrite=True deletes everything else under the lock; its text
    names the holder from the moment it is taken. Until claim() says the run started writing,
    release() undoes acquire(): it removes the lock file and folder it created, or puts back the text
    it replaced. A refused start leaves nothing behind."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd = None
        self.made = []  # the lock file and the folder, where acquire() created them
        self.previous = b''  # the lock file's text before acquire() wrote its own
        self.claimed = False

    def acquire(self, tries=20):
        """Take the lock, creating the folder if needed; raises RunError naming the host and pid that
        hold it, OSError where the folder cannot be written. Retries briefly: a reader's probe
        (lock_holder) or a refused start holds it for milliseconds only."""
        import fcntl
        for attempt in range(tries):
            made = []
            try:
                self.run_dir.parent.mkdir(parents=True, exist_ok=True)
                self.run_dir.mkdir()
                made.append(self.run_dir)
            except FileExistsError:
                pass
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
                made.insert(0, self.path)
            except FileExistsError:
                try:
                    fd = os.open(self.path, os.O_RDWR)
                except FileNotFoundError:  # removed by a refused start in between: again
                    continue
            except FileNotFoundError:  # the folder was removed in between: again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                time.sleep(0.05)
                continue
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # locked a file another process removed: the lock is the file at the path
                os.close(fd)
                continue
            self.fd, self.made = fd, made
            self.previous = os.pread(fd, 4096, 0)
            self._write(f"pid {os.getpid()} on {socket.gethostname()} since "
                        f"{datetime.now().isoformat(timespec='seconds')}\n".encode())
            return self
        raise RunError(f"{self.run_dir}: in use by {lock_holder(self.run_dir) or 'another process'}: one "
                       f"process per run folder; wait for it to end or stop it first")

    def _write(self, text):
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text, 0)

    def claim(self):
        """The run starts writing: from now on the lock file stays, naming this process."""
        self.claimed = True

    def release(self):
        if self.fd is None:
            return
        if not self.claimed and self.path not in self.made:
            self._write(self.previous)
        if not self.claimed:  # still locked: nobody else can be using what is removed here
            for made in self.made:
                try:
                    if made == self.path:
                        made.unlink()
                    else:
                        made.rmdir()
                except OSError:  # a folder something else was written to meanwhile stays
                    pass
        os.close(self.fd)
        self.fd = None


def lock_holder(run_dir):
    """Who holds a run folder's lock ('pid 123 on host since ...'), or None when nobody does. A train.py
    that is alive holds it, on this host or (over NFS) another: evidence for 'running'."""
    import fcntl
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode('utf-8', 'replace').strip() or 'a process that is starting'
    finally:
        os.close(fd)


class RunWriter:
    """Everything train.py's first process writes while it trains: metrics.csv and layer_norms.csv
    (header written and flushed at once), TensorBoard, the console line, summary.json with a heartbeat.
    On resume, rows logged after the checkpoint are dropped and an older CSV is rewritten with the
    current header (its rows get blanks in the new columns)."""

    def __init__(self, run_dir, max_iters, resume_after=None, tensorboard=True, extra_columns=()):
        self.run_dir = Path(run_dir)
        self.max_iters = max_iters
        self.columns = METRIC_COLUMNS + [c for c in extra_columns if c not in METRIC_COLUMNS]
        self.metrics = self._open('metrics.csv', self.columns, resume_after)
        self.norms = self._open('layer_norms.csv', LAYER_NORM_COLUMNS, resume_after)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            purge = resume_after + 1 if resume_after is not None else None
            self.tb = SummaryWriter(str(self.run_dir / 'tb'), purge_step=purge)
        self.last_heartbeat = 0.0

    def _open(self, name, header, resume_after):
        path = self.run_dir / name
        kept = []
        if resume_after is not None and path.is_file():
            kept = [r for r in read_csv_rows(path)[1] if _number(r.get('iter'), path, 0, 'iter') <= resume_after]
        atomic_write_text(path, _rows_text(header, kept))
        f = open(path, 'a', newline='', encoding='utf-8')
        return csv.DictWriter(f, fieldnames=header, extrasaction='ignore', lineterminator='\n'), f

    def log(self, row, layer_names=(), layer_weights=(), layer_grads=None, eta_s=None):
        """One logged step: a metrics row (dict by column), the per-layer norms, TensorBoard, console."""
        writer, f = self.metrics
        writer.writerow({c: _csv_value(row.get(c)) for c in self.columns})
        f.flush()
        nw, nf = self.norms
        for i, layer in enumerate(layer_names):
            grad = layer_grads[i] if layer_grads is not None else None
            nw.writerow(dict(iter=row['iter'], layer=layer, grad_norm=_csv_value(grad),
                             weight_norm=_csv_value(layer_weights[i])))
        nf.flush()
        if self.tb is not None:
            for c in self.columns:
                m = METRIC.get(c)
                tag = m.tb if m else c
                if tag and row.get(c) is not None:
                    self.tb.add_scalar(tag, row[c], row['iter'])
            for i, layer in enumerate(layer_names):
                self.tb.add_scalar(f'layer_weight_norm/{layer}', layer_weights[i], row['iter'])
                if layer_grads is not None:
                    self.tb.add_scalar(f'layer_grad_norm/{layer}', layer_grads[i], row['iter'])
        print(self.console_line(row, eta_s), flush=True)

    def console_line(self, row, eta_s=None):
        width = len(str(self.max_iters))
        parts = [f"iter {row['iter']:>{width}}/{self.max_iters}"]
        for c in self.columns:
            if c in ('iter', 'tokens_seen', 'elapsed_s') or row.get(c) is None:
                continue
            parts.append(f"{c} {format_value(c, row[c])}")
        if eta_s is not None:
            parts.append(f"eta {format_duration(eta_s)}")
        return ' | '.join(parts)

    def summary(self, fields, status):
        """summary.json: the fields plus status, where the process runs and when it last wrote."""
        self.last_heartbeat = time.time()
        atomic_write_json(self.run_dir / 'summary.json', dict(
            status=status, **fields, host=socket.gethostname(), pid=os.getpid(),
            pid_started=process_start_time(os.getpid()),
            heartbeat_at=datetime.now(timezone.utc).isoformat(timespec='seconds')))

    def close(self):
        for _, f in (self.metrics, self.norms):
            f.close()
        if self.tb is not None:
            self.tb.close()


def _rows_text(header, rows):
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, extrasaction='ignore', lineterminator='\n')
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, '') or '' for c in header})
    return buf.getvalue()


def format_duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
    if seconds >= 60:
        return f'{seconds // 60}m{seconds % 60:02d}s'
    return f'{seconds}s'

# -----------------------------------------------------------------------------
# the checkpoint format: one save, one load, used by every script (torch and model.py are imported
# only here, so that compare.py reads run folders without them)

CHECKPOINT_FORMAT = 'tinystories-lab/1'


class CheckpointError(ValueError):
    pass


def unwrap(model):
    """The plain GPT inside DDP and/or torch.compile wrappers."""
    model = getattr(model, 'module', model)
    return getattr(model, '_orig_mod', model)


def save_checkpoint(path, model, optimizer=None, **state):
    """Save weights, the model config, the optimizer and any training state (plain values and tensors),
    atomically: a kill or a full disk leaves the old file or the new one."""
    import torch
    from dataclasses import asdict
    raw = unwrap(model)
    ckpt = dict(format=CHECKPOINT_FORMAT, model_args=asdict(raw.config), model=raw.state_dict(),
                optimizer=optimizer.state_dict() if optimizer is not None else None, **state)
    atomic_write(path, lambda f: torch.save(ckpt, f))


def load_checkpoint(path, device='cpu'):
    """Rebuild the model a checkpoint describes and load its weights. Returns (model, checkpoint dict).
    Refuses, with CheckpointError naming the file, anything truncated, foreign or mismatched."""
    import torch
    from model import GPT, GPTConfig
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)  # moved to the device after
    except Exception as e:  # truncated zip, pickle garbage, ...
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {detail}") from None
    if not isinstance(ckpt, dict) or 'model_args' not in ckpt or 'model' not in ckpt:
        raise CheckpointError(f"{path}: not a tinystories-lab checkpoint (expected keys model_args and model)")
    try:
        model = GPT(GPTConfig(**ckpt['model_args']))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its model_args do not describe a model this model.py can build: {e}") from None
    state = {}
    for k, v in ckpt['model'].items():  # names saved from compiled or DDP-wrapped models
        for prefix in ('module.', '_orig_mod.'):
            k = k[len(prefix):] if k.startswith(prefix) else k
        state[k] = v
    missing, unexpected = model.state_dict().keys() - state.keys(), state.keys() - model.state_dict().keys()
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match its model_args (missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(unexpected)[:3]})")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match its model_args: {str(e).splitlines()[-1].strip()}") from None
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as e:  # the file is fine: the device is not
        raise CheckpointError(f"{path}: cannot move the model to device {device!r} "
                              f"({str(e).strip().splitlines()[0]}); try --device=cpu") from None
    return model, ckpt

# -----------------------------------------------------------------------------
# reading


def is_run_dir(path):
    path = Path(path)
    return (path / 'config.json').is_file() and (path / 'metrics.csv').is_file()


def find_runs(runs_dir, patterns=None):
    """Run folders directly under runs_dir (sorted by name), optionally only names matching any glob."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise RunError(f"{runs_dir}: runs folder not found (train.py writes runs to out/<run_name>/)")
    runs = [p for p in sorted(runs_dir.iterdir()) if p.is_dir() and is_run_dir(p)]
    if patterns:
        runs = [p for p in runs if any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns)]
    return runs


def read_json(path):
    path = Path(path)
    try:
        with open(path, encoding='utf-8') as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _number(text, path, line, column):
    if text == '' or text is None:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise RunError(f"{path}: line {line}: {column}={text!r} is not a number") from None


def read_csv_rows(path):
    """(header, the complete rows of a CSV as dicts). A last line without its line end, or with too few
    fields, is a row being written (or cut by a kill): it is left out, and the rows before it are kept."""
    path = Path(path)
    try:
        text = path.read_bytes().decode('utf-8')
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except UnicodeDecodeError as e:
        raise RunError(f"{path}: not a readable CSV ({e})") from None
    if text and not text.endswith('\n'):
        text = text[:text.rfind('\n') + 1]  # the unfinished last line
    try:
        reader = csv.DictReader(text.splitlines())
        header = reader.fieldnames or []
        rows = list(reader)
    except csv.Error as e:
        raise RunError(f"{path}: not a readable CSV ({e})") from None
    for line, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            if line == len(rows) + 1:  # only the last row may be short
                rows.pop()
                break
            raise RunError(f"{path}: line {line}: expected {len(header)} fields")
    return header, rows


def read_csv_columns(path, required, text_columns=()):
    """A CSV file as {column: list}; numbers as floats (empty -> nan). Raises RunError naming the file."""
    path = Path(path)
    header, rows = read_csv_rows(path)
    missing = [c for c in required if c not in header]
    if missing:
        raise RunError(f"{path}: missing column(s) {', '.join(missing)} (header: {','.join(header) or 'empty'})")
    cols = {c: [] for c in header}
    for line, row in enumerate(rows, start=2):
        for c in header:
            cols[c].append(row[c] if c in text_columns else _number(row[c], path, line, c))
    return cols


def read_metrics(run_dir):
    """metrics.csv as {column: [floats]}, iterations increasing. Every column of METRICS is there
    (all nan where an older run did not log it), plus any other column the file has."""
    path = Path(run_dir) / 'metrics.csv'
    cols = read_csv_columns(path, REQUIRED_COLUMNS)
    n = len(cols['iter'])
    for c in METRIC_COLUMNS:
        cols.setdefault(c, [math.nan] * n)
    iters = cols['iter']
    if any(b <= a for a, b in zip(iters, iters[1:])):
        raise RunError(f"{path}: iterations are not increasing")
    return cols


def read_layer_norms(run_dir):
    """layer_norms.csv as {column: list} (layer names as text), or None where the run has none."""
    path = Path(run_dir) / 'layer_norms.csv'
    if not path.is_file():
        return None
    return read_csv_columns(path, LAYER_NORM_COLUMNS, text_columns=('layer',))


def list_checkpoints(run_dir):
    """{iteration: path} of the run's complete numbered checkpoints, in iteration order."""
    folder = Path(run_dir) / 'checkpoints'
    found = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m:
                found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def resolve_checkpoint(run_dir, step=None):
    """(step label, path) of a run's checkpoint: step None = the newest, an int = that iteration,
    'best' = ckpt_best.pt. Raises RunError with one line naming the run and what it has."""
    run_dir = Path(run_dir)
    ckpts = list_checkpoints(run_dir)
    best = best_checkpoint_path(run_dir)
    have = ', '.join(map(str, ckpts)) + (', best' if best.is_file() else '') if ckpts or best.is_file() else ''
    if not have:
        raise RunError(f"{run_dir.name}: no checkpoints in {run_dir / 'checkpoints'} "
                       "(none saved yet, or trained with save_checkpoints=False)")
    if step is None:
        if not ckpts:
            return 'best', best
        return max(ckpts), ckpts[max(ckpts)]
    if step == 'best':
        if not best.is_file():
            raise RunError(f"{run_dir.name}: no best checkpoint {best} (has {have})")
        return 'best', best
    try:
        step = int(step)
    except (TypeError, ValueError):
        raise RunError(f"checkpoint step {step!r}: expected an iteration number or 'best'") from None
    if step not in ckpts:
        raise RunError(f"{run_dir.name}: no checkpoint at step {step} (has {have})")
    return step, ckpts[step]


def parse_step(text):
    """--checkpoint_step's value: None, 'best' or an int (argparse type)."""
    if text is None or text == 'best':
        return text
    try:
        return int(text)
    except ValueError:
        import argparse
        raise argparse.ArgumentTypeError(f"{text!r}: expected an iteration number or 'best'") from None


def run_status(summary):
    """summary.json's status, except that a run whose process is gone is 'stale', not 'running':
    on this host its pid no longer runs (or is another process); elsewhere its heartbeat is old."""
    status = summary.get('status', 'unknown')
    if status not in STATUSES:
        return 'unknown'
    if status != 'running':
        return status
    pid, host = summary.get('pid'), summary.get('host')
    if host == socket.gethostname() and isinstance(pid, int):
        if pid == os.getpid():
            return 'running'
        started = process_start_time(pid)
        if started is None and sys.platform.startswith('linux'):
            return 'stale'
        if started is not None and summary.get('pid_started') not in (None, started):
            return 'stale'
        if started is None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return 'stale'
            except PermissionError:
                pass
        return 'running'
    try:
        beat = datetime.fromisoformat(summary.get('heartbeat_at') or summary.get('updated_at')).timestamp()
    except (TypeError, ValueError):
        return 'running'
    return 'stale' if time.time() - beat > STALE_HEARTBEAT_S else 'running'


def read_run(run_dir):
    """Everything compare/eval/sweep need from one run folder. A missing summary.json means the run
    never wrote one (killed before its first write): status 'unknown'."""
    from tokenizer import canonical_config
    run_dir = Path(run_dir)
    config = canonical_config(read_json(run_dir / 'config.json'))  # older folders: the tokenizer in today's shape
    metrics = read_metrics(run_dir)
    summary = read_json(run_dir / 'summary.json') if (run_dir / 'summary.json').is_file() else {}
    status = run_status(summary)
    if status in ('stale', 'unknown') and lock_holder(run_dir):  # a live train.py holds the folder
        status = 'running'
    return dict(name=run_dir.name, dir=run_dir, config=config, metrics=metrics, summary=summary,
                status=status, checkpoints=list_checkpoints(run_dir))


def load_run_model(run_dir, step=None, device='cpu'):
    """The one way a script gets a trained model: (model, checkpoint dict, tokenizer, step label) for
    run_dir's checkpoint `step` (None newest, int, 'best'), with the tokenizer the run was trained on
    (tokenizer.load_tokenizer checks its hash). Raises RunError / CheckpointError / tokenizer.DataError
    with one line."""
    from tokenizer import GPT2_INFO, load_tokenizer
    run_dir = Path(run_dir)
    label, path = resolve_checkpoint(run_dir, step)
    model, ckpt = load_checkpoint(path, device)
    info = ckpt.get('tokenizer') or GPT2_INFO  # checkpoints before tokenizers were recorded
    tokenizer = load_tokenizer(info, run_dir)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise RunError(f"{path}: vocab_size={model.config.vocab_size} is smaller than its tokenizer's "
                       f"({info.get('name')}, {tokenizer.vocab_size})")
    return model, ckpt, tokenizer, label

# -----------------------------------------------------------------------------
# seed groups: runs that differ only in the seed are replicates of one experiment

# Keys of config.json that do not change what is trained, so runs differing only in them (and the
# seed) are replicates. A dotted name is a key inside a nested dict (model_args, data). Every key not
# listed here, including any train.py adds later, splits groups: pooling too little is safer than too much.
SEED_GROUP_IGNORED_KEYS = {
    'seed': 'the seed: replicates differ in it by design',
    # where and when a run was written
    'run_name': 'folder name', 'out_dir': 'where runs are written', 'overwrite': 'file handling',
    'started_at': 'timestamp', 'config_file': 'which file set the values (the values themselves are compared)',
    'init_from': "'resume' continues the same training", 'resumed_at': 'iterations it was resumed at',
    # where the data was read from; data.sha256 of the bins (compared) says which tokens were trained on
    'data_dir': 'path', 'data.data_dir': 'path', 'data.source': 'path', 'data.source_files': 'paths and mtimes',
    # file names in the data and run folders (content-named since 2026-12): their sha256 is compared
    'data.train.file': 'file name', 'data.val.file': 'file name', 'data.tokenizer_file': 'file name',
    'data.tokenizer_info.file': 'file name', 'tokenizer_info.file': 'file name',
    # logging, eval cadence and checkpoints: what is recorded, not what is learned. (eval_windows, which
    # fixes the val set, is compared; the last iteration is always evaluated, whatever eval_interval)
    'log_interval': 'logging cadence', 'eval_interval': 'when val loss is measured',
    'tensorboard': 'logging', 'plots': 'logging', 'save_checkpoints': 'checkpoints', 'checkpoint_interval': 'checkpoints',
    'keep_checkpoints': 'checkpoints', 'peak_flops': 'only the MFU denominator',
    # the same arithmetic on another code path or machine: floating-point noise at most
    'compile': 'torch.compile', 'attn_impl': 'sdpa and math compute the same attention',
    'num_threads': 'CPU threads', 'torch_threads': 'CPU threads',
    'model_args.attn_impl': 'the same', 'deterministic': 'reproducibility flag', 'device': 'machine',
    'device_name': 'machine', 'world_size': 'GPU count (tokens_per_iter, which is compared, fixes the batch)',
    'torch_version': 'library version', 'git_commit': 'code version',
}
# Ignored keys that are expected to differ between replicates; any other ignored key that differs
# inside a group is named in the group's notes, so a reader sees what was pooled.
EXPECTED_TO_DIFFER = {'seed', 'run_name', 'out_dir', 'started_at', 'config_file', 'data_dir', 'overwrite',
                      'resumed_at', 'init_from', 'tensorboard', 'plots'}
# Derived from other keys: never the name of a difference in a group label.
DERIVED_KEYS = {'n_params', 'n_params_non_embedding', 'n_params_active', 'flops_per_token', 'tokens_per_iter'}


def _flatten(config, prefix=''):
    """{dotted key: value} of a config, nested dicts opened; ignored keys (SEED_GROUP_IGNORED_KEYS) left out."""
    flat = {}
    for key, value in config.items():
        path = prefix + key
        if path in SEED_GROUP_IGNORED_KEYS:
            continue
        if isinstance(value, dict):
            flat.update(_flatten(value, path + '.'))
        else:
            flat[path] = value
    return flat


def group_key(config):
    """What a run trains: its config without the ignored keys."""
    return json.dumps(_flatten(config), sort_keys=True, default=str)


def _short(value):
    return json.dumps(value, default=str) if not isinstance(value, str) else value


def seed_groups(loaded):
    """Groups of runs with the same group_key, in order of first run; each labelled by model_name,
    plus the settings that tell apart groups sharing one model_name."""
    by_key = {}
    for run in loaded:
        by_key.setdefault(group_key(run['config']), []).append(run)
    groups = [dict(runs=members, model_name=str(members[0]['config'].get('model_name', '?')),
                   config=_flatten(members[0]['config'])) for members in by_key.values()]
    for group in groups:
        same_name = [g for g in groups if g['model_name'] == group['model_name']]
        label = group['model_name']
        if len(same_name) > 1:
            keys = {k for g in same_name for k in g['config']}
            differing = [k for k in keys if k not in DERIVED_KEYS
                         and len({_short(g['config'].get(k)) for g in same_name}) > 1]
            # model_args.n_layer repeats n_layer: name a nested key only where it says something new
            differing = [k for k in differing if '.' not in k or k.rsplit('.', 1)[-1] not in differing
                         or group['config'].get(k) != group['config'].get(k.rsplit('.', 1)[-1])]
            # first the settings in which this group stands out, then the shallowest
            shared = lambda k: sum(_short(g['config'].get(k)) == _short(group['config'].get(k)) for g in same_name)
            differing.sort(key=lambda k: (shared(k) > 1, k.count('.'), k))
            shown = [f"{k}={_short(group['config'].get(k))[:16]}" for k in differing[:3]]  # a sha256 is long
            label += f" [{', '.join(shown)}{', ...' if len(differing) > 3 else ''}]" if shown else ''
        group['label'] = label
    labels = [g['label'] for g in groups]
    for i, group in enumerate(groups):
        if labels.count(group['label']) > 1:  # cannot happen while configs differ; keep labels unique anyway
            group['label'] += f' #{labels[:i + 1].count(group["label"])}'
    return groups


SIZE_KEYS = ('n_layer', 'n_embd', 'n_head', 'max_iters', 'batch_size', 'block_size',
             'gradient_accumulation_steps')  # a ladder's size: settings every variant at that size shares


def size_of(group):
    """The group's size (SIZE_KEYS' values): model shape and token budget."""
    config = group['runs'][0]['config']
    return tuple(config.get(k) for k in SIZE_KEYS)


def size_label(config):
    """'4x128, 0.5M tok': layers x width and the token budget: the same for every variant at one size."""
    per_iter = config.get('tokens_per_iter')
    if not isinstance(per_iter, (int, float)) or isinstance(per_iter, bool):
        per_iter = (config.get('batch_size') or 0) * (config.get('block_size') or 0) * \
            (config.get('gradient_accumulation_steps') or 1)
    tokens = per_iter * (config.get('max_iters') or 0)
    return f"{config.get('n_layer')}x{config.get('n_embd')}, {tokens / 1e6:.3g}M tok"


def pick_baseline(groups, pattern=None):
    """The baseline group and why it was chosen. pattern (a run name, a glob or a group label, from
    --baseline) wins; otherwise the first group with model_name 'baseline', otherwise the first group.
    ValueError where the pattern matches no group or runs of several."""
    if pattern:
        hits = [g for g in groups if g['label'] == pattern
                or any(fnmatch.fnmatchcase(r['name'], pattern) for r in g['runs'])]
        if not hits:
            names = ', '.join(r['name'] for g in groups for r in g['runs'])
            raise ValueError(f"--baseline {pattern!r} matches no run or group (runs: {names})")
        if len(hits) > 1:
            raise ValueError(f"--baseline {pattern!r} matches runs in {len(hits)} groups "
                             f"({'; '.join(g['label'] for g in hits)}): name runs of one group")
        return hits[0], f'--baseline {pattern}'
    named = [g for g in groups if g['model_name'] == 'baseline']
    if len(named) == 1:
        return named[0], "the only group with model_name 'baseline'"
    if named:
        return named[0], "several groups have model_name 'baseline'; took the first of them (choose with --baseline)"
    return groups[0], "no group has model_name 'baseline'; took the first group (choose with --baseline)"


def baselines_by_size(groups, baseline):
    """A ladder's baselines: {size: the group of the baseline's model_name at that size}, where the groups
    of other model_names span several sizes, so that each is judged against the baseline of its own size (a
    5x160 variant against a 2x64 baseline measures the size, not the variant). None where one baseline
    serves all: one size, no other model_name, or the baseline's model_name has several groups at one size
    (a grid over another setting too: compare.py --tune picks one per size)."""
    others = {size_of(g) for g in groups if g['model_name'] != baseline['model_name']}
    if len(others) < 2:
        return None
    by_size = {}
    for g in groups:
        if g['model_name'] == baseline['model_name']:
            by_size.setdefault(size_of(g), []).append(g)
    if any(len(gs) > 1 for gs in by_size.values()):
        return None
    return {size: gs[0] for size, gs in by_size.items()}


def ladder_baseline(groups, baseline):
    """(label, why) of a ladder's baselines, as the reports name them."""
    model = baseline['model_name']
    return (f"{model} at each size",
            f"a ladder: the groups span {len({size_of(g) for g in groups})} model sizes, so each is compared with "
            f"the group of model_name '{model}' at its own size (column compared_with; one baseline for all: "
            f"--baseline)")


def references(groups, baseline, by_size=None):
    """(order, reference, is_base): the groups, each baseline followed by the groups judged against it;
    reference(group), the group it is compared with (None for a baseline, or at a ladder size without
    one); is_base(group). by_size (baselines_by_size): each group against the baseline of its own size;
    else all against `baseline`."""
    bases = [baseline] + [b for b in (by_size or {}).values() if b is not baseline]
    base_ids = {id(b) for b in bases}
    is_base = lambda g: id(g) in base_ids
    if not by_size:
        return bases + [g for g in groups if not is_base(g)], lambda g: None if is_base(g) else baseline, is_base
    order = []
    for b in bases:
        order += [b] + [g for g in groups if not is_base(g) and size_of(g) == size_of(b)]
    order += [g for g in groups if all(g is not o for o in order)]  # sizes without a baseline
    return order, lambda g: None if is_base(g) else by_size.get(size_of(g)), is_base


# -----------------------------------------------------------------------------
# the command-line words every script shares


def add_run_args(parser, runs_dir_default='out'):
    """--runs_dir (synonym --out_dir) and --runs (synonym --run_names), spelled alike everywhere."""
    parser.add_argument('--runs_dir', '--out_dir', dest='runs_dir', default=runs_dir_default,
                        help=f"folder of run folders, train.py's out_dir (default: {runs_dir_default})")
    parser.add_argument('--runs', '--run_names', dest='runs', nargs='+', default=None, metavar='NAME_OR_GLOB',
                        help="only these runs (names or quoted globs; default: all)")

# -----------------------------------------------------------------------------
# per-run plots (train.py calls this at the end of a run)


def plot_run(run_dir):
    """plots/metrics.png (a panel per METRICS panel that has data, units on the axes) and
    plots/layer_norms.png (grad and weight norm per layer over time, log colour scale)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    run_dir = Path(run_dir)
    out = run_dir / 'plots'
    out.mkdir(exist_ok=True)
    m = {k: np.asarray(v, dtype=float) for k, v in read_metrics(run_dir).items()}

    def save(fig, name):
        fig.tight_layout()
        atomic_write(out / f'{name}.png', lambda f: fig.savefig(f, format='png', dpi=100))
        plt.close(fig)

    panels = {}
    for metric in METRICS:
        if metric.panel and metric.column in m and np.isfinite(m[metric.column]).any():
            panels.setdefault(metric.panel, []).append(metric)
    cols = min(3, max(1, len(panels)))
    rows = math.ceil(len(panels) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    for ax, (panel, metrics) in zip(axes.flat, panels.items()):
        for metric in metrics:
            ok = np.isfinite(m[metric.column])
            ax.plot(m['iter'][ok], m[metric.column][ok], label=metric.column, marker='o' if ok.sum() < 20 else None,
                    ms=3)
        ax.set(xlabel='iteration', ylabel=metrics[0].label, title=' and '.join(m.column for m in metrics))
        if panel == 'grad_norm' and np.nanmin(m['grad_norm']) > 0:
            ax.set_yscale('log')
        if len(metrics) > 1:
            ax.legend(fontsize='small')
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis('off')
    fig.suptitle(f'{run_dir.name}: training curves')
    save(fig, 'metrics')

    norms = read_layer_norms(run_dir)
    if norms and norms['iter']:
        layers = list(dict.fromkeys(norms['layer']))
        iters = sorted(set(norms['iter']))
        fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(layers) + 2.5))
        fig.suptitle(f'{run_dir.name}: norm of each layer over training')
        for ax, key in zip(axes, ('grad_norm', 'weight_norm')):
            grid = np.full((len(layers), len(iters)), np.nan)
            col = {it: j for j, it in enumerate(iters)}
            row = {name: i for i, name in enumerate(layers)}
            for it, name, v in zip(norms['iter'], norms['layer'], norms[key]):
                grid[row[name], col[it]] = v
            # cells from midpoint to midpoint in iterations: the x axis is iterations, evenly ticked
            x = np.asarray(iters, dtype=float)
            half = np.diff(x) / 2 if len(x) > 1 else np.array([0.5])
            edges = np.concatenate([[x[0] - half[0]], x[:-1] + half, [x[-1] + half[-1]]])
            im = ax.pcolormesh(edges, np.arange(len(layers) + 1) - 0.5, np.log10(np.maximum(grid, 1e-12)),
                               cmap='viridis')
            ax.set_yticks(range(len(layers)), layers)
            ax.invert_yaxis()  # the embedding on top, as in the model
            ax.set(xlabel='iteration', ylabel='layer', title=f'{key.replace("_", " ")} per layer')
            fig.colorbar(im, ax=ax, label=f'log10 {key.replace("_", " ")}')
        save(fig, 'layer_norms')
