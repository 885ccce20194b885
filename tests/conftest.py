"""Shared test fixtures: paths, script runners (train.py in-process, any script as a subprocess),
and TinyStories data prepared from the sample bundled in data_sample/ (so nothing skips for lack of
text), plus real smoke-trained runs shared by the compare, eval and sample tests.
"""
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if "PYTEST_XDIST_WORKER" in os.environ:
    # each of the -n workers trains on one core: torch's threads spin-wait, and two workers of 2 threads on
    # 2 cores ran slower than two of 1 (train.py and the scripts run here read OMP_NUM_THREADS first)
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes several seconds (skip with -m 'not slow')")
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # xdist would put the modules of most tests first: LONGEST_FIRST


# the modules that take longest, longest first: pytest-xdist (`-n 2 --dist loadscope`, README: Tests) hands
# whole modules to its workers in collection order, and starting with these lets the two finish together
LONGEST_FIRST = ("test_train.py", "test_slurm.py", "test_sweep.py", "test_eval_harness.py", "test_compare.py",
                 "test_speed.py")


def pytest_collection_modifyitems(config, items):
    order = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))  # stable: tests keep their order


# the tiny model the model and speed tests build (GPTConfig fields; vocab 256 keeps them fast)
TINY_MODEL = dict(n_layer=2, n_head=4, n_embd=32, block_size=32, vocab_size=256)


def snapshot(folder, mtimes=False):
    """{relative path: bytes} of every file under folder (and its mtime_ns with mtimes=True): "untouched"
    and "byte-identical" made checkable."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) if mtimes else p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def dead_pid():
    """The pid of a process that has ended: what a killed writer leaves in its files."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# glibc otherwise maps and unmaps the large logits tensors at every step: twice as slow on CPU
CPU_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "8000000000"}


def run_script(*args, cwd=REPO, env=None, timeout=600, check=False):
    """Run `python <args...>` as a user would; returns the CompletedProcess (text mode)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    full_env.update(CPU_MALLOC_ENV)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def import_prepare():
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import prepare
    return prepare


@pytest.fixture(scope="session")
def tinystories_dir(tmp_path_factory):
    """The bundled TinyStories sample (data_sample/) as plain train.txt / validation.txt in a temporary folder."""
    import gzip
    prepare = import_prepare()
    folder = tmp_path_factory.mktemp("tinystories_text")
    for split, name in (("train", "train.txt"), ("val", "validation.txt")):
        with gzip.open(prepare.SAMPLE_DIR / prepare.SAMPLE_FILES[split]) as f:
            (folder / name).write_bytes(f.read())
    return folder


def session_dir(tmp_path_factory):
    """This test session's temporary folder: under pytest-xdist (README: Tests) the one all workers share."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


