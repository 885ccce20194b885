"""
Train one model variant on TinyStories and leave a complete run folder in out/<run_name>/.

    python prepare.py --variant small                          # once: tokenized data
    python train.py config/baseline.py --max_iters=50          # one GPU (or MPS, or CPU)
    python train.py config/smoke.py                            # 50 tiny iterations on a CPU, < 1 min
    python train.py config/baseline.py --init_from=resume      # continue out/baseline exactly
    torchrun --standalone --nproc_per_node=8 train.py config/baseline.py          # DDP on one node
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 \\
             --master_port=29500 train.py config/baseline.py                    # and node_rank=1

Settings are the typed globals below; a config file (plain Python) overrides them, then --key=value
flags. `python train.py --help` lists them. The run folder's files are described in runs.py.
"""
import csv
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from contextlib import nullcontext
from datetime import datetime, timezone

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from configurator import ConfigError, configure
from model import GPT, load_checkpoint, make_config, save_checkpoint, unwrap
from prepare import DataError, load_bin, read_meta
import runs

# -----------------------------------------------------------------------------
# I/O
out_dir: str = 'out'
run_name: str = ''              # '' -> the config file's name (config/baseline.py -> baseline), else model_name
overwrite: bool = False         # replace an existing run folder of the same name
init_from: str = 'scratch'      # 'scratch' | 'resume' (continue out_dir/run_name from its newest checkpoint)
log_interval: int = 10          # iterations between metric rows (per-layer norms are computed only then)
eval_interval: int = 250        # iterations between validation losses
eval_windows: int = 256         # validation windows of block_size tokens, evenly spaced: the same for every run
save_checkpoints: bool = True   # checkpoints at checkpoint_interval and at the end (Ctrl-C always saves one)
checkpoint_interval: int = 0    # 0: only at the end
keep_checkpoints: int = 3       # newest kept; 0 keeps all
tensorboard: bool = True
# data
data_dir: str = 'data/tinystories'
dataset_variant: str = 'small'  # 'small' | 'full', made by: python prepare.py --variant ...
batch_size: int = 32            # micro-batch per process
block_size: int = 512
gradient_accumulation_steps: int = 1  # over all processes: DDP splits it across ranks
# model (None: the variant in model.MODEL_REGISTRY decides)
model_name: str = 'baseline'
n_layer: int = 8
n_head: int = 8
n_kv_head: int | None = None
n_embd: int = 512
mlp_hidden: int | None = None
dropout: float = 0.0
bias: bool | None = None
norm: str | None = None
mlp: str | None = None
pos_emb: str | None = None
residual_scale: str | None = None
qk_norm: bool | None = None
attn_impl: str = 'sdpa'
# adamw optimizer
learning_rate: float = 1e-3
max_iters: int = 5000
weight_decay: float = 0.1
beta1: float = 0.9
beta2: float = 0.95
grad_clip: float = 1.0          # 0 disables clipping
# learning rate schedule: linear warmup, cosine decay to min_lr
warmup_iters: int = 100
lr_decay_iters: int = 0         # 0: max_iters
min_lr: float = 1e-4
# system
device: str = 'auto'            # 'auto' (cuda, then mps, then cpu) | 'cuda' | 'cuda:1' | 'mps' | 'cpu'
dtype: str = 'auto'             # 'auto' (bfloat16 where supported, else float16 on CUDA, float32 elsewhere)
compile: bool | None = None     # torch.compile; None: on CUDA only
seed: int = 1337
deterministic: bool = False     # PyTorch's deterministic algorithms (slower)
peak_flops: float | None = None  # for MFU; None: model.PEAK_FLOPS by device name
# -----------------------------------------------------------------------------
config_keys = list(__annotations__)
try:
    config_file = configure(globals(), sys.argv[1:])
except ConfigError as e:
    sys.exit(f"train.py: error: {e}")
run_name = run_name or (os.path.splitext(os.path.basename(config_file))[0] if config_file else model_name)


def fail(message):
    sys.exit(f"train.py: error: {message}")


if init_from not in ('scratch', 'resume'):
    fail(f"--init_from={init_from!r}: expected scratch or resume")
if dataset_variant not in ('small', 'full'):
    fail(f"--dataset_variant={dataset_variant!r}: expected small or full")
