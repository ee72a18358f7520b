"""Training throughput: model-only vs end to end (loader and device pipelines), same model and batch.

    python benchmarks/bench_train.py                          # the CPU recipe on a 16-class 1p-frac
    python benchmarks/bench_train.py -c train/configs/pretrain_1p-frac_vit_tiny.yaml --batch-size 256 \
        --amp bf16 --data-dir data/sigma3.5_perturb0.1_sample1000_seed0   # on a GPU
    ... --compile --fused-opt --channels-last --workers 14    # trainer options pass through

Model-only feeds one batch of ready tensors already on the device; the end-to-end runs draw every
batch from the trainer's own pipelines (decoding done once, augmentation per sample, Mixup, loss,
backward, optimiser step), so the ratio is the data pipeline's cost. One model and optimiser serve
every pipeline (so --compile compiles once). Prints images/s, ratios, the projected wall time of
the released 61M-sample pre-training, and the model FLOPs utilisation: a training step's FLOPs
(forward and backward, counted by torch.utils.flop_counter) per second, over the GPU's bf16 dense
peak and over a matrix product's rate measured on the same GPU.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from onepfrac.argparsing import Parser  # noqa: E402
from onepfrac.train import build, data, engine, options, trainer  # noqa: E402
from onepfrac.train.distributed import setup  # noqa: E402

RELEASED_SAMPLES = 80_000 * 3 * 256  # epochs x steps x total batch of the released pre-training

# bf16 dense tensor-core peaks from NVIDIA's datasheets (TFLOP/s, without sparsity);
# the first name contained in torch.cuda.get_device_name() wins.
BF16_DENSE_PEAK = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
                   ("GH200", 989.4), ("A100", 312.0), ("L40S", 362.1), ("A10", 125.0))


def make_dataset(root: Path) -> Path:
    subprocess.run([sys.executable, "-m", "onepfrac.generate", "--base-savedir", str(root),
                    "--samples", "16", "--size", "128", "--points", "25000", "--pad", "2",
                    "--no-progress"], check=True, capture_output=True)
    return root / "sigma3.5_perturb0.1_sample16_seed0"


class Step:
    """One model, optimiser, Mixup and loss, shared by every timing of the run."""

    def __init__(self, args, context, num_classes: int):
        self.model = build.create_model(args, num_classes).to(context.device)
        if args.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if args.compile else self.model
        self.optimizer = build.create_optimizer(args, self.model, context)
        self.mixup = build.create_mixup(args, num_classes)
        self.loss = engine.make_loss(self.mixup is not None, args.smoothing)
        self.amp = build.amp_dtype_for(args, context.device)
        scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.common = dict(context=context, epoch=0, mixup_fn=self.mixup,
                           mixup_chunk=args.mixup_chunk, scaler=scaler, amp_dtype=self.amp,
                           channels_last=args.channels_last, check_every=10**9)

    def rate(self, batches, steps: int, warmup: int) -> float:
        """Images/s of `steps` training steps after `warmup` untimed ones."""
        context = self.common["context"]
        # summary() waits for the device: the warm-up's queued work stays out of the timing.
        engine.train_one_epoch(self.forward, batches, warmup, self.optimizer, self.loss,
                               **self.common).summary(context)
        stats = engine.train_one_epoch(self.forward, batches, steps, self.optimizer, self.loss,
                                       **self.common).summary(context)
        return stats["images_per_s"]

    def flops(self, images, targets) -> int:
        """FLOPs of one training step's forward and backward on this batch (eager model)."""
        from torch.utils.flop_counter import FlopCounterMode

        images, targets = engine.mix(self.mixup, images.clone(), targets.clone(),
                                     self.common["mixup_chunk"])
        counter = FlopCounterMode(display=False)
        with counter, engine.autocast(images.device, self.amp):
            self.loss(self.model(images), targets).backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def matmul_ceiling(device: torch.device, n: int = 8192) -> float | None:
    """TFLOP/s of an n x n x n bf16 matrix product on random data (median of 10), CUDA only."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1000)
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e12


def datasheet_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in BF16_DENSE_PEAK if key in name), None)


def main() -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default=str(REPO / "train/configs/pretrain_cpu.yaml"),
                        help="trainer config; other trainer options may follow")
    parser.add_argument("--data-dir", default=None, help="a 1p-frac folder (default: a 16-class one)")
    parser.add_argument("--steps", type=int, default=30, help="training steps timed")
    parser.add_argument("--warmup", type=int, default=5, help="steps run before timing")
    parser.add_argument("--pipelines", nargs="+", default=["loader", "device"], choices=("loader", "device"),
                        help="data pipelines timed")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many timings")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="bf16 dense peak for the MFU (default: from the GPU's name)")
    parser.add_argument("--json", default=None, help="also write the figures to this file (default: none)")
    known, rest = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = known.data_dir or str(make_dataset(Path(scratch)))
        try:  # the options this script does not know are the trainer's
            args = options.parse_args(["pretrain", "-c", known.config, "--data-dir", data_dir,
                                       "--no-progress", "--epochs", "1000000", *rest])
        except options.UsageError as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        context = setup("none", args.device)
        dataset = data.open_folder(Path(data_dir), "--data-dir", args.in_memory, args.memory_limit_gb,
                                   progress=False)
        args.num_classes = len(dataset.classes)
        torch.manual_seed(0)
        images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=context.device)
        targets = torch.randint(0, args.num_classes, (args.batch_size,), device=context.device)
        gpu, peak = datasheet_peak(context.device)
        peak = known.peak_tflops or peak
        ceiling = matmul_ceiling(context.device)
        step = Step(args, context, args.num_classes)
        flops_per_image = step.flops(images, targets) / args.batch_size
        workers = trainer.workers_for(args)
        print(f"{args.model} {args.model_kwargs or ''} at {args.img_size} px, batch {args.batch_size}, "
              f"{gpu}, {torch.get_num_threads()} threads, amp {args.amp} ({step.amp}), "
              f"compile {args.compile}, fused-opt {args.fused_opt}, channels-last {args.channels_last}, "
              f"{len(dataset)} images of {dataset.images.shape[1:] if hasattr(dataset, 'images') else '?'}")
        print(f"training FLOPs per image (forward + backward): {flops_per_image / 1e9:.2f} G; "
              f"bf16 dense peak {peak or '?'} TFLOP/s (datasheet); "
              f"measured 8192^3 bf16 matmul {f'{ceiling:.0f}' if ceiling else '-'} TFLOP/s")
        rates = {}
        best = lambda make: max(step.rate(make(), known.steps, known.warmup)  # noqa: E731
                                for _ in range(known.repeat))
        rates["model-only"] = best(lambda: itertools.repeat((images, targets)))
        for pipeline in known.pipelines:
            args.data_pipeline = pipeline
            rates[pipeline] = best(lambda: trainer.train_batches(args, dataset, context, 0)[0])
        rows = []
        for name, rate in rates.items():
            label = f"{name} ({workers} workers)" if name == "loader" else name
            tflops = rate * flops_per_image / 1e12
            row = dict(pipeline=name, images_per_s=rate, ratio=rate / rates["model-only"],
                       tflops=tflops, mfu=tflops / peak if peak else None,
                       of_matmul=tflops / ceiling if ceiling else None,
                       released_hours=RELEASED_SAMPLES / rate / 3600)
            rows.append(row)
            mfu = (f"MFU {row['mfu']:6.1%} (of matmul {row['of_matmul']:6.1%})" if peak and ceiling
                   else f"{tflops:7.2f} TFLOP/s")
            print(f"{label:24s} {rate:10.1f} images/s   {row['ratio']:6.1%} of model-only   "
                  f"{mfu}   released 61M samples: {row['released_hours']:8.2f} h")
        if known.json:
            settings = dict(model=args.model, img_size=args.img_size, batch_size=args.batch_size,
                            amp=str(step.amp), compile=args.compile, fused_opt=args.fused_opt,
                            channels_last=args.channels_last, workers=workers, device=gpu,
                            flops_per_image=flops_per_image, peak_tflops=peak,
                            matmul_tflops=ceiling, images=len(dataset))
            Path(known.json).write_text(json.dumps(dict(settings=settings, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
