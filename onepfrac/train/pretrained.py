"""Pre-trained weights from anywhere, read as a timm state dict and loaded into a timm model.

`read_state_dict` / `load_pretrained` read the released 1p-frac/OFDB dict with a `model` entry
(this project's training checkpoints too, onepfrac.train.checkpoint), timm/DeiT `.pth.tar`
(`state_dict`, `state_dict_ema`, DeiT's `model_ema`), ClassyVision/VISSL `.torch`
(`classy_state_dict`), a bare state dict, or `.safetensors`. Weights files are read with
`torch.load(weights_only=True)`, which runs no code from the file. See docs/weights.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from onepfrac.train.checkpoint import CheckpointError, short_message
from onepfrac.train.options import CKPT_WHICH

__all__ = ["HeadMismatch", "read_checkpoint_safely", "read_state_dict", "load_pretrained",
           "describe_report", "check_training_checkpoint", "unwrap_model"]

# Prefixes wrappers add to every key: DataParallel/DDP (`module.`) and torch.compile (`_orig_mod.`).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Which entry of a multi-entry checkpoint each `which` (the trainer's --ckpt-which, less `auto`)
# names, in order of preference.
ENTRIES = {
    "model": ("model", "state_dict"),
    "state_dict": ("state_dict", "model"),
    "ema": ("state_dict_ema", "model_ema"),
    "state_dict_ema": ("state_dict_ema", "model_ema"),
}
assert {"auto", *ENTRIES} == set(CKPT_WHICH)
# Classifier names used when a model carries no timm pretrained_cfg (the released code's
# head, head_dist, fc: docs/released-code.md).
FALLBACK_CLASSIFIERS = ("head", "head_dist", "fc")
MAX_LISTED = 12
# What a training checkpoint (onepfrac.train.checkpoint) holds besides the weights, to resume.
TRAINING_ENTRIES = ("model", "optimizer", "lr_scheduler", "epoch")


class HeadMismatch(CheckpointError):
    """The checkpoint's classifier scores another number of classes than the model's."""

    def __init__(self, message: str, checkpoint_classes: int | None, model_classes: int):
        super().__init__(message)
        self.checkpoint_classes = checkpoint_classes
        self.model_classes = model_classes


# ---------------------------------------------------------------- reading

def read_checkpoint_safely(path) -> dict:
    """The top-level dict of any checkpoint (e.g. to read its `args`), unpickled as data only:
    safe on downloaded files, unlike checkpoint.load_checkpoint. Raises CheckpointError as
    read_state_dict does."""
    obj = _load_weights_file(Path(path), trust_pickle=False)
    return dict(obj) if isinstance(obj, Mapping) else {}


def read_state_dict(source, which: str = "auto", trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The model weights held by `source` (a path or an already-loaded object), as a timm state dict.

    `which` picks the entry of a checkpoint that holds several: 'model' / 'state_dict' the trained
    weights, 'ema' / 'state_dict_ema' the EMA copy (timm's `state_dict_ema`, DeiT's `model_ema`).
    'auto' takes the non-EMA weights (`model`, else `state_dict`), the ones the released code
    fine-tunes from, and the EMA copy only when nothing else is there.
    `module.` and `_orig_mod.` prefixes are stripped; ClassyVision ViT names become timm's.
    `trust_pickle=True` unpickles files that hold arbitrary Python objects (old checkpoints
    with config objects): only for files from a source you trust.
    """
    return _read(source, which, trust_pickle)[0]


def _read(source, which: str, trust_pickle: bool) -> tuple[dict, str, list[str], dict]:
    """(state dict, description of the format and entry used, notes for the report, the
    training arguments the file stores or {})."""
    if which not in CKPT_WHICH:
        raise CheckpointError(f"which={which!r} is not one of {', '.join(['auto', *ENTRIES])}")
    name = str(source) if isinstance(source, (str, os.PathLike)) else f"the given {type(source).__name__}"
    if isinstance(source, (str, os.PathLike)):
        obj = _load_weights_file(Path(source), trust_pickle)
        if _is_safetensors(Path(source)):
            return _strip_wrappers(obj, name), "safetensors", [], {}
    elif isinstance(source, nn.Module):
        obj = source.state_dict()
    else:
        obj = source
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{name}: expected a dict of weights, found {type(obj).__name__}")

    notes: list[str] = []
    stored = obj.get("args") if isinstance(obj.get("args"), Mapping) else {}
    if "classy_state_dict" in obj:
        state, fmt = _from_classy(obj, name, notes)
    elif _is_state_dict(obj):
        if which != "auto" and which not in ("model", "state_dict"):
            raise CheckpointError(f"{name}: which={which!r} asks for EMA weights, but the file is a bare "
                                  "state dict without entries; use which='auto'")
        state, fmt = obj, "bare state dict"
    else:
        entry = _pick_entry(obj, which, name)
        state, fmt = obj[entry], f"dict entry '{entry}'"
        if isinstance(state, nn.Module):
            state = state.state_dict()
        if not _is_state_dict(state):
            raise CheckpointError(f"{name}: entry '{entry}' is not a state dict "
                                  f"(found {type(state).__name__})")
    return _strip_wrappers(state, name), fmt, notes, dict(stored)