if os.sep in run_name or run_name in ('.', '..'):
    fail(f"--run_name={run_name!r}: expected a plain folder name")
for key in ('log_interval', 'eval_interval', 'eval_windows', 'batch_size', 'block_size', 'gradient_accumulation_steps'):
    if globals()[key] < 1:
        fail(f"--{key}={globals()[key]}: expected a positive integer")
config = {k: globals()[k] for k in config_keys}

# -----------------------------------------------------------------------------
# processes, device, precision

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
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
master = rank == 0
accum_steps = gradient_accumulation_steps // world_size  # micro-steps per process and iteration
device_type = torch.device(device).type
if dtype == 'auto':
    dtype = ('bfloat16' if torch.cuda.is_bf16_supported() else 'float16') if device_type == 'cuda' else 'float32'
if dtype not in ('float32', 'bfloat16', 'float16'):
    fail(f"--dtype={dtype!r}: expected auto, float32, bfloat16 or float16")
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

# -----------------------------------------------------------------------------
# data: random windows whose order depends only on the seed and the data, so that two variants run
# with the same seed see the same batches, whatever their number of processes

try:
    meta = read_meta(data_dir, dataset_variant)
    train_data = load_bin(data_dir, dataset_variant, 'train')
    val_data = load_bin(data_dir, dataset_variant, 'val')
except DataError as e:
    fail(e)
for split, data in (('train', train_data), ('val', val_data)):
    if len(data) < block_size + 2:
        fail(f"{data_dir}/{dataset_variant}/{split}.bin holds {len(data)} tokens, fewer than block_size+2={block_size + 2}")
data_rng = np.random.default_rng(seed)
offsets = np.arange(block_size + 1)


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
def estimate_val_loss():
    """Mean loss over the fixed validation windows (split across processes)."""
    model.eval()
    total = torch.zeros(2, device=device)  # sum of window losses, windows
    for i in range(0, len(val_starts), batch_size):
        x, y = get_batch(val_data, val_starts[i:i + batch_size])
        with autocast:
            _, loss = model(x, y)
        total += torch.stack([loss.float() * len(x), torch.tensor(float(len(x)), device=device)])
    if ddp:
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


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
# run folder: never overwritten unless asked, and only by the first process


run_dir = os.path.join(out_dir, run_name)
checkpoints = runs.list_checkpoints(run_dir)
if init_from == 'scratch' and os.path.isdir(run_dir) and os.listdir(run_dir):
    if not overwrite:
        fail(f"{run_dir} already exists: pass --overwrite=True to replace it, --init_from=resume to continue it, "
             f"or another --run_name")
    if not os.path.isfile(os.path.join(run_dir, 'config.json')):
        fail(f"{run_dir} is not a run folder (no config.json): refusing to delete it even with --overwrite=True")
if init_from == 'resume' and not checkpoints:
    fail(f"{run_dir} has no checkpoint to resume from (expected {runs.checkpoint_path(run_dir, 0).parent}/ckpt_*.pt)")
if ddp:
    dist.barrier()  # everyone has checked the folder before the first process changes it
