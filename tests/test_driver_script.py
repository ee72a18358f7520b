"""1p-frac_generator/generate_1p-frac.sh end to end."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, load_manifest, snapshot

SCRIPT = REPO / "1p-frac_generator" / "generate_1p-frac.sh"

pytestmark = [pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash"),
              pytest.mark.slow]  # every test runs the shell driver in a subprocess


def run_script(tmp_path, **variables):
    env = {**os.environ, "PYTHON": sys.executable, "WORKERS": "1",
           "EXTRA_ARGS": "--size 64 --points 3000 --pad 2 --no-progress", **variables}
    return subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_driver_script_writes_the_dataset_and_prints_its_path_last(tmp_path):
    base = tmp_path / "data"
    result = run_script(tmp_path, BASE_SAVEDIR=str(base), SAMPLE="5", SEED="3", SIGMA="3.5", DELTA="0.05")
    assert result.returncode == 0, result.stderr
    root = base / "sigma3.5_perturb0.05_sample5_seed3"
    assert result.stdout.splitlines()[-1] == str(root)
    assert sorted(p.name for p in root.iterdir()) == ["00000", "00001", "00002", "00003", "00004", "manifest.json"]
    for i in range(5):
        assert [p.name for p in (root / f"{i:05d}").iterdir()] == [f"{i:05d}.png"]
    arguments = load_manifest(root)["arguments"]
    assert (arguments["sigma"], arguments["delta"], arguments["samples"], arguments["seed"]) == (3.5, 0.05, 5, 3)
    assert arguments["size"] == 64


def test_driver_script_matches_the_module_cli(tmp_path):
    script_base, cli_base = tmp_path / "script", tmp_path / "cli"
    assert run_script(tmp_path, BASE_SAVEDIR=str(script_base), SAMPLE="3", SEED="1").returncode == 0
    cli = subprocess.run([sys.executable, "-m", "onepfrac.generate", "--base-savedir", str(cli_base),
                          "--samples", "3", "--seed", "1", "--size", "64", "--points", "3000", "--pad", "2",
                          "--no-progress"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    name = "sigma3.5_perturb0.1_sample3_seed1"  # the script's defaults: sigma 3.5, delta 0.1
    assert snapshot(script_base / name) == snapshot(cli_base / name)


def test_driver_script_passes_bad_input_errors_through(tmp_path):
    result = run_script(tmp_path, BASE_SAVEDIR=str(tmp_path / "data"), SAMPLE="2", SIGMA="0")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--sigma" in result.stderr
    assert not (tmp_path / "data").exists()