def _load_weights_file(path: Path, trust_pickle: bool):
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({short_message(error)})") from error
    try:
        with torch.serialization.safe_globals(_data_globals()):
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except PermissionError as error:
        raise CheckpointError(f"{path}: not readable ({error.strerror})") from error
    except pickle.UnpicklingError as error:
        unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if trust_pickle or not unsupported:
            raise CheckpointError(f"{path}: corrupt checkpoint ({short_message(error)})") from error
        raise CheckpointError(
            f"{path}: the file holds a Python object of type {unsupported.group(1)}, which is not "
            "unpickled by default because unpickling can run code. If you trust where the file came "
            "from, load it with trust_pickle=True (the trainer's --ckpt-trust-pickle)") from error
    except (EOFError, RuntimeError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt, truncated or not a PyTorch file ({short_message(error)}); "
                              "download it again") from error


def _is_safetensors(path: Path) -> bool:
    """By suffix, or by content for files without one (downloads cached under a URL's name):
    safetensors starts with an 8-byte header length and a JSON header, torch files with a zip's PK."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as stream:
        head = stream.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def _data_globals() -> list:
    """Types that checkpoints in the wild hold besides tensors and that unpickle as plain data:
    timm's and DeiT's `args` (argparse.Namespace, paths in it) and numpy arrays and scalars (RNG states,
    metrics). Rebuilding any of them runs no code of the file's choosing."""
    import numpy
    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:
        from numpy.core import multiarray
    allowed = [argparse.Namespace, numpy.ndarray, numpy.dtype, multiarray._reconstruct, multiarray.scalar,
               pathlib.PosixPath, pathlib.PurePosixPath, pathlib.WindowsPath, pathlib.PureWindowsPath]
    allowed += [type(numpy.dtype(t)) for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                                                 "uint32", "uint64", "float16", "float32", "float64")]
    return allowed


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _pick_entry(obj: Mapping, which: str, name: str) -> str:
    wanted = ENTRIES["model"] + ENTRIES["ema"] if which == "auto" else ENTRIES[which]
    for entry in wanted:
        if entry in obj and obj[entry] is not None:
            return entry
    available = [k for k in obj if isinstance(k, str)]
    raise CheckpointError(f"{name}: no weights for which={which!r}: looked for "
                          f"{' / '.join(wanted)}, the file has entries {_listing(available)}")


def _strip_wrappers(state: Mapping, name: str) -> dict:
    stripped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        while new.startswith(WRAPPER_PREFIXES):  # module._orig_mod. comes stacked
            new = new.split(".", 1)[1]
        if new in stripped:
            raise CheckpointError(f"{name}: keys '{key}' and another both become '{new}' "
                                  "once wrapper prefixes are stripped")
        stripped[new] = value
    return stripped


def _from_classy(obj: Mapping, name: str, notes: list[str]) -> tuple[dict, str]:
    """ClassyVision/VISSL: weights under classy_state_dict -> base_model -> model -> {trunk, heads}."""
    try:
        model_state = obj["classy_state_dict"]["base_model"]["model"]
        trunk = model_state["trunk"]
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{name}: a ClassyVision checkpoint without "
                              "classy_state_dict.base_model.model.trunk") from error
    heads = model_state.get("heads") or {}
    trunk = {_strip_prefixes(k, ("_feature_blocks.", "trunk.")): v for k, v in trunk.items()}
    if "conv_proj.weight" in trunk or "encoder.pos_embedding" in trunk:
        state = _classy_vit_to_timm(trunk)
        fmt = "ClassyVision .torch (ViT trunk renamed to timm)"
    else:
        state, fmt = dict(trunk), "ClassyVision .torch (trunk, names kept)"
    head = _classy_head(heads, notes)
    state.update(head)
    return state, fmt


