"""The trainer's options: the parser, the released recipes' defaults, YAML configs and validation.

`python -m onepfrac.train {pretrain,finetune,eval} [-c FILE.yaml]` (onepfrac.train.cli). A YAML
config holds flat keys equal to the long options (dashes or underscores), as timm's
`train.py -c` does; options given on the command line override the file. Every value is checked
here, before any process group, dataset or model is touched.

Imports no torch: the sweep driver and the tests check options without it. Each choice list is
written once below and serves the parser's help and the check of YAML values alike.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import math
import re
import sys
from pathlib import Path

import yaml

from onepfrac.argparsing import Parser, shown
from onepfrac import bundled
from onepfrac.errors import UsageError

MODES = ("pretrain", "finetune", "eval")

# The values each choice option takes, for the parser's help and for validate (which also checks
# values read from a YAML config, where argparse's own checks do not reach).
DATASETS = ("folder", "cifar10", "cifar100", "wds")  # wds: tar shards of python -m onepfrac.generate --format wds
IN_MEMORY = ("auto", "always", "never")
PIPELINES = ("auto", "loader", "device")
CKPT_WHICH = ("auto", "model", "state_dict", "state_dict_ema", "ema")  # ema: state_dict_ema
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "random")
RE_MODES = ("pixel", "rand", "const")
MIXUP_MODES = ("batch", "pair", "elem")
AMP_MODES = ("auto", "none", "bf16", "fp16")
LAUNCHERS = ("auto", "none", "torchrun", "mpi", "slurm")
FUSED_OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "nesterov")  # torch's own, which take fused=

# The released recipes (docs/released-code.md): pre-training 1p-frac and fine-tuning, DeiT-style.
RECIPE_DEFAULTS = {
    "pretrain": dict(opt="adamw", lr=1.0e-3, weight_decay=0.05, warmup_epochs=5,
                     reprob=0.5, vflip=0.5, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5],
                     save_every=10000, decay_pos_embed=True),
    "finetune": dict(opt="sgd", lr=0.01, weight_decay=1e-4, warmup_epochs=10, reprob=0.25,
                     vflip=0.0, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                     save_every=100, decay_pos_embed=True),
}
# Evaluation takes the model and the input pipeline from the checkpoint's stored arguments
# when it has them; these are the fallbacks.
RECIPE_DEFAULTS["eval"] = dict(RECIPE_DEFAULTS["finetune"])
# Read back from a checkpoint's arguments by `eval` unless given explicitly.
EVAL_FROM_CHECKPOINT = ("model", "img_size", "model_kwargs", "mean", "std", "interpolation",
                        "crop_pct")


def either(choices) -> str:
    """'a, b or c': the choices as help texts and messages name them."""
    return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else "".join(choices)


# timm train.py options that are not ours (or mean something else here): the one-line error for
# such an option says what to write instead, as allow_abbrev=False no longer guesses one.
TIMM_INSTEAD = {
    "--drop": "dropout is a model argument: --model-kwargs drop_rate=P",
    "--lr-base": "--lr is the base lr, scaled linearly by total batch / --lr-base-batch",
    "--lr-base-scale": "the lr is always scaled linearly by total batch / --lr-base-batch",
    "--amp-dtype": "--amp takes the type: --amp bf16 or --amp fp16",
    "--pretrained": "--ckpt names the weights to start from (path, URL or released name)",
    "--train-interpolation": "--interpolation sets training and evaluation alike",
    "--log-interval": "--check-every sets the updates between host syncs and log lines",
    "--checkpoint-hist": "--save-every sets the epochs between kept checkpoints",
    "--input-size": "--img-size sets the (square, 3-channel) input",
    "--train-split": "--train-dir (or --data-dir holding train/) gives the training images",
    "--val-split": "--val-dir (or --data-dir holding val/) gives the validation images",
}


class OneLineParser(Parser):
    def error(self, message):
        unknown = message.partition("unrecognized arguments: ")[2].split(" ")[0].split("=")[0]
        if unknown in TIMM_INSTEAD:
            raise UsageError(f"{message} (that is timm's {unknown}; here {TIMM_INSTEAD[unknown]})")
        raise UsageError(self.explained(message))


def model_kwarg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def mixup_chunk(text: str):
    """--mixup-chunk: a whole number of images, or `1/k` of the per-process batch (a config's
    chunk then follows the batch a user sets instead of refusing it)."""
    text = str(text).strip()
    if re.fullmatch(r"1/[1-9][0-9]*", text):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of images or a fraction 1/k of --batch-size") from None


def build_parser(mode: str | None = None, add_help: bool = True) -> argparse.ArgumentParser:
    """The trainer's parser; with `mode`, its help shows that mode's recipe defaults (without,
    each mode's)."""
    parser = OneLineParser(prog="python -m onepfrac.train", add_help=add_help,
                           description="Pre-train, fine-tune or evaluate a timm model. Options "
                                       "also take timm train.py's spellings (train/README.md).")
    parser.add_argument("mode", choices=MODES, help="what to do; `MODE --help` shows its defaults")
    parser.add_argument("-c", "--config", default=None, metavar="FILE.yaml",
                        help="YAML file of flat option keys; options given here override it "
                             "(default: none)")

    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", default=None,
                      help="pretrain: the dataset folder; finetune/eval: folder with train/ and "
                           "val/ (default: none)")
    data.add_argument("--train-dir", default=None,
                      help="training images, one folder per class (default: --data-dir/train)")
    data.add_argument("--val-dir", default=None,
                      help="validation images, one folder per class (default: --data-dir/val)")
    data.add_argument("--dataset", default="folder", choices=DATASETS,
                      help="folder: class folders; cifar10/cifar100: torchvision's, in --data-dir")
    data.add_argument("--render", default=None, metavar="DATASET",
                      help="pretrain on a dataset rendered on the fly (1p-frac, fractaldb, ofdb, "
                           "visualatom, real-image, 3d-ofdb) instead of --data-dir (default: none)")
    data.add_argument("--render-kwargs", nargs="*", type=model_kwarg, default=[], metavar="KEY=VALUE",
                      help="generator options for --render, e.g. samples=16 size=128 seed=0")
    data.add_argument("--num-classes", type=int, default=None,
                      help="checked against the class folders (default: their number)")
    data.add_argument("--in-memory", default="auto", choices=IN_MEMORY,
                      help="decode the training images once into memory (auto: when they fit "
                           "in --memory-limit-gb)")
    data.add_argument("--memory-limit-gb", type=float, default=16.0,
                      help="most memory --in-memory auto may use for decoded images")
    data.add_argument("--repeats", "--epoch-repeats", type=int, default=1,
                      help="passes over the dataset per epoch (for L smaller than a batch)")
    data.add_argument("--workers", "-j", type=int, default=None,
                      help="DataLoader workers per process (default: chosen from the cores)")
    data.add_argument("--data-pipeline", default="auto", choices=PIPELINES,
                      help="loader: DataLoader workers; device: augment on the accelerator; "
                           "auto: device where it fits")
    data.add_argument("--shuffle-buffer", type=int, default=1000,
                      help="--dataset wds: samples each DataLoader worker shuffles among (docs/shards.md)")
    data.add_argument("--side-stream", action=argparse.BooleanOptionalAction, default=False,
                      help="device pipeline on CUDA: augment the next batch on a second stream "
                           "while the model trains on this one (no effect elsewhere)")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="vit_tiny_patch16_224", help="timm model name")
    model.add_argument("--img-size", type=int, default=224, help="input images are this square")
    model.add_argument("--model-kwargs", nargs="*", type=model_kwarg, default=[],
                       metavar="KEY=VALUE",
                       help="arguments of timm's create_model, e.g. patch_size=4 depth=6")
    model.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate")
    model.add_argument("--ckpt", "--initial-checkpoint", "--pretrained-path", default=None,
                       help="weights to start from (finetune) or to evaluate: path, URL or known "
                            "name (default: none, random init)")
    model.add_argument("--ckpt-which", default="auto", choices=CKPT_WHICH,
                       help="which weights of --ckpt (ema: state_dict_ema)")
    model.add_argument("--ckpt-trust-pickle", action=argparse.BooleanOptionalAction, default=False,
                       help="allow arbitrary pickled objects in --ckpt (only for files you trust)")
    model.add_argument("--freeze-blocks", type=int, default=0,
                       help="freeze the patch embedding and the first k blocks")
    model.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                       help="channels-last memory layout")
    model.add_argument("--compile", "--torchcompile", action=argparse.BooleanOptionalAction,
                       default=False, help="torch.compile the model (inductor)")
    model.add_argument("--model-ema", action=argparse.BooleanOptionalAction, default=False,
                       help="keep an exponential moving average of the weights")
    model.add_argument("--model-ema-decay", type=float, default=0.99996,
                       help="decay of --model-ema per update")

    optim = parser.add_argument_group("optimiser and schedule")
    optim.add_argument("--opt", default=None, help="timm optimiser name")
    optim.add_argument("--lr", type=float, default=None,
                       help="base lr, scaled by total batch / --lr-base-batch (the start line "
                            "prints both)")
    optim.add_argument("--lr-base-batch", "--lr-base-size", type=int, default=512,
                       help="the total batch at which --lr is used unscaled")
    optim.add_argument("--weight-decay", type=float, default=None, help="weight decay")
    optim.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    optim.add_argument("--opt-eps", type=float, default=1e-8, help="optimiser epsilon")
    optim.add_argument("--clip-grad", type=float, default=None,
                       help="clip the gradient norm to this (> 0); 0 or unset: no clipping "
                            "(default: unset)")
    optim.add_argument("--fused-opt", action=argparse.BooleanOptionalAction, default=False,
                       help="torch's fused (single-kernel) Adam/AdamW/SGD step; same maths, "
                            "fewer launches")
    optim.add_argument("--decay-pos-embed", action=argparse.BooleanOptionalAction, default=None,
                       help="weight-decay pos_embed/cls_token as the released runs did")
    optim.add_argument("--sched", default="cosine", help="timm scheduler name")
    optim.add_argument("--epochs", type=int, default=300, help="epochs of the schedule")
    optim.add_argument("--warmup-epochs", type=int, default=None, help="linear warm-up epochs")
    optim.add_argument("--warmup-lr", type=float, default=1e-6,
                       help="lr at the start of warm-up, scaled as --lr")
    optim.add_argument("--min-lr", type=float, default=1e-5,
                       help="lr at the end of the schedule, scaled as --lr")
    optim.add_argument("--sched-on-updates", action=argparse.BooleanOptionalAction, default=False,
                       help="step the schedule every update (the released code steps per epoch)")

    augment = parser.add_argument_group("augmentation and loss")
    augment.add_argument("--aa", default="rand-m9-mstd0.5-inc1",
                         help="timm auto-augment policy, or none")
    augment.add_argument("--color-jitter", type=float, default=0.4, help="colour jitter factor")
    augment.add_argument("--reprob", type=float, default=None, help="random erasing probability")
    augment.add_argument("--remode", default="pixel", choices=RE_MODES, help="random erasing fill")
    augment.add_argument("--recount", type=int, default=1, help="random erasing boxes per image")
    augment.add_argument("--scale", type=float, nargs=2, default=[0.08, 1.0], metavar=("MIN", "MAX"),
                         help="random resized crop: area range")
    augment.add_argument("--ratio", type=float, nargs=2, default=[3 / 4, 4 / 3],
                         metavar=("MIN", "MAX"), help="random resized crop: aspect ratio range")
    augment.add_argument("--hflip", type=float, default=0.5, help="horizontal flip probability")
    augment.add_argument("--vflip", type=float, default=None, help="vertical flip probability")
    augment.add_argument("--interpolation", default="bicubic", choices=INTERPOLATIONS,
                         help="resize interpolation, training and evaluation")
    augment.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                         help="normalisation mean")
    augment.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                         help="normalisation standard deviation")
    augment.add_argument("--crop-pct", type=float, default=0.875,
                         help="evaluation: centre crop of the resized image")
    augment.add_argument("--mixup", type=float, default=0.8, help="Mixup alpha (0: off)")
    augment.add_argument("--cutmix", type=float, default=1.0, help="CutMix alpha (0: off)")
    augment.add_argument("--mixup-prob", type=float, default=1.0,
                         help="probability of Mixup or CutMix per batch (or chunk)")
    augment.add_argument("--mixup-switch-prob", type=float, default=0.5,
                         help="probability of CutMix when both are on")
    augment.add_argument("--mixup-mode", default="batch", choices=MIXUP_MODES,
                         help="one lambda per batch, pair of images or image")
    augment.add_argument("--mixup-chunk", type=mixup_chunk, default=0,
                         help="one Mixup/CutMix lambda per this many images (0: per batch), "
                              "or 1/k: per k-th of --batch-size")
    augment.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")

    run = parser.add_argument_group("run")
    run.add_argument("--batch-size", "-b", type=int, default=32, help="per process")
    run.add_argument("--eval-batch-size", "-vb", "--validation-batch-size", type=int,
                     default=None, help="per process (default: --batch-size)")
    run.add_argument("--seed", type=int, default=42, help="seed of everything random")
    run.add_argument("--amp", default="auto", nargs="?", const="auto", choices=AMP_MODES,
                     help="mixed precision; auto: fp16 on CUDA, none elsewhere (a bare --amp, "
                          "timm's spelling, is auto)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--launcher", default="auto", choices=LAUNCHERS,
                     help="how the processes were started; auto: from the environment")
    run.add_argument("--world-size", type=int, default=None,
                     help="expected number of processes (NGPUS); checked against the launcher "
                          "(default: any)")
    run.add_argument("--output-dir", "--output", default="output",
                     help="the run folder: checkpoints, metrics and summary")
    run.add_argument("--experiment", default=None,
                     help="name in checkpoint files (default: the data's name, after the "
                          "model's overrides, e.g. p4-d96x6-32px_1p-frac-rendered)")
    run.add_argument("--save-every", type=int, default=None, help="epochs between checkpoints")
    run.add_argument("--eval-every", "--val-interval", type=int, default=1,
                     help="epochs between validations")
    run.add_argument("--resume", default=None,
                     help="checkpoint path, or 'auto' for the last one (default: start afresh)")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh in an --output-dir that holds a run, deleting its "
                          "checkpoints, metrics and summary")
    run.add_argument("--check-only", action="store_true",
                     help="check the options, the model and the output folder, then exit "
                          "(0: a run would start); the drivers do this once before launching")
    run.add_argument("--stop-after", type=int, default=None,
                     help="end this process after this many epochs (checkpointed), keeping the "
                          "schedule of --epochs; continue with --resume auto, for job time "
                          "limits (default: run to the end)")
    run.add_argument("--check-every", type=int, default=50,
                     help="updates between host syncs: a NaN check, and the metrics and log "
                          "lines of the epochs finished since the last one")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                     help="progress bar on a terminal")

    # Optional experiment tracking: wandb is imported only when asked for, never required.
    tracking = parser.add_argument_group("experiment tracking")
    tracking.add_argument("--log-wandb", action="store_true",
                          help="also log the scalars of metrics.jsonl to Weights & Biases "
                               "(needs `pip install wandb`)")
    tracking.add_argument("--wandb-project", default="onepfrac",
                          help="the Weights & Biases project of --log-wandb")
    for action in parser._actions:
        if action.dest in RECIPE_DEFAULTS["pretrain"]:  # shown while no mode is chosen
            action.per_mode = ", ".join(f"{name} {shown(RECIPE_DEFAULTS[name][action.dest])}"
                                        for name in ("pretrain", "finetune"))
        if action.dest in EVAL_FROM_CHECKPOINT:
            action.help += "; eval: the checkpoint's unless given"
    if mode is not None:
        parser.set_defaults(**RECIPE_DEFAULTS[mode])
    return parser


