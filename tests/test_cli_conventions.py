"""Every command's options follow one set of conventions: no abbreviations (timm's `--drop` must
not set `--drop-path`), help text and a shown default for every option, declared choices,
one-line errors with exit status 2; and the trainer takes timm train.py's spellings."""

import argparse
import importlib.util
import re
import sys

import pytest

from conftest import REPO
from onepfrac import datasets, figures, generate, verify, weights
from onepfrac.argparsing import Parser, walk
from onepfrac.sweep import cli as sweep_cli
from onepfrac.train import cli as train_cli
from onepfrac.train import digits, options, probe

BENCHMARKS = sorted((REPO / "benchmarks").glob("bench_*.py"))


class Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def captured_parser(monkeypatch, call):
    """The parser a command builds inside its main: caught as it starts parsing."""
    def catch(self, *args, **kwargs):
        raise Captured(self)

    monkeypatch.setattr(Parser, "parse_args", catch)
    monkeypatch.setattr(Parser, "parse_known_args", catch)
    try:
        call()
    except Captured as caught:
        return caught.parser
    raise AssertionError("the command built no Parser")


def benchmark(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as missing:  # e.g. cv2 for the VisualAtom benchmark
        pytest.skip(f"{path.name}: {missing}")
    return module


def generator_parsers():
    for name in datasets.DATASETS:
        try:
            yield f"generate --dataset {name}", generate.build_parser(name)
        except (ImportError, datasets.UnknownDataset):
            continue  # a dataset whose optional dependencies are missing


def all_parsers(monkeypatch):
    found = [(f"train {mode or ''}", options.build_parser(mode)) for mode in (None, *options.MODES)]
    found += list(generator_parsers())
    found += [("verify", verify.build_parser()), ("sweep", sweep_cli.build_parser()),
              ("sweep aggregate", sweep_cli.build_aggregate_parser()), ("probe", probe.build_parser())]
    found += [("weights", captured_parser(monkeypatch, lambda: weights.main(["list"]))),
              ("figures", captured_parser(monkeypatch, lambda: figures.make(["paper"]))),
              ("digits", captured_parser(monkeypatch, lambda: digits.main(["x"])))]
    for path in BENCHMARKS:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except ImportError:
            continue
        monkeypatch.setattr(sys, "argv", [str(path)])
        found.append((path.name, captured_parser(monkeypatch, module.main)))
    return [(f"{name} {sub.prog}", sub) for name, parser in found for sub in walk(parser)]


def test_every_parser_refuses_abbreviations_and_documents_every_option(monkeypatch):
    parsers = all_parsers(monkeypatch)
    assert len(parsers) >= 20
    for name, parser in parsers:
        assert isinstance(parser, Parser) and not parser.allow_abbrev, name
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = f"{name}: {action.option_strings or action.dest}"
            assert action.help and action.help.strip(), f"{where} has no help"
            shown = formatter._expand_help(action) if action.help else ""
            takes_value = action.nargs != 0 or isinstance(action, argparse.BooleanOptionalAction)
            if action.option_strings and takes_value and not action.required:
                assert "default" in shown, f"{where} does not show its default: {shown!r}"
        text = parser.format_help()
        for action in parser._actions:
            if action.choices and not isinstance(action, argparse._SubParsersAction):
                assert "{" + ",".join(map(str, action.choices)) + "}" in text, \
                    f"{name}: the choices of {action.option_strings} are not in its help"


@pytest.mark.parametrize("values, dest", [
    (options.DATASETS, "dataset"), (options.IN_MEMORY, "in_memory"),
    (options.PIPELINES, "data_pipeline"), (options.CKPT_WHICH, "ckpt_which"),
    (options.INTERPOLATIONS, "interpolation"), (options.RE_MODES, "remode"),
    (options.MIXUP_MODES, "mixup_mode"), (options.AMP_MODES, "amp"),
    (options.LAUNCHERS, "launcher"),
])
def test_the_trainers_choice_options_declare_their_choices(values, dest):
    action = next(a for a in options.build_parser()._actions if a.dest == dest)
    assert tuple(action.choices) == tuple(values)


def one_line_exit_2(capsys, call):
    try:
        code = call()
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err.strip()
    return code, err


ABBREVIATED = [
    (train_cli.main, ["pretrain", "--data-dir", "x", "--drop", "0.3"], "--drop"),
    (train_cli.main, ["pretrain", "--data-dir", "x", "--lr-base", "256"], "--lr-base"),
    (train_cli.main, ["pretrain", "--data-dir", "x", "--batch", "4"], "--batch-size"),
    (train_cli.main, ["finetune", "--data-dir", "x", "--smooth", "0.1"], "--smoothing"),
    (generate.main, ["--sampl", "3"], "--sampl"),
    (verify.main, ["somewhere", "--rerend", "1"], "--rerender"),
    (sweep_cli.main, ["grid.yaml", "--dry"], "--dry-run"),
    (sweep_cli.main, ["aggregate", "somewhere", "--no-prog"], "--no-progress"),
    (weights.main, ["download", "x", "--no-prog"], "--no-progress"),
    (figures.main, ["grid", "somewhere", "--out", "x.png", "--cou", "2"], "--count"),
    (probe.main, ["--ckpt", "x", "--data-dir", "y", "--epoch", "1"], "--epochs"),
    (digits.main, ["out", "--tra", "10"], "--train"),
]


@pytest.mark.parametrize("main, argv, named", ABBREVIATED,
                         ids=[f"{m.__module__}:{a[-2]}" for m, a, _ in ABBREVIATED])
def test_an_abbreviated_option_is_refused_in_one_line_with_exit_2(capsys, main, argv, named):
    code, err = one_line_exit_2(capsys, lambda: main(argv))
    assert code == 2 and "\n" not in err and named in err, err


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.name for p in BENCHMARKS])
def test_a_benchmarks_abbreviated_option_is_refused_in_one_line(capsys, monkeypatch, path):
    module = benchmark(path)
    parser = captured_parser(monkeypatch, lambda: (monkeypatch.setattr(sys, "argv", [str(path)]),
                                                    module.main()))
    monkeypatch.undo()
    long = next(o for a in parser._actions for o in a.option_strings
                if o.startswith("--") and o != "--help" and len(o) > 4)
    monkeypatch.setattr(sys, "argv", [str(path), long[:-1], "1"])
    code, err = one_line_exit_2(capsys, module.main)
    assert code == 2 and "\n" not in err and long in err, err