def _strip_prefixes(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


# ClassyVision's VisionTransformer (classy_vision/models/vision_transformer.py) -> timm's.
# Its self_attention is nn.MultiheadAttention, whose in_proj stacks q, k, v as timm's qkv does.
CLASSY_BLOCK_RENAMES = {
    "ln_1.": "norm1.", "ln_2.": "norm2.",
    "self_attention.in_proj_weight": "attn.qkv.weight", "self_attention.in_proj_bias": "attn.qkv.bias",
    "self_attention.out_proj.": "attn.proj.",
    "mlp.linear_1.": "mlp.fc1.", "mlp.linear_2.": "mlp.fc2.",
}


def _classy_vit_to_timm(trunk: Mapping) -> dict:
    state = {}
    for key, value in trunk.items():
        if key.startswith("conv_proj."):
            new = "patch_embed.proj." + key[len("conv_proj."):]
        elif key == "class_token":
            new = "cls_token"
        elif key == "encoder.pos_embedding":
            new, value = "pos_embed", value.permute(1, 0, 2)  # (seq, 1, dim) -> timm's (1, seq, dim)
        elif key.startswith("encoder.ln."):
            new = "norm." + key[len("encoder.ln."):]
        elif key.startswith("encoder.layers.layer_"):
            index, rest = key[len("encoder.layers.layer_"):].split(".", 1)
            for old, renamed in CLASSY_BLOCK_RENAMES.items():
                if rest.startswith(old):
                    rest = renamed + rest[len(old):]
                    break
            new = f"blocks.{index}.{rest}"
        else:
            new = key  # left for the key check to report
        state[new] = value
    return state


def _classy_head(heads: Mapping, notes: list[str]) -> dict:
    """A single plain linear head maps onto timm's `head`; anything else is left out, with a note."""
    found = []
    if _is_state_dict(heads):  # VISSL: one flat dict of all head weights
        found.append(("heads", heads))
    else:  # ClassyVision: {block name: {head id: state dict}}
        for block, block_heads in heads.items():
            if isinstance(block_heads, Mapping):
                found.extend((f"{block}/{head_id}", sd) for head_id, sd in block_heads.items())
    plain = [(where, sd) for where, sd in found
             if isinstance(sd, Mapping) and set(sd) == {"layers.head.weight", "layers.head.bias"}]
    if len(found) == 1 and len(plain) == 1:
        sd = plain[0][1]
        return {"head.weight": sd["layers.head.weight"], "head.bias": sd["layers.head.bias"]}
    if found:
        notes.append(f"ClassyVision heads not loaded (no single linear head): {', '.join(w for w, _ in found)}")
    return {}


# ---------------------------------------------------------------- loading

def load_pretrained(model: nn.Module, source, which: str = "auto", drop_head="auto",
                    trust_pickle: bool = False) -> dict:
    """Load pre-trained weights into a timm model; every weight must find its place.

    - The classifier (timm's `pretrained_cfg['classifier']`, e.g. `head`, `head_dist`; else
      head/head_dist/fc) is dropped when its shape differs from the model's or the model has
      none (drop_head='auto'), always (True: the model keeps its fresh head) or never (False).
    - `pos_embed` is resampled (bicubic, prefix tokens kept) when the patch grid differs,
      `patch_embed.proj.weight` (timm.layers.resample_patch_embed) when the patch size differs.
    - Any other missing key, unexpected key or shape mismatch raises CheckpointError listing
      them, before the model is touched.

    With drop_head=False (evaluation: the head is what is measured) a classifier for another
    number of classes raises HeadMismatch, and a checkpoint without one CheckpointError.

    Returns a report: source, format, loaded/dropped/resampled keys, the class counts of the
    checkpoint's head and of the model, the stored training arguments and notes.
    """
    if drop_head not in ("auto", True, False):
        raise CheckpointError(f"drop_head={drop_head!r} must be 'auto', True or False")
    target = unwrap_model(model)
    state, fmt, notes, stored = _read(source, which, trust_pickle)
    name = str(source) if isinstance(source, (str, os.PathLike)) else f"the given {type(source).__name__}"
    expected = target.state_dict()
    state = dict(state)
    names = _classifier_names(target)
    head_classes, model_classes = _head_classes(state, names), _head_classes(expected, names)
    if drop_head is False and model_classes is not None:
        _check_head_kept(name, state, expected, names, head_classes, model_classes)

    dropped = _drop_classifier(state, expected, names, drop_head)
    resampled = {}
    if "pos_embed" in state and "pos_embed" in expected and state["pos_embed"].shape != expected["pos_embed"].shape:
        resampled["pos_embed"] = _resample_pos_embed(state, expected["pos_embed"], target)
    key = "patch_embed.proj.weight"
    if key in state and key in expected and state[key].shape != expected[key].shape \
            and state[key].dim() == 4 and state[key].shape[:2] == expected[key].shape[:2]:
        from timm.layers import resample_patch_embed
        old = tuple(state[key].shape)
        state[key] = resample_patch_embed(state[key], list(expected[key].shape[-2:]))
        resampled[key] = (old, tuple(state[key].shape))

    classifier = {k for k in expected if _is_classifier(k, _classifier_names(target))}
    headless = not any(_is_classifier(k, _classifier_names(target)) for k in state)
    allowed_missing = classifier if dropped or (headless and drop_head is not False) else set()
    if classifier and headless and not dropped and drop_head is not False:
        notes.append("the checkpoint has no classifier: the model keeps its freshly initialised head")
    missing = [k for k in expected if k not in state and k not in allowed_missing]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                  for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(_mismatch_message(name, fmt, missing, unexpected, mismatched, state,
                                                expected, _trained_as(stored), _builds(target)))

    result = target.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= allowed_missing, result
    return {"source": name, "format": fmt, "loaded": len(state), "dropped": dropped,
            "resampled": resampled, "head_classes": head_classes, "model_classes": model_classes,
            "args": stored, "notes": notes}


def describe_report(report: dict) -> str:
    """load_pretrained's report as one readable line (what was loaded, dropped, resampled)."""
    parts = [f"{report['loaded']} tensors ({report['format']})"]
    if report["dropped"]:
        parts.append(f"dropped {', '.join(report['dropped'])}")
    parts += [f"resampled {key} {old} -> {new}" for key, (old, new) in report["resampled"].items()]
    return "; ".join(parts + list(report["notes"]))


def _head_classes(state: Mapping, names: tuple[str, ...]) -> int | None:
    """The number of classes a state dict's classifier scores (its first weight's rows), or None."""
    for key, value in state.items():
        if _is_classifier(key, names) and key.endswith(".weight") and value.dim() >= 1:
            return int(value.shape[0])
    return None


def _check_head_kept(name, state, expected, names, head_classes, model_classes) -> None:
    if head_classes is None:
        raise HeadMismatch(f"{name} holds no classifier ({' / '.join(names)}): it cannot score "
                           f"the model's {model_classes} classes; use a fine-tuned checkpoint",
                           None, model_classes)
    differing = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                 for k, v in state.items()
                 if _is_classifier(k, names) and k in expected and v.shape != expected[k].shape]
    if differing:
        raise HeadMismatch(f"{name}: its head scores {head_classes} classes, the model "
                           f"{model_classes} ({differing[0]}); the head is kept, not replaced",
                           head_classes, model_classes)