if master:
    if init_from == 'scratch' and os.path.isdir(run_dir) and os.listdir(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(os.path.join(run_dir, 'checkpoints'), exist_ok=True)

# -----------------------------------------------------------------------------
# model, optimizer, and the state a resume restores

model_args = dict(n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head, n_embd=n_embd, mlp_hidden=mlp_hidden,
                  dropout=dropout, bias=bias, norm=norm, mlp=mlp, pos_emb=pos_emb, residual_scale=residual_scale,
                  qk_norm=qk_norm, attn_impl=attn_impl)
state = dict(iter_num=0, last_row_iter=-1, best_val_loss=math.inf, best_val_iter=None, elapsed_s=0.0, wall_time_s=0.0,
             loss_sum=0.0, loss_steps=0, last_val_loss=None, last_train_loss=None, speed_sum=0.0, speed_n=0,
             mfu_sum=0.0, mfu_n=0, resumed_at=[])
if init_from == 'resume':
    resume_path = checkpoints[max(checkpoints)]
    try:
        model, ckpt = load_checkpoint(resume_path, device)
    except ValueError as e:
        fail(e)
    state.update({k: ckpt[k] for k in state if k in ckpt})
    state['resumed_at'] = state['resumed_at'] + [state['iter_num']]
    try:
        wanted = vars(make_config(model_name, block_size=block_size, vocab_size=meta['vocab_size'], **model_args))
    except ValueError as e:
        fail(e)
    differ = [f"{k} (checkpoint {ckpt['model_args'].get(k)!r}, now {v!r})" for k, v in wanted.items()
              if ckpt['model_args'].get(k) != v]
    if differ:
        fail(f"{resume_path}: model settings differ from the checkpoint's: {', '.join(differ)}")
    if master:
        print(f"resuming {run_dir} from {resume_path} (iteration {state['iter_num']})")
else:
    try:
        model = GPT(make_config(model_name, block_size=block_size, vocab_size=meta['vocab_size'], **model_args))
    except ValueError as e:
        fail(e)
    model.to(device)
torch.manual_seed(seed + rank)  # dropout differs between processes; the init above does not
optimizer = unwrap(model).configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
scaler = torch.amp.GradScaler(device_type, enabled=dtype == 'float16')
if init_from == 'resume':
    optimizer.load_state_dict(ckpt['optimizer'])
    scaler.load_state_dict(ckpt['scaler'])
    data_rng.bit_generator.state = ckpt['data_rng']
    torch.set_rng_state(ckpt['torch_rng'][rank % len(ckpt['torch_rng'])].cpu())
    if device_type == 'cuda' and ckpt.get('cuda_rng'):
        torch.cuda.set_rng_state(ckpt['cuda_rng'][rank % len(ckpt['cuda_rng'])].cpu())
    del ckpt
raw_model = unwrap(model)
n_params = raw_model.num_params()
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
if compile:
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)

# per-layer norms: the embeddings, each block, the final norm (a tied lm_head is the embedding)
layer_params = {}
for name, p in raw_model.named_parameters():
    parts = name.split('.')
    layer = f'block_{parts[2]}' if parts[1] == 'h' else 'final_norm' if parts[1] == 'ln_f' else 'embed'
    layer_params.setdefault(layer, []).append(p)
layer_names = sorted(layer_params, key=lambda n: (n != 'embed', n == 'final_norm', int(n[6:]) if n[:6] == 'block_' else 0))


def layer_norms(grads):
    """One norm per layer, of the gradients or the weights, as a device tensor (no host sync)."""
    out = []
    for layer in layer_names:
        ts = [p.grad if grads else p for p in layer_params[layer] if not grads or p.grad is not None]
        out.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in ts])) if ts
                   else torch.zeros((), device=device))
    return torch.stack(out)

# -----------------------------------------------------------------------------
# logging: metrics.csv, layer_norms.csv, TensorBoard, summary.json, config.json (first process only)


def git_commit():
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=os.path.dirname(os.path.abspath(__file__)),
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def keep_rows_up_to(path, last_iter):
    """On resume, drop rows a previous attempt logged after its checkpoint (they will be redone)."""
    if not os.path.isfile(path):
        return
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= last_iter]
    runs.atomic_write_text(path, ''.join(','.join(r) + '\n' for r in kept))


def open_csv(path, header):
    new = not os.path.isfile(path)
    f = open(path, 'a', newline='')
    if new:
        f.write(','.join(header) + '\n')
    return f


def fmt(v):
    return '' if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, '.9g') if isinstance(v, float) else str(v)


def write_summary(status, message=None):
    summary = dict(status=status, run_name=run_name, model_name=raw_model.config.model_name, seed=seed,
                   iters=state['iter_num'], tokens_seen=state['iter_num'] * tokens_per_iter,
                   wall_time_s=round(state['wall_time_s'] + time.time() - wall_start, 3),
                   train_time_s=round(state['elapsed_s'], 3), final_val_loss=state['last_val_loss'],
                   best_val_loss=state['best_val_loss'] if state['best_val_iter'] is not None else None,
                   best_val_iter=state['best_val_iter'], final_train_loss=state['last_train_loss'],
                   n_params=n_params, n_params_non_embedding=raw_model.num_params(non_embedding=True),
                   tokens_per_s_mean=state['speed_sum'] / state['speed_n'] if state['speed_n'] else None,
                   mfu_mean=state['mfu_sum'] / state['mfu_n'] if state['mfu_n'] else None, message=message,
                   updated_at=datetime.now(timezone.utc).isoformat(timespec='seconds'))
    runs.atomic_write_json(os.path.join(run_dir, 'summary.json'), summary)


