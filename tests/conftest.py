"""Shared helpers for the onepfrac test suite: tiny configurations, CLI runners, snapshots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onepfrac import generate
from onepfrac.datasets import single_fractal
from onepfrac.train import engine

REPO = Path(__file__).resolve().parents[1]

# Tiny images: every class renders in well under a millisecond, the default fill threshold passes.
TINY = ["--size", "64", "--points", "3000", "--pad", "2", "--no-progress"]
TINY_CONFIG = dict(size=64, points=3000, pad=2)

# Slow enough (tens of milliseconds a class, 60 classes) to be killed in the middle of a run.
SLOW = ["--size", "128", "--points", "2000000", "--pad", "2", "--samples", "60", "--seed", "0",
        "--workers", "1", "--no-progress"]
SLOW_NAME = "sigma3.5_perturb0.1_sample60_seed0"

CLI_TIMEOUT = 120

# Tiny generator arguments of every dataset: a few classes that render in milliseconds.
SEARCH = ["--search-size", 64, "--search-points", 3000]
TINY_DATASETS = {
    "1p-frac": ["--samples", 5, "--size", 64, "--points", 3000, "--pad", 2],
    "fractaldb": ["--classes", 3, "--instances", 6, "--size", 64, "--points", 3000, "--pad", 2, *SEARCH],
    "ofdb": ["--classes", 3, "--size", 64, "--points", 3000, "--pad", 2, *SEARCH],
    "3d-ofdb": ["--classes", 3, "--instances", 4, "--size", 48, "--points", 2000],
    "visualatom": ["--classes", 3, "--instances", 2, "--size", 48],
    "real-image": ["--classes", 3, "--size", 48],
}


def tiny_args(base, samples=5, seed=0, *extra, workers=1) -> list[str]:
    """Arguments of a tiny dataset written under `base`."""
    return ["--base-savedir", str(base), "--samples", str(samples), "--seed", str(seed),
            "--workers", str(workers), *TINY, *extra]


def dataset_dir(base, sigma=3.5, delta=0.1, samples=5, seed=0) -> Path:
    return Path(base) / f"sigma{float(sigma)!r}_perturb{float(delta)!r}_sample{samples}_seed{seed}"


def run_cli(args, cwd=None, timeout=CLI_TIMEOUT, env=None) -> subprocess.CompletedProcess:
    """`python -m onepfrac.generate ARGS` in a subprocess, text output captured."""
    return subprocess.run([sys.executable, "-m", "onepfrac.generate", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _default_sigint():
    # a shell starting pytest in the background makes SIGINT ignored, and children inherit that
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(args) -> subprocess.Popen:
    """`python -m onepfrac.generate ARGS` started in the background, with Ctrl-C's default handling."""
    return subprocess.Popen([sys.executable, "-m", "onepfrac.generate", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


def run_main(argv, capsys) -> tuple[int, str, str]:
    """`onepfrac.generate.main(argv)` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = generate.main([str(a) for a in argv])
    except SystemExit as stop:  # argparse errors
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root, with_mtimes=False) -> dict:
    """Every file under `root` (relative path -> bytes, or (bytes, mtime_ns))."""
    root = Path(root)
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            files[str(path.relative_to(root))] = (data, path.stat().st_mtime_ns) if with_mtimes else data
    return files


def class_lines(partial: Path) -> int:
    """Complete class records in manifest.partial.jsonl (the first line is the header)."""
    if not partial.exists():
        return 0
    return max(0, partial.read_bytes().count(b"\n") - 1)


def wait_for_classes(proc: subprocess.Popen, partial: Path, count: int, timeout=60.0) -> None:
    """Block until the running generator has recorded `count` classes; fail if it ended first."""
    deadline = time.monotonic() + timeout
    while class_lines(partial) < count:
        assert proc.poll() is None, f"the generator ended before recording {count} classes: {proc.communicate()}"
        assert time.monotonic() < deadline, "the generator recorded no classes in time"
        time.sleep(0.005)


def interrupt_in_process(argv, capsys, monkeypatch, after: int) -> tuple[int, str, str]:
    """Run main() with --workers 1 and raise KeyboardInterrupt (as Ctrl-C would) after `after` classes."""
    real = generate._make_class
    done = []

    def make_class(index):
        if len(done) == after:
            raise KeyboardInterrupt
        done.append(index)
        return real(index)

    with monkeypatch.context() as patch:
        patch.setattr(generate, "_make_class", make_class)
        return run_main(argv, capsys)


def load_manifest(root) -> dict:
    return json.loads((Path(root) / generate.MANIFEST).read_text())


def config_from_manifest(manifest: dict) -> single_fractal.Config:
    """The Config a manifest was made with (its png_* arguments describe files, not images)."""
    arguments = {k: v for k, v in manifest["arguments"].items() if not k.startswith("png_")}
    return single_fractal.Config(**arguments)


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="session")
def slow_reference(tmp_path_factory) -> dict:
    """Snapshot of an uninterrupted run of the SLOW configuration."""
    base = tmp_path_factory.mktemp("slow_reference")
    result = run_cli(["--base-savedir", base, *SLOW])
    assert result.returncode == 0, result.stderr
    return snapshot(base / SLOW_NAME)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A complete 12-class tiny dataset (8-bit PNGs, fixed orbit, multiplicative perturbations)."""
    base = tmp_path_factory.mktemp("tiny")
    assert generate.main(tiny_args(base, 12, 0)) == 0
    return dataset_dir(base, samples=12)



# ---------------------------------------------------------------- trainer

# A ViT small enough that a training step takes milliseconds on one CPU core.
TINY_MODEL = ["--model", "vit_tiny_patch16_224", "--img-size", "16", "--model-kwargs",
              "patch_size=4", "embed_dim=16", "depth=2", "num_heads=2", "--workers", "0",
              "--amp", "none", "--no-progress", "--device", "cpu"]
# No RandAugment, Mixup or erasing: the cheapest recipe that still trains.
LIGHT_RECIPE = ["--aa", "none", "--mixup", "0", "--cutmix", "0", "--reprob", "0", "--warmup-epochs", "1"]
TRAIN_TIMEOUT = 300


def train_env() -> dict:
    """Environment for trainer subprocesses: one thread each, the venv's launchers on PATH."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_train(args, cwd=None, timeout=TRAIN_TIMEOUT, env=None, launcher=()) -> subprocess.CompletedProcess:
    """`python -m onepfrac.train ARGS`, optionally under a launcher command, output captured."""
    command = [*launcher, sys.executable, "-m", "onepfrac.train", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or train_env())


def read_metrics(output_dir) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def train_fractal(tmp_path_factory) -> Path:
    """An 8-class tiny 1p-frac for pre-training tests."""
    base = tmp_path_factory.mktemp("train_fractal")
    assert generate.main(tiny_args(base, 8, 0)) == 0
    return dataset_dir(base, samples=8)


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    """scikit-learn's digits as train/ (100 images) and val/ ImageFolders at 16 px."""
    from onepfrac.train.digits import write_digits

    return write_digits(tmp_path_factory.mktemp("digits") / "digits", train=100, size=16, seed=0)


@pytest.fixture(scope="session")
def pretrained_checkpoint(tmp_path_factory, train_fractal) -> Path:
    """A tiny ViT pre-trained for 2 epochs on train_fractal (rank-0 checkpoint_last.pth)."""
    out = tmp_path_factory.mktemp("pretrained")
    result = run_train(["pretrain", "--data-dir", train_fractal, *TINY_MODEL, *LIGHT_RECIPE,
                        "--batch-size", "4", "--epochs", "2", "--output-dir", out])
    assert result.returncode == 0, result.stderr
    return out / "checkpoint_last.pth"


def poison_loss_from_call(monkeypatch, first_bad: int) -> None:
    """The loss becomes NaN from its `first_bad`-th call (1-based) on."""
    real = engine.make_loss
    calls = []

    def poisoned(*args, **kwargs):
        loss = real(*args, **kwargs)

        def forward(logits, targets):
            calls.append(1)
            value = loss(logits, targets)
            return value * float("nan") if len(calls) >= first_bad else value
        return forward

    monkeypatch.setattr(engine, "make_loss", poisoned)
