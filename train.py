"""
Train one model variant on TinyStories and leave a complete run folder in out/<run_name>/.

    python prepare.py --variant small                          # once: tokenized data
    python train.py config/baseline.py --max_iters=50          # one GPU (or MPS, or CPU)
    python train.py config/smoke.py                            # 50 tiny iterations on a CPU, < 1 min
    python train.py --init_from=resume --run_name=baseline     # continue out/baseline exactly
    torchrun --standalone --nproc_per_node=8 train.py config/baseline.py          # DDP on one node
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 \\
             --master_port=29500 train.py config/baseline.py                    # and node_rank=1

Settings are the typed globals below (the model's are model.GPTConfig's fields); a config file
(plain Python) overrides them, then --key=value flags. `python train.py --help` lists them. Every
setting is checked, and the data and the model are built, before anything is written; runs.py
describes and writes the run folder, which one process at a time may hold (runs.RunLock).
On a CPU it sets glibc's malloc thresholds (restarting itself once) and picks its thread count.

In-process, without touching sys.argv, signal handlers or sys.excepthook (tests do this):
    runpy.run_path('train.py', init_globals=dict(cli_args=['config/smoke.py', '--max_iters=5']), run_name='train')
"""
import inspect
import math
import os
import shlex
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, fields
from datetime import datetime, timezone
from types import SimpleNamespace

import runs

malloc_set = all(k in os.environ for k in runs.CPU_MALLOC_ENV)
if __name__ == '__main__' and sys.platform.startswith('linux') and not malloc_set:
    os.environ.update({k: os.environ.get(k, v) for k, v in runs.CPU_MALLOC_ENV.items()})
    os.execv(sys.executable, sys.orig_argv)  # malloc reads them at start: before torch is imported

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from configurator import ConfigError, comments, configure
from model import GPT, GPTConfig, make_config, pick_device
from prepare import load_bin, read_meta, variant_dir
from tokenizer import DataError, load_tokenizer, parse_tokenizer

# -----------------------------------------------------------------------------
# I/O
out_dir: str = 'out'
run_name: str = ''              # '' -> the config file's name (config/baseline.py -> baseline), else model_name
overwrite: bool = False         # replace an existing run folder of the same name
init_from: str = 'scratch'      # 'scratch' | 'resume' (continue out_dir/run_name with its stored settings)
log_interval: int = 10          # iterations between metric rows (per-layer norms are computed only then)
eval_interval: int = 250        # iterations between validation losses
eval_windows: int = 256         # validation windows of block_size tokens, evenly spaced: the same for every run
eval_stories: int = 0           # val_bpb on the first N whole val stories, the same bytes for any tokenizer; 0: eval_windows/2
save_checkpoints: bool = True   # checkpoints at checkpoint_interval, at the end, and ckpt_best.pt
checkpoint_interval: int = 0    # 0: only at the end (Ctrl-C always saves one)
keep_checkpoints: int = 3       # newest numbered checkpoints kept (and the lowest-loss one); 0 keeps all
tensorboard: bool = True        # TensorBoard events in the run folder's tb/
plots: bool = True              # plots/metrics.png and layer_norms.png at the end (~2 s on a CPU)
# data
data_dir: str = 'data/tinystories'  # where prepare.py wrote the bins
dataset_variant: str = 'small'  # 'small' | 'full', made by: python prepare.py --variant ...
tokenizer: str = 'gpt2'         # 'gpt2' | 'bpe4k' | 'bpe8k' | 'bpe:N', made by: python prepare.py --tokenizer ...
batch_size: int = 32            # micro-batch per process
gradient_accumulation_steps: int = 1  # over all processes: DDP splits it across ranks
# model: every field of model.GPTConfig; None: the variant in MODEL_REGISTRY decides, else GPTConfig's default
model_name: str = 'baseline'    # a name in model.MODEL_REGISTRY
setting_help = comments(inspect.getsource(GPTConfig))
for _field in fields(GPTConfig):
    if _field.name not in ('model_name', 'vocab_size'):  # the vocabulary comes from the data
        __annotations__[_field.name] = _field.type if _field.name == 'block_size' else _field.type | None
        globals()[_field.name] = 512 if _field.name == 'block_size' else None
        if _field.name != 'block_size':
            setting_help[_field.name] = f"{setting_help.get(_field.name, '')} [default {_field.default!r}]".strip()