metrics_file = norms_file = writer = None
wall_start = time.time()  # wall-clock time, evaluation included; state['wall_time_s'] holds earlier attempts
if master:
    runs.atomic_write_json(os.path.join(run_dir, 'config.json'), dict(
        config, run_name=run_name, config_file=config_file, model_args=asdict(raw_model.config),
        n_params=n_params, n_params_non_embedding=raw_model.num_params(non_embedding=True),
        tokens_per_iter=tokens_per_iter, world_size=world_size, device=device, dtype=dtype, compile=compile,
        device_name=torch.cuda.get_device_name(device) if device_type == 'cuda' else device_type,
        torch_version=torch.__version__, git_commit=git_commit(), data=dict(meta, data_dir=data_dir),
        resumed_at=state['resumed_at'], started_at=datetime.now(timezone.utc).isoformat(timespec='seconds')))
    metrics_path, norms_path = os.path.join(run_dir, 'metrics.csv'), os.path.join(run_dir, 'layer_norms.csv')
    if init_from == 'resume':
        keep_rows_up_to(metrics_path, state['last_row_iter'])
        keep_rows_up_to(norms_path, state['last_row_iter'])
    metrics_file = open_csv(metrics_path, runs.METRIC_COLUMNS)
    norms_file = open_csv(norms_path, runs.LAYER_NORM_COLUMNS)
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(os.path.join(run_dir, 'tb'), purge_step=state['iter_num'] + 1 if init_from == 'resume' else None)
    print(f"{run_dir}: {raw_model.config.model_name}, {n_params / 1e6:.2f}M parameters, {device} {dtype}"
          f"{' compiled' if compile else ''}, {world_size} process(es), {tokens_per_iter:,} tokens/iteration")


def save(iter_num):
    """Checkpoint named by iteration; keeps the newest keep_checkpoints."""
    path = runs.checkpoint_path(run_dir, iter_num)
    save_checkpoint(path, raw_model, optimizer, **state, scaler=scaler.state_dict(), config=config,
                    data_rng=pending_rng_state, torch_rng=[torch.get_rng_state()],
                    cuda_rng=[torch.cuda.get_rng_state(device)] if device_type == 'cuda' else [])
    if keep_checkpoints > 0:
        for old in list(runs.list_checkpoints(run_dir))[:-keep_checkpoints]:
            os.remove(runs.checkpoint_path(run_dir, old))
    return path


TB_NAMES = dict(train_loss='loss/train', val_loss='loss/val', grad_norm='norm/grad', weight_norm='norm/weight',
                tokens_per_s='speed/tokens_per_s', mfu='speed/mfu')
stop_signal = None


def request_stop(signum, frame):
    """First Ctrl-C/SIGTERM: finish the iteration, save, exit. A second one: stop at once."""
    global stop_signal
    if stop_signal is not None:
        raise KeyboardInterrupt
    stop_signal = signum


signal.signal(signal.SIGINT, request_stop)
signal.signal(signal.SIGTERM, request_stop)

# -----------------------------------------------------------------------------
# the training loop

