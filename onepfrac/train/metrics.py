"""The run's records: metrics.jsonl (one line per epoch), TensorBoard scalars, optional Weights &
Biases scalars (--log-wandb) and log lines.

Epoch losses stay on the device until a resolve point (PendingEpochs), so the 3-step epochs of
the released recipe do not each wait for the GPU.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from tqdm import tqdm

from onepfrac.errors import UsageError
from onepfrac.extras import message
from onepfrac.train import engine
from onepfrac.train.distributed import Context

METRICS = "metrics.jsonl"


def log(context: Context, message: str) -> None:
    if context.is_main:
        with tqdm.external_write_mode():  # lifts the run's progress bar above the line
            print(message, flush=True)


def trim_metrics(path: Path, epochs_done: int) -> None:
    """Drop log lines of epochs after the resumed checkpoint, so the log matches the weights."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("epoch", 0) <= epochs_done]
    path.write_text("".join(line + "\n" for line in kept))


def require_wandb():
    """The wandb module, or a one-line error for --log-wandb when it is not installed."""
    try:
        import wandb
    except ImportError:
        raise UsageError("--log-wandb: the wandb package is not installed; install it with "
                         "`pip install wandb`, or leave out --log-wandb") from None
    return wandb


def _plain(value):
    """A value wandb's config can hold: paths, dtypes and the like as their text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return str(value)


class MetricsLog:
    def __init__(self, output_dir: Path, enabled: bool, wandb_project: str | None = None,
                 config: dict | None = None):
        """`wandb_project` (on the main process only) also logs every record to that
        Weights & Biases project, under the run folder's name."""
        self.path = output_dir / METRICS
        self.enabled = enabled
        self.tensorboard = None
        self.wandb = None
        if enabled and wandb_project:
            self.wandb = require_wandb().init(
                project=wandb_project, name=output_dir.name, dir=str(output_dir),
                config={key: _plain(value) for key, value in (config or {}).items()})
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                # Its own thread flushes every 30 s and close() the rest: a flush per record
                # would touch the disk once per 3-step epoch of the released recipe.
                self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"), flush_secs=30)
            except ImportError:  # optional, but said once: torch's own message names no pip package
                print(f"note: {message('tensorboard', 'train', 'TensorBoard logging')}; "
                      "metrics.jsonl is written without it", flush=True)

    def write(self, records: list[dict]) -> None:
        if not self.enabled or not records:
            return
        with self.path.open("a") as file:
            file.writelines(json.dumps(record) + "\n" for record in records)
        if self.tensorboard is not None:
            for record in records:
                for key, value in record.items():
                    if key != "epoch" and isinstance(value, (int, float)):
                        self.tensorboard.add_scalar(key, value, record["epoch"])
        if self.wandb is not None:
            for record in records:  # the epoch is wandb's step, so its charts read by epoch
                self.wandb.log({key: value for key, value in record.items()
                                if key != "epoch" and isinstance(value, (int, float))},
                               step=record["epoch"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


class PendingEpochs:
    """Finished epochs whose losses are still on the device. They are read together at a
    resolve point (one all_reduce and one copy to the host for all of them), because reading
    each epoch's loss at its end would drain the GPU's queue every 3 steps in the released
    recipe."""

    def __init__(self, context: Context, metrics: MetricsLog, bar, updates_done: int):
        self.context, self.metrics, self.bar = context, metrics, bar
        self.epochs: list[tuple[int, float, engine.EpochStats]] = []  # (epoch, lr, stats)
        self.resolved_at = updates_done
        self.window_start = time.perf_counter()

    def add(self, epoch: int, lr: float, stats: engine.EpochStats) -> None:
        self.epochs.append((epoch, lr, stats))

    def due(self, updates_done: int, check_every: int) -> bool:
        return updates_done - self.resolved_at >= check_every

    def resolve(self, updates_done: int) -> list[dict]:
        """The pending epochs' records. Raises NonFiniteLoss at the first epoch whose loss is not
        finite, after writing the records of the epochs before it."""
        losses = engine.mean_losses([stats for _, _, stats in self.epochs], self.context)
        # The copy to the host has waited for the device, so the window's time covers all its
        # training. Every epoch of the window gets the window's rate: an epoch's own rate would
        # need a host sync at its end.
        seconds = time.perf_counter() - self.window_start
        images = sum(stats.images for _, _, stats in self.epochs) * self.context.world_size
        rate = images / seconds if seconds > 0 else 0.0
        records = [{"epoch": epoch, "train_loss": loss, "lr": lr, "images_per_s": rate}
                   for (epoch, lr, _), loss in zip(self.epochs, losses)]
        self.epochs, self.resolved_at = [], updates_done
        bad = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
        if bad is not None:
            self.write(records[:bad])
            raise engine.NonFiniteLoss(records[bad]["epoch"])
        return records

    def write(self, records: list[dict]) -> None:
        self.metrics.write(records)
        for record in records:
            log(self.context, " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in record.items()))
        if records:
            self.bar.set_postfix(loss=f"{records[-1]['train_loss']:.4f}",
                                 lr=f"{records[-1]['lr']:.3g}")

    def restart_clock(self) -> None:
        """Evaluation, logging and checkpoints since the last resolve are not training time."""
        self.window_start = time.perf_counter()
