"""Weights as a Hugging Face Hub model folder, which timm loads with no code of this project.

    python -m onepfrac.weights export CKPT OUT_DIR [--model NAME] [--model-kwargs KEY=VALUE ...]
        [--num-classes N] [--img-size PX] [--mean R G B] [--std R G B] [--overwrite]

The folder holds `model.safetensors` (the timm state dict) and `config.json`, timm's pretrained
config written by timm's own `save_config_for_hf`: architecture, num_classes, model_args (the
kwargs the model was built with), label_names, and pretrained_cfg with input_size, mean, std,
interpolation and crop_pct. Every training run ends with one in its output folder (`export_run`);
`export_checkpoint` makes one from any file onepfrac.train.pretrained reads. Load it with

    timm.create_model("local-dir:OUT_DIR", pretrained=True)

See docs/weights.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from onepfrac.errors import UsageError, UserError
from onepfrac.train.checkpoint import atomic_write, atomic_write_text
from onepfrac.train.options import CKPT_WHICH, INTERPOLATIONS, OneLineParser, either, model_kwarg

__all__ = ["CONFIG", "FILES", "Inputs", "WEIGHTS", "export_checkpoint", "export_model", "export_run",
           "hub_config", "command"]

WEIGHTS = "model.safetensors"  # the names timm and the Hub look for in a model folder
CONFIG = "config.json"
FILES = (WEIGHTS, CONFIG)
# Entries of the architecture's default pretrained_cfg that describe other weights than ours.
_NOT_OURS = ("tag", "license", "url", "hf_hub_id", "hf_hub_filename", "file", "source", "state_dict",
             "paper_ids", "paper_name", "notes", "origin_url", "test_input_size", "test_crop_pct",
             "min_input_size", "label_names", "label_descriptions", "label_offset")
DEFAULT_INTERPOLATION = "bicubic"  # the trainer's --interpolation and --crop-pct defaults
DEFAULT_CROP_PCT = 0.875


@dataclass(frozen=True)
class Inputs:
    """The input pipeline the weights were trained with, as timm's pretrained_cfg records it."""

    img_size: int
    mean: tuple
    std: tuple
    interpolation: str = DEFAULT_INTERPOLATION
    crop_pct: float = DEFAULT_CROP_PCT
    in_chans: int = 3


# ---------------------------------------------------------------- writing a folder

def export_model(model, folder, architecture: str, model_args: dict, inputs: Inputs,
                 label_names=None) -> Path:
    """Write `model`'s weights and config into `folder` as a Hub model folder, each file atomically
    (the weights first: a config.json is only ever beside the weights it describes)."""
    from safetensors.torch import save

    folder = Path(folder)
    config = hub_config(model, architecture, model_args, inputs, label_names)
    # copies on the CPU: safetensors refuses tensors that share memory (tied weights)
    tensors = {key: value.detach().to("cpu", copy=True).contiguous()
               for key, value in model.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda stream: stream.write(save(tensors, metadata={"format": "pt"})))
    atomic_write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")
    return folder


def hub_config(model, architecture: str, model_args: dict, inputs: Inputs, label_names=None) -> dict:
    """config.json's content, made by timm's save_config_for_hf from `model` and our inputs."""
    from timm.models._hub import save_config_for_hf  # what timm's push_to_hf_hub writes with

    cfg = {key: value for key, value in dict(getattr(model, "pretrained_cfg", None) or {}).items()
           if key not in _NOT_OURS}
    cfg.update(architecture=architecture, custom_load=False, crop_mode="center",
               input_size=(inputs.in_chans, inputs.img_size, inputs.img_size),
               mean=tuple(inputs.mean), std=tuple(inputs.std), interpolation=inputs.interpolation,
               crop_pct=inputs.crop_pct, num_classes=model.num_classes)
    extra = {"label_names": [str(name) for name in label_names]} if label_names else None
    saved = getattr(model, "pretrained_cfg", None)
    model.pretrained_cfg = cfg  # read by save_config_for_hf; the model's own is put back below
    try:
        with tempfile.TemporaryDirectory() as temporary:
            path = Path(temporary) / CONFIG
            save_config_for_hf(model, str(path), model_config=extra, model_args=dict(model_args))
            return json.loads(path.read_text())
    finally:
        model.pretrained_cfg = saved


