"""Linear probing: a frozen backbone's features after blocks 1, 2, 3, ... and of the whole model.

`python -m onepfrac.train.probe --ckpt CKPT --data-dir DIGITS [--blocks 1 2 3 full]`

The paper (Sec. 4, "Linear probing") probes ViT-Tiny truncated after 1, 2 and 3 blocks and the
full model on CIFAR-100. Here the backbone is loaded without its head, frozen, and run once over
the training and validation images with the evaluation transform (no augmentation); one forward
pass per batch yields every requested depth. One linear classifier per depth is then trained on
the cached features, which costs seconds even for CIFAR.

Features (one vector per image and depth):
- `blockK`: the class token after block K (the mean of the patch tokens for models without one),
  layer-normalised without affine parameters: the model's final norm was trained for the last
  block's statistics, not for block K's.
- `full`: the model's own pre-logits, i.e. what its head would see (timm's
  `forward_head(forward_features(x), pre_logits=True)`: the class token after the final norm for
  ViT/DeiT).
Each dimension is then standardised with the training set's mean and standard deviation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from onepfrac import extras, weights

extras.require_or_exit("torch", "train", "python -m onepfrac.train.probe")  # before the imports below need it
import torch
import torch.nn.functional as F

from onepfrac.errors import UserError
from onepfrac.progress import progress as progress_bar
from onepfrac.train import checkpoint as ckpt
from onepfrac.train import data as data_module
from onepfrac.train import pretrained
from onepfrac.train.build import create_model
from onepfrac.train.distributed import choose_device
from onepfrac.train.options import (CKPT_WHICH, DATASETS, EVAL_FROM_CHECKPOINT, IN_MEMORY, INTERPOLATIONS,
                                    OneLineParser, UsageError, model_kwarg, need, need_choice)

METRICS = "metrics.jsonl"
FULL = "full"
OPTIMIZERS = ("adamw", "sgd")
# Model and input options read from a checkpoint of this project when not given, and the
# fallbacks for other checkpoints (the released fine-tuning's ImageNet statistics, timm's crop).
FALLBACKS = dict(img_size=224, model_kwargs={}, mean=[0.485, 0.456, 0.406],
                 std=[0.229, 0.224, 0.225], interpolation="bicubic", crop_pct=0.875)
assert set(FALLBACKS) | {"model"} == set(EVAL_FROM_CHECKPOINT)  # probe reads what eval reads


# ---------------------------------------------------------------- depths

def probe_depths(requested: list[str], model, model_name: str) -> list[tuple[str, int | None]]:
    """[(name, block index or None for the full model)] in the requested order, checked against
    the model's depth; raises UsageError naming the depth for a value out of range."""
    blocks = getattr(model, "blocks", None)
    depth = len(blocks) if blocks is not None else None
    probes = []
    for value in requested:
        if value == FULL:
            probe = (FULL, None)
        else:
            try:
                k = int(value)
            except ValueError:
                raise UsageError(f"--blocks: {value!r} is not a block number or 'full'") from None
            if depth is None:
                raise UsageError(f"--blocks: {model_name} has no transformer `blocks` to probe "
                                 "after; only 'full' is possible")
            if not 1 <= k <= depth:
                raise UsageError(f"--blocks: {k} is out of range; {model_name} has {depth} "
                                 f"blocks (allowed 1..{depth} or full)")
            probe = (f"block{k}", k - 1)
        if probe not in probes:
            probes.append(probe)
    return probes


def default_depths(model) -> list[str]:
    """The paper's probes (blocks 1, 2, 3 and the full model), less blocks a model lacks."""
    depth = len(getattr(model, "blocks", ()))
    return [str(k) for k in (1, 2, 3) if k <= depth] + [FULL]


# ---------------------------------------------------------------- features

def _pool(tokens: torch.Tensor, prefix: torch.Tensor | None, has_class_token: bool) -> torch.Tensor:
    pooled = prefix[:, 0] if has_class_token else tokens.mean(dim=1)
    return F.layer_norm(pooled, pooled.shape[-1:])  # no affine: see the module docstring


