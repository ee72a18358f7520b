"""Options of `python -m onepfrac.train`: YAML configs, overrides, and bad values rejected up front."""

import pytest

from conftest import REPO
from onepfrac.errors import UsageError
from onepfrac.train import cli, options

CONFIGS = sorted((REPO / "train" / "configs").glob("*.yaml"))


def write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_parses_and_passes_validation(config):
    mode = "finetune" if config.stem.startswith("finetune") else "pretrain"
    args = options.parse_args([mode, "-c", str(config), "--data-dir", "somewhere"])
    assert args.lr > 0 and args.epochs >= 1


def test_released_pretraining_recipe_matches_the_reference():
    args = options.parse_args(["pretrain", "-c", str(REPO / "train/configs/pretrain_1p-frac_vit_tiny.yaml"),
                           "--data-dir", "x"])
    assert (args.opt, args.lr, args.weight_decay, args.warmup_epochs, args.epochs) == ("adamw", 1e-3, 0.05, 5, 80000)
    assert (args.mixup, args.cutmix, args.smoothing, args.reprob, args.vflip) == (0.8, 1.0, 0.1, 0.5, 0.5)
    assert args.aa == "rand-m9-mstd0.5-inc1" and args.mean == [0.5, 0.5, 0.5]
    assert args.decay_pos_embed is True and args.sched_on_updates is False


def test_mode_defaults_follow_the_released_recipes_without_a_config():
    pre = options.parse_args(["pretrain", "--data-dir", "x"])
    fine = options.parse_args(["finetune", "--data-dir", "x"])
    assert (pre.opt, pre.lr, pre.reprob) == ("adamw", 1e-3, 0.5)
    assert (fine.opt, fine.lr, fine.reprob, fine.warmup_epochs) == ("sgd", 0.01, 0.25, 10)


def test_command_line_overrides_the_config_file(tmp_path):
    config = write(tmp_path, "lr: 0.5\nepochs: 7\nmodel-kwargs: {depth: 2}\n")
    args = options.parse_args(["pretrain", "-c", config, "--data-dir", "x", "--lr", "0.25"])
    assert args.lr == 0.25 and args.epochs == 7 and args.model_kwargs == {"depth": 2}


def test_model_kwargs_are_parsed_as_python_literals():
    args = options.parse_args(["pretrain", "--data-dir", "x", "--model-kwargs", "patch_size=4",
                           "qkv_bias=False", "act_layer=gelu"])
    assert args.model_kwargs == {"patch_size": 4, "qkv_bias": False, "act_layer": "gelu"}


def test_unknown_config_key_is_named_with_a_close_match(tmp_path):
    config = write(tmp_path, "learning_rat: 0.1\nlr: 0.1\nwarmup_epoch: 3\n")
    with pytest.raises(UsageError, match="unknown key 'learning_rat'"):
        options.parse_args(["pretrain", "-c", config, "--data-dir", "x"])
    config = write(tmp_path, "warmup_epoch: 3\n")
    with pytest.raises(UsageError, match="did you mean warmup_epochs"):
        options.parse_args(["pretrain", "-c", config, "--data-dir", "x"])


def test_missing_or_malformed_config_is_an_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        options.parse_args(["pretrain", "-c", str(tmp_path / "nope.yaml"), "--data-dir", "x"])
    with pytest.raises(UsageError, match="flat `key: value`"):
        options.parse_args(["pretrain", "-c", write(tmp_path, "- 1\n- 2\n"), "--data-dir", "x"])


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "--batch-size: 0"),
    (["--epochs", "-3"], "--epochs: -3"),
    (["--hflip", "1.5"], "--hflip: 1.5"),
    (["--lr", "0"], "--lr: 0.0"),
    (["--amp", "fp8"], "--amp: 'fp8'"),
    (["--launcher", "pbs"], "--launcher: 'pbs'"),
    (["--data-pipeline", "gpu"], "--data-pipeline: 'gpu'"),
    (["--scale", "0.9", "0.1"], "--scale"),
    (["--batch-size", "5"], "must be even"),
    (["--mixup-chunk", "3", "--batch-size", "6"], "--mixup-chunk: 3"),
    (["--dataset", "mnist"], "--dataset: 'mnist'"),
    (["--in-memory", "maybe"], "--in-memory: 'maybe'"),
    (["--aa", "rand-x9"], "--aa: 'rand-x9'"),
    (["--fused-opt", "--opt", "lamb"], "--fused-opt: True .* not lamb"),
])
def test_bad_values_are_rejected_naming_option_value_and_range(argv, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        options.parse_args(["pretrain", "--data-dir", "x", *argv])


def test_each_mode_names_the_data_it_needs():
    with pytest.raises(UsageError, match="--data-dir"):
        options.parse_args(["pretrain"])
    with pytest.raises(UsageError, match="--ckpt"):
        options.parse_args(["eval", "--val-dir", "x"])


def test_usage_errors_exit_2_with_one_line_before_any_work(tmp_path, capsys):
    code = cli.main(["pretrain", "--data-dir", str(tmp_path), "--batch-size", "0",
                     "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --batch-size")
    assert not (tmp_path / "out").exists()