def takes_img_size(architecture: str, img_size: int, model_kwargs: dict) -> bool:
    """Whether the architecture takes `img_size` (ViTs do, CNNs not: build.create_model drops it
    for them), tried on the meta device, so nothing is allocated."""
    import timm

    try:
        with torch.device("meta"):
            timm.create_model(architecture, img_size=img_size, **model_kwargs)
    except TypeError as error:
        return "img_size" not in str(error)
    except Exception:  # a model that cannot be built on the meta device: build it for real
        try:
            timm.create_model(architecture, img_size=img_size, **model_kwargs)
        except TypeError as error:
            return "img_size" not in str(error)
    return True


def model_args_for(architecture: str, img_size: int, model_kwargs: dict, num_classes: int) -> dict:
    """The kwargs timm.create_model needs to build the same model again."""
    args = dict(model_kwargs, num_classes=num_classes)
    if takes_img_size(architecture, img_size, model_kwargs):
        args["img_size"] = img_size
    return args


def export_run(output_dir, args, model, label_names=None) -> Path:
    """The trainer's end of run: its model, as its options built it, into its output folder."""
    model_args = model_args_for(args.model, args.img_size, args.model_kwargs, model.num_classes)
    inputs = Inputs(args.img_size, tuple(args.mean), tuple(args.std), args.interpolation,
                    args.crop_pct, args.model_kwargs.get("in_chans", 3))
    return export_model(model, output_dir, args.model, model_args, inputs, label_names)


# ---------------------------------------------------------------- from a checkpoint

def export_checkpoint(source, out_dir, model: str | None = None, model_kwargs: dict | None = None,
                      num_classes: int | None = None, img_size: int | None = None, mean=None, std=None,
                      interpolation: str | None = None, crop_pct: float | None = None,
                      which: str = "auto", trust_pickle: bool = False, overwrite: bool = False,
                      label_names=None) -> dict:
    """Make the Hub folder `out_dir` from the weights file `source` (any format
    pretrained.read_state_dict reads). What the file records (our checkpoints' and timm's `args`)
    fills what is not given; what neither gives is asked for by name. Returns what was written."""
    from onepfrac.train import build, pretrained
    from onepfrac.train.checkpoint import CheckpointError

    source, out_dir = Path(source), Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    state = pretrained.read_state_dict(source, which, trust_pickle)
    recorded = recorded_args(source, trust_pickle)
    model = model or recorded.get("model")
    if not model:
        raise UsageError(f"{source}: the file does not record its timm model; give --model NAME "
                         "(e.g. vit_tiny_patch16_224)")
    if model_kwargs is None:
        model_kwargs = dict(recorded.get("model_kwargs") or {})
    img_size = img_size or recorded.get("img_size") or _side(recorded.get("input_size"))
    mean, std = mean or recorded.get("mean"), std or recorded.get("std")
    for option, value, example in (("--img-size", img_size, "224"), ("--mean", mean, "0.5 0.5 0.5"),
                                   ("--std", std, "0.5 0.5 0.5")):
        if value is None:
            raise UsageError(f"{source}: the file does not record the input {option[2:]}; give "
                             f"{option} (e.g. {option} {example}, the values it was trained with)")
    interpolation = interpolation or recorded.get("interpolation") or DEFAULT_INTERPOLATION
    crop_pct = crop_pct or recorded.get("crop_pct") or DEFAULT_CROP_PCT
    _check_inputs(int(img_size), mean, std, interpolation, crop_pct)
    head = head_classes(model, state)
    if num_classes is None:
        num_classes = head
    elif head is not None and num_classes != head:
        raise UsageError(f"--num-classes {num_classes} does not match the {head} classes of the "
                         f"classifier in {source}; leave it out to take the file's")
    if num_classes is None:
        raise UsageError(f"{source}: no classifier of {model} found in the weights; give "
                         "--num-classes N (0 for a model without one)")

    options = SimpleNamespace(model=model, img_size=int(img_size), model_kwargs=model_kwargs,
                              drop_path=0.0)
    net = build.create_model(options, num_classes).eval()
    try:
        report = pretrained.load_pretrained(net, state, drop_head=False)
    except CheckpointError as error:  # its several lines name the keys: one line here
        if isinstance(error, pretrained.HeadMismatch):
            try:  # the head is checked first; a trunk that does not fit either is the better hint
                pretrained.load_pretrained(net, state, drop_head=True)
            except CheckpointError as trunk:
                error = trunk
        text = " ".join(str(error).split())
        trained_as = re.search(r"checkpoint: [^;:]*; model: [^;:]*", text)  # the shapes, in short
        detail = trained_as.group(0) if trained_as else text
        built = f" {model_kwargs}" if model_kwargs else " and no --model-kwargs"
        raise UsageError(f"{source}: the weights do not fit {model}{built} ({detail}); give the "
                         "--model and --model-kwargs they were trained with") from error
    inputs = Inputs(int(img_size), tuple(mean), tuple(std), interpolation, float(crop_pct),
                    model_kwargs.get("in_chans", 3))
    export_model(net, out_dir, model, model_args_for(model, int(img_size), model_kwargs, num_classes),
                 inputs, label_names)
    return {"model": model, "num_classes": num_classes, "img_size": int(img_size),
            "tensors": len(net.state_dict()), "resampled": report.get("resampled") or {},
            "format": report.get("format")}