def check_training_checkpoint(state, model: nn.Module, path, option: str = "--resume") -> None:
    """Refuse, in one line naming `option` and the file, a checkpoint a run cannot resume from:
    a bare state dict or weights without the training state, or another model's weights
    (shapes, missing or extra tensors, or a head for another number of classes).

    The trainer calls it on checkpoint.load_checkpoint's dict, before anything is restored."""
    where = f"{option} {path}"
    if _is_state_dict(state):
        raise CheckpointError(f"{where}: holds a bare state dict, not a training checkpoint (no "
                              "optimizer/epoch); use --ckpt to start from its weights")
    if not isinstance(state, Mapping) or not _is_state_dict(state.get("model")):
        found = sorted(k for k in state if isinstance(k, str)) if isinstance(state, Mapping) else []
        raise CheckpointError(f"{where}: not a training checkpoint of this trainer (no model "
                              f"weights; entries {_listing(found) or 'none'})")
    absent = [k for k in TRAINING_ENTRIES if k not in state]
    if absent:
        raise CheckpointError(f"{where}: holds weights only, not a training checkpoint (no "
                              f"{'/'.join(absent)}); use --ckpt to start from its weights")
    target = unwrap_model(model)
    saved = _strip_wrappers(state["model"], str(path))
    expected = target.state_dict()
    names = _classifier_names(target)
    shapes = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in saved.items()
              if k in expected and v.shape != expected[k].shape]
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    if not (shapes or missing or unexpected):
        return
    if not missing and not unexpected and all(_is_classifier(k, names) for k, _, _ in shapes):
        raise CheckpointError(f"{where}: its head scores {_head_classes(saved, names)} classes, "
                              f"this run's data {_head_classes(expected, names)}: resume on the "
                              "data it was trained on, or start afresh in another --output-dir")
    stored = state.get("args") if isinstance(state.get("args"), Mapping) else {}
    differences = []
    if shapes:
        key, old, new = shapes[0]
        differences.append(f"{len(shapes)} tensors differ in shape (first: {key} "
                           f"{list(old)} vs {list(new)})")
    if missing:
        differences.append(f"{len(missing)} missing (first: {missing[0]})")
    if unexpected:
        differences.append(f"{len(unexpected)} not in this model (first: {unexpected[0]})")
    trained = _trained_as(stored) or _describe(saved) or "another model"
    raise CheckpointError(f"{where}: was trained as {trained}, this run builds {_builds(target)}: "
                          f"{', '.join(differences)}; resume with the same --model and "
                          "--model-kwargs, or start afresh in another --output-dir")