# adamw optimizer
learning_rate: float = 1e-3     # peak, after warmup
max_iters: int = 5000           # optimizer steps
weight_decay: float = 0.1       # on matrices only
beta1: float = 0.9              # AdamW
beta2: float = 0.95             # AdamW
grad_clip: float = 1.0          # 0 disables clipping
# learning rate schedule (get_lr below): linear warmup, then cosine decay to min_lr, or warmup-stable-decay
lr_schedule: str = 'cosine'     # 'cosine' | 'wsd' (Hagele et al. 2024: the peak held, then linear to min_lr)
decay_fraction: float = 0.2     # wsd: the share of lr_decay_iters spent decaying, at the end
warmup_iters: int = 100         # linear warmup steps
lr_decay_iters: int = 0         # 0: max_iters (a resume that raises max_iters keeps the old end)
min_lr: float = 1e-4            # where the decay ends
# divergence: a train or val loss above min(ln(vocab_size) + 1, diverge_factor * lowest train loss) stops the run
diverge_factor: float = 2.0     # 0: stop only on NaN/inf or worse than uniform guessing
# system
device: str = 'auto'            # 'auto' (cuda, then mps, then cpu) | 'cuda' | 'cuda:1' | 'mps' | 'cpu'
dtype: str = 'auto'             # 'auto' (bfloat16 where supported, else float16 on CUDA, float32 elsewhere)
compile: bool | None = None     # torch.compile; None: on CUDA only
num_threads: int = 0            # CPU threads; 0: $OMP_NUM_THREADS if set, else the CPUs left idle by others (>= 1)
seed: int = 1337                # init and batch order: runs with one seed see the same batches
deterministic: bool = False     # PyTorch's deterministic algorithms (slower)
peak_flops: float | None = None  # for MFU; None: model.PEAK_FLOPS by device name
# settings a resume may change: they do not alter the arithmetic of the steps already taken
resume_may_change = ('out_dir', 'run_name', 'overwrite', 'init_from', 'log_interval', 'eval_interval',
                     'save_checkpoints', 'checkpoint_interval', 'keep_checkpoints', 'tensorboard', 'plots', 'data_dir',
                     'max_iters', 'lr_decay_iters', 'diverge_factor', 'device', 'compile', 'num_threads',
                     'deterministic', 'peak_flops', 'attn_impl')
setting_help.update(comments(open(__file__, encoding='utf-8').read()))
# -----------------------------------------------------------------------------
config_keys = list(__annotations__)