def option_name(action: argparse.Action) -> str:
    """The option's own long name (not a timm alias), as messages name it."""
    own = "--" + action.dest.replace("_", "-")
    return own if own in action.option_strings else action.option_strings[-1]


def _dest(key: str) -> str:
    return key.replace("-", "_")


# A YAML 1.1 float needs a dot (`1.0e-3`); PyYAML reads `1e-3` as a string, accepted as the number.
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
# Read and written as lists in a config; the rest of the file's values are scalars.
_KWARG_DESTS = ("model_kwargs", "render_kwargs")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _config_value(action: argparse.Action, value, nullable: bool, where: str):
    """`value` of `action`'s key checked (and only exponent strings converted) for its type, so
    `batch_size: true` is refused instead of training with batch 1."""
    def refuse(expected):
        raise UsageError(f"{where}: {value!r} ({type(value).__name__}) is not allowed; "
                         f"expected {expected}")

    if value is None:
        if not nullable:
            refuse("a value (this key has no empty setting)")
        return None
    if action.dest in _KWARG_DESTS:
        if isinstance(value, dict):
            return [(str(k), v) for k, v in value.items()]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            try:
                return [model_kwarg(item) for item in value]
            except argparse.ArgumentTypeError as error:
                raise UsageError(f"{where}: {error}") from None
        refuse("a mapping such as {depth: 2} or a list of 'key=value' strings")
    if action.nargs == 0:  # store_true and --x/--no-x flags
        if not isinstance(value, bool):
            refuse("true or false")
        return value
    if action.type is mixup_chunk:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return mixup_chunk(value)
            except argparse.ArgumentTypeError:
                pass
        refuse("a whole number of images or a fraction 1/k of batch_size")
    if action.type in (int, float):
        def one(item):
            if action.type is int:
                if isinstance(item, int) and not isinstance(item, bool):
                    return item
                refuse("an integer" if action.nargs is None else f"a list of {action.nargs} integers")
            if _is_number(item):
                return float(item)
            if isinstance(item, str) and _FLOAT_TEXT.fullmatch(item.strip()):
                return float(item)
            refuse("a number" if action.nargs is None else f"a list of {action.nargs} numbers")
        if isinstance(action.nargs, int):
            if not isinstance(value, list) or len(value) != action.nargs:
                refuse(f"a list of {action.nargs} numbers")
            return [one(item) for item in value]
        return one(value)
    if not isinstance(value, str):
        refuse("a string (quote it)")
    return value