def once_per_session(tmp_path_factory, name, build):
    """build() once for the whole session, even under pytest-xdist: the first worker to ask builds it, any
    other waits for it (a lock) and reads what it returned. build returns something JSON can hold."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build()
    import fcntl
    shared = session_dir(tmp_path_factory) / f"{name}.json"
    with open(shared.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # while another worker builds it
        if not shared.is_file():
            shared.write_text(json.dumps(build()))
        return json.loads(shared.read_text())


def sample_data_dir(tmp_path_factory, tokenizer):
    """The one data_dir that small_data and bpe_data prepare into (each its own variant folder), shared by the
    workers: one prepares, the others wait (prepare.py refuses a folder another prepare is writing)."""
    data_dir = session_dir(tmp_path_factory) / "sample_data" / "tinystories"

    def build():
        import_prepare().prepare("small", "sample", data_dir, tokenizer=tokenizer)
        return str(data_dir)
    return Path(once_per_session(tmp_path_factory, f"sample_data_{tokenizer}", build))


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """`data_dir` holding the prepared `small` variant (GPT-2) of the bundled sample (built once per session)."""
    return sample_data_dir(tmp_path_factory, "gpt2")


@pytest.fixture(scope="session")
def bpe_data(tmp_path_factory):
    """`data_dir` holding `small-bpe4k`: the bundled sample with a 4,096-token BPE trained on its train
    split (data_dir/small-bpe4k/tokenizer-<sha>.json). May be the same data_dir as small_data."""
    return sample_data_dir(tmp_path_factory, "bpe4k")


def run_train(*args, cwd=REPO):
    """train.py with these arguments, in this process (no interpreter start, torch already imported):
    returns a CompletedProcess-like result with returncode, stdout and stderr. train.py takes its
    arguments as cli_args and installs signal handlers only as __main__: nothing process-wide is swapped
    but the output. For what a subprocess is needed for (signals, kill, torchrun) use run_script."""
    import contextlib
    import io
    import runpy
    out, err = io.StringIO(), io.StringIO()
    code = 0
    old_cwd = os.getcwd()
    try:
        os.chdir(cwd)  # config paths such as config/smoke.py are relative to the repository
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(REPO / "train.py"), init_globals=dict(cli_args=[str(a) for a in args]),
                               run_name="train")
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                    code = 1
                else:
                    code = e.code or 0
    finally:
        os.chdir(old_cwd)
    return subprocess.CompletedProcess(["train.py", *map(str, args)], code, out.getvalue(), err.getvalue())


def train_run(data_dir, out_dir, run_name, *overrides, config="config/smoke.py", check=True):
    """Train `config` (default the smoke config) into out_dir/run_name, in-process; returns the run folder."""
    args = [a for a in (config,) if a] + [f"--out_dir={out_dir}", f"--run_name={run_name}", f"--data_dir={data_dir}",
                                          *overrides]
    result = run_train(*args)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py {args} exited {result.returncode}\nstdout:\n{result.stdout[-4000:]}\n"
                             f"stderr:\n{result.stderr[-4000:]}")
    return Path(out_dir) / run_name


@pytest.fixture(scope="session")
def smoke_runs(bpe_data, tmp_path_factory):
    """An out/ folder with four short real runs (smoke config on the bpe4k tokenizer, batch 4, 16 val windows,
    30 iterations, checkpoints every 15): baseline_s1, baseline_s2 (model_name baseline, seeds 1 and 2) and gqa_s1, gqa_s2
    (model_name gqa). The 4,096-token vocabulary makes a step ~4x cheaper than GPT-2's 50,257 on a CPU; only
    baseline_s1 draws its plots and writes TensorBoard events. Shared by the compare, eval and sample
    tests (built once per session, workers included): copy a run before changing anything in it."""
    def build():
        out_dir = session_dir(tmp_path_factory) / "smoke" / "out"
        for model_name in ("baseline", "gqa"):
            for seed in (1, 2):
                quiet = () if (model_name, seed) == ("baseline", 1) else ("--plots=False", "--tensorboard=False")
                train_run(bpe_data, out_dir, f"{model_name}_s{seed}", "--tokenizer=bpe4k", f"--model_name={model_name}",
                          f"--seed={seed}", "--max_iters=30", "--eval_interval=10", "--checkpoint_interval=15",
                          "--batch_size=4", "--eval_windows=16", *quiet)
        return str(out_dir)
    return Path(once_per_session(tmp_path_factory, "smoke_runs", build))


@pytest.fixture(scope="session")
def bpe_run(smoke_runs):
    """A run trained on the bpe4k tokenizer (smoke_runs' baseline_s1): its folder carries its tokenizer file
    (tokenizer-<sha>.json), and everything that reads it must decode with it."""
    return smoke_runs / "baseline_s1"


def pytest_terminal_summary(terminalreporter):
    """A skipped test that names the command enabling it (tests/test_slurm.py: .ci/slurm_start.sh) says so in
    one line even without -rs."""
    reasons = {r.longrepr[2] for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and "slurm_start.sh" in r.longrepr[2]}
    for reason in sorted(reasons):
        terminalreporter.write_line(reason)


# -----------------------------------------------------------------------------
# hand-made run folders, without training: compare.py's input (make_metrics_run) and
# eval_harness.py's / sample.py's (make_checkpoint_run, with tiny checkpoints)

ITERS = [0, 10, 20, 30]
TOKENS_PER_ITER = 1024
METRICS_HEADER = ['iter', 'tokens_seen', 'elapsed_s', 'lr', 'train_loss', 'val_loss', 'grad_norm', 'weight_norm',
                  'tokens_per_s', 'mfu']
SHIPPED = REPO / 'eval' / 'prompts_tinystories.json'
EOT_TEXT = '<|endoftext|>'


def read_csv(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


def make_metrics_run(root, name, final_val, model_name='baseline', seed=1, status='completed', iters=ITERS,
                     summary=True, vals=None, bpb=None, summary_fields=None, **config_changes):
    """A run folder as train.py writes it, without checkpoints (what compare.py reads): val loss on iters
    0, 20 and the last (or at `vals`, a dict iter -> val loss), train loss from iter 10; with bpb, a
    val_bpb column (bpb at the last iter)."""
    run = root / name
    run.mkdir(parents=True)
    config = dict(out_dir=str(root), run_name=name, seed=seed, model_name=model_name, n_layer=2, n_head=2,
                  n_embd=32, learning_rate=1e-3, max_iters=iters[-1], batch_size=4, block_size=256,
                  compile=False, device='cpu', eval_interval=10, started_at='2025-01-01T00:00:00',
                  model_args=dict(model_name=model_name, n_layer=2, attn_impl='sdpa'), n_params=12345,
                  tokens_per_iter=TOKENS_PER_ITER, data_dir='data/tinystories',
                  data=dict(variant='small', source='/data/ts', data_dir='data/tinystories',
                            source_files=dict(train=dict(path='/data/ts/train.txt', mtime_ns=1)),
                            train=dict(tokens=1000, sha256='abc')))
    config.update(config_changes)
    (run / 'config.json').write_text(json.dumps(config))
    if vals is None:
        vals = {it: 10.0 - it / 10 for it in iters if it in (0, 20)} | {iters[-1]: final_val}
    lines = [','.join(METRICS_HEADER + (['val_bpb'] if bpb is not None else []))]
    layer_lines = ['iter,layer,grad_norm,weight_norm']
    for k, it in enumerate(iters):
        train = '' if it == 0 else 9.0 - it / 10
        speed = '' if it == 0 else 1000.0 + 10 * k
        line = (f"{it},{it * TOKENS_PER_ITER},{it * 0.5},{1e-3 * (1 - it / 100)},{train},{vals.get(it, '')},"
                f"{1.0 + k},{50.0 + k},{speed},")
        if bpb is not None:
            line += f",{(bpb if it == iters[-1] else 5.0 - it / 20) if it in vals else ''}"
        lines.append(line)
        for layer in ('embed', 'block_0', 'block_1', 'final_norm'):
            layer_lines.append(f'{it},{layer},{0.1 * (k + 1)},{10.0 + k}')
    (run / 'metrics.csv').write_text('\n'.join(lines) + '\n')
    (run / 'layer_norms.csv').write_text('\n'.join(layer_lines) + '\n')
    if summary:
        fields = dict(dict(status=status, iters=iters[-1], run_name=name), **(summary_fields or {}))
        (run / 'summary.json').write_text(json.dumps(fields))
    return run


def tiny_model(seed=0, block_size=64, vocab_size=None):
    import torch
    from model import GPT, make_config
    torch.manual_seed(seed)
    vocab = {} if vocab_size is None else dict(vocab_size=vocab_size)
    return GPT(make_config('baseline', n_layer=1, n_head=2, n_embd=16, block_size=block_size, **vocab)).eval()


def write_bpe_tokenizer(folder):
    """A small byte-level BPE trained with Hugging Face tokenizers (as prepare.py trains one), saved as
    folder/tokenizer.json; returns its info as a checkpoint records it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[EOT_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([p['prompt'] for p in json.loads(SHIPPED.read_text())['prompts']], trainer=trainer)
    path = folder / 'tokenizer.json'
    hf.save(str(path))
    return dict(name='bpe400', vocab_size=hf.get_vocab_size(), eot_token=hf.token_to_id(EOT_TEXT),
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(), file='tokenizer.json')


def make_checkpoint_run(root, name, steps, seed=0, config=None, summary=None, bpe=False):
    """A run folder the way train.py leaves it, as far as eval_harness.py and sample.py read it:
    config.json (run_name plus `config`), summary.json if given, checkpoints at steps. bpe: the run carries its own small BPE
    tokenizer (tokenizer.json, recorded in its checkpoints); otherwise GPT-2, recorded as older
    checkpoints did (not at all)."""
    from runs import save_checkpoint
    run = root / name
    (run / 'checkpoints').mkdir(parents=True)
    (run / 'config.json').write_text(json.dumps(dict(run_name=name, **(config or {}))))
    (run / 'metrics.csv').write_text('iter,tokens_seen,elapsed_s,lr,train_loss,val_loss,grad_norm,weight_norm,'
                                     'tokens_per_s,mfu\n')
    if summary is not None:
        (run / 'summary.json').write_text(json.dumps(summary))
    info = write_bpe_tokenizer(run) if bpe else None
    for step in steps:
        model = tiny_model(seed + step, vocab_size=info['vocab_size'] if bpe else None)
        save_checkpoint(run / 'checkpoints' / f'ckpt_{step:06d}.pt', model, iter_num=step,
                        **(dict(tokenizer=info) if bpe else {}))
    return run


def light_copy(run, dest):
    """A copy of a run folder whose checkpoints are hard links (fast; the test must not change them)."""
    shutil.copytree(run, dest, copy_function=lambda src, dst: os.link(src, dst) if src.endswith('.pt')
                    else shutil.copy2(src, dst))
    return dest


def write_prompts(path, prompts):
    path.write_text(json.dumps(dict(prompts=prompts)))
    return path
