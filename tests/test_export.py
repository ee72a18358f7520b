"""Hub model folders (model.safetensors + config.json): written at the end of every run and by the
export command, loaded by timm alone to the same outputs (tiny ViTs on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from onepfrac.train import checkpoint, export  # noqa: E402
from onepfrac.train.checkpoint import save_checkpoint  # noqa: E402

TINY = dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2)
ARCH = "vit_tiny_patch16_224"
KWARGS = ["--model-kwargs", "patch_size=4", "embed_dim=32", "depth=2", "num_heads=2"]
INPUTS = ["--img-size", "32", "--mean", "0.5", "0.5", "0.5", "--std", "0.5", "0.5", "0.5"]

# Run in a fresh interpreter: timm builds the model from the folder, and no module of this
# project may have been imported when it is done.
TIMM_ALONE = """
import json, sys, torch, timm
folder, mode = sys.argv[1], sys.argv[2]
config = json.load(open(folder + "/config.json"))
if mode == "local-dir":
    model = timm.create_model("local-dir:" + folder, pretrained=True)
else:  # the architecture's name, our weights file over its default pretrained_cfg
    overlay = dict(config["pretrained_cfg"], file=folder + "/model.safetensors")
    model = timm.create_model(config["architecture"], pretrained=True, pretrained_cfg_overlay=overlay,
                              **config["model_args"])
assert not [name for name in sys.modules if name.startswith("onepfrac")]
size = config["pretrained_cfg"]["input_size"]
x = torch.randn(2, *size, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    torch.save(model.eval()(x), folder + "/../timm_alone.pt")
"""


def timm_alone(folder: Path, mode: str) -> torch.Tensor:
    script = folder.parent / "timm_alone.py"
    script.write_text(TIMM_ALONE)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(script), str(folder), mode], cwd=folder.parent,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return torch.load(folder.parent / "timm_alone.pt", weights_only=True)


def outputs(model, size) -> torch.Tensor:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x)


def tiny_vit(num_classes=10, seed=0):
    torch.manual_seed(seed)
    return timm.create_model(ARCH, num_classes=num_classes, **TINY).eval()


def trained_model(run: Path):
    """The model of a run's last checkpoint, built by timm from its recorded options."""
    state = torch.load(run / checkpoint.LAST, map_location="cpu", weights_only=True)
    args = state["args"]
    model = timm.create_model(args["model"], img_size=args["img_size"],
                              num_classes=state["model"]["head.weight"].shape[0], **args["model_kwargs"])
    model.load_state_dict(state["model"])
    return model, args


# ---------------------------------------------------------------- the end of a run

@pytest.mark.parametrize("mode", ["local-dir", "pretrained_cfg_overlay"])
def test_a_run_ends_with_a_hub_folder_that_timm_alone_loads_to_the_same_outputs(pretrained_checkpoint, mode):
    run = pretrained_checkpoint.parent
    assert {"model.safetensors", "config.json"} <= set(os.listdir(run))
    assert not [name for name in os.listdir(run) if name.endswith(".tmp")]
    model, args = trained_model(run)
    assert torch.equal(timm_alone(run, mode), outputs(model, args["img_size"]))


def test_the_run_config_records_architecture_kwargs_classes_labels_and_inputs(pretrained_checkpoint):
    config = json.loads((pretrained_checkpoint.parent / "config.json").read_text())
    assert config["architecture"] == ARCH and config["num_classes"] == 8
    assert config["label_names"] == [f"{i:05d}" for i in range(8)]
    assert {"patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2, "num_classes": 8}.items() \
        <= config["model_args"].items()
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 16, 16] and cfg["mean"] == cfg["std"] == [0.5, 0.5, 0.5]
    assert cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 0.875 and cfg["custom_load"] is False
    assert "hf_hub_id" not in cfg and "tag" not in cfg  # nothing of timm's ImageNet weights


def test_a_cnn_is_exported_without_img_size(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=3).eval()
    export.export_model(model, tmp_path / "out", "resnet10t",
                        export.model_args_for("resnet10t", 32, {}, 3), export.Inputs(32, (0.5,) * 3, (0.5,) * 3))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "img_size" not in config["model_args"]
    loaded = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True)
    assert torch.equal(outputs(loaded, 32), outputs(model, 32))


# ---------------------------------------------------------------- the export command

def export_cli(*argv):
    return subprocess.run([sys.executable, "-m", "onepfrac.weights", "export", *map(str, argv)],
                          capture_output=True, text=True, timeout=120)