def recorded_args(source: Path, trust_pickle: bool = False) -> dict:
    """The training arguments a checkpoint records (ours: a dict; timm's train.py: a Namespace),
    or {} for a file without them (safetensors, a bare state dict, the released dicts)."""
    from onepfrac.train import pretrained
    from onepfrac.train.checkpoint import CheckpointError

    try:
        top = pretrained.read_checkpoint_safely(source)
    except CheckpointError:
        if not trust_pickle:
            raise
        top = torch.load(source, map_location="cpu", weights_only=False)  # the user trusts it
    args = top.get("args") if isinstance(top, dict) else None
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    return {key: value for key, value in (args or {}).items() if value is not None} \
        if isinstance(args, dict) else {}


def head_classes(model: str, state: dict) -> int | None:
    """The number of classes of `model`'s classifier in `state`: 0 when it has none, None when
    the architecture names no classifier (then --num-classes must say)."""
    import timm

    from onepfrac.train import pretrained

    try:
        classifier = timm.models.get_pretrained_cfg(model).classifier
    except Exception:  # a model without a default config: the usual classifier names
        classifier = None
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier or
                                                                    pretrained.FALLBACK_CLASSIFIERS)
    for name in names:
        weight = state.get(f"{name}.weight")
        if weight is not None:
            return int(weight.shape[0])
    return 0 if classifier else None


def _side(input_size):
    # timm's train.py records --input-size as (channels, height, width)
    return input_size[-1] if isinstance(input_size, (list, tuple)) and input_size else None


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"OUT_DIR: {str(out_dir)!r} is a file; give a folder (created when missing)")
    held = sorted(entry.name for entry in out_dir.iterdir()) if out_dir.is_dir() else []
    if held and not overwrite:
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise UsageError(f"OUT_DIR: {str(out_dir)!r} is not empty ({shown}); give --overwrite to "
                         f"replace its {WEIGHTS} and {CONFIG}, or an empty or new folder")


def _check_inputs(img_size, mean, std, interpolation, crop_pct) -> None:
    if img_size <= 0:
        raise UsageError(f"--img-size {img_size}: expected a size in pixels > 0")
    for option, values in (("--mean", mean), ("--std", std)):
        if len(values) != 3:
            raise UsageError(f"{option} {' '.join(map(str, values))}: expected three numbers")
    if not all(value > 0 for value in std):
        raise UsageError(f"--std {' '.join(map(str, std))}: expected three numbers > 0")
    if interpolation not in INTERPOLATIONS:
        raise UsageError(f"--interpolation {interpolation!r}: expected {either(INTERPOLATIONS)}")
    if not 0 < crop_pct <= 1:
        raise UsageError(f"--crop-pct {crop_pct}: expected 0 < crop-pct <= 1")