def get_lr(it):
    """Learning rate of step `it` (0-based): linear warmup, then cosine decay to min_lr, or (wsd) the peak
    until the last decay_fraction of the schedule and a linear decay to min_lr over it."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    decay_iters = lr_decay_iters or max_iters
    if it >= decay_iters:
        return min_lr
    if lr_schedule == 'wsd':  # one run's stable phase serves every shorter budget: cheap scaling curves
        decay_start = max(warmup_iters, decay_iters - round(decay_fraction * decay_iters))
        if it < decay_start:
            return learning_rate
        return learning_rate + (it - decay_start) / max(1, decay_iters - decay_start) * (min_lr - learning_rate)
    ratio = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


cli_args = globals().get('cli_args', sys.argv[1:])  # an in-process caller passes its own (see the docstring)
run_lock = None  # the run folder's runs.RunLock, once taken


def fail(message):
    """A one-line error, exit 1. Releases the run folder (a start refused before writing leaves no trace)."""
    if run_lock is not None:
        run_lock.release()
    sys.exit(f"train.py: error: {message}")


try:
    config_file = configure(globals(), cli_args)
except ConfigError as e:
    fail(e)
config_name = os.path.splitext(os.path.basename(config_file))[0] if config_file else ''
run_name = run_name or config_name or (model_name if init_from == 'scratch' else '')
if init_from not in ('scratch', 'resume'):
    fail(f"--init_from={init_from!r}: expected scratch or resume")
if not run_name:
    fail("--init_from=resume needs --run_name=NAME (the run folder under out_dir to continue)")
if os.sep in run_name or run_name in ('.', '..'):
    fail(f"--run_name={run_name!r}: expected a plain folder name")
run_dir = os.path.join(out_dir, run_name)
ddp = int(os.environ.get('RANK', -1)) != -1
master = int(os.environ.get('RANK', 0)) == 0
resume_cmd = f"python train.py --init_from=resume --run_name={run_name}"
if out_dir != 'out':
    resume_cmd += f" --out_dir={out_dir}"

# -----------------------------------------------------------------------------
# the run folder is locked first: a second train.py on it (a start, a resume, an --overwrite=True)
# stops here; the first process holds it until it exits

if master and (init_from == 'scratch' or os.path.isdir(run_dir)):
    try:
        run_lock = runs.RunLock(run_dir).acquire()
    except runs.RunError as e:
        fail(e)
    except OSError as e:
        fail(f"{e.filename or run_dir}: cannot write the run folder ({e.strerror}); check the path and "
             f"permissions of --out_dir={out_dir}")
    files = [name for _, _, names in os.walk(run_dir) for name in names if name != runs.LOCK_FILE]
    if init_from == 'scratch' and files:
        if not overwrite:  # a resume command only where there is a checkpoint: printed commands work
            resume_hint = f"continue it with: {resume_cmd}, " if runs.list_checkpoints(run_dir) else ''
            fail(f"{run_dir} already exists: pass --overwrite=True to replace it, {resume_hint}or choose another --run_name")
        if not os.path.isfile(os.path.join(run_dir, 'config.json')):
            fail(f"{run_dir} is not a run folder (no config.json): refusing to delete it even with --overwrite=True")

# resume: the checkpoint's settings, then this command's file and flags on top; what a resume may not
# change is refused; the weights, optimizer, random states and loop state are restored below
schedule_note = None
if init_from == 'resume':
    checkpoints = runs.list_checkpoints(run_dir)
    if not checkpoints:
        fail(f"{run_dir} has no checkpoint to resume from (expected {run_dir}/checkpoints/ckpt_*.pt)")
    resume_path = checkpoints[max(checkpoints)]
    try:
        model, ckpt = runs.load_checkpoint(resume_path, 'cpu')  # moved to the device once it is known
    except runs.CheckpointError as e:
        fail(e)
    stored = dict(ckpt.get('config', {}), **{k: v for k, v in ckpt.get('model_args', {}).items()
                                             if k in config_keys and k not in ckpt.get('config', {})})
    globals().update({k: v for k, v in stored.items() if k in config_keys})
    try:
        configure(globals(), cli_args)
    except ConfigError as e:
        fail(e)
    out_dir, run_name = os.path.dirname(run_dir), os.path.basename(run_dir)  # where the run is now
    changed = sorted(k for k in config_keys if k in stored and k not in resume_may_change
                     and globals()[k] != stored[k])
    if changed:
        fail(f"{resume_path}: settings differ from the checkpoint's: " + ', '.join(
            f"{k} (checkpoint {stored[k]!r}, now {globals()[k]!r})" for k in changed)
             + "; only " + ', '.join(k for k in resume_may_change if k not in ('run_name', 'init_from'))
             + " may change on resume")
    if max_iters < ckpt['iter_num']:
        fail(f"--max_iters={max_iters}: the checkpoint {resume_path} is already at iteration {ckpt['iter_num']}")
    old_max = stored.get('max_iters', max_iters)
    if lr_decay_iters == stored.get('lr_decay_iters', 0) and max_iters != old_max:
        lr_decay_iters = stored.get('lr_decay_iters') or old_max  # keep the schedule it promised
        if max_iters > lr_decay_iters:
            schedule_note = (f"max_iters {old_max} -> {max_iters}: the {lr_schedule} schedule still ends at iteration "
                             f"{lr_decay_iters} and iterations {lr_decay_iters}-{max_iters} run at min_lr="
                             f"{min_lr:g} (pass --lr_decay_iters=N to stretch it)")
        else:
            schedule_note = (f"max_iters {old_max} -> {max_iters}: the run stops at iteration {max_iters} with the "
                             f"learning rate at {get_lr(max_iters - 1):.3g}, on the {lr_schedule} schedule that reaches "
                             f"min_lr={min_lr:g} at iteration {lr_decay_iters} (pass --lr_decay_iters={max_iters} "
                             f"to reach it at the new end)")

# -----------------------------------------------------------------------------
# validate everything before the disk is touched: settings, device, data, the model

if dataset_variant not in ('small', 'full'):
    fail(f"--dataset_variant={dataset_variant!r}: expected small or full")
for key in ('log_interval', 'eval_interval', 'eval_windows', 'batch_size', 'block_size', 'gradient_accumulation_steps'):
    if globals()[key] < 1:
        fail(f"--{key}={globals()[key]}: expected a positive integer")
for key in ('eval_stories', 'num_threads'):
    if globals()[key] < 0:
        fail(f"--{key}={globals()[key]}: expected 0 or a positive integer")
if dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
    fail(f"--dtype={dtype!r}: expected auto, float32, bfloat16 or float16")
if lr_schedule not in ('cosine', 'wsd'):
    fail(f"--lr_schedule={lr_schedule!r}: expected cosine or wsd")
if not 0 < decay_fraction <= 1:
    fail(f"--decay_fraction={decay_fraction}: expected a share of the schedule in (0, 1]")
eval_stories = eval_stories or max(1, eval_windows // 2)  # about the bytes of the windows at block_size 128
try:
    tokenizer = parse_tokenizer(tokenizer)[0]  # its one shape ('bpe:4096' is 'bpe4k'), in config.json and checkpoints
except DataError as e:
    fail(e)
config = {k: globals()[k] for k in config_keys}  # the settings as given ('auto' stays 'auto'): what a resume reads

if ddp:
    use_cuda = torch.cuda.is_available() and not device.startswith('cpu')
    dist.init_process_group(backend='nccl' if use_cuda else 'gloo')
    rank, local_rank, world_size = dist.get_rank(), int(os.environ['LOCAL_RANK']), dist.get_world_size()
    device = f'cuda:{local_rank}' if use_cuda else 'cpu'
    if use_cuda:
        torch.cuda.set_device(device)
    if gradient_accumulation_steps % world_size:
        fail(f"gradient_accumulation_steps={gradient_accumulation_steps} must be divisible by the {world_size} processes")
else:
    rank, local_rank, world_size = 0, 0, 1
    try:
        device = pick_device(device)
    except ValueError as e:
        fail(f"--device: {e}")
accum_steps = gradient_accumulation_steps // world_size  # micro-steps per process and iteration
device_type = torch.device(device).type
if dtype == 'auto':
    dtype = ('bfloat16' if torch.cuda.is_bf16_supported() else 'float16') if device_type == 'cuda' else 'float32'
compile = device_type == 'cuda' if compile is None else compile
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
autocast = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=ptdtype)
if deterministic:
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
threads_note = ''
if device_type == 'cpu':  # torch's threads spin-wait: on a busy 2-core machine 2 threads ran ~2x slower than 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    if num_threads:
        threads, why = num_threads, '--num_threads'
    elif os.environ.get('OMP_NUM_THREADS', '').isdigit():
        threads, why = int(os.environ['OMP_NUM_THREADS']), 'OMP_NUM_THREADS'
    else:
        busy, how = runs.busy_cpus()  # now, not the 1-minute load average (a sweep's last run still counts there)
        threads, why = max(1, min(cpus, round(cpus - busy))), f'{how} {busy:.1f} of {cpus} CPUs'
    torch.set_num_threads(threads)
    malloc = 'malloc thresholds set' if malloc_set else 'default malloc'
    threads_note = f", {threads} CPU thread(s) ({why}), {malloc}"
torch.manual_seed(seed)

# data: random windows whose order depends only on the seed and the data, so that two variants run
# with the same seed see the same batches, whatever their number of processes
try:
    meta = read_meta(data_dir, dataset_variant, tokenizer=tokenizer)
    train_data = load_bin(data_dir, dataset_variant, 'train', tokenizer=tokenizer)
    val_data = load_bin(data_dir, dataset_variant, 'val', tokenizer=tokenizer)
    tok = load_tokenizer(meta.get('tokenizer_info'), variant_dir(data_dir, dataset_variant, tokenizer))
except DataError as e:
    fail(e)
for split, data in (('train', train_data), ('val', val_data)):
    if len(data) < block_size + 2:
        fail(f"{variant_dir(data_dir, dataset_variant, tokenizer) / meta[split]['file']} holds {len(data)} tokens, "
             f"fewer than block_size+2={block_size + 2}")
data_rng = np.random.default_rng(seed)
offsets = np.arange(block_size + 1)
token_bytes = torch.from_numpy(tok.token_byte_lengths()).to(device)  # for bits per byte


def get_batch(data, starts):
    """(x, y) for windows starting at `starts`, moved to the device without blocking on CUDA."""
    buf = torch.from_numpy(data[starts[:, None] + offsets].astype(np.int64))
    x, y = buf[:, :-1].contiguous(), buf[:, 1:].contiguous()
    if device_type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def next_iteration_starts():
    """Window starts for one iteration: rows are micro-steps of all processes; this process's rows.
    state.data_rng keeps the generator's state before the draw: a resume redraws these windows."""
    state.data_rng = data_rng.bit_generator.state
    starts = data_rng.integers(0, len(train_data) - block_size - 1, size=(gradient_accumulation_steps, batch_size))
    return starts[rank * accum_steps:(rank + 1) * accum_steps]


