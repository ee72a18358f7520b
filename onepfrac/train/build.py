"""Factories that turn the options into a model, an optimiser, a schedule and Mixup.

Each takes the parsed options and calls timm's own factory (create_model, create_optimizer_v2,
create_scheduler_v2, Mixup) with the released recipe's conventions on top: learning rates scaled
by the total batch, the released weight-decay groups, AMP chosen per device.
"""

from __future__ import annotations

import contextlib
import difflib

import torch

from onepfrac.errors import UsageError, UserError
from onepfrac.train.distributed import Context


class ModelError(UserError, ValueError):
    """Unknown model name or options the model does not accept."""


# What timm's constructors raise for options a model does not take (an unknown keyword, or
# e.g. an embed_dim that num_heads does not divide).
_REJECTIONS = (TypeError, ValueError, AssertionError, RuntimeError, KeyError)


def _rejected(args, error) -> ModelError:
    text = " ".join(str(error).split()) or type(error).__name__
    if args.model_kwargs:
        given = " ".join(f"{k}={v!r}" for k, v in args.model_kwargs.items())
        return ModelError(f"--model-kwargs: {args.model} rejects {given} "
                          f"(at --img-size {args.img_size}): {text}")
    return ModelError(f"--model: {args.model} cannot be built at --img-size {args.img_size}: {text}")


def create_model(args, num_classes: int, device=None):
    import timm

    if not timm.is_model(args.model):
        close = difflib_matches(args.model)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ModelError(f"--model: {args.model!r} is not a timm model{hint}")
    kwargs = dict(num_classes=num_classes, drop_path_rate=args.drop_path, **args.model_kwargs)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        try:
            return timm.create_model(args.model, img_size=args.img_size, **kwargs)
        except TypeError as error:
            if "img_size" not in str(error):
                raise _rejected(args, error) from None
        except _REJECTIONS as error:
            raise _rejected(args, error) from None
        try:
            return timm.create_model(args.model, **kwargs)  # CNNs take any input size
        except _REJECTIONS as error:
            raise _rejected(args, error) from None


def check_model(args) -> None:
    """Refuse a bad --model or --model-kwargs before any data is decoded: the model is built on
    the meta device (no memory, about 0.1 s for a ViT-B)."""
    num_classes = args.num_classes or 2
    try:
        create_model(args, num_classes, device="meta")
    except ModelError:
        if not _timm().is_model(args.model):
            raise
        # a few constructors compute on their tensors, which the meta device cannot: build it
        create_model(args, num_classes)


def _timm():
    import timm

    return timm


def check_optimization(args) -> None:
    """Refuse an --opt or --sched that timm does not know (or that cannot be built with these
    options) before any data is decoded, by building both on a one-weight model."""
    from timm.optim import create_optimizer_v2, list_optimizers
    from timm.scheduler import create_scheduler_v2

    probe = torch.nn.Linear(1, 1)
    extra = {"eps": args.opt_eps} if args.opt.lower() not in ("sgd", "momentum", "nesterov") else {}
    try:
        optimizer = create_optimizer_v2(probe, opt=args.opt, lr=args.lr, momentum=args.momentum,
                                        weight_decay=args.weight_decay, **extra)
    except Exception as error:  # timm raises assorted errors for names and missing extras
        close = difflib.get_close_matches(args.opt.lower(), list_optimizers(), n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise UsageError(f"--opt: {args.opt!r} is not allowed; expected a timm optimizer such as "
                         f"adamw, sgd or lamb{hint}: {' '.join(str(error).split())}") from None
    try:
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
            warmup_lr=args.warmup_lr, min_lr=args.min_lr,
            step_on_epochs=not args.sched_on_updates, updates_per_epoch=1)
    except Exception as error:
        raise UsageError(f"--sched: {args.sched!r} is not allowed; expected a timm schedule such as "
                         f"{SCHEDULES}: {' '.join(str(error).split())}") from None
    if scheduler is None:
        raise UsageError(f"--sched: {args.sched!r} is not allowed; expected a timm schedule such as "
                         f"{SCHEDULES}")


SCHEDULES = "cosine, tanh, step, multistep, plateau or poly"


def difflib_matches(name: str) -> list[str]:
    import timm

    return difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)


def freeze_blocks(model, count: int) -> None:
    """Freeze the stem (patch embedding, tokens, position embedding) and the first `count` blocks."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ModelError(f"--freeze-blocks: {type(model).__name__} has no `blocks` to freeze")
    if count > len(blocks):
        raise ModelError(f"--freeze-blocks: {count} is more than the model's {len(blocks)} blocks")
    for name, parameter in model.named_parameters():
        stem = name.startswith(("patch_embed.", "cls_token", "pos_embed", "reg_token", "dist_token"))
        in_frozen_block = name.startswith("blocks.") and int(name.split(".")[1]) < count
        if stem or in_frozen_block:
            parameter.requires_grad_(False)


def amp_dtype_for(args, device: torch.device):
    amp = args.amp
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "none"  # the released runs used AMP on GPUs
    if amp == "fp16" and device.type != "cuda":
        raise UsageError("--amp: 'fp16' needs a CUDA device; use bf16 or none on CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def scaled(value: float, args, context: Context) -> float:
    # The released code scales lr, warm-up lr and min lr by the total batch over 512.
    return value * args.batch_size * context.world_size / args.lr_base_batch


def create_optimizer(args, model, context: Context):
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    params = [p for p in model.parameters() if p.requires_grad]
    if args.decay_pos_embed:
        # The released code built the optimiser on the DDP wrapper, which hides the model's
        # no_weight_decay() list: only 1-D parameters and biases escape decay.
        groups = param_groups_weight_decay(model, args.weight_decay, no_weight_decay_list=())
        groups = [dict(g, params=[p for p in g["params"] if p.requires_grad]) for g in groups]
        params = [g for g in groups if g["params"]]
        kwargs = dict(weight_decay=0.0)  # already set per group
    else:
        params = model
        kwargs = dict(weight_decay=args.weight_decay)
    extra = {"eps": args.opt_eps} if args.opt.lower() not in ("sgd", "momentum", "nesterov") else {}
    if getattr(args, "fused_opt", False):
        extra["fused"] = True
    return create_optimizer_v2(params, opt=args.opt, lr=scaled(args.lr, args, context),
                               momentum=args.momentum, **kwargs, **extra)


def create_scheduler(args, optimizer, context: Context, steps_per_epoch: int):
    from timm.scheduler import create_scheduler_v2

    scheduler, _ = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs,
        warmup_epochs=args.warmup_epochs, warmup_lr=scaled(args.warmup_lr, args, context),
        min_lr=scaled(args.min_lr, args, context), step_on_epochs=not args.sched_on_updates,
        updates_per_epoch=steps_per_epoch)
    return scheduler


def create_mixup(args, num_classes: int):
    from timm.data import Mixup

    if not (args.mixup > 0 or args.cutmix > 0) or args.mixup_prob == 0:
        return None
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                 switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                 label_smoothing=args.smoothing, num_classes=num_classes)
