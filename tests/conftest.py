"""Shared test fixtures: paths, script runners (train.py in-process, any script as a subprocess),
and TinyStories data prepared from the sample bundled in data_sample/ (so nothing skips for lack of
text), plus real smoke-trained runs shared by the compare, eval and sample tests.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes several seconds (skip with -m 'not slow')")


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


def sample_data_dir(tmp_path_factory):
    """The one data_dir that small_data and bpe_data prepare into (each only what it needs)."""
    return tmp_path_factory.getbasetemp() / "sample_data" / "tinystories"


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """`data_dir` holding the prepared `small` variant (GPT-2) of the bundled sample (built once per session,
    in this process)."""
    data_dir = sample_data_dir(tmp_path_factory)
    import_prepare().prepare("small", "sample", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def bpe_data(tmp_path_factory):
    """`data_dir` holding `small-bpe4k`: the bundled sample with a 4,096-token BPE trained on its train
    split (data_dir/small-bpe4k/tokenizer-<sha>.json). May be the same data_dir as small_data."""
    data_dir = sample_data_dir(tmp_path_factory)
    import_prepare().prepare("small", "sample", data_dir, tokenizer="bpe4k")
    return data_dir


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
def smoke_runs(small_data, tmp_path_factory):
    """An out/ folder with four short real runs (smoke config, 30 iterations, checkpoints every 15):
    baseline_s1, baseline_s2 (model_name baseline, seeds 1 and 2) and gqa_s1, gqa_s2 (model_name gqa).
    Shared by the compare and eval tests: copy a run before changing anything in it."""
    out_dir = tmp_path_factory.mktemp("smoke") / "out"
    for model_name in ("baseline", "gqa"):
        for seed in (1, 2):
            train_run(small_data, out_dir, f"{model_name}_s{seed}", f"--model_name={model_name}", f"--seed={seed}",
                      "--max_iters=30", "--eval_interval=10", "--checkpoint_interval=15")
    return out_dir


@pytest.fixture(scope="session")
def bpe_run(bpe_data, tmp_path_factory):
    """A smoke run trained on the bpe4k tokenizer (20 iterations, checkpoints at 10 and 20): its folder
    carries its tokenizer file (tokenizer-<sha>.json), and everything that reads it must decode with it."""
    out_dir = tmp_path_factory.mktemp("bpe") / "out"
    return train_run(bpe_data, out_dir, "bpe4k_s1", "--tokenizer=bpe4k", "--seed=1", "--max_iters=20",
                     "--eval_interval=10", "--checkpoint_interval=10")


def pytest_terminal_summary(terminalreporter):
    """A skipped test that names the command enabling it (tests/test_slurm.py: .ci/slurm_start.sh) says so in
    one line even without -rs."""
    reasons = {r.longrepr[2] for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and "slurm_start.sh" in r.longrepr[2]}
    for reason in sorted(reasons):
        terminalreporter.write_line(reason)