def test_our_checkpoint_exports_with_nothing_to_ask(tmp_path, pretrained_checkpoint):
    out = tmp_path / "hub"
    assert export.command([str(pretrained_checkpoint), str(out)]) == 0
    model, args = trained_model(pretrained_checkpoint.parent)
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert torch.equal(outputs(loaded, 16), outputs(model, 16))
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize("kind", ["released", "bare", "safetensors", "timm"])
def test_files_that_record_less_export_once_asked(tmp_path, kind, capsys):
    model = tiny_vit(seed=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / f"weights.{kind}"
    if kind == "released":  # the released 1p-frac trainer's dict: weights and epoch only
        torch.save({"model": state, "optimizer": {}, "lr_scheduler": {}, "scaler": None, "epoch": 80000}, path)
    elif kind == "bare":
        torch.save(state, path)
    elif kind == "safetensors":
        from safetensors.torch import save_file
        save_file(state, path)
    else:  # timm's train.py: its args as a Namespace record the model, not the model kwargs
        import argparse
        torch.save({"state_dict": state, "args": argparse.Namespace(
            model=ARCH, input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, img_size=None)}, path)
    out = tmp_path / "hub"
    if kind != "timm":
        assert export.command([str(path), str(out)]) == 2
        assert capsys.readouterr().err == (f"error: {path}: the file does not record its timm model; "
                                          "give --model NAME (e.g. vit_tiny_patch16_224)\n")
        assert export.command([str(path), str(out), "--model", ARCH]) == 2
        assert "give --img-size" in capsys.readouterr().err
        argv = ["--model", ARCH, *KWARGS, *INPUTS]
    else:
        argv = KWARGS
    assert export.command([str(path), str(out), *argv]) == 0
    assert "num_classes" not in capsys.readouterr().err
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert loaded.num_classes == 10  # read from the classifier's weights
    assert torch.equal(outputs(loaded, 32), outputs(model, 32))


def test_a_non_empty_out_dir_needs_overwrite_and_keeps_other_files(tmp_path, capsys):
    path = tmp_path / "w.pth"
    torch.save(tiny_vit(seed=1).state_dict(), path)
    out = tmp_path / "hub"
    out.mkdir()
    (out / "README.md").write_text("mine\n")
    argv = [str(path), str(out), "--model", ARCH, *KWARGS, *INPUTS]
    assert export.command(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not empty (README.md); give --overwrite" in err
    assert os.listdir(out) == ["README.md"]
    assert export.command([*argv, "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors"]


def test_bad_export_inputs_are_one_line_errors_with_exit_2(tmp_path, capsys):
    path = tmp_path / "w.pth"
    torch.save(tiny_vit().state_dict(), path)
    out = tmp_path / "hub"
    cases = [
        ([tmp_path / "nope.pth", out], "CKPT " + str(tmp_path / "nope.pth") + ": no such file"),
        ([tmp_path, out], "a folder, not a checkpoint file"),
        ([path, out, "--model", ARCH, *KWARGS, *INPUTS, "--num-classes", "5"],
         "--num-classes 5 does not match the 10 classes"),
        ([path, out, "--model", "no_such_net", *INPUTS], "--model: 'no_such_net' is not a timm model"),
        ([path, out, "--model", ARCH, *INPUTS], "do not fit vit_tiny_patch16_224 and no --model-kwargs "
                                                "(checkpoint: 2 blocks, width 32; model: 12 blocks"),
        ([path, out, "--model", ARCH, *KWARGS, *INPUTS, "--crop-pct", "2"], "--crop-pct 2.0: expected"),
        ([path, out, "--model", ARCH, *KWARGS, *INPUTS, "--mean", "1", "2"], "--mean"),
        ([path], "OUT_DIR"),
    ]
    for argv, message in cases:
        assert export.command(list(map(str, argv))) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()
    result = export_cli(path, out)  # as a command, with the same errors
    assert result.returncode == 2 and "give --model NAME" in result.stderr, result.stderr


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import safetensors.torch

    def failing(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save", failing)
    with pytest.raises(OSError, match="disk full"):
        export.export_model(tiny_vit(), tmp_path, ARCH, dict(TINY, num_classes=10),
                            export.Inputs(32, (0.5,) * 3, (0.5,) * 3))
    assert os.listdir(tmp_path) == []


def test_a_training_checkpoint_exports_its_non_ema_weights(tmp_path):
    plain, ema = tiny_vit(seed=1), tiny_vit(seed=2)
    path = tmp_path / "ckpt.pth"
    args = {"model": ARCH, "img_size": 32, "model_kwargs": {k: v for k, v in TINY.items() if k != "img_size"},
            "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "crop_pct": 0.9}
    save_checkpoint(path, {"model": plain.state_dict(), "model_ema": ema.state_dict(), "args": args, "epoch": 1})
    for which, expected in (("auto", plain), ("ema", ema)):
        out = tmp_path / which
        assert export.command([str(path), str(out), "--which", which]) == 0
        loaded = timm.create_model(f"local-dir:{out}", pretrained=True)
        assert torch.equal(outputs(loaded, 32), outputs(expected, 32))
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["pretrained_cfg"]["crop_pct"] == 0.9


def test_weights_export_takes_a_released_name_and_its_registry_model(tmp_path, capsys):
    from onepfrac import weights

    name = "1p-frac-vit-tiny-delta0.1"
    model = tiny_vit(seed=4)
    cache = tmp_path / "cache"
    cache.mkdir()
    torch.save({"model": model.state_dict(), "epoch": 80000}, cache / weights.RELEASES[name].filename)
    out = tmp_path / "hub"
    assert weights.main(["export", name, str(out), "--cache-dir", str(cache), *KWARGS, *INPUTS]) == 0
    assert f"{out}: model.safetensors and config.json of {ARCH} (10 classes, 32 px" in capsys.readouterr().out
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert torch.equal(outputs(loaded, 32), outputs(model, 32))
    assert weights.main(["export", name]) == 2
    assert capsys.readouterr().err == "error: the following arguments are required: OUT_DIR\n"


def test_the_export_parser_follows_the_command_conventions():
    import argparse

    from onepfrac.argparsing import Parser
    from onepfrac.train.options import OneLineParser

    parser = export.add_arguments(OneLineParser(prog="export"), downloads=True)
    assert isinstance(parser, Parser) and not parser.allow_abbrev
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, action.dest
        if action.option_strings and action.nargs != 0:
            assert "default" in formatter._expand_help(action), action.dest