@torch.no_grad()
def batch_features(model, images: torch.Tensor, probes) -> dict[str, torch.Tensor]:
    """Every probe's feature vectors for one batch, from a single forward pass."""
    indices = [index for _, index in probes if index is not None]
    want_full = any(index is None for _, index in probes)
    if not indices:
        final = model.forward_features(images)
        return {FULL: model.forward_head(final, pre_logits=True)}
    has_class_token = getattr(model, "cls_token", None) is not None
    if hasattr(model, "forward_intermediates"):
        out = model.forward_intermediates(
            images, indices=sorted(set(indices)), return_prefix_tokens=True, norm=False, output_fmt="NLC",
            stop_early=not want_full, intermediates_only=not want_full)
        final, taken = (None, out) if not want_full else out
        if getattr(model, "num_prefix_tokens", 0) == 0:
            taken = [(tokens, None) for tokens in taken]
    else:  # older timm ViT-likes: the same steps as VisionTransformer.forward_features
        x = model._pos_embed(model.patch_embed(images))
        x = model.norm_pre(getattr(model, "patch_drop", torch.nn.Identity())(x))
        prefix_count = getattr(model, "num_prefix_tokens", 1 if has_class_token else 0)
        taken = []
        for i, block in enumerate(model.blocks[:len(model.blocks) if want_full else max(indices) + 1]):
            x = block(x)
            if i in indices:
                taken.append((x[:, prefix_count:], x[:, :prefix_count]))
        final = model.norm(x) if want_full else None
    by_index = {index: _pool(tokens, prefix, has_class_token)
                for index, (tokens, prefix) in zip(sorted(set(indices)), taken)}
    features = {}
    for name, index in probes:
        features[name] = (model.forward_head(final, pre_logits=True) if index is None
                          else by_index[index])
    return features


@torch.no_grad()
def extract_features(model, loader, probes, device: torch.device, progress: bool = False,
                     desc: str = "features"):
    """({probe name: float32 (N, D) on `device`}, int64 labels (N,)) over the whole loader."""
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name, _ in probes}
    labels = []
    for images, targets in progress_bar(loader, desc=desc, unit="batch", leave=False, enabled=progress):
        for name, value in batch_features(model, images.to(device), probes).items():
            chunks[name].append(value.float())
        labels.append(targets.to(device))
    return {name: torch.cat(parts) for name, parts in chunks.items()}, torch.cat(labels)


# ---------------------------------------------------------------- the linear classifier

