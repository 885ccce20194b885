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
describes and writes the run folder.
"""
import inspect
import math
import os
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, fields
from datetime import datetime, timezone

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import runs
from configurator import ConfigError, comments, configure
from model import GPT, GPTConfig, CheckpointError, load_checkpoint, make_config, pick_device, save_checkpoint
from prepare import DataError, load_bin, load_tokenizer, parse_tokenizer, read_meta, variant_dir

# -----------------------------------------------------------------------------
# I/O
out_dir: str = 'out'
run_name: str = ''              # '' -> the config file's name (config/baseline.py -> baseline), else model_name
overwrite: bool = False         # replace an existing run folder of the same name
init_from: str = 'scratch'      # 'scratch' | 'resume' (continue out_dir/run_name with its stored settings)
log_interval: int = 10          # iterations between metric rows (per-layer norms are computed only then)
eval_interval: int = 250        # iterations between validation losses
eval_windows: int = 256         # validation windows of block_size tokens, evenly spaced: the same for every run
save_checkpoints: bool = True   # checkpoints at checkpoint_interval, at the end, and ckpt_best.pt
checkpoint_interval: int = 0    # 0: only at the end (Ctrl-C always saves one)
keep_checkpoints: int = 3       # newest numbered checkpoints kept; 0 keeps all (ckpt_best.pt is never removed)
tensorboard: bool = True        # TensorBoard events in the run folder's tb/
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
# learning rate schedule: linear warmup, cosine decay to min_lr
warmup_iters: int = 100         # linear warmup steps
lr_decay_iters: int = 0         # 0: max_iters (a resume that raises max_iters keeps the old end)
min_lr: float = 1e-4            # where the cosine ends
# divergence: a logged train loss above min(ln(vocab_size) + 1, diverge_factor * lowest so far) stops the run
diverge_factor: float = 2.0     # 0: stop only on NaN/inf
# system
device: str = 'auto'            # 'auto' (cuda, then mps, then cpu) | 'cuda' | 'cuda:1' | 'mps' | 'cpu'
dtype: str = 'auto'             # 'auto' (bfloat16 where supported, else float16 on CUDA, float32 elsewhere)
compile: bool | None = None     # torch.compile; None: on CUDA only
seed: int = 1337                # init and batch order: runs with one seed see the same batches
deterministic: bool = False     # PyTorch's deterministic algorithms (slower)
peak_flops: float | None = None  # for MFU; None: model.PEAK_FLOPS by device name
# settings a resume may change: they do not alter the arithmetic of the steps already taken
resume_may_change = ('out_dir', 'run_name', 'overwrite', 'init_from', 'log_interval', 'eval_interval',
                     'save_checkpoints', 'checkpoint_interval', 'keep_checkpoints', 'tensorboard', 'data_dir',
                     'max_iters', 'lr_decay_iters', 'diverge_factor', 'device', 'compile', 'deterministic',
                     'peak_flops', 'attn_impl')
setting_help.update(comments(open(__file__, encoding='utf-8').read()))
# -----------------------------------------------------------------------------
config_keys = list(__annotations__)


def fail(message):
    sys.exit(f"train.py: error: {message}")


try:
    config_file = configure(globals(), sys.argv[1:])
    if init_from == 'resume':  # the run's stored settings, then this command's file and flags on top
        run_name = run_name or (os.path.splitext(os.path.basename(config_file))[0] if config_file else '')
        if not run_name:
            fail("--init_from=resume needs --run_name=NAME (the run folder under out_dir to continue)")
        run_dir = os.path.join(out_dir, run_name)
        checkpoints = runs.list_checkpoints(run_dir)
        if not checkpoints:
            fail(f"{run_dir} has no checkpoint to resume from (expected {run_dir}/checkpoints/ckpt_*.pt)")
        resume_path = checkpoints[max(checkpoints)]
        try:
            model, ckpt = load_checkpoint(resume_path, 'cpu')  # moved to the device once it is known
        except CheckpointError as e:
            fail(e)
        stored = dict(ckpt.get('config', {}), **{k: v for k, v in ckpt.get('model_args', {}).items()
                                                 if k in config_keys and k not in ckpt.get('config', {})})
        globals().update({k: v for k, v in stored.items() if k in config_keys})
        configure(globals(), sys.argv[1:])
        out_dir, run_name = os.path.dirname(run_dir), os.path.basename(run_dir)  # where the run is now
except ConfigError as e:
    fail(e)
run_name = run_name or (os.path.splitext(os.path.basename(config_file))[0] if config_file else model_name)
run_dir = os.path.join(out_dir, run_name)

# -----------------------------------------------------------------------------
# validate everything before the disk is touched: settings, device, data, the model, the run folder

if init_from not in ('scratch', 'resume'):
    fail(f"--init_from={init_from!r}: expected scratch or resume")
if dataset_variant not in ('small', 'full'):
    fail(f"--dataset_variant={dataset_variant!r}: expected small or full")
if os.sep in run_name or run_name in ('.', '..'):
    fail(f"--run_name={run_name!r}: expected a plain folder name")
for key in ('log_interval', 'eval_interval', 'eval_windows', 'batch_size', 'block_size', 'gradient_accumulation_steps'):
    if globals()[key] < 1:
        fail(f"--{key}={globals()[key]}: expected a positive integer")
if dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
    fail(f"--dtype={dtype!r}: expected auto, float32, bfloat16 or float16")
schedule_note = None
if init_from == 'resume':
    changed = sorted(k for k in config_keys if k in stored and k not in resume_may_change
                     and globals()[k] != stored[k])
    if changed:
        fail(f"{resume_path}: settings differ from the checkpoint's: " + ', '.join(
            f"{k} (checkpoint {stored[k]!r}, now {globals()[k]!r})" for k in changed)
             + "; only " + ', '.join(k for k in resume_may_change if k not in ('run_name', 'init_from'))
             + " may change on resume")
    if max_iters < ckpt['iter_num']:
        fail(f"--max_iters={max_iters}: the checkpoint {resume_path} is already at iteration {ckpt['iter_num']}")
    if lr_decay_iters == stored.get('lr_decay_iters', 0) and max_iters != stored.get('max_iters', max_iters):
        lr_decay_iters = stored.get('lr_decay_iters') or stored.get('max_iters')  # keep the schedule it promised
        schedule_note = (f"max_iters {stored.get('max_iters')} -> {max_iters}: the cosine schedule still ends at "
                         f"iteration {lr_decay_iters} and the run goes on at min_lr={min_lr:g} "
                         f"(pass --lr_decay_iters=N to stretch it)")
config = {k: globals()[k] for k in config_keys}

ddp = int(os.environ.get('RANK', -1)) != -1
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
master = rank == 0
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
torch.manual_seed(seed)

# data: random windows whose order depends only on the seed and the data, so that two variants run
# with the same seed see the same batches, whatever their number of processes
try:
    tokenizer = parse_tokenizer(tokenizer)[0]
    meta = read_meta(data_dir, dataset_variant, tokenizer=tokenizer)
    train_data = load_bin(data_dir, dataset_variant, 'train', tokenizer=tokenizer)
    val_data = load_bin(data_dir, dataset_variant, 'val', tokenizer=tokenizer)
    tok = load_tokenizer(meta.get('tokenizer_info'), variant_dir(data_dir, dataset_variant, tokenizer))
except DataError as e:
    fail(e)
if init_from == 'resume' and ckpt.get('data_sha256') not in (None, meta['train']['sha256']):
    fail(f"{resume_path}: the run was trained on other data than {variant_dir(data_dir, dataset_variant, tokenizer)} "
         f"holds now (train.bin sha256 differs)")
for split, data in (('train', train_data), ('val', val_data)):
    if len(data) < block_size + 2:
        fail(f"{variant_dir(data_dir, dataset_variant, tokenizer)}/{split}.bin holds {len(data)} tokens, "
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
    """Window starts for one iteration: rows are micro-steps of all processes; this process's rows."""
    global pending_rng_state  # checkpoints store the state before this draw: a resume redraws these windows
    pending_rng_state = data_rng.bit_generator.state
    starts = data_rng.integers(0, len(train_data) - block_size - 1, size=(gradient_accumulation_steps, batch_size))
    return starts[rank * accum_steps:(rank + 1) * accum_steps]


