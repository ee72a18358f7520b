"""One epoch of training and one pass of evaluation (the DeiT split: the driver builds, this runs)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from onepfrac.errors import UserError
from onepfrac.progress import progress as progress_bar
from onepfrac.train.distributed import Context, all_reduce_sum


class NonFiniteLoss(UserError, RuntimeError):
    """The training loss became NaN or infinite; the run stops and keeps its last checkpoint."""

    exit_code = 3

    def __init__(self, epoch: int, step: int | None = None):
        where = f"epoch {epoch}" if step is None else f"epoch {epoch}, step {step}"
        super().__init__(f"the training loss is not finite at {where}; lower --lr, raise "
                         "--warmup-epochs, set --clip-grad or use --amp bf16 instead of fp16")


@dataclass
class EpochStats:
    """What one epoch leaves behind without asking the device anything: its loss stays on the
    device, so that a run of 3-step epochs (the released recipe) does not drain the GPU's queue
    at every epoch's end. `mean_losses` reads many epochs' losses at once."""

    loss_sum: torch.Tensor  # this rank's summed step losses, float64, on the device
    steps: int
    images: int  # this rank's
    started: float  # time.perf_counter() when the host began the epoch

    def summary(self, context: Context) -> dict:
        """Mean loss across ranks, images/s and seconds of this epoch alone. Waits for the
        device: for callers that time one epoch (benchmarks), not for the run loop."""
        if context.device.type == "cuda":
            torch.cuda.synchronize(context.device)
        elapsed = time.perf_counter() - self.started
        return {
            "train_loss": mean_losses([self], context)[0],
            "images_per_s": self.images * context.world_size / elapsed if elapsed > 0 else 0.0,
            "steps": self.steps,
            "seconds": elapsed,
        }


def mean_losses(epochs: list[EpochStats], context: Context) -> list[float]:
    """Each epoch's loss averaged over its steps and over all ranks: one all_reduce and one copy
    to the host for all the epochs given, however many."""
    if not epochs:
        return []
    sums = all_reduce_sum(torch.stack([e.loss_sum for e in epochs]), context).cpu()
    return [float(total) / (e.steps * context.world_size) if e.steps else float("nan")
            for total, e in zip(sums.tolist(), epochs)]


def make_loss(mixup_active: bool, smoothing: float) -> nn.Module:
    """The LPCE loss: cross-entropy over the L perturbation classes (the paper's Eq. for LPCE
    approximated by L sampled perturbations), with soft targets when Mixup/CutMix mixes labels
    and label smoothing otherwise, as DeiT and the released code do."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_active:
        return SoftTargetCrossEntropy()  # smoothing is already inside the mixed targets
    if smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=smoothing)
    return nn.CrossEntropyLoss()


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def mix(mixup_fn, images: torch.Tensor, targets: torch.Tensor, chunk: int):
    """Mixup/CutMix with one lambda per `chunk` images (0: per batch), so one process with
    batch 256 can reproduce the released 8 x 32 runs, where each GPU drew its own lambda."""
    if mixup_fn is None:
        return images, targets
    if not chunk or chunk >= len(images):
        return mixup_fn(images, targets)
    parts = [mixup_fn(x, y) for x, y in zip(images.split(chunk), targets.split(chunk))]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def train_one_epoch(model, batches, steps: int, optimizer, loss_fn, *, context: Context,
                    epoch: int, mixup_fn=None, mixup_chunk: int = 0, scaler=None,
                    amp_dtype=None, clip_grad: float | None = None, model_ema=None,
                    lr_scheduler=None, updates_done: int = 0, channels_last: bool = False,
                    check_every: int = 50, bar=None) -> EpochStats:
    """Train for `steps` batches drawn from the iterator `batches`, without waiting for the
    device except at a NaN check; `bar` is the run's progress bar, advanced once per step.

    `lr_scheduler` is given only when the schedule steps per update (timm's step_update);
    the released recipe steps it per epoch, in the driver.
    """
    device = context.device
    model.train()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    seen = 0
    started = time.perf_counter()
    for step in range(steps):
        images, targets = next(batches)
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        images, targets = mix(mixup_fn, images, targets, mixup_chunk)
        with autocast(device, amp_dtype):
            loss = loss_fn(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
        update = updates_done + step + 1
        if model_ema is not None:
            model_ema.update(model, step=update)
        if lr_scheduler is not None:
            lr_scheduler.step_update(num_updates=update)
        loss_sum += loss.detach().double()
        seen += len(images)
        if update % check_every == 0:
            # Counted in updates of the whole run, not per epoch: with 3-step epochs a check at
            # every epoch's end would be a host sync every 3 steps.
            stop_if_nonfinite(loss_sum, context, epoch, step)
        if bar is not None:
            bar.update()
    return EpochStats(loss_sum, steps, seen, started)


def stop_if_nonfinite(loss_sum: torch.Tensor, context: Context, epoch: int, step: int) -> None:
    """Raise NonFiniteLoss if any rank's summed loss is NaN or infinite (one all_reduce and one
    read on the host; train_one_epoch calls it every check_every updates of the run)."""
    bad = (~torch.isfinite(loss_sum)).to(torch.float64).reshape(1)  # stays on the device
    if all_reduce_sum(bad, context).item() > 0:
        raise NonFiniteLoss(epoch, step + 1)


@torch.no_grad()
def evaluate(model, loader, *, context: Context, num_classes: int, amp_dtype=None,
             channels_last: bool = False, progress: bool = False) -> dict:
    """Top-1, top-5, mean loss and per-class counts over the whole set, summed across ranks."""
    device = context.device
    model.eval()
    correct1 = torch.zeros((), device=device, dtype=torch.float64)
    correct5 = torch.zeros((), device=device, dtype=torch.float64)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    per_class = torch.zeros(2, num_classes, device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    for images, targets in progress_bar(loader, desc="eval", unit="batch", leave=False,
                                        enabled=progress and context.is_main):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            logits = model(images)
        logits = logits.float()
        loss_sum += criterion(logits, targets).double()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == targets[:, None]
        correct1 += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
        count += len(targets)
        per_class[0].index_add_(0, targets, hits[:, 0].double())
        per_class[1].index_add_(0, targets, torch.ones_like(targets, dtype=torch.float64))
    totals = all_reduce_sum(torch.cat([torch.stack([correct1, correct5, loss_sum, count]),
                                       per_class.flatten()]), context).cpu()
    total = max(float(totals[3]), 1.0)
    per_class = totals[4:].view(2, num_classes).long()
    return {
        "acc1": 100.0 * float(totals[0]) / total,
        "acc5": 100.0 * float(totals[1]) / total,
        "loss": float(totals[2]) / total,
        "samples": int(totals[3]),
        "per_class_correct": per_class[0].tolist(),
        "per_class_total": per_class[1].tolist(),
    }