def standardise(train: torch.Tensor, val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(dim=0), train.std(dim=0)
    std = std.clamp_min(1e-6)  # a constant dimension carries nothing; avoid dividing by zero
    return (train - mean) / std, (val - mean) / std


def accuracy(classifier, features, labels, batch_size: int) -> tuple[float, float]:
    """Top-1 and top-5 (top-k capped at the class count) in percent."""
    correct1 = correct5 = 0
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            logits = classifier(features[start:start + batch_size])
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == labels[start:start + batch_size, None]
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
    total = max(len(features), 1)
    return 100.0 * correct1 / total, 100.0 * correct5 / total


def train_linear(train_x, train_y, val_x, val_y, num_classes: int, *, epochs: int, lr: float,
                 weight_decay: float, opt: str, batch_size: int, eval_every: int, seed: int,
                 log=None) -> dict:
    """One linear layer on standardised features: cosine schedule stepped per update, no
    augmentation (the features are fixed). Returns the last epoch's accuracies."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    train_x, val_x = standardise(train_x, val_x)
    classifier = torch.nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
    with torch.no_grad():  # seeded init, independent of the global RNG
        bound = 1.0 / math.sqrt(train_x.shape[1])
        classifier.weight.copy_(torch.empty_like(classifier.weight, device="cpu")
                                .uniform_(-bound, bound, generator=generator))
        classifier.bias.zero_()
    if opt == "sgd":
        optimizer = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9,
                                    weight_decay=weight_decay)
    else:
        optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    history = []
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train_x), generator=generator).to(train_x.device)
        loss_sum = 0.0
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(classifier(train_x[index]), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(index)
        if epoch % eval_every == 0 or epoch == epochs:
            val_acc1, val_acc5 = accuracy(classifier, val_x, val_y, 4096)
            history.append({"epoch": epoch, "train_loss": loss_sum / len(order),
                            "val_acc1": val_acc1, "val_acc5": val_acc5})
            if log:
                log(history[-1])
    train_acc1, _ = accuracy(classifier, train_x, train_y, 4096)
    return {"train_acc1": train_acc1, "val_acc1": history[-1]["val_acc1"],
            "val_acc5": history[-1]["val_acc5"], "train_loss": history[-1]["train_loss"],
            "history": history}


def probe_model(model, train_loader, val_loader, probes, num_classes: int, args,
                device: torch.device, log=print) -> list[dict]:
    """Freeze `model`, extract features once, train one classifier per probe; one record each."""
    model.to(device).eval()
    model.requires_grad_(False)
    start = time.perf_counter()
    train_features, train_y = extract_features(model, train_loader, probes, device,
                                               args.progress, "train features")
    val_features, val_y = extract_features(model, val_loader, probes, device, args.progress,
                                           "val features")
    log(f"features of {len(train_y)} + {len(val_y)} images at {len(probes)} depth(s) in "
        f"{time.perf_counter() - start:.1f} s")
    records = []
    for position, (name, _) in enumerate(probes):
        def progress_line(entry, name=name):
            log(f"  {name} epoch {entry['epoch']}: loss {entry['train_loss']:.4f} "
                f"val top-1 {entry['val_acc1']:.2f}")
        result = train_linear(train_features[name], train_y, val_features[name], val_y,
                              num_classes, epochs=args.epochs, lr=args.lr,
                              weight_decay=args.weight_decay, opt=args.opt,
                              batch_size=args.batch_size, eval_every=args.eval_every,
                              seed=args.seed + position,
                              log=progress_line if args.verbose else None)
        records.append({"probe": name, "feature_dim": int(train_features[name].shape[1]),
                        "train_acc1": result["train_acc1"], "val_acc1": result["val_acc1"],
                        "val_acc5": result["val_acc5"], "train_loss": result["train_loss"],
                        "epochs": args.epochs, "num_train": len(train_y), "num_val": len(val_y)})
    return records


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m onepfrac.train.probe",
                           description="Linear probing of a frozen backbone at several depths.")
    parser.add_argument("--ckpt", required=True, help="path, URL or known released name")
    parser.add_argument("--ckpt-which", default="auto", choices=CKPT_WHICH,
                        help="which weights of --ckpt (ema: state_dict_ema)")
    parser.add_argument("--ckpt-trust-pickle", action=argparse.BooleanOptionalAction,
                        default=False, help="allow arbitrary pickled objects (trusted files only)")
    parser.add_argument("--data-dir", required=True,
                        help="folder with train/ and val/ ImageFolders, or CIFAR's root")
    parser.add_argument("--dataset", default="folder", choices=DATASETS,
                        help="folder: class folders; cifar10/cifar100: torchvision's")
    parser.add_argument("--in-memory", default="auto", choices=IN_MEMORY,
                        help="decode the images once into memory (auto: when they fit)")
    parser.add_argument("--memory-limit-gb", type=float, default=16.0,
                        help="most memory --in-memory auto may use for decoded images")
    parser.add_argument("--blocks", nargs="+", default=None,
                        help="depths to probe: block numbers from 1 and/or 'full' (default: "
                             "1 2 3 full as in the paper, the blocks the model has)")
    # None: taken from the checkpoint's stored arguments, else FALLBACKS.
    parser.add_argument("--model", default=None, help="timm model (default: the checkpoint's)")
    parser.add_argument("--img-size", type=int, default=None,
                        help="input size (default: the checkpoint's)")
    parser.add_argument("--model-kwargs", nargs="*", type=model_kwarg, default=None,
                        metavar="KEY=VALUE", help="timm create_model arguments (default: the "
                                                  "checkpoint's)")
    parser.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                        help="normalisation mean (default: the checkpoint's)")
    parser.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                        help="normalisation standard deviation (default: the checkpoint's)")
    parser.add_argument("--interpolation", default=None, choices=INTERPOLATIONS,
                        help="resize interpolation (default: the checkpoint's)")
    parser.add_argument("--crop-pct", type=float, default=None,
                        help="centre crop of the resized image (default: the checkpoint's)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs of each linear probe")
    parser.add_argument("--opt", default="adamw", choices=OPTIMIZERS,
                        help="the probes' optimiser (sgd: momentum 0.9)")
    parser.add_argument("--lr", type=float, default=0.03, help="the probes' learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="the probes' weight decay")
    parser.add_argument("--batch-size", "-b", type=int, default=256,
                        help="images per feature-extraction batch and features per probe update")
    parser.add_argument("--eval-every", "--val-interval", type=int, default=10,
                        help="epochs between val checks")
    parser.add_argument("--workers", "-j", type=int, default=0,
                        help="DataLoader workers for extraction")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything random")
    parser.add_argument("--output-dir", "--output", default="output/probe",
                        help="folder for metrics.jsonl")
    parser.add_argument("--verbose", action="store_true", help="a line per val check")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="progress bars on a terminal")
    return parser


def validate(args) -> None:
    for name in ("epochs", "batch_size", "eval_every"):
        value = getattr(args, name)
        need(value >= 1, name.replace("_", "-"), value, "expected an integer >= 1")
    need(args.lr > 0, "lr", args.lr, "expected a number > 0")
    need(args.weight_decay >= 0, "weight-decay", args.weight_decay, "expected a number >= 0")
    need_choice(OPTIMIZERS, "opt", args.opt)
    need_choice(DATASETS, "dataset", args.dataset)
    need_choice(IN_MEMORY, "in-memory", args.in_memory)
    need(args.workers >= 0, "workers", args.workers, "expected an integer >= 0")
    need(args.img_size is None or args.img_size >= 1, "img-size", args.img_size,
         "expected an integer >= 1")
    need(args.crop_pct is None or 0 < args.crop_pct <= 1, "crop-pct", args.crop_pct,
         "expected 0 < crop-pct <= 1")


def model_options(args, source: Path) -> None:
    """Fill the model and input options not given: the checkpoint's stored arguments (our own
    checkpoints), a known release's model, else FALLBACKS. Without any, --model is required."""
    try:  # never unpickles code: a downloaded file is not trusted
        stored = pretrained.read_checkpoint_safely(source).get("args") or {}
    except ckpt.CheckpointError:
        stored = {}  # load_pretrained reports an unreadable file properly below
    if args.model is None:
        release = weights.RELEASES.get(str(args.ckpt))
        args.model = stored.get("model") or (release.model if release else None)
    if args.model is None:
        raise UsageError(f"--model: {args.ckpt} stores no training arguments (not a checkpoint "
                         "of this project); name its timm model with --model (and --img-size, "
                         "--model-kwargs if it is not the model's default)")
    if args.model_kwargs is not None:
        args.model_kwargs = dict(args.model_kwargs)
    for key, fallback in FALLBACKS.items():
        if getattr(args, key) is None:
            setattr(args, key, stored.get(key, fallback))