def read_config(path: str, parser: argparse.ArgumentParser) -> dict:
    file = bundled.find(path, "configs")  # a path, or a bundled config's name: -c pretrain_cpu
    if not file.is_file():
        raise UsageError(f"--config: {path!r} does not exist{bundled.hint('configs')}" if not file.exists()
                         else f"--config: {path!r} is not a file")
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = error.problem or error.context or "syntax error"
        raise UsageError(f"--config {path}:{where} not valid YAML ({problem})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UsageError(f"--config {path}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(values, dict):
        raise UsageError(f"--config: {path!r} must hold flat `key: value` pairs")
    actions = {action.dest: action for action in parser._actions
               if action.dest not in ("help", "mode", "config", "check_only", "overwrite")}
    # timm's spellings are keys too (`validation_batch_size: 64`), but not --no-x negations
    spellings = {_dest(option.lstrip("-")): action for action in actions.values()
                 for option in action.option_strings
                 if option.startswith("--") and _dest(option.lstrip("-")) != "no_" + action.dest}
    # An empty value is allowed where the option itself has none by default.
    nullable = {action.dest for action in build_parser()._actions if action.default is None}
    config = {}
    for key, value in values.items():
        if _dest(str(key)) not in spellings:
            close = difflib.get_close_matches(_dest(str(key)), sorted(actions), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(f"--config {path}: unknown key {key!r}{hint}")
        dest = spellings[_dest(str(key))].dest
        if dest in config:
            raise UsageError(f"--config {path}: {key!r} sets {dest} a second time")
        config[dest] = _config_value(actions[dest], value, dest in nullable,
                                     f"--config {path}: {key}")
    return config


def _given(argv: list[str], option: str) -> bool:
    """Whether `option` is in `argv`, as `--opt`, `--opt=V` or (a short one) `-bV`."""
    return any(a == option or a.startswith(option + "=")
               or (not option.startswith("--") and a.startswith(option) and not a.startswith("--"))
               for a in argv)


def _first_pass(argv: list[str]):
    """The mode and --config, read before the parser whose defaults (and help) follow them; None
    when they cannot be read, leaving the full parser to show help or the error."""
    try:
        first, _ = build_parser(add_help=False).parse_known_args(argv)
    except UsageError:
        return None
    return first


def parse_args(argv=None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = _first_pass(argv)
    parser = build_parser(first.mode if first else None)
    config = read_config(first.config, parser) if first and first.config else {}
    parser.set_defaults(**config)
    args = parser.parse_args(argv)
    given = {action.dest for action in parser._actions
             if any(_given(argv, o) for o in action.option_strings)}
    args.explicit = sorted(given | set(config))
    for key, value in RECIPE_DEFAULTS[args.mode].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.model_kwargs = dict(args.model_kwargs or [])
    args.render_kwargs = dict(args.render_kwargs or [])
    validate(args)
    return args


def need(ok: bool, option: str, value, allowed: str) -> None:
    """Raise UsageError `--option: value is not allowed; allowed` unless `ok`."""
    if not ok:
        raise UsageError(f"--{option}: {value!r} is not allowed; {allowed}")


def need_choice(choices, option: str, value) -> None:
    need(value in choices, option, value, f"expected {either(choices)}")


def check_numbers(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Every number option is a number of its type and finite (argparse takes `inf` and `nan`
    as floats, and a YAML config can hold anything)."""
    for action in parser._actions:
        if action.type not in (int, float):
            continue
        value = getattr(args, action.dest, None)
        name = option_name(action).lstrip("-")
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if item is None and not isinstance(value, (list, tuple)):
                continue
            if action.type is int:
                need(isinstance(item, int) and not isinstance(item, bool), name, value,
                     "expected an integer")
            else:
                need(_is_number(item) and math.isfinite(item), name, value,
                     "expected a finite number")


def validate(args: argparse.Namespace) -> None:
    check_numbers(args, build_parser())

    def positive(name):
        value = getattr(args, _dest(name))
        need(isinstance(value, int) and value >= 1, name, value, "expected an integer >= 1")

    def probability(name):
        value = getattr(args, _dest(name))
        need(0.0 <= value <= 1.0, name, value, "expected a probability in [0, 1]")

    for name in ("batch-size", "epochs", "repeats", "lr-base-batch", "eval-every",
                 "check-every", "save-every", "img-size", "recount", "shuffle-buffer"):
        positive(name)
    for name in ("hflip", "vflip", "reprob", "mixup-prob", "mixup-switch-prob", "smoothing",
                 "drop-path"):
        probability(name)
    for choices, name in ((IN_MEMORY, "in-memory"), (PIPELINES, "data-pipeline"), (AMP_MODES, "amp"),
                          (DATASETS, "dataset"), (LAUNCHERS, "launcher"), (CKPT_WHICH, "ckpt-which")):
        need_choice(choices, name, getattr(args, _dest(name)))
    need(args.lr is not None and args.lr > 0, "lr", args.lr, "expected a number > 0")
    need(0 <= args.momentum < 1, "momentum", args.momentum, "expected a number in [0, 1)")
    need(args.opt_eps > 0, "opt-eps", args.opt_eps, "expected a number > 0")
    # 0 is off, as leaving it unset is: clipping to norm 0 would zero every gradient.
    need(args.clip_grad is None or args.clip_grad >= 0, "clip-grad", args.clip_grad,
         "expected a gradient norm > 0, or 0 for no clipping")
    if args.clip_grad == 0:
        args.clip_grad = None
    need(all(s > 0 for s in args.std), "std", args.std, "expected three numbers > 0")
    need(args.memory_limit_gb > 0, "memory-limit-gb", args.memory_limit_gb, "expected a number > 0")
    need(args.color_jitter >= 0, "color-jitter", args.color_jitter, "expected a number >= 0")
    need(0 <= args.model_ema_decay <= 1, "model-ema-decay", args.model_ema_decay,
         "expected a number in [0, 1]")
    need(0 <= args.seed < 2**31, "seed", args.seed, "expected an integer in [0, 2**31)")
    need(args.eval_batch_size is None or args.eval_batch_size >= 1, "eval-batch-size",
         args.eval_batch_size, "expected an integer >= 1")
    need(not (args.overwrite and args.resume), "overwrite", args.overwrite,
         f"--overwrite starts afresh, --resume {args.resume} continues: give one of them")
    need(args.weight_decay >= 0, "weight-decay", args.weight_decay, "expected a number >= 0")
    need(args.warmup_epochs >= 0, "warmup-epochs", args.warmup_epochs, "expected an integer >= 0")
    need(args.warmup_lr >= 0, "warmup-lr", args.warmup_lr, "expected a number >= 0")
    need(args.min_lr >= 0, "min-lr", args.min_lr, "expected a number >= 0")
    need(args.mixup >= 0, "mixup", args.mixup, "expected an alpha >= 0")
    need(args.cutmix >= 0, "cutmix", args.cutmix, "expected an alpha >= 0")
    if isinstance(args.mixup_chunk, str):  # 1/k of the batch: follows --batch-size
        parts = int(args.mixup_chunk.split("/")[1])
        need(args.batch_size % parts == 0, "batch-size", args.batch_size,
             f"--mixup-chunk {args.mixup_chunk} splits the batch into {parts} equal chunks, so "
             f"--batch-size must be a multiple of {parts}")
        args.mixup_chunk = args.batch_size // parts
    need(args.mixup_chunk >= 0, "mixup-chunk", args.mixup_chunk, "expected an integer >= 0")
    need_choice(MIXUP_MODES, "mixup-mode", args.mixup_mode)
    need(args.freeze_blocks >= 0, "freeze-blocks", args.freeze_blocks, "expected an integer >= 0")
    need(0 < args.scale[0] <= args.scale[1] <= 1, "scale", args.scale,
          "expected 0 < min <= max <= 1")
    need(0 < args.ratio[0] <= args.ratio[1], "ratio", args.ratio, "expected 0 < min <= max")
    need(0 < args.crop_pct <= 1, "crop-pct", args.crop_pct, "expected 0 < crop-pct <= 1")
    need(args.num_classes is None or args.num_classes >= 1, "num-classes", args.num_classes,
          "expected an integer >= 1")
    need(not args.fused_opt or args.opt.lower() in FUSED_OPTIMIZERS, "fused-opt", args.fused_opt,
          f"--fused-opt needs --opt in {', '.join(FUSED_OPTIMIZERS)}, not {args.opt}")
    need(args.workers is None or args.workers >= 0, "workers", args.workers,
          "expected an integer >= 0")
    need(args.stop_after is None or args.stop_after >= 1, "stop-after", args.stop_after,
          "expected an integer >= 1")
    need(args.world_size is None or args.world_size >= 1, "world-size", args.world_size,
          "expected an integer >= 1")
    need_choice(INTERPOLATIONS, "interpolation", args.interpolation)
    need_choice(RE_MODES, "remode", args.remode)
    if args.aa in ("", "none", "None", None):
        args.aa = None
    else:
        from timm.data import auto_augment
        build = (auto_augment.rand_augment_transform if args.aa.startswith("rand") else
                 auto_augment.augment_and_mix_transform if args.aa.startswith("augmix") else
                 auto_augment.auto_augment_transform)
        try:
            build(args.aa, {"translate_const": 100, "img_mean": (128, 128, 128)})
        except Exception:  # timm raises assorted errors for a malformed policy string
            need(False, "aa", args.aa, "expected a timm policy such as rand-m9-mstd0.5-inc1, "
                  "augmix-m5-w3, original, v0, 3a, or none")
    if (args.mixup > 0 or args.cutmix > 0) and args.mixup_prob > 0 and args.mode != "eval":
        chunk = args.mixup_chunk or args.batch_size
        need(chunk % 2 == 0 and args.batch_size % chunk == 0,
              "mixup-chunk" if args.mixup_chunk else "batch-size",
              args.mixup_chunk or args.batch_size,
              "Mixup/CutMix pairs images, so the batch (or chunk) must be even and the chunk "
              "must divide --batch-size")
    need(args.dataset != "wds" or args.mode == "pretrain", "dataset", args.dataset,
         f"--dataset wds reads pre-training shards; {args.mode} reads folder, cifar10 or cifar100")
    need(args.dataset != "wds" or args.render or args.data_pipeline != "device", "data-pipeline", args.data_pipeline,
         "--dataset wds streams its shards, the device pipeline needs the images in memory: use loader (or auto)")
    if args.mode == "pretrain":
        need(args.data_dir or args.train_dir or args.render, "data-dir", args.data_dir,
              "pretrain needs the dataset folder (--data-dir or --train-dir) or --render")
    elif args.mode == "finetune":
        need(args.data_dir or args.train_dir, "data-dir", args.data_dir,
              "finetune needs --data-dir (with train/ and val/) or --train-dir and --val-dir")
    else:
        need(args.ckpt, "ckpt", args.ckpt, "eval needs the checkpoint to evaluate")
        need(args.data_dir or args.val_dir, "val-dir", args.val_dir,
              "eval needs --val-dir (or --data-dir with val/)")


# ---------------------------------------------------------------- the model as runs name it

# Short names of the usual ViT overrides in run names; any other kwarg is written key+value.
_TAG_KEYS = {"patch_size": "p", "num_heads": "h", "mlp_ratio": "m", "in_chans": "c"}


def architecture(model: str, img_size: int, model_kwargs: dict) -> str:
    """The model as built, for the start line: `vit_tiny_patch16_224(patch_size=4, depth=6) at
    32 px` (the name alone would claim a ViT-Tiny/16 at 224)."""
    kwargs = ", ".join(f"{key}={value!r}" for key, value in model_kwargs.items())
    return f"{model}({kwargs}) at {img_size} px" if kwargs else f"{model} at {img_size} px"


def architecture_tag(model: str, img_size: int, model_kwargs: dict) -> str:
    """The overrides of `model`'s name, compact and filesystem-safe (letters, digits, `.`, `-`):
    `p4-d96x6-h3-32px` for patch_size=4 embed_dim=96 depth=6 num_heads=3 at 32 px; empty when
    the name says it all. The image size is left out when the name ends in it (`_224`)."""
    def safe(value) -> str:
        return re.sub(r"[^A-Za-z0-9.]", "", str(value)) or "x"

    kwargs, parts = dict(model_kwargs), []
    if "embed_dim" in kwargs and "depth" in kwargs:  # width x depth, the size of a ViT
        parts.append(f"d{safe(kwargs.pop('embed_dim'))}x{safe(kwargs.pop('depth'))}")
    for key, value in kwargs.items():
        name = _TAG_KEYS.get(key, safe(key.replace("_", "")))
        parts.append(f"{name}{safe(value)}")
    parts.sort(key=lambda part: not part.startswith("p"))  # patch first, as in `patch16_224`
    if not re.search(rf"_{img_size}$", model):
        parts.append(f"{img_size}px")
    return "-".join(parts)
