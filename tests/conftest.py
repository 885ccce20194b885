"""Shared test fixtures: paths, a script runner, and prepared TinyStories data.

Real-data fixtures read ../shared/data/tinystories/ (or $TINYSTORIES_DIR) at run time and skip
with a reason where it is absent; nothing from there is ever copied into the repo.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_TINYSTORIES = Path(os.environ.get("TINYSTORIES_DIR", REPO.parent / "shared" / "data" / "tinystories"))


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


@pytest.fixture(scope="session")
def tinystories_dir():
    """The real TinyStories sample (train.txt / validation.txt), or skip."""
    if not (SHARED_TINYSTORIES / "train.txt").is_file() or not (SHARED_TINYSTORIES / "validation.txt").is_file():
        pytest.skip(f"real TinyStories text not found in {SHARED_TINYSTORIES} (set TINYSTORIES_DIR)")
    return SHARED_TINYSTORIES


@pytest.fixture(scope="session")
def small_data(tinystories_dir, tmp_path_factory):
    """`data_dir` holding the prepared `small` variant built from the real sample (built once per session)."""
    data_dir = tmp_path_factory.mktemp("data") / "tinystories"
    run_script(REPO / "prepare.py", "--variant", "small", "--source", tinystories_dir, "--data_dir", data_dir,
               check=True)
    return data_dir


def train_run(data_dir, out_dir, run_name, *overrides, config="config/smoke.py", check=True):
    """Train `config` (default the smoke config) into out_dir/run_name; returns the run folder."""
    run_script(REPO / "train.py", config, f"--out_dir={out_dir}", f"--run_name={run_name}",
               f"--data_dir={data_dir}", *overrides, check=check)
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
