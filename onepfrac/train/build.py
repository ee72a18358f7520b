"""Factories that turn the options into a model, an optimiser, a schedule and Mixup.

Each takes the parsed options and calls timm's own factory (create_model, create_optimizer_v2,
create_scheduler_v2, Mixup) with the released recipe's conventions on top: learning rates scaled
by the total batch, the released weight-decay groups, AMP chosen per device.
"""

from __future__ import annotations

import torch

from onepfrac.errors import UserError
from onepfrac.train.distributed import Context
from onepfrac.train.options import UsageError


class ModelError(UserError, ValueError):
    """Unknown model name or options the model does not accept."""


def create_model(args, num_classes: int):
    import timm

    if not timm.is_model(args.model):
        close = difflib_matches(args.model)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ModelError(f"--model: {args.model!r} is not a timm model{hint}")
    kwargs = dict(num_classes=num_classes, drop_path_rate=args.drop_path, **args.model_kwargs)
    try:
        return timm.create_model(args.model, img_size=args.img_size, **kwargs)
    except TypeError as error:
        if "img_size" not in str(error):
            raise ModelError(f"--model-kwargs: {args.model} rejects {args.model_kwargs}: {error}") from None
    try:
        return timm.create_model(args.model, **kwargs)  # CNNs take any input size
    except TypeError as error:
        raise ModelError(f"--model-kwargs: {args.model} rejects {args.model_kwargs}: {error}") from None


def difflib_matches(name: str) -> list[str]:
    import difflib

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