# ---------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser, downloads: bool = False) -> argparse.ArgumentParser:
    """The export command's arguments; `downloads`: CKPT may be a URL or a released name (as
    `python -m onepfrac.weights export` allows), which --cache-dir and --no-progress are about."""
    parser.add_argument("ckpt", metavar="CKPT",
                        help="a weights file of any format --ckpt reads"
                             + (", an http(s) URL or a released name" if downloads else ""))
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="the model folder to write")
    parser.add_argument("--model", default=None,
                        help="timm model name (default: the checkpoint's, else asked for)")
    parser.add_argument("--model-kwargs", nargs="*", type=model_kwarg, default=None, metavar="KEY=VALUE",
                        help="kwargs the model was built with (default: the checkpoint's, else none)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes of the head (default: the classifier's in the weights)")
    parser.add_argument("--img-size", type=int, default=None,
                        help="input size in pixels (default: the checkpoint's, else asked for)")
    parser.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                        help="normalisation mean (default: the checkpoint's, else asked for)")
    parser.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                        help="normalisation std (default: the checkpoint's, else asked for)")
    parser.add_argument("--interpolation", default=None, choices=INTERPOLATIONS,
                        help=f"resize interpolation (default: the checkpoint's, else {DEFAULT_INTERPOLATION})")
    parser.add_argument("--crop-pct", type=float, default=None,
                        help=f"eval centre-crop fraction (default: the checkpoint's, else {DEFAULT_CROP_PCT})")
    parser.add_argument("--which", default="auto", choices=CKPT_WHICH,
                        help="the entry of a checkpoint with several: auto (the trained weights), or the EMA copy")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="unpickle arbitrary objects in CKPT (only for files you trust)")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {WEIGHTS} and {CONFIG} in a non-empty OUT_DIR")
    if downloads:
        parser.add_argument("--cache-dir", type=Path, default=None,
                            help="where a URL or a released name is downloaded (default: "
                                 "$ONEPFRAC_CACHE, else ~/.cache/onepfrac)")
        parser.add_argument("--no-progress", action="store_true", help="no download progress bar")
    return parser


def run(args, resolve=None) -> int:
    """Export as parsed by add_arguments' options; prints one line on success. `resolve(spec,
    cache_dir, progress)` gives (local file, the model its registry entry names, or None) for a
    URL or a released name (`python -m onepfrac.weights export` passes it); without it CKPT is a
    file."""
    source, registry_model = (_local_file(args.ckpt), None) if resolve is None else \
        resolve(args.ckpt, args.cache_dir, not args.no_progress)
    written = export_checkpoint(
        source, args.out_dir, model=args.model or registry_model,
        model_kwargs=None if args.model_kwargs is None else dict(args.model_kwargs),
        num_classes=args.num_classes, img_size=args.img_size, mean=args.mean, std=args.std,
        interpolation=args.interpolation, crop_pct=args.crop_pct, which=args.which,
        trust_pickle=args.trust_pickle, overwrite=args.overwrite)
    resampled = (f"; position embeddings resampled {written['resampled']}" if written["resampled"] else "")
    print(f"{args.out_dir}: {WEIGHTS} and {CONFIG} of {written['model']} ({written['num_classes']} "
          f"classes, {written['img_size']} px, {written['tensors']} tensors){resampled}; load with "
          f"timm.create_model('local-dir:{args.out_dir}', pretrained=True)")
    return 0


def _local_file(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.exists():
        raise UsageError(f"CKPT {spec}: no such file")
    if not path.is_file():
        raise UsageError(f"CKPT {spec}: a folder, not a checkpoint file")
    return path


def command(argv=None, prog: str = "python -m onepfrac.weights export", resolve=None) -> int:
    """`python -m onepfrac.weights export ARGV` (which passes `resolve`); exit status returned."""
    parser = add_arguments(OneLineParser(
        prog=prog, description="Write a checkpoint's weights as a Hugging Face Hub model folder "
                               "(model.safetensors, config.json) that timm loads alone."),
        downloads=resolve is not None)
    try:
        return run(parser.parse_args(argv), resolve)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted: run the same command again (a download resumes)", file=sys.stderr)
        return 130