def story_rows(n_stories):
    """val_bpb's text: the first n_stories whole validation stories, the same bytes whatever the tokenizer
    (every tokenizer's val.bin holds the same stories in order, each followed by end-of-text). Each is
    scored after an end-of-text, as in training, in rows of block_size + 1 tokens that overlap by one,
    padded with end-of-text (0 bytes: not scored). Returns (rows, {'stories', 'bytes', 'sha256'})."""
    import hashlib
    eot = tok.eot_token
    ends = np.flatnonzero(val_data == eot)[:n_stories]
    rows, texts, start = [], [], 0
    for end in ends:
        story = np.asarray(val_data[start:end], dtype=np.int64)
        texts.append(tok.decode(story).encode('utf-8'))
        seq = np.concatenate([[eot], story, [eot]])
        for i in range(0, len(seq) - 1, block_size):
            row = seq[i:i + block_size + 1]
            rows.append(np.pad(row, (0, block_size + 1 - len(row)), constant_values=eot))
        start = end + 1
    if not rows:
        fail(f"{variant_dir(data_dir, dataset_variant, tokenizer) / meta['val']['file']}: no complete story "
             f"(no end-of-text token {eot}): rebuild it with python prepare.py")
    text = dict(stories=len(ends), bytes=sum(map(len, texts)), sha256=hashlib.sha256(b'\0'.join(texts)).hexdigest())
    return np.stack(rows), text


val_starts = np.linspace(0, len(val_data) - block_size - 1, eval_windows).astype(np.int64)[rank::world_size]
val_story_rows, val_bpb_text = story_rows(eval_stories)