val_starts = np.linspace(0, len(val_data) - block_size - 1, eval_windows).astype(np.int64)[rank::world_size]


@torch.no_grad()
def estimate_val():
    """(val loss in nats per token, val bits per byte) over the fixed validation windows. Bits per
    byte: summed nats / ln 2 / summed UTF-8 bytes of the predicted tokens (end-of-text has none and
    is left out of both), which does not depend on the tokenizer."""
    model.eval()
    total = torch.zeros(4, device=device)  # nats, tokens, nats on text tokens, bytes
    for i in range(0, len(val_starts), batch_size):
        x, y = get_batch(val_data, val_starts[i:i + batch_size])
        with autocast:
            _, loss = model(x, y, reduction='none')
        nbytes = token_bytes[y]
        total += torch.stack([loss.sum(), torch.tensor(float(loss.numel()), device=device),
                              (loss * (nbytes > 0)).sum(), nbytes.sum().float()])
    if ddp:
        dist.all_reduce(total)
    model.train()
    nats, tokens, text_nats, nbytes = total.tolist()
    return nats / tokens, text_nats / math.log(2) / nbytes


def get_lr(it):
    """Learning rate of step `it` (0-based): linear warmup, then cosine decay to min_lr."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    decay_iters = lr_decay_iters or max_iters
    if it >= decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)

# -----------------------------------------------------------------------------
# the model (built, or loaded and checked, before the run folder changes)


model_args = {f.name: globals()[f.name] for f in fields(GPTConfig) if f.name not in ('model_name', 'vocab_size')}
try:
    model_config = make_config(model_name, vocab_size=meta['vocab_size'], **model_args)
except ValueError as e:
    fail(e)
state = dict(iter_num=0, last_row_iter=-1, best_val_loss=math.inf, best_val_iter=None, elapsed_s=0.0,
             wall_time_s=0.0, loss_sum=0.0, loss_steps=0, last_val_loss=None, last_val_bpb=None,
             last_train_loss=None, min_train_loss=math.inf, resumed_at=[])
if init_from == 'resume':
    differ = [f"{k} (checkpoint {ckpt['model_args'].get(k)!r}, now {v!r})" for k, v in asdict(model_config).items()
              if ckpt['model_args'].get(k) != v and k != 'attn_impl']
    if differ:
        fail(f"{resume_path}: model settings differ from the checkpoint's: {', '.join(differ)}")
    model.config.attn_impl = attn_impl or model.config.attn_impl  # the same arithmetic, another kernel
    model.to(device)
    state.update({k: ckpt[k] for k in state if k in ckpt})
    state['resumed_at'] = state['resumed_at'] + [state['iter_num']]
else:
    model = GPT(model_config).to(device)
    if os.path.isdir(run_dir) and any(files for _, _, files in os.walk(run_dir)):
        if not overwrite:
            fail(f"{run_dir} already exists: pass --overwrite=True to replace it, or continue it with: "
                 f"python train.py --init_from=resume --run_name={run_name}"
                 + (f" --out_dir={out_dir}" if out_dir != 'out' else '') + ", or choose another --run_name")
        if not os.path.isfile(os.path.join(run_dir, 'config.json')):
            fail(f"{run_dir} is not a run folder (no config.json): refusing to delete it even with --overwrite=True")
torch.manual_seed(seed + rank)  # dropout differs between processes; the init above does not
raw_model = model
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
scaler = torch.amp.GradScaler(device_type, enabled=dtype == 'float16')
if init_from == 'resume':
    optimizer.load_state_dict(ckpt['optimizer'])
    scaler.load_state_dict(ckpt['scaler'])
    data_rng.bit_generator.state = ckpt['data_rng']
    torch.set_rng_state(ckpt['torch_rng'][rank % len(ckpt['torch_rng'])].cpu())
    if device_type == 'cuda' and ckpt.get('cuda_rng'):
        torch.cuda.set_rng_state(ckpt['cuda_rng'][rank % len(ckpt['cuda_rng'])].cpu())
    del ckpt
n_params = raw_model.num_params()
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

# -----------------------------------------------------------------------------
# the run folder: only now, and only by the first process


writer = None
wall_start = time.time()  # wall clock, evaluation included; state['wall_time_s'] holds earlier attempts


def summary_fields(message=None):
    tokens = state['iter_num'] * tokens_per_iter
    speed = tokens / state['elapsed_s'] if state['elapsed_s'] > 0 and state['iter_num'] else None
    return dict(run_name=run_name, model_name=raw_model.config.model_name, seed=seed, iters=state['iter_num'],
                max_iters=max_iters, tokens_seen=tokens,
                wall_time_s=round(state['wall_time_s'] + time.time() - wall_start, 3),
                train_time_s=round(state['elapsed_s'], 3), final_val_loss=state['last_val_loss'],
                final_val_bpb=state['last_val_bpb'],
                best_val_loss=state['best_val_loss'] if state['best_val_iter'] is not None else None,
                best_val_iter=state['best_val_iter'], final_train_loss=state['last_train_loss'],
                n_params=n_params, n_params_non_embedding=raw_model.num_params(non_embedding=True),
                tokens_per_s_mean=speed, mfu_mean=raw_model.estimate_mfu(speed / world_size, device, peak_flops,
                                                                         block_size) if speed else None,
                message=message, updated_at=datetime.now(timezone.utc).isoformat(timespec='seconds'))


def on_crash(exc_type, exc, tb):
    """Whatever stops the run unexpectedly: summary.json says failed, with the message. An environment
    error (disk full, permissions) is one line; anything else keeps its traceback."""
    message = f"{type(exc).__name__}: {exc}".splitlines()[0]
    if isinstance(exc, OSError) and exc.filename:
        message = f"{exc.filename}: {exc.strerror}"
    status = 'interrupted' if isinstance(exc, KeyboardInterrupt) else 'failed'  # a second Ctrl-C
    if writer is not None:
        try:
            writer.summary(summary_fields(message if status == 'failed' else 'stopped at once by Ctrl-C'), status)
        except OSError:
            pass
    if isinstance(exc, OSError):
        print(f"train.py: error: {message}; status failed in {run_dir}/summary.json", file=sys.stderr)
    else:
        sys.__excepthook__(exc_type, exc, tb)


sys.excepthook = on_crash
if ddp:
    dist.barrier()  # everyone has checked the folder before the first process changes it
if master:
    try:
        if init_from == 'scratch' and os.path.isdir(run_dir):
            shutil.rmtree(run_dir)  # asked for with --overwrite=True (or an empty leftover), checked above
        os.makedirs(os.path.join(run_dir, 'checkpoints'), exist_ok=True)
        if tok.file:  # a run carries its tokenizer: eval_harness.py and sample.py decode with this one
            src = os.path.join(variant_dir(data_dir, dataset_variant, tokenizer), tok.file)
            runs.atomic_write_bytes(os.path.join(run_dir, tok.file), open(src, 'rb').read())
        runs.atomic_write_json(os.path.join(run_dir, 'config.json'), dict(
            config, run_name=run_name, config_file=config_file, model_args=asdict(raw_model.config),
            tokenizer=tok.info(), n_params=n_params, n_params_non_embedding=raw_model.num_params(non_embedding=True),
            tokens_per_iter=tokens_per_iter, world_size=world_size, device=device, dtype=dtype, compile=compile,
            device_name=torch.cuda.get_device_name(device) if device_type == 'cuda' else device_type,
            torch_version=torch.__version__, git_commit=runs.git_commit(), data=dict(meta, data_dir=data_dir),
            resumed_at=state['resumed_at'], started_at=datetime.now(timezone.utc).isoformat(timespec='seconds')))
        writer = runs.RunWriter(run_dir, max_iters, state['last_row_iter'] if init_from == 'resume' else None,
                                tensorboard)
        writer.summary(summary_fields(), 'running')
    except OSError as e:
        fail(f"{e.filename or run_dir}: cannot write the run folder ({e.strerror}); check the path and "
             f"permissions of --out_dir={out_dir}")
    print(f"{run_dir}: {raw_model.config.model_name}, {n_params / 1e6:.2f}M parameters, {tok.name} tokenizer, "
          f"{device} {dtype}{' compiled' if compile else ''}, {world_size} process(es), "
          f"{tokens_per_iter:,} tokens/iteration")
    if init_from == 'resume':
        print(f"resuming {run_dir} from {resume_path} (iteration {state['iter_num']})")
    if schedule_note:
        print(schedule_note)


def save(iter_num):
    """Numbered checkpoint; keeps the newest keep_checkpoints (ckpt_best.pt is separate)."""
    path = runs.checkpoint_path(run_dir, iter_num)
    save_checkpoint(path, raw_model, optimizer, **state, scaler=scaler.state_dict(), config=config,
                    tokenizer=tok.info(), data_sha256=meta['train']['sha256'], data_rng=pending_rng_state,
                    torch_rng=[torch.get_rng_state()],
                    cuda_rng=[torch.cuda.get_rng_state(device)] if device_type == 'cuda' else [])
    if keep_checkpoints > 0:
        for old in list(runs.list_checkpoints(run_dir))[:-keep_checkpoints]:
            os.remove(runs.checkpoint_path(run_dir, old))
    return path


def save_best(iter_num, val_loss):
    """ckpt_best.pt: the weights with the lowest val loss so far (no optimizer: for eval and sampling)."""
    save_checkpoint(runs.best_checkpoint_path(run_dir), raw_model, iter_num=iter_num, val_loss=val_loss,
                    tokenizer=tok.info(), config=config)


def write_failure(path, e):
    detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{path}: could not be written ({detail}); free some disk space"


def loss_limit():
    """The spike rule: above this a train loss means the run diverged (worse than guessing uniformly,
    or diverge_factor times the lowest loss so far)."""
    limit = math.log(meta['vocab_size']) + 1.0
    if diverge_factor > 0 and math.isfinite(state['min_train_loss']):
        limit = min(limit, diverge_factor * state['min_train_loss'])
    return limit


stop_signal = None


def request_stop(signum, frame):
    """First Ctrl-C/SIGTERM: finish the iteration, save, exit. A second one: stop at once."""
    global stop_signal
    if stop_signal is not None:
        raise KeyboardInterrupt
    stop_signal = signum


signal.signal(signal.SIGINT, request_stop)
signal.signal(signal.SIGTERM, request_stop)

def log_row(iter_num, dt, eval_step):
    """A logged step: train loss (mean since the last row), val loss and bits per byte at eval steps,
    norms, the spike rule, ckpt_best.pt, then one row to the writer. A row describes the model after
    iter_num steps. Returns (status, message) when the run must stop, else None."""
    steps = state['loss_steps']
    if ddp:
        dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
    train_loss = loss_sum.item() / steps if steps else None
    state['elapsed_s'] += dt
    val_loss, val_bpb = estimate_val() if eval_step else (None, None)
    for name, value in (('train', train_loss), ('val', val_loss)):
        if value is not None and not value <= loss_limit():
            return 'diverged', (f"{name} loss {value:.4g} at iteration {iter_num} is above {loss_limit():.4g} "
                                f"(the spike rule): the run diverged")
    norms = layer_norms(grads=False)[None]
    if grad_norm is not None:
        norms = torch.cat([norms, layer_grad_norms[None], grad_norm.reshape(1, 1).expand(1, norms.size(1))])
    norms = norms.tolist()
    if train_loss is not None:
        state['last_train_loss'] = train_loss
        state['min_train_loss'] = min(state['min_train_loss'], train_loss)
    if val_loss is not None:
        state['last_val_loss'], state['last_val_bpb'] = val_loss, val_bpb
        if val_loss < state['best_val_loss']:
            state['best_val_loss'], state['best_val_iter'] = val_loss, iter_num
            if master and save_checkpoints:
                try:
                    save_best(iter_num, val_loss)
                except (OSError, RuntimeError) as e:  # a full disk: see checkpoint() below
                    return 'failed', write_failure(runs.best_checkpoint_path(run_dir), e)
    loss_sum.zero_()
    state['loss_steps'], state['last_row_iter'] = 0, iter_num
    if master:
        speed = steps * tokens_per_iter / dt if steps else None
        row = dict(iter=iter_num, tokens_seen=iter_num * tokens_per_iter, elapsed_s=round(state['elapsed_s'], 3),
                   lr=get_lr(max(iter_num - 1, 0)), train_loss=train_loss, val_loss=val_loss, val_bpb=val_bpb,
                   grad_norm=norms[2][0] if grad_norm is not None else None,
                   weight_norm=math.sqrt(sum(v * v for v in norms[0])), tokens_per_s=speed,
                   ms_per_iter=1000 * dt / steps if steps else None,
                   mfu=raw_model.estimate_mfu(speed / world_size, device, peak_flops, block_size) if speed else None)
        eta_s = (max_iters - iter_num) * dt / steps if steps else None
        writer.log(row, list(layer_groups), norms[0], norms[1] if grad_norm is not None else None, eta_s)
        if eval_step or time.time() - writer.last_heartbeat > 60:
            writer.summary(summary_fields(), 'running')
    return None


def checkpoint(iter_num, stopping):
    """A numbered checkpoint, unless the loss or the weights are out of bounds: a checkpoint never holds
    a diverged model. Returns (status, message) when the run must stop, else None."""
    global wall_start
    loss_now = loss_sum.clone()
    if ddp:
        dist.all_reduce(loss_now, op=dist.ReduceOp.AVG)
    weights_ok = torch.stack([p.isfinite().all() for p in raw_model.parameters()]).all()  # one sync, not one per tensor
    if not loss_now.item() / max(state['loss_steps'], 1) <= loss_limit() or not weights_ok.item():
        return 'diverged', f"loss or weights out of bounds at iteration {iter_num}: the run diverged"
    if master and (save_checkpoints or stopping):
        state['iter_num'], state['loss_sum'] = iter_num, loss_sum.item()
        state['wall_time_s'] += time.time() - wall_start  # the checkpoint carries the total so far
        wall_start = time.time()
        try:
            path = save(iter_num)
        except (OSError, RuntimeError) as e:  # a full disk: the older checkpoints are intact, no .tmp left
            return 'failed', write_failure(runs.checkpoint_path(run_dir, iter_num), e)
        if stopping:
            print(f"saved {path}")
    return None

# -----------------------------------------------------------------------------
# the training loop


iter_num = state['iter_num']
loss_sum = torch.tensor(state['loss_sum'], device=device)  # train loss summed since the last row, on device
grad_norm = layer_grad_norms = None
starts = next_iteration_starts()
x, y = get_batch(train_data, starts[0])
status, message = 'completed', None
t0 = time.time()
while True:
    last = iter_num >= max_iters
    eval_step = iter_num % eval_interval == 0 or last
    row_step = (iter_num % log_interval == 0 or eval_step) and iter_num > state['last_row_iter']
    ckpt_step = last or bool(save_checkpoints and checkpoint_interval and iter_num and iter_num % checkpoint_interval == 0)
    stopping = stop_signal is not None and not ddp
    if ddp and (row_step or last):  # processes agree on stopping at rows, where they sync anyway
        flag = torch.tensor(float(stop_signal is not None), device=device)
        dist.all_reduce(flag)
        stopping = flag.item() > 0
    if row_step:
        stop = log_row(iter_num, time.time() - t0, eval_step)  # the time since t0 is training time only
        t0 = time.time()
        if stop:
            status, message = stop
            break
    if ckpt_step or stopping:
        stop = checkpoint(iter_num, stopping)
        if stop:
            status, message = stop
            break
    if last:
        break
    if stopping:
        status, message = 'interrupted', f"stopped by {signal.Signals(stop_signal).name} at iteration {iter_num}"
        break

    # one optimizer step: accum_steps micro-batches, the next batch fetched while the device computes
    lr = get_lr(iter_num)
    for group in optimizer.param_groups:
        group['lr'] = lr
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
        loss_sum += loss.detach()
    scaler.unscale_(optimizer)
    iter_num += 1
    if iter_num % log_interval == 0 or iter_num % eval_interval == 0 or iter_num >= max_iters:
        layer_grad_norms = layer_norms(grads=True)  # only before a row: these cost a kernel per tensor
    grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    state['iter_num'], state['loss_steps'] = iter_num, state['loss_steps'] + 1

# -----------------------------------------------------------------------------
# the end: summary, plots, exit code that says how it went

state['iter_num'] = iter_num
if master:
    writer.summary(summary_fields(message), status)
    writer.close()
    try:
        runs.plot_run(run_dir)
    except Exception as e:  # plots are a convenience: never lose a finished run to them
        print(f"train.py: warning: could not draw plots: {e}", file=sys.stderr)
    resume_cmd = f"python train.py --init_from=resume --run_name={run_name}" + (
        f" --out_dir={out_dir}" if out_dir != 'out' else '')
    newest = runs.list_checkpoints(run_dir)
    if status == 'diverged':
        good = f"the newest good checkpoint is {newest[max(newest)]}" if newest else "no numbered checkpoint was saved"
        best = runs.best_checkpoint_path(run_dir)
        if best.is_file():
            good += f"; the best val loss ({state['best_val_loss']:.4f} at iteration {state['best_val_iter']}) is in {best}"
        print(f"train.py: {message}; status diverged in {run_dir}/summary.json; {good}", file=sys.stderr)
    elif status in ('interrupted', 'failed'):
        print(f"train.py: {message}; status {status} in {run_dir}/summary.json; continue with: {resume_cmd}",
              file=sys.stderr)
if ddp:
    dist.destroy_process_group()
sys.exit({'completed': 0, 'diverged': 1, 'failed': 1}.get(status, 128 + (stop_signal or 0)))