iter_num = state['iter_num']
loss_sum = torch.tensor(state['loss_sum'], device=device)  # train loss summed since the last row, on device
grad_norm = layer_grad_norms = None
first_interval = True  # includes compilation and warm-up: left out of the mean speed
if master:
    write_summary('running')
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
        # a row describes the model after iter_num steps; train loss is the mean since the last row
        steps = state['loss_steps']
        if ddp:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        train_loss = loss_sum.item() / steps if steps else None
        dt = time.time() - t0  # training time only: evaluation below is not counted in tokens/s
        state['elapsed_s'] += dt
        if train_loss is not None and not math.isfinite(train_loss):
            status, message = 'diverged', f"train loss is {train_loss} at iteration {iter_num}: the run diverged"
            break
        speed = steps * tokens_per_iter / dt if steps else None
        mfu = raw_model.estimate_mfu(speed / world_size, device, peak_flops, block_size) if speed else None  # per GPU
        if speed and not first_interval:
            state['speed_sum'], state['speed_n'] = state['speed_sum'] + speed, state['speed_n'] + 1
            if mfu is not None:
                state['mfu_sum'], state['mfu_n'] = state['mfu_sum'] + mfu, state['mfu_n'] + 1
        first_interval = first_interval and not steps
        val_loss = estimate_val_loss() if eval_step else None
        if val_loss is not None and not math.isfinite(val_loss):
            status, message = 'diverged', f"val loss is {val_loss} at iteration {iter_num}: the run diverged"
            break
        norms = layer_norms(grads=False)[None]
        if grad_norm is not None:
            norms = torch.cat([norms, layer_grad_norms[None], grad_norm.reshape(1, 1).expand(1, norms.size(1))])
        norms = norms.tolist()
        weight_norm = math.sqrt(sum(v * v for v in norms[0]))
        gnorm = norms[2][0] if grad_norm is not None else None
        if val_loss is not None:
            state['last_val_loss'] = val_loss
            if val_loss < state['best_val_loss']:
                state['best_val_loss'], state['best_val_iter'] = val_loss, iter_num
        if train_loss is not None:
            state['last_train_loss'] = train_loss
        loss_sum.zero_()
        state['loss_steps'], state['last_row_iter'] = 0, iter_num
        if master:
            row = dict(iter=iter_num, tokens_seen=iter_num * tokens_per_iter, elapsed_s=round(state['elapsed_s'], 3),
                       lr=get_lr(max(iter_num - 1, 0)), train_loss=train_loss, val_loss=val_loss, grad_norm=gnorm,
                       weight_norm=weight_norm, tokens_per_s=speed, mfu=mfu)
            metrics_file.write(','.join(fmt(row[c]) for c in runs.METRIC_COLUMNS) + '\n')
            metrics_file.flush()
            for i, layer in enumerate(layer_names):
                norms_file.write(f"{iter_num},{layer},{fmt(norms[1][i] if gnorm is not None else None)},{fmt(norms[0][i])}\n")
            norms_file.flush()
            if writer is not None:
                for key, v in row.items():
                    if key not in ('iter', 'elapsed_s') and v is not None:
                        writer.add_scalar(TB_NAMES.get(key, key), v, iter_num)
                for i, layer in enumerate(layer_names):
                    writer.add_scalar(f'layer_weight_norm/{layer}', norms[0][i], iter_num)
                    if gnorm is not None:
                        writer.add_scalar(f'layer_grad_norm/{layer}', norms[1][i], iter_num)
            print(f"iter {iter_num}: " + ' '.join(f"{k} {fmt(row[k]) if row[k] is not None else '-'}" for k in
                  ('train_loss', 'val_loss', 'lr', 'grad_norm', 'tokens_per_s')) + (f" mfu {100 * mfu:.1f}%" if mfu else ''))
            if eval_step:
                write_summary('running')
        t0 = time.time()
    if ckpt_step or stopping:
        finite = loss_sum.clone()
        if ddp:
            dist.all_reduce(finite)
        weights_ok = torch.stack([p.isfinite().all() for p in raw_model.parameters()]).all()  # one sync, not one per tensor
        if not math.isfinite(finite.item()) or not weights_ok.item():
            # never let a checkpoint hold a diverged model
            status, message = 'diverged', f"loss or weights are not finite at iteration {iter_num}: the run diverged"
            break
        if master and (save_checkpoints or stopping):
            state['iter_num'], state['loss_sum'] = iter_num, loss_sum.item()
            state['wall_time_s'] += time.time() - wall_start  # the checkpoint carries the total so far
            wall_start = time.time()
            path = save(iter_num)
            if stopping:
                print(f"saved {path}")
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
    write_summary(status, message)
    for f in (metrics_file, norms_file):
        f.close()
    if writer is not None:
        writer.close()
    try:
        runs.plot_run(run_dir)
    except Exception as e:  # plots are a convenience: never lose a finished run to them
        print(f"train.py: warning: could not draw plots: {e}", file=sys.stderr)
    if status != 'completed':
        print(f"train.py: {message}; status {status} in {run_dir}/summary.json"
              + ("; the last good checkpoint is untouched" if status == 'diverged' else
                 f"; continue with --init_from=resume --run_name={run_name}"), file=sys.stderr)
if ddp:
    dist.destroy_process_group()
sys.exit({'completed': 0, 'diverged': 1}.get(status, 128 + (stop_signal or 0)))