@torch.no_grad()
def estimate_val():
    """(val loss in nats per token over the fixed validation windows, val bits per byte over the fixed
    validation stories). Bits per byte: summed nats of the text tokens / ln 2 / their summed UTF-8
    bytes (end-of-text has none and is left out of both): the same bytes for every tokenizer."""
    model.eval()
    total = torch.zeros(4, device=device)  # nats and tokens on the windows, nats and bytes on the stories
    for i in range(0, len(val_starts), batch_size):
        x, y = get_batch(val_data, val_starts[i:i + batch_size])
        with autocast:
            _, loss = model(x, y, reduction='none')
        total[:2] += torch.stack([loss.sum(), torch.tensor(float(loss.numel()), device=device)])
    story_rows_here = val_story_rows[rank::world_size]
    for i in range(0, len(story_rows_here), batch_size):
        buf = torch.from_numpy(story_rows_here[i:i + batch_size]).to(device)
        x, y = buf[:, :-1], buf[:, 1:]
        with autocast:
            _, loss = model(x, y, reduction='none')
        nbytes = token_bytes[y]
        total[2:] += torch.stack([(loss.float() * (nbytes > 0)).sum(), nbytes.sum().float()])
    if ddp:
        dist.all_reduce(total)
    model.train()
    nats, tokens, text_nats, nbytes = total.tolist()
    return nats / tokens, text_nats / math.log(2) / nbytes

# -----------------------------------------------------------------------------
# the model, its optimizer and the loop's state (built, or restored from the checkpoint, before the
# run folder changes). `state` is everything the loop carries from step to step, and what a
# checkpoint stores besides weights, optimizer and random states.


model_args = {f.name: globals()[f.name] for f in fields(GPTConfig) if f.name not in ('model_name', 'vocab_size')}
try:
    model_config = make_config(model_name, vocab_size=meta['vocab_size'], **model_args)
except ValueError as e:
    fail(e)
if init_from == 'scratch':
    model = GPT(model_config)
model.to(device)
torch.manual_seed(seed + rank)  # dropout differs between processes; the init above does not
raw_model = model
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
scaler = torch.amp.GradScaler(device_type, enabled=dtype == 'float16')
state = SimpleNamespace(
    iter_num=0,                 # optimizer steps taken
    loss_sum=torch.zeros((), device=device), loss_steps=0,  # train loss summed since the last row (on device)
    last_row_iter=-1, elapsed_s=0.0, wall_time_s=0.0,       # wall_time_s: earlier attempts, evaluation included
    last_train_loss=None, min_train_loss=math.inf, last_val_loss=None, last_val_bpb=None,
    best_val_loss=math.inf, best_val_iter=None,
    checkpoint_losses={},       # {iteration: val loss of its weights}: every numbered checkpoint was measured
    data_rng=None,              # the batch generator before the current iteration's draw
    resumed_at=[])
if init_from == 'resume':
    differ = [f"{k} (checkpoint {ckpt['model_args'].get(k)!r}, now {v!r})" for k, v in asdict(model_config).items()
              if ckpt['model_args'].get(k) != v and k != 'attn_impl']
    if differ:
        fail(f"{resume_path}: model settings differ from the checkpoint's: {', '.join(differ)}")
    if ckpt.get('data_sha256') not in (None, meta['train']['sha256']):
        fail(f"{resume_path}: the run was trained on other data than {variant_dir(data_dir, dataset_variant, tokenizer)} "
             f"holds now (train.bin sha256 differs)")
    model.config.attn_impl = attn_impl or model.config.attn_impl  # the same arithmetic, another kernel
    optimizer.load_state_dict(ckpt['optimizer'])
    scaler.load_state_dict(ckpt['scaler'])
    data_rng.bit_generator.state = ckpt['data_rng']
    torch.set_rng_state(ckpt['torch_rng'][rank % len(ckpt['torch_rng'])].cpu())
    if device_type == 'cuda' and ckpt.get('cuda_rng'):
        torch.cuda.set_rng_state(ckpt['cuda_rng'][rank % len(ckpt['cuda_rng'])].cpu())
    for key in vars(state):
        if key in ckpt:
            setattr(state, key, ckpt[key])
    state.loss_sum = torch.as_tensor(state.loss_sum, dtype=torch.float32).to(device)  # a float in older files
    state.resumed_at = state.resumed_at + [state.iter_num]
    del ckpt
n_params = raw_model.num_params()
flops_per_token = raw_model.flops_per_token(block_size)  # model.flops_per_token: 6 per weight + attention
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
layer_groups = raw_model.layer_groups()
if compile:
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)


def layer_norms(grads):
    """One norm per layer, of the gradients or the weights, as a device tensor (no host sync)."""
    out = []
    for params in layer_groups.values():
        ts = [p.grad if grads else p for p in params if not grads or p.grad is not None]
        out.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in ts])) if ts
                   else torch.zeros((), device=device))
    return torch.stack(out)