def run(args) -> int:
    try:
        return _run(args)
    except UserError as error:  # the options, the data (decoded at extraction too) or the weights
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


def _run(args) -> int:
    validate(args)
    device = choose_device(args.device, 0)
    data_module.seed_everything(args.seed)
    source = weights.resolve_option(args.ckpt, progress=args.progress)
    model_options(args, source)
    args.drop_path = 0.0
    model = create_model(args, num_classes=0)  # no head: features only
    probes = probe_depths(args.blocks or default_depths(model), model, args.model)
    root = Path(args.data_dir)
    folder = args.dataset == "folder"
    train_set, val_set = (
        data_module.open_dataset(args.dataset, root / split if folder else root,
                                 split == "train", "--data-dir", args.in_memory,
                                 args.memory_limit_gb, args.progress)
        for split in ("train", "val"))
    if len(train_set.classes) != len(val_set.classes):
        raise data_module.DataError(f"--data-dir: the validation set has "
                                    f"{len(val_set.classes)} classes, the training set "
                                    f"{len(train_set.classes)}")
    if train_set.classes != val_set.classes:
        # Labels are positions in the sorted class list: other names would score the wrong class.
        first = next(i for i, (a, b) in enumerate(zip(train_set.classes, val_set.classes))
                     if a != b)
        raise data_module.DataError(
            f"--data-dir: the validation set's classes differ from the training set's (class "
            f"{first} is {val_set.classes[first]!r} in val/, {train_set.classes[first]!r} in "
            "train/); both need the same class folders")
    report = pretrained.load_pretrained(model, source, which=args.ckpt_which, drop_head=True,
                                        trust_pickle=args.ckpt_trust_pickle)
    print(f"loaded {args.ckpt} into {args.model} ({report['loaded']} tensors; head dropped: "
          f"{', '.join(report['dropped']) or 'none'})", flush=True)
    transform = data_module.eval_transform(args)
    loaders = [torch.utils.data.DataLoader(
        data_module.EvalSamples(dataset, transform), batch_size=args.batch_size, shuffle=False,
        num_workers=args.workers, pin_memory=device.type == "cuda")
        for dataset in (train_set, val_set)]
    records = probe_model(model, *loaders, probes, len(train_set.classes), args, device)

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / METRICS).write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"linear probe of {args.model} on {len(train_set)} train / {len(val_set)} val images, "
          f"{len(train_set.classes)} classes, {args.epochs} epochs")
    print(f"{'probe':<8} {'dim':>5} {'train@1':>8} {'val@1':>7} {'val@5':>7}")
    for r in records:
        print(f"{r['probe']:<8} {r['feature_dim']:>5} {r['train_acc1']:>8.2f} "
              f"{r['val_acc1']:>7.2f} {r['val_acc5']:>7.2f}")
    print(f"wrote {output_dir / METRICS}")
    return 0


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