def _trained_as(stored: Mapping) -> str:
    """'vit_small_patch16_224 (depth=6)' from a checkpoint's stored arguments, '' without them."""
    model = stored.get("model")
    if not isinstance(model, str):
        return ""
    kwargs = stored.get("model_kwargs") or {}
    extra = " ".join(f"{k}={v}" for k, v in sorted(kwargs.items())) if isinstance(kwargs, Mapping) else ""
    return f"{model} ({extra})" if extra else model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module whose state dict has plain names: DDP/DataParallel and torch.compile removed."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _classifier_names(model: nn.Module) -> tuple[str, ...]:
    config = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    names = config.get("classifier")
    if not names:
        return FALLBACK_CLASSIFIERS
    return (names,) if isinstance(names, str) else tuple(names)


def _is_classifier(key: str, names: tuple[str, ...]) -> bool:
    return any(key.startswith(n + ".") for n in names)


def _drop_classifier(state: dict, expected: Mapping, names: tuple[str, ...], drop_head) -> list[str]:
    keys = [k for k in state if _is_classifier(k, names)]
    if drop_head is False or not keys:
        return []
    fits = all(k in expected and state[k].shape == expected[k].shape for k in keys)
    if drop_head == "auto" and fits:
        return []
    for k in keys:
        del state[k]
    return keys


def _resample_pos_embed(state: dict, new: torch.Tensor, model: nn.Module) -> tuple:
    from timm.layers import resample_abs_pos_embed
    old = state["pos_embed"]
    # models with no_embed_class keep no position embedding for the prefix tokens
    prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if old.dim() != 3 or old.shape[-1] != new.shape[-1] or grid is None:
        return (tuple(old.shape), tuple(old.shape))  # left for the shape check to report
    old_tokens = old.shape[1] - prefix
    side = int(round(old_tokens ** 0.5))
    if side * side != old_tokens:
        raise CheckpointError(f"pos_embed {tuple(old.shape)}: {old_tokens} patch positions after "
                              f"{prefix} prefix token(s) do not form a square grid; cannot resample")
    state["pos_embed"] = resample_abs_pos_embed(old, list(grid), old_size=[side, side],
                                                num_prefix_tokens=prefix)
    return (tuple(old.shape), tuple(state["pos_embed"].shape))


def _builds(model: nn.Module) -> str:
    """'vit_tiny_patch16_224 (2 blocks, width 16)': the model's timm name and shape."""
    config = getattr(model, "pretrained_cfg", None) or {}
    name = config.get("architecture") or type(model).__name__
    shape = _describe(model.state_dict())
    return f"{name} ({shape})" if shape else name


def _mismatch_message(name, fmt, missing, unexpected, mismatched, state, expected,
                      trained_as="", builds="") -> str:
    """One line: what differs, then what the weights were trained as and what the model is."""
    parts = [f"{name} ({fmt}) does not fit the model; nothing was loaded"]
    if missing:
        parts.append(f"missing from the checkpoint ({len(missing)}): {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected in the checkpoint ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:  # every tensor of a wider model differs: the first few tell the story
        parts.append(f"shape mismatch ({len(mismatched)}): {_listing(mismatched, 3)}")
    have, want = _describe(state), _describe(expected)
    if trained_as and builds:
        parts.append(f"it was trained as {trained_as}, the model is {builds}: choose the model "
                     "(and --model-kwargs) the weights were trained as")
    elif have and want and have != want:
        parts.append(f"checkpoint: {have}; model: {want}: choose the model the weights were trained as")
    return "; ".join(parts)


def _describe(state: Mapping) -> str:
    """'12 blocks, width 192' for ViT-like state dicts, '' otherwise."""
    blocks = {k.split(".")[1] for k in state if k.startswith("blocks.") and k.count(".") > 1}
    width = state["cls_token"].shape[-1] if "cls_token" in state else None
    if not blocks or width is None:
        return ""
    return f"{len(blocks)} blocks, width {width}"


def _listing(items, limit: int = MAX_LISTED) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")
