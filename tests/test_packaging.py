"""What an installed package gives: console scripts, extras, bundled configs and grids, and one
line naming the extra to install when an optional package is missing."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from onepfrac import bundled, extras
from onepfrac.errors import UserError

REPO = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the checks below read pyproject.toml
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def _block(*modules: str) -> str:
    """Python source that makes `import module` fail for each module, as when it is not installed."""
    return "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in modules)


def _python(code: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# ---------------------------------------------------------------- console scripts and packages

@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_console_script_resolves_to_a_callable_main(script):
    module, _, function = SCRIPTS[script].partition(":")
    assert function == "main"
    assert callable(getattr(importlib.import_module(module), function))


def test_every_command_module_has_a_console_script():
    commands = set()
    for path in (REPO / "onepfrac").rglob("*.py"):
        tree = ast.parse(path.read_text())
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            commands.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    assert commands == {target.partition(":")[0] for target in SCRIPTS.values()}


def test_readme_names_every_console_script_and_the_install_commands():
    readme = (REPO / "README.md").read_text()
    for script in SCRIPTS:
        assert script in readme, script
    assert 'pip install -e ".[train]"' in readme
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme


def test_the_package_list_holds_every_subpackage():
    on_disk = {".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "onepfrac").rglob("__init__.py")}
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages"


# ---------------------------------------------------------------- extras

def _names(requirements) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower()
            for line in requirements if line.strip() and not line.lstrip().startswith("#")}


def test_extras_hold_what_their_import_sites_need():
    assert "scikit-image" in _names(EXTRAS["real-image"]) and "scikit-image" not in _names(PYPROJECT["project"]["dependencies"])
    assert {"torch", "torchvision", "timm", "tensorboard", "scikit-learn"} <= _names(EXTRAS["train"])
    assert "onepfrac[real-image,plots]" in EXTRAS["train"]  # pre-training on real-image works with [train]
    assert _names(EXTRAS["plots"]) == {"matplotlib"} and _names(EXTRAS["mpi"]) == {"mpi4py"}
    assert _names(EXTRAS["wds"]) == {"webdataset"} and _names(EXTRAS["drive"]) == {"gdown"}
    assert {"pytest", "scipy"} <= _names(EXTRAS["test"])


def _nested(extra: str) -> set[str]:
    """The extras `extra` pulls in through `onepfrac[...]` lines, itself included, recursively."""
    found = {extra}
    for line in EXTRAS[extra]:
        for name in (re.findall(r"^onepfrac\[(.*)\]$", line) or [""])[0].split(","):
            if name and name not in found:
                found |= _nested(name)
    return found


def test_all_installs_every_extra():
    assert _nested("all") == set(EXTRAS)


def test_requirements_txt_installs_what_the_tests_and_the_quickstart_import():
    requirements = _names((REPO / "requirements.txt").read_text().splitlines())
    wanted = set()
    for extra in _nested("train") | {"mpi", "test"}:
        wanted |= {name for name in _names(EXTRAS[extra]) if name not in ("onepfrac", "pytest")}
    assert wanted <= requirements, f"missing from requirements.txt: {sorted(wanted - requirements)}"


def test_the_generator_imports_no_torch():
    # a base install (`pip install onepfrac`) has no torch: generating must not need it
    result = _python("import sys, onepfrac.generate, onepfrac.verify\n"
                     "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm')))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_generate_runs_with_torch_blocked(tmp_path):
    code = _block("torch", "torchvision", "timm") + (
        "from onepfrac.generate import main\n"
        f"sys.exit(main(['--samples', '3', '--size', '64', '--points', '3000', '--workers', '1',"
        f" '--no-progress', '--base-savedir', {str(tmp_path)!r}]))")
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "sigma3.5_perturb0.1_sample3_seed0").glob("*/*.png"))) == 3


def test_require_returns_the_module():
    assert extras.require("json", "train", "anything").dumps({}) == "{}"


def test_a_missing_module_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(extras.MissingExtra) as caught:
        extras.require("skimage.data", "real-image", "--image astronaut")
    assert str(caught.value) == '--image astronaut needs scikit-image: pip install "onepfrac[real-image]"'
    assert isinstance(caught.value, UserError) and isinstance(caught.value, ImportError)
    assert caught.value.exit_code == 1


def test_an_import_error_inside_an_installed_package_is_not_called_a_missing_extra(tmp_path, monkeypatch):
    (tmp_path / "brokenpkg_for_extras.py").write_text("import no_such_module_for_extras\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError) as caught:
        extras.require("brokenpkg_for_extras", "train", "anything")
    assert not isinstance(caught.value, extras.MissingExtra)


def test_real_image_bundled_photo_without_scikit_image(monkeypatch):
    from onepfrac.datasets import real_image

    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(extras.MissingExtra, match=re.escape('pip install "onepfrac[real-image]"')):
        real_image.load_image("astronaut")


def test_generate_real_image_without_scikit_image_says_one_line(tmp_path):
    code = _block("skimage", "skimage.data") + (
        "from onepfrac.generate import main\n"
        f"sys.exit(main(['--dataset', 'real-image', '--classes', '2', '--instances', '1', '--size', '32',"
        f" '--workers', '1', '--no-progress', '--base-savedir', {str(tmp_path)!r}]))")
    result = _python(code)
    assert result.returncode == 1
    assert _one_line(result.stderr).endswith('needs scikit-image: pip install "onepfrac[real-image]"')


def test_train_without_torch_says_one_line(tmp_path, capsys, monkeypatch):
    from onepfrac.train import cli

    monkeypatch.setitem(sys.modules, "torch", None)
    code = cli.main(["pretrain", "-c", "pretrain_cpu", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")])
    assert code == 1
    assert _one_line(capsys.readouterr().err) == 'error: python -m onepfrac.train pretrain needs torch: pip install "onepfrac[train]"'


def test_probe_without_torch_says_one_line():
    result = _python(_block("torch") + "import runpy\nrunpy.run_module('onepfrac.train.probe', run_name='__main__')")
    assert result.returncode == 1
    assert _one_line(result.stderr) == 'error: python -m onepfrac.train.probe needs torch: pip install "onepfrac[train]"'


def test_digits_without_scikit_learn_says_one_line(tmp_path, capsys, monkeypatch):
    from onepfrac.train import digits

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert digits.main([str(tmp_path / "d")]) == 1
    assert 'needs scikit-learn: pip install "onepfrac[train]"' in _one_line(capsys.readouterr().err)


def test_mpi_launch_without_mpi4py_names_the_extra(monkeypatch):
    from onepfrac.train import distributed

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(distributed.LaunchError, match=re.escape('pip install "onepfrac[mpi]"')):
        distributed._mpi_rendezvous(0)


def test_missing_tensorboard_is_said_once_and_metrics_are_still_written(tmp_path, capsys, monkeypatch):
    from onepfrac.train.metrics import MetricsLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    log = MetricsLog(tmp_path, enabled=True)
    log.write([{"epoch": 1, "train_loss": 0.5}])
    log.close()
    assert 'pip install "onepfrac[train]"' in capsys.readouterr().out
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


# ---------------------------------------------------------------- configs and grids by name

def test_configs_and_grids_resolve_by_name_with_or_without_yaml():
    from onepfrac.sweep.grid import load_grid
    from onepfrac.train.options import build_parser, read_config

    for name in ("pretrain_cpu", "pretrain_cpu.yaml"):
        assert bundled.find(name, "configs") == REPO / "train" / "configs" / "pretrain_cpu.yaml"
    assert read_config("pretrain_cpu", build_parser()) == read_config(str(REPO / "train/configs/pretrain_cpu.yaml"), build_parser())
    assert load_grid("cpu_L").name == load_grid(REPO / "train" / "grids" / "cpu_L.yaml").name == "cpu_L"


def test_a_path_is_never_taken_for_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pretrain_cpu.yaml").write_text("epochs: 3\n")
    assert bundled.find("pretrain_cpu.yaml", "configs") == Path("pretrain_cpu.yaml")  # the local file wins
    assert bundled.find("sub/pretrain_cpu", "configs") == Path("sub/pretrain_cpu")  # a path stays a path


def test_an_unknown_name_lists_the_bundled_ones():
    from onepfrac.sweep.grid import GridError, load_grid
    from onepfrac.train.options import UsageError, build_parser, read_config

    with pytest.raises(UsageError, match="bundled configs by name: .*pretrain_cpu"):
        read_config("pretrain_cpux", build_parser())
    with pytest.raises(GridError, match="bundled grids by name: .*cpu_L"):
        load_grid("cpu_Lx")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    try:
        import setuptools  # a new enough one builds without fetching one (offline, and faster)
        isolation = [] if int(setuptools.__version__.split(".")[0]) >= 77 else None
    except ImportError:
        isolation = None
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO)]
    result = subprocess.run(command + (["--no-build-isolation"] if isolation is not None else []),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("onepfrac-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_ships_every_config_and_grid(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in bundled.KINDS:
        for yaml_file in (REPO / "train" / kind).glob("*.yaml"):
            assert f"onepfrac/_train/{kind}/{yaml_file.name}" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script, target in SCRIPTS.items():
        assert f"{script} = {target}" in entry_points


@pytest.mark.slow
def test_an_unpacked_wheel_finds_configs_and_grids_by_name(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import onepfrac, sys\n"
            f"assert onepfrac.__file__.startswith({str(site)!r}), onepfrac.__file__\n"
            "from onepfrac.train.options import build_parser, read_config\n"
            "from onepfrac.sweep.grid import load_grid\n"
            "print(read_config('pretrain_cpu', build_parser())['model'])\n"
            "grid = load_grid('cpu_L')\n"
            f"assert str(grid.recipes['pretrain']).startswith({str(site)!r}), grid.recipes\n"
            "print(grid.name)")
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = _python(code, cwd=tmp_path, env=env)  # not the checkout: its train/ folder is out of reach
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "cpu_L"