def loss_limit():
    """The spike rule: a loss above min(ln(vocab_size) + 1, diverge_factor x the lowest train loss so far),
    worse than guessing uniformly or a spike, means the run diverged (NaN too)."""
    limit = math.log(meta['vocab_size']) + 1.0
    if diverge_factor > 0 and math.isfinite(state.min_train_loss):
        limit = min(limit, diverge_factor * state.min_train_loss)
    return limit


def over_limit(iter_num, **losses):
    """The message when one of the losses breaks the spike rule, else None."""
    for name, value in losses.items():
        if value is not None and not value <= loss_limit():
            return (f"{name} loss {value:.4g} at iteration {iter_num} is above {loss_limit():.4g} (the spike rule): "
                    f"the run diverged")
    return None


checkpoint_extras = dict(config=config, tokenizer=tok.info(), data_sha256=meta['train']['sha256'])


def save_numbered(measured_loss):
    """ckpt_<iter>.pt of weights measured under the spike rule. Rotation keeps the newest keep_checkpoints
    and the one with the lowest measured loss: a run that diverges later keeps a good one."""
    state.checkpoint_losses[state.iter_num] = measured_loss
    path = runs.checkpoint_path(run_dir, state.iter_num)
    runs.save_checkpoint(path, raw_model, optimizer, **vars(state), **checkpoint_extras,
                         scaler=scaler.state_dict(), torch_rng=[torch.get_rng_state()],
                         cuda_rng=[torch.cuda.get_rng_state(device)] if device_type == 'cuda' else [])
    saved = runs.list_checkpoints(run_dir)
    if keep_checkpoints > 0:
        lowest = min(saved, key=lambda it: state.checkpoint_losses.get(it, math.inf))
        for old in list(saved)[:-keep_checkpoints]:
            if old != lowest:
                os.remove(saved[old])
    return path


def write_failure(path, e):
    detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{path}: could not be written ({detail}); free some disk space"

# -----------------------------------------------------------------------------
# the run folder: only now, and only by the first process


writer = None
wall_start = time.time()  # wall clock, evaluation included; state.wall_time_s holds earlier attempts


def summary_fields(message=None):
    tokens = state.iter_num * tokens_per_iter
    speed = tokens / state.elapsed_s if state.elapsed_s > 0 and state.iter_num else None
    return dict(run_name=run_name, model_name=raw_model.config.model_name, seed=seed, iters=state.iter_num,
                max_iters=max_iters, tokens_seen=tokens,
                wall_time_s=round(state.wall_time_s + time.time() - wall_start, 3),
                train_time_s=round(state.elapsed_s, 3), final_val_loss=state.last_val_loss,
                final_val_bpb=state.last_val_bpb,
                best_val_loss=state.best_val_loss if state.best_val_iter is not None else None,
                best_val_iter=state.best_val_iter, final_train_loss=state.last_train_loss,
                n_params=n_params, n_params_non_embedding=raw_model.num_params(non_embedding=True),
                flops_per_token=flops_per_token, train_flops=flops_per_token * tokens,  # training FLOPs so far
                tokens_per_s_mean=speed, mfu_mean=raw_model.estimate_mfu(speed / world_size, device, peak_flops,
                                                                         block_size) if speed else None,
                message=message, updated_at=datetime.now(timezone.utc).isoformat(timespec='seconds'))


if ddp:
    dist.barrier()  # everyone has checked the settings before the first process changes the folder
if master:
    try:
        run_lock.claim()
        if init_from == 'scratch':  # asked for with --overwrite=True (checked above), or an empty leftover
            for entry in os.scandir(run_dir):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                elif entry.name != runs.LOCK_FILE:
                    os.remove(entry.path)
        os.makedirs(os.path.join(run_dir, 'checkpoints'), exist_ok=True)
        if tok.file:  # a run carries its tokenizer: eval_harness.py and sample.py decode with this one
            src = os.path.join(variant_dir(data_dir, dataset_variant, tokenizer), tok.file)
            runs.atomic_write_bytes(os.path.join(run_dir, tok.file), open(src, 'rb').read())
        runs.atomic_write_json(os.path.join(run_dir, 'config.json'), dict(
            config, run_name=run_name, config_file=config_file, model_args=asdict(raw_model.config),
            tokenizer=tok.name, tokenizer_info=tok.info(), n_params=n_params,
            n_params_non_embedding=raw_model.num_params(non_embedding=True),
            n_params_active=raw_model.num_params(active=True), flops_per_token=flops_per_token,
            tokens_per_iter=tokens_per_iter, world_size=world_size, device=device, dtype=dtype, compile=compile,
            device_name=torch.cuda.get_device_name(device) if device_type == 'cuda' else device_type,
            torch_threads=torch.get_num_threads(), val_bpb_text=val_bpb_text,
            torch_version=torch.__version__, git_commit=runs.git_commit(), data=dict(meta, data_dir=data_dir),
            resumed_at=state.resumed_at, started_at=datetime.now(timezone.utc).isoformat(timespec='seconds')))
        writer = runs.RunWriter(run_dir, max_iters, state.last_row_iter if init_from == 'resume' else None,
                                tensorboard)
        writer.summary(summary_fields(), 'running')
    except OSError as e:
        fail(f"{e.filename or run_dir}: cannot write the run folder ({e.strerror}); check the path and "
             f"permissions of --out_dir={out_dir}")
    print(f"{run_dir}: {raw_model.config.model_name}, {n_params / 1e6:.2f}M parameters, {tok.name} tokenizer, "
          f"{device} {dtype}{' compiled' if compile else ''}{threads_note}, {world_size} process(es), "
          f"{tokens_per_iter:,} tokens/iteration")
    if init_from == 'resume':
        print(f"resuming {run_dir} from {resume_path} (iteration {state.iter_num})")
    if schedule_note:
        print(schedule_note)