def test_pretrain_and_finetune_help_show_their_own_recipe_defaults(capsys):
    def help_of(*argv):
        with pytest.raises(SystemExit) as stop:
            options.parse_args([*argv, "--help"])
        assert stop.value.code == 0
        return " ".join(capsys.readouterr().out.split())

    pre, fine, neither = help_of("pretrain"), help_of("finetune"), help_of()
    assert "--lr LR" in pre and "(default: 0.001)" in pre and "(default: adamw)" in pre
    assert "(default: 0.01)" in fine and "(default: sgd)" in fine and "(default: 0.001)" not in fine
    assert "(default: pretrain 0.001, finetune 0.01)" in neither


def test_a_configs_values_are_the_defaults_its_help_shows(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("lr: 0.125\nvalidation_batch_size: 7\n")
    with pytest.raises(SystemExit):
        options.parse_args(["pretrain", "-c", str(config), "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.125)" in out and "(default: 7)" in out


TIMM_SPELLINGS = [
    (["-b", "8"], "batch_size", 8), (["-j", "3"], "workers", 3),
    (["-vb", "16"], "eval_batch_size", 16), (["--validation-batch-size", "16"], "eval_batch_size", 16),
    (["--output", "runs/a"], "output_dir", "runs/a"), (["--torchcompile"], "compile", True),
    (["--val-interval", "5"], "eval_every", 5), (["--initial-checkpoint", "w.pth"], "ckpt", "w.pth"),
    (["--pretrained-path", "w.pth"], "ckpt", "w.pth"), (["--lr-base-size", "256"], "lr_base_batch", 256),
    (["--epoch-repeats", "4"], "repeats", 4), (["--amp"], "amp", "auto"),
]


@pytest.mark.parametrize("argv, dest, value", TIMM_SPELLINGS, ids=[a[0] for a, _, _ in TIMM_SPELLINGS])
def test_timms_spellings_set_our_options(argv, dest, value):
    args = options.parse_args(["pretrain", "--data-dir", "x", *argv])
    assert getattr(args, dest) == value and dest in args.explicit


def test_timms_spellings_are_config_keys_too_and_messages_name_our_option(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("validation_batch_size: 16\noutput: runs/b\n")
    args = options.parse_args(["pretrain", "-c", str(config), "--data-dir", "x"])
    assert (args.eval_batch_size, args.output_dir) == (16, "runs/b")
    config.write_text("eval_batch_size: 16\nvalidation_batch_size: 8\n")
    with pytest.raises(options.UsageError, match="sets eval_batch_size a second time"):
        options.parse_args(["pretrain", "-c", str(config), "--data-dir", "x"])
    config.write_text("no_progress: true\n")  # a negation is not a key: progress: false is
    with pytest.raises(options.UsageError, match="unknown key 'no_progress'"):
        options.parse_args(["pretrain", "-c", str(config), "--data-dir", "x"])
    with pytest.raises(options.UsageError, match=r"^--eval-batch-size: 0 is not allowed"):
        options.parse_args(["pretrain", "--data-dir", "x", "-vb", "0"])


def test_a_bad_choice_says_what_is_allowed_in_the_projects_words():
    with pytest.raises(options.UsageError, match=r"^--amp: 'fp8' is not allowed; expected auto, none, bf16 or fp16$"):
        options.parse_args(["pretrain", "--data-dir", "x", "--amp", "fp8"])


@pytest.mark.parametrize("model, img_size, kwargs, tag", [
    ("vit_tiny_patch16_224", 32, dict(patch_size=4, embed_dim=96, depth=6, num_heads=3), "p4-d96x6-h3-32px"),
    ("vit_tiny_patch16_224", 224, {}, ""),
    ("vit_tiny_patch16_224", 384, {}, "384px"),
    ("resnet18", 64, {"drop_rate": 0.1, "global_pool": "avg"}, "droprate0.1-globalpoolavg-64px"),
    ("vit_tiny_patch16_224", 224, {"weird key": "a/b c"}, "weirdkeyabc"),
])
def test_run_names_carry_the_models_overrides_filesystem_safe(model, img_size, kwargs, tag):
    assert options.architecture_tag(model, img_size, kwargs) == tag
    assert re.fullmatch(r"[A-Za-z0-9.\-]*", tag)


def test_the_start_line_names_the_model_as_built():
    assert (options.architecture("vit_tiny_patch16_224", 32, {"patch_size": 4, "depth": 6})
            == "vit_tiny_patch16_224(patch_size=4, depth=6) at 32 px")
    assert options.architecture("resnet18", 224, {}) == "resnet18 at 224 px"
