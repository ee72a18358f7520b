"""What an epoch boundary costs: the same training steps as one long epoch and as 3-step epochs.

The released pre-training is 80,000 epochs of 3 steps, so anything the trainer does once an
epoch (restarting DataLoader workers, reading the loss back, writing logs) is paid 80,000 times.
This runs the real trainer (`python -m onepfrac.train pretrain`) twice per pipeline on a 16-class
1p-frac with a tiny ViT, with the same number of steps: as one epoch of STEPS steps and as
STEPS / 3 epochs of 3 steps (`--repeats` sets the steps an epoch), and prints the difference of
their training time (summary.json's train_seconds) per extra epoch boundary. On a CPU there is
no queue of device work for a boundary to drain, so it shows about a millisecond either way; the
figure that matters is the GPU's (benchmarks/gpu_report.sh runs it).

    python benchmarks/bench_epochs.py [--steps 60] [--pipelines loader device] [--workers 2]
    python benchmarks/bench_epochs.py --device cuda --img-size 224 --workers 14   # on a GPU
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from onepfrac.argparsing import Parser

from bench_train import make_dataset

BATCH = 16  # with 16 images, --repeats R gives R steps an epoch


def train_seconds(data_dir: Path, out: Path, epochs: int, repeats: int, pipeline: str, args) -> float:
    command = [sys.executable, "-m", "onepfrac.train", "pretrain", "--data-dir", str(data_dir),
               "--model", "vit_tiny_patch16_224", "--img-size", str(args.img_size), "--model-kwargs",
               "patch_size=4", "embed_dim=16", "depth=2", "num_heads=2", "--amp", "none",
               "--batch-size", str(BATCH), "--epochs", str(epochs), "--repeats", str(repeats),
               "--warmup-epochs", "0", "--data-pipeline", pipeline, "--workers", str(args.workers),
               "--device", args.device, "--no-progress", "--save-every", "1000000", "--output-dir", str(out)]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return json.loads((out / "summary.json").read_text())["train_seconds"]


def main():
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps of each run (a multiple of 3)")
    parser.add_argument("--pipelines", nargs="+", default=["loader", "device"], choices=("loader", "device"),
                        help="data pipelines timed")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the loader pipeline")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--img-size", type=int, default=32, help="input size of the tiny ViT")
    parser.add_argument("--runs", type=int, default=2, help="best of this many runs per layout")
    args = parser.parse_args()
    if args.steps % 3 or args.steps < 6:
        parser.error(f"--steps must be a multiple of 3 and at least 6, got {args.steps}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = make_dataset(Path(tmp) / "data")
        print(f"{args.steps} steps of batch {BATCH}, {args.img_size} px, tiny ViT, device {args.device}, "
              f"loader workers {args.workers}")
        print("| pipeline | 1 epoch x %d steps | %d epochs x 3 steps | per epoch boundary |" % (args.steps, args.steps // 3))
        print("| --- | --- | --- | --- |")
        for pipeline in args.pipelines:
            layouts = {}
            for epochs, repeats in [(1, args.steps), (args.steps // 3, 3)]:
                layouts[epochs] = min(
                    train_seconds(data_dir, Path(tmp) / f"{pipeline}_{epochs}_{run}", epochs, repeats, pipeline, args)
                    for run in range(args.runs))
            long, short = layouts[1], layouts[args.steps // 3]
            boundary = (short - long) / (args.steps // 3 - 1)
            print(f"| {pipeline} | {long:.2f} s | {short:.2f} s | {boundary * 1e3:+.1f} ms |", flush=True)


if __name__ == "__main__":
    main()