stop_signal = None


def request_stop(signum, frame):
    """First Ctrl-C/SIGTERM: finish the iteration, save, exit. A second one: stop at once."""
    global stop_signal
    if stop_signal is not None:
        raise KeyboardInterrupt
    stop_signal = signum


if __name__ == '__main__':  # a process-wide setting: only when this file is the program
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

# -----------------------------------------------------------------------------
# the training loop: at a logged step one row (losses, spike rule, best checkpoint, the writer), at a
# checkpoint step the weights measured then saved, then one optimizer step

grad_norm = layer_grad_norms = None
starts = next_iteration_starts()
x, y = get_batch(train_data, starts[0])
status, message = 'completed', None
t0 = time.time()
try:
    while True:
        iter_num = state.iter_num
        last = iter_num >= max_iters
        eval_step = iter_num % eval_interval == 0 or last
        row_step = (iter_num % log_interval == 0 or eval_step) and iter_num > state.last_row_iter
        ckpt_step = last or bool(save_checkpoints and checkpoint_interval and iter_num
                                 and iter_num % checkpoint_interval == 0)
        stopping = stop_signal is not None and not ddp
        if ddp and (row_step or last):  # processes agree on stopping at rows, where they sync anyway
            flag = torch.tensor(float(stop_signal is not None), device=device)
            dist.all_reduce(flag)
            stopping = flag.item() > 0
        val_loss = None
        if row_step:  # a row describes the model after iter_num steps; the time since t0 is training only
            dt, steps = time.time() - t0, state.loss_steps
            if ddp:
                dist.all_reduce(state.loss_sum, op=dist.ReduceOp.AVG)
            train_loss = state.loss_sum.item() / steps if steps else None
            val_loss, val_bpb = estimate_val() if eval_step else (None, None)
            state.elapsed_s += dt
            message = over_limit(iter_num, train=train_loss, val=val_loss)
            if message:
                status = 'diverged'
                break
            norms = layer_norms(grads=False)[None]
            if grad_norm is not None:
                norms = torch.cat([norms, layer_grad_norms[None], grad_norm.reshape(1, 1).expand(1, norms.size(1))])
            norms = norms.tolist()
            if train_loss is not None:
                state.last_train_loss, state.min_train_loss = train_loss, min(state.min_train_loss, train_loss)
            if val_loss is not None:
                state.last_val_loss, state.last_val_bpb = val_loss, val_bpb
            if val_loss is not None and val_loss < state.best_val_loss:
                state.best_val_loss, state.best_val_iter = val_loss, iter_num
                if master and save_checkpoints:  # weights for eval and sampling: no optimizer
                    try:
                        runs.save_checkpoint(runs.best_checkpoint_path(run_dir), raw_model, iter_num=iter_num,
                                             val_loss=val_loss, tokenizer=tok.info(), config=config)
                    except (OSError, RuntimeError) as e:  # a full disk
                        status, message = 'failed', write_failure(runs.best_checkpoint_path(run_dir), e)
                        break
            state.loss_sum.zero_()
            state.loss_steps, state.last_row_iter = 0, iter_num
            if master:
                speed = steps * tokens_per_iter / dt if steps else None
                mfu = raw_model.estimate_mfu(speed / world_size, device, peak_flops, block_size) if speed else None
                row = dict(iter=iter_num, tokens_seen=iter_num * tokens_per_iter, elapsed_s=round(state.elapsed_s, 3),
                           lr=get_lr(max(iter_num - 1, 0)), train_loss=train_loss, val_loss=val_loss, val_bpb=val_bpb,
                           grad_norm=norms[2][0] if grad_norm is not None else None,
                           weight_norm=math.sqrt(sum(v * v for v in norms[0])), tokens_per_s=speed,
                           ms_per_iter=1000 * dt / steps if steps else None, mfu=mfu,
                           aux_loss=raw_model.aux_loss.item() if raw_model.aux_loss is not None else None)
                eta_s = (max_iters - iter_num) * dt / steps if steps else None
                writer.log(row, list(layer_groups), norms[0], norms[1] if grad_norm is not None else None, eta_s)
                if eval_step or time.time() - writer.last_heartbeat > 60:
                    writer.summary(summary_fields(), 'running')
            t0 = time.time()
        if ckpt_step or stopping:  # only weights measured under the spike rule become a checkpoint
            measured = val_loss if val_loss is not None else estimate_val()[0]
            message = over_limit(iter_num, val=measured)
            if message:
                status, message = 'diverged', f"checkpoint not saved: {message}"
                break
            if master and (save_checkpoints or stopping):
                state.wall_time_s += time.time() - wall_start  # the checkpoint carries the total so far
                wall_start = time.time()
                try:
                    path = save_numbered(measured)
                except (OSError, RuntimeError) as e:  # a full disk: the older checkpoints are intact, no .tmp left
                    status, message = 'failed', write_failure(runs.checkpoint_path(run_dir, iter_num), e)
                    break
                if stopping:
                    print(f"saved {path}")
            t0 = time.time()
        if last:
            break
        if stopping:
            status, message = 'interrupted', f"stopped by {signal.Signals(stop_signal).name} at iteration {iter_num}"
            break

        # one optimizer step: accum_steps micro-batches, the next batch fetched while the device computes
        lr = get_lr(iter_num)
        for group in optimizer.param_groups:
            group['lr'] = lr * group.get('lr_scale', 1.0)  # optimizer='muon': its groups peak at muon_lr
        for micro_step in range(accum_steps):
            if ddp:  # all-reduce gradients only on the last micro-step
                model.require_backward_grad_sync = micro_step == accum_steps - 1
            with autocast:
                _, loss = model(x, y)
                loss = loss / accum_steps
            if micro_step + 1 == accum_steps:
                starts = next_iteration_starts()
            x, y = get_batch(train_data, starts[(micro_step + 1) % accum_steps])
            scaler.scale(loss).backward()
            state.loss_sum += loss.detach()
        scaler.unscale_(optimizer)
        if (iter_num + 1) % log_interval == 0 or (iter_num + 1) % eval_interval == 0 or iter_num + 1 >= max_iters:
            layer_grad_norms = layer_norms(grads=True)  # only before a row: these cost a kernel per tensor
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip if grad_clip > 0 else math.inf)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        state.iter_num, state.loss_steps = iter_num + 1, state.loss_steps + 1
except BaseException as e:  # a crash or a second Ctrl-C: summary.json says so, the folder is released
    status = 'interrupted' if isinstance(e, KeyboardInterrupt) else 'failed'
    message = f"{type(e).__name__}: {e}".splitlines()[0]
    if isinstance(e, OSError) and e.filename:  # an environment error (disk full, permissions): one line
        message = f"{e.filename}: {e.strerror}"
    if writer is not None:
        try:
            writer.summary(summary_fields(message if status == 'failed' else 'stopped at once by Ctrl-C'), status)
        except OSError:
            pass
    if isinstance(e, OSError):
        fail(f"{message}; status failed in {run_dir}/summary.json")
    if run_lock is not None:
        run_lock.release()
    raise

