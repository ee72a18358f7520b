"""Training throughput: model-only vs end to end (loader and device pipelines), same model and batch.

    python benchmarks/bench_train.py                          # the CPU recipe on a 16-class 1p-frac
    python benchmarks/bench_train.py -c train/configs/pretrain_1p-frac_vit_tiny.yaml --batch-size 256 \
        --amp bf16 --data-dir data/sigma3.5_perturb0.1_sample1000_seed0   # on a GPU

Model-only feeds one batch of ready tensors already on the device; the end-to-end runs draw every
batch from the trainer's own pipelines (decoding done once, augmentation per sample, Mixup, loss,
backward, optimiser step), so the ratio is the data pipeline's cost. Prints images/s and ratios,
and the projected wall time of the released 61M-sample pre-training at each rate.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from onepfrac.train import cli, data, engine, trainer  # noqa: E402
from onepfrac.train.distributed import setup  # noqa: E402

RELEASED_SAMPLES = 80_000 * 3 * 256  # epochs x steps x total batch of the released pre-training


def make_dataset(root: Path) -> Path:
    subprocess.run([sys.executable, "-m", "onepfrac.generate", "--base-savedir", str(root),
                    "--samples", "16", "--size", "128", "--points", "25000", "--pad", "2",
                    "--no-progress"], check=True, capture_output=True)
    return root / "sigma3.5_perturb0.1_sample16_seed0"


def timed(args, context, batches, steps: int, warmup: int) -> float:
    """Images/s of `steps` training steps after `warmup` untimed ones."""
    train_set_classes = args.num_classes
    model = trainer.create_model(args, train_set_classes).to(context.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if args.compile else model
    optimizer = trainer.create_optimizer(args, model, context)
    mixup = trainer.create_mixup(args, train_set_classes)
    loss = engine.make_loss(mixup is not None, args.smoothing)
    amp = trainer.amp_dtype_for(args, context.device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    common = dict(context=context, epoch=0, mixup_fn=mixup, mixup_chunk=args.mixup_chunk,
                  scaler=scaler, amp_dtype=amp, channels_last=args.channels_last, progress=False,
                  check_every=10**9)
    engine.train_one_epoch(forward, batches, warmup, optimizer, loss, **common)
    stats = engine.train_one_epoch(forward, batches, steps, optimizer, loss, **common)
    return stats["images_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default=str(REPO / "train/configs/pretrain_cpu.yaml"))
    parser.add_argument("--data-dir", default=None, help="a 1p-frac folder (default: a 16-class one)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--pipelines", nargs="+", default=["loader", "device"])
    parser.add_argument("--repeat", type=int, default=2, help="best of this many timings")
    known, rest = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = known.data_dir or str(make_dataset(Path(scratch)))
        args = cli.parse_args(["pretrain", "-c", known.config, "--data-dir", data_dir,
                               "--no-progress", "--epochs", "1000000", *rest])
        context = setup("none", args.device)
        dataset = data.open_folder(Path(data_dir), "--data-dir", args.in_memory, args.memory_limit_gb,
                                   progress=False)
        args.num_classes = len(dataset.classes)
        torch.manual_seed(0)
        images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=context.device)
        targets = torch.randint(0, args.num_classes, (args.batch_size,), device=context.device)
        print(f"{args.model} {args.model_kwargs or ''} at {args.img_size} px, batch {args.batch_size}, "
              f"{context.device}, {torch.get_num_threads()} threads, amp {args.amp}, "
              f"compile {args.compile}, channels-last {args.channels_last}, "
              f"{len(dataset)} images of {dataset.images.shape[1:] if hasattr(dataset, 'images') else '?'}")
        rates = {}
        best = lambda make: max(timed(args, context, make(), known.steps, known.warmup)  # noqa: E731
                                for _ in range(known.repeat))
        rates["model-only"] = best(lambda: itertools.repeat((images, targets)))
        for pipeline in known.pipelines:
            args.data_pipeline = pipeline
            rates[pipeline] = best(lambda: trainer.train_batches(args, dataset, context, 0)[0])
        workers = trainer.workers_for(args)
        for name, rate in rates.items():
            label = f"{name} ({workers} workers)" if name == "loader" else name
            ratio = rate / rates["model-only"]
            hours = RELEASED_SAMPLES / rate / 3600
            print(f"{label:24s} {rate:10.1f} images/s   {ratio:6.1%} of model-only   "
                  f"released 61M samples: {hours:8.1f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