# -----------------------------------------------------------------------------
# the end: summary, plots, what to do next, an exit code that says how it went

if master:
    writer.summary(summary_fields(message), status)
    writer.close()
    try:
        if plots:
            runs.plot_run(run_dir)
    except Exception as e:  # plots are a convenience: never lose a finished run to them
        print(f"train.py: warning: could not draw plots: {e}", file=sys.stderr)
    saved = runs.list_checkpoints(run_dir)
    if status == 'diverged':
        good = [it for it in saved if state.checkpoint_losses.get(it, math.inf) <= loss_limit()]
        note = f"no good checkpoint: none was measured under {loss_limit():.4g}"
        if good:
            note = f"the newest good checkpoint is {saved[good[-1]]} (val loss {state.checkpoint_losses[good[-1]]:.4f})"

        best = runs.best_checkpoint_path(run_dir)
        if best.is_file():
            note += f"; the best val loss ({state.best_val_loss:.4f} at iteration {state.best_val_iter}) is in {best}"
        print(f"train.py: {message}; status diverged in {run_dir}/summary.json; {note}", file=sys.stderr)
    elif status in ('interrupted', 'failed'):
        again = f"continue with: {resume_cmd}"
        if not saved:  # nothing to resume from: the same command again, replacing this folder
            again = f"no checkpoint was saved; start again with: {shlex.join(['python', 'train.py', *map(str, cli_args)])}"
            if not any(a.startswith('--overwrite') for a in cli_args):
                again += ' --overwrite=True'
        print(f"train.py: {message}; status {status} in {run_dir}/summary.json; {again}", file=sys.stderr)
    run_lock.release()
if ddp:
    dist.destroy_process_group()
sys.exit({'completed': 0, 'diverged': 1, 'failed': 1}.get(status, 128 + (stop_signal or 0)))
