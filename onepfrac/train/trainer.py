"""The driver: build data, model, optimiser and schedule from the options, then run the epochs.

Read top to bottom: set-up, datasets, model, optimiser, resume, loop (train, schedule, evaluate,
log, checkpoint), summary. Everything that can fail on bad input fails before the loop.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from onepfrac import weights
from onepfrac.cores import available_cores
from onepfrac.errors import UsageError, UserError
from onepfrac.progress import progress as progress_bar
from onepfrac.train import checkpoint as ckpt
from onepfrac.train import data as data_module
from onepfrac.train import engine, export, pretrained, run_folder, wds_data
from onepfrac.train.build import (amp_dtype_for, create_mixup, create_model, create_optimizer,
                                  create_scheduler, freeze_blocks, scaled)
from onepfrac.train.distributed import Context, barrier, main_decides, setup, teardown
from onepfrac.train.metrics import METRICS, MetricsLog, PendingEpochs, log, trim_metrics
from onepfrac.train.options import EVAL_FROM_CHECKPOINT, architecture, architecture_tag


# ---------------------------------------------------------------- data

def train_root(args) -> Path:
    if args.train_dir:
        return Path(args.train_dir)
    root = Path(args.data_dir)
    return root / "train" if args.mode == "finetune" and args.dataset == "folder" else root


def val_root(args) -> Path | None:
    if args.val_dir:
        return Path(args.val_dir)
    if args.mode in ("finetune", "eval") and args.data_dir:
        return Path(args.data_dir) / "val" if args.dataset == "folder" else Path(args.data_dir)
    return None


def open_datasets(args, context: Context):
    progress = args.progress and context.is_main
    train = None
    if args.mode != "eval" and args.render:
        train = data_module.RenderedDataset(args.render, args.render_kwargs)
    elif args.mode != "eval" and args.dataset == "wds":
        train = wds_data.open_shards(train_root(args), "--train-dir" if args.train_dir else "--data-dir")
    elif args.mode != "eval":
        option = "--train-dir" if args.train_dir else "--data-dir"
        train = data_module.open_dataset(args.dataset, train_root(args), True, option,
                                         args.in_memory, args.memory_limit_gb, progress)
    val = None
    root = val_root(args)
    if root is not None:
        option = "--val-dir" if args.val_dir else "--data-dir"
        val = data_module.open_dataset(args.dataset, root, False, option, args.in_memory,
                                       args.memory_limit_gb, progress)
    classes = (train or val).classes
    if args.num_classes is not None and args.num_classes != len(classes):
        where = args.render or (train_root(args) if train is not None else root)
        raise data_module.DataError(
            f"--num-classes {args.num_classes} does not match the {len(classes)} classes "
            f"found in {str(where)!r}")
    if train is not None and val is not None and len(val.classes) != len(classes):
        raise data_module.DataError(f"the validation set {str(root)!r} has {len(val.classes)} "
                                    f"classes, the training set {str(train_root(args))!r} "
                                    f"{len(classes)}; both need the same class folders")
    if train is not None and val is not None and val.classes != classes:
        # Labels are positions in the sorted class list: other names would score the wrong class.
        first = next(i for i, (a, b) in enumerate(zip(classes, val.classes)) if a != b)
        raise data_module.DataError(
            f"the validation set's classes differ from the training set's (class {first} is "
            f"{val.classes[first]!r} in {str(root)!r}, {classes[first]!r} in "
            f"{str(train_root(args))!r}); both need the same class folders")
    return train, val, len(classes)


def workers_for(args) -> int:
    if args.workers is not None:
        return args.workers
    return min(8, available_cores())


def train_batches(args, dataset, context: Context, start_epoch: int):
    """An iterator of (images, targets) over all remaining epochs, and the steps per epoch."""
    if isinstance(dataset, wds_data.ShardSet):
        return shard_batches(args, dataset, context, start_epoch)
    sampler = data_module.EpochBatchSampler(
        len(dataset), args.batch_size, args.epochs, args.seed, context.rank, context.world_size,
        start_epoch=start_epoch, repeats=args.repeats)
    if sampler.steps_per_epoch == 0:
        raise data_module.DataError(
            f"--batch-size {args.batch_size} x {context.world_size} process(es) is more than "
            f"the {len(dataset) * args.repeats} images of one epoch: lower --batch-size or "
            "raise --repeats")
    pipeline, why = data_module.choose_pipeline(args.data_pipeline, dataset, context.device)
    if pipeline == "device":
        from onepfrac.train import device_data  # the device ops: only for this pipeline

        on_device = device_data.to_device_dataset(dataset, context.device)
        log(context, f"data pipeline: device ({why}; {on_device.nbytes / 2**20:.1f} MiB)")
        batches = device_data.device_batches(on_device, sampler, device_data.device_augment(args), args.seed)
        if args.side_stream:
            batches = device_data.on_side_stream(batches, context.device)
        return batches, sampler.steps_per_epoch
    samples = data_module.SeededSamples(dataset, data_module.train_transform(args), args.seed)
    workers = workers_for(args)
    log(context, f"data pipeline: loader with {workers} worker(s) per process ({why})")
    loader = torch.utils.data.DataLoader(
        samples, batch_sampler=sampler, num_workers=workers,
        pin_memory=context.device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers else None)
    return iter(loader), sampler.steps_per_epoch


def shard_batches(args, shard_set, context: Context, start_epoch: int):
    """train_batches for --dataset wds: each rank and worker streams its own tar shards (wds_data)."""
    workers = workers_for(args)
    log(context, f"data pipeline: tar shards, {len(shard_set.shards)} of them, {workers} worker(s) per process, "
                 f"shuffle buffer {args.shuffle_buffer}")
    return wds_data.train_batches(shard_set, data_module.train_transform(args), args.batch_size, args.epochs,
                                  args.seed, context.rank, context.world_size, start_epoch, workers, args.repeats,
                                  args.shuffle_buffer, pin_memory=context.device.type == "cuda")


def eval_loader(args, dataset, context: Context):
    indices = data_module.shard(len(dataset), context.rank, context.world_size)
    samples = torch.utils.data.Subset(
        data_module.EvalSamples(dataset, data_module.eval_transform(args)), indices)
    return torch.utils.data.DataLoader(samples, batch_size=args.eval_batch_size or args.batch_size,
                                       num_workers=workers_for(args), shuffle=False)


# ---------------------------------------------------------------- checkpoints

def experiment_name(args) -> str:
    """--experiment, else the data's name after the model's overrides (`p4-d96x6-32px_...`),
    so checkpoints of two architectures never share a name."""
    if args.experiment:
        return args.experiment
    if args.render:
        data = f"{args.render}-rendered"
    else:
        data = train_root(args).name if args.dataset in ("folder", "wds") else args.dataset
    tag = architecture_tag(args.model, args.img_size, args.model_kwargs)
    return f"{tag}_{data}" if tag else data


# ---------------------------------------------------------------- entry point

class Terminated(BaseException):
    """SIGTERM (a job scheduler's or a launcher's stop) raised as an exception, so a checkpoint
    being written removes its temporary file and the run folder's lock is released."""


def _raise_terminated(signum, frame):
    if os.getpid() != _raise_terminated.owner:  # a forked DataLoader worker: die as by default
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated


def _catch_sigterm():
    """Install the SIGTERM handler (main thread only, as Python allows); returns the previous one."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _raise_terminated.owner = os.getpid()
    return signal.signal(signal.SIGTERM, _raise_terminated)


def run(args: argparse.Namespace) -> int:
    context = None
    previous = _catch_sigterm()
    try:
        context = setup(args.launcher, args.device, args.world_size)
        if args.mode == "eval":
            return evaluate_checkpoint(args, context)
        return train(args, context)
    except UserError as error:  # bad input (2) or a diverged run (3): one line, no traceback
        if context is None or context.is_main:
            kept = (f"; the last good checkpoint is kept in {args.output_dir}"
                    if isinstance(error, engine.NonFiniteLoss) else "")
            print(f"error: {error}{kept}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if context is None or context.is_main:
            print("interrupted; resume with --resume auto", file=sys.stderr)
        return 130
    except Terminated:
        if context is None or context.is_main:
            print("terminated (SIGTERM); resume with --resume auto", file=sys.stderr)
        return 143
    finally:
        if context is not None:
            teardown(context)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


RUN_DEFINING = ("model", "model_kwargs", "img_size")  # what makes a checkpoint another run's


def resume_state(args, light: bool = False):
    """(path, checkpoint, finished) of the run --resume continues, or (None, None, False).

    Refuses an --epochs other than the run's: its schedule spans the run's epochs, so a resumed
    run with fewer would train nothing and one with more would not follow the schedule.
    `light` reads only what the checks need (memory-mapped), for --check-only."""
    path = ckpt.find_resume(args.resume, args.output_dir)
    if path is None:
        return None, None, False
    state = ckpt.read_progress(path) if light else ckpt.load_checkpoint(path)
    done = state.get("epoch")
    planned = (state.get("args") or {}).get("epochs")
    if isinstance(planned, int) and planned != args.epochs:
        raise UsageError(f"--epochs {args.epochs} does not match the {planned} epochs of the run "
                         f"being resumed ({path}, {done} done); resume with --epochs {planned}, "
                         "or start afresh in another --output-dir")
    recorded = state.get("args") or {}
    for name in RUN_DEFINING:  # another model or input resumed (or found finished) is not this run
        if name in recorded and recorded[name] != getattr(args, name):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"--resume {path}: that run used {flag} {recorded[name]!r}, this one "
                             f"{getattr(args, name)!r}; resume with the run's options, or start afresh "
                             "in another --output-dir")
    finished = isinstance(done, int) and done >= args.epochs
    return path, state, finished


def check_only(args) -> int:
    """--check-only: every check a run makes before its work, in this one process; writes nothing.
    Returns 0 when a run would start (or would find its run already finished)."""
    if args.mode == "eval":
        return 0
    for option, value in (("data-dir", args.data_dir), ("train-dir", args.train_dir),
                          ("val-dir", args.val_dir)):
        if value and args.dataset == "folder" and not (args.render and option == "data-dir") \
                and not Path(value).exists():
            raise UsageError(f"--{option}: {value!r} does not exist")
    run_folder.output_dir(args)
    _, _, finished = resume_state(args, light=True)
    if not finished:
        run_folder.probe(args)
    return 0


def load_weights(args, model, context: Context) -> None:
    source = weights.resolve_option(args.ckpt, progress=args.progress and context.is_main)
    evaluating = args.mode == "eval"  # the trained head is what eval measures: never replace it
    try:
        report = pretrained.load_pretrained(model, source, which=args.ckpt_which,
                                            drop_head=False if evaluating else "auto",
                                            trust_pickle=args.ckpt_trust_pickle)
    except pretrained.HeadMismatch as error:
        if error.checkpoint_classes is None:
            raise
        option = "--val-dir" if args.val_dir else "--data-dir"
        raise data_module.DataError(
            f"--ckpt {args.ckpt}: the checkpoint's head has {error.checkpoint_classes} classes, "
            f"{option} {str(val_root(args))!r} has {error.model_classes} classes; evaluate on the "
            "classes it was trained on (hidden folders are not classes)") from None
    log(context, f"loaded {args.ckpt}: {pretrained.describe_report(report)}")
    if report["dropped"] and report["head_classes"] is not None:
        replaced = (f"a new one for {report['model_classes']} classes"
                    if report["model_classes"] is not None else "no head (features only)")
        log(context, f"{args.mode}: the checkpoint's head ({report['head_classes']} classes) is "
                     f"replaced by {replaced}")


def train(args, context: Context) -> int:
    output_dir = run_folder.output_dir(args)
    resume, resumed, finished = resume_state(args)
    if finished:  # nothing to train, and nothing of the run is touched
        log(context, f"{resume}: this run has already finished its {resumed['epoch']} epochs; "
                     f"nothing to do (results in {output_dir / run_folder.SUMMARY})")
        return 0
    # Read-only here (nothing is written before the data and the model are ready); the lock is
    # taken at the first write, below, where these checks are made again under it.
    main_decides(context, lambda: run_folder.probe(args))
    claimed = []
    try:
        return train_in(args, context, output_dir, resume, resumed, claimed)
    finally:
        for lock in claimed:
            lock.release()


def train_in(args, context: Context, output_dir: Path, resume: Path | None, resumed: dict | None,
             claimed: list) -> int:
    """The run itself (train); the run folder's lock goes to `claimed`, for train to release."""
    data_module.seed_everything(args.seed + context.rank)
    train_set, val_set, num_classes = open_datasets(args, context)
    model = create_model(args, num_classes)
    if resumed is not None:  # a bare state dict or another model's run: one line, before any work
        pretrained.check_training_checkpoint(resumed, model, resume)
    if args.ckpt:
        load_weights(args, model, context)
    if args.freeze_blocks:
        freeze_blocks(model, args.freeze_blocks)
    amp_dtype = amp_dtype_for(args, context.device)

    model.to(context.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    model_ema = None
    if args.model_ema:
        from timm.utils import ModelEmaV3
        model_ema = ModelEmaV3(model, decay=args.model_ema_decay)
    start_epoch = resumed["epoch"] if resumed else 0
    batches, steps_per_epoch = train_batches(args, train_set, context, start_epoch)
    optimizer = create_optimizer(args, model, context)
    scheduler = create_scheduler(args, optimizer, context, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    best = {"acc1": None, "epoch": None}
    if resumed:
        best = ckpt.restore_training_state(resumed, model, optimizer, scheduler, scaler, model_ema,
                                           best)
    forward_model = model
    if args.compile:
        forward_model = torch.compile(model)
    if context.distributed:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            forward_model, device_ids=[context.device] if context.device.type == "cuda" else None)
    mixup_fn = create_mixup(args, num_classes)
    loss_fn = engine.make_loss(mixup_fn is not None, args.smoothing)
    val = eval_loader(args, val_set, context) if val_set is not None else None

    lock = main_decides(context, lambda: run_folder.claim(args))
    if lock is not None:
        claimed.append(lock)
    if context.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        if args.overwrite:
            run_folder.clear_previous_run(output_dir)
        run_folder.write_args(output_dir, args)
        if resumed:
            trim_metrics(output_dir / METRICS, start_epoch)
        elif (output_dir / METRICS).exists():
            (output_dir / METRICS).unlink()
    metrics = MetricsLog(output_dir, context.is_main,
                         wandb_project=args.wandb_project if getattr(args, "log_wandb", False) else None,
                         config=vars(args))
    total_batch = args.batch_size * context.world_size
    log(context, f"{args.mode}: {architecture(args.model, args.img_size, args.model_kwargs)} on "
                 f"{len(train_set)} images, {num_classes} classes, "
                 f"{context.world_size} process(es) on {context.device} ({context.launcher}), "
                 f"batch {args.batch_size} x {context.world_size}, {steps_per_epoch} steps/epoch, "
                 f"lr {args.lr:.3g} given, {scaled(args.lr, args, context):.3g} used "
                 f"(x total batch {total_batch} / {args.lr_base_batch})"
                 + (f", resuming after epoch {start_epoch}" if resumed else ""))
    experiment = experiment_name(args)
    last_epoch_stats = {}
    end_epoch = args.epochs if args.stop_after is None else min(args.epochs,
                                                                start_epoch + args.stop_after)
    bar = progress_bar(total=(end_epoch - start_epoch) * steps_per_epoch, desc="train", unit="step",
                       leave=False, enabled=args.progress and context.is_main)
    pending = PendingEpochs(context, metrics, bar, updates_done=start_epoch * steps_per_epoch)
    loop_start, epochs_run = time.perf_counter(), 0
    for epoch in range(start_epoch, end_epoch):
        # Main-process randomness (Mixup, drop path) restarts from (seed, epoch, rank), so a
        # run resumed at any epoch boundary continues exactly as an uninterrupted one.
        data_module.seed_everything(data_module.sample_seed(args.seed, epoch, 10**9 + context.rank))
        lr = optimizer.param_groups[0]["lr"]
        try:
            stats = engine.train_one_epoch(
                forward_model, batches, steps_per_epoch, optimizer, loss_fn, context=context,
                epoch=epoch + 1, mixup_fn=mixup_fn, mixup_chunk=args.mixup_chunk, scaler=scaler,
                amp_dtype=amp_dtype, clip_grad=args.clip_grad, model_ema=model_ema,
                lr_scheduler=scheduler if args.sched_on_updates else None,
                updates_done=epoch * steps_per_epoch, channels_last=args.channels_last,
                check_every=args.check_every, bar=bar)
        except engine.NonFiniteLoss:
            pending.write(pending.resolve(epoch * steps_per_epoch))  # the epochs before it
            raise
        if not args.sched_on_updates:
            scheduler.step(epoch + 1)
        done = epoch + 1
        epochs_run += 1
        pending.add(done, lr, stats)
        evaluating = val is not None and (done % args.eval_every == 0 or done == args.epochs)
        saving = done % args.save_every == 0 or done == end_epoch
        # Records wait on the device until enough updates have passed, or until an evaluation
        # or a checkpoint, which must come after the losses of the epochs before them.
        if not (evaluating or saving or pending.due(done * steps_per_epoch, args.check_every)):
            continue
        records = pending.resolve(done * steps_per_epoch)
        if evaluating:
            result = engine.evaluate(model_ema.module if model_ema is not None else model, val,
                                     context=context, num_classes=num_classes,
                                     amp_dtype=amp_dtype, channels_last=args.channels_last,
                                     progress=args.progress)
            records[-1].update(val_acc1=result["acc1"], val_acc5=result["acc5"],
                               val_loss=result["loss"])
            if best["acc1"] is None or result["acc1"] > best["acc1"]:
                best = {"acc1": result["acc1"], "epoch": done}
        pending.write(records)
        last_epoch_stats = records[-1]
        if saving:
            if context.is_main:
                state = ckpt.checkpoint_state(args, model, optimizer, scheduler, scaler, model_ema,
                                              done, best)
                ckpt.save_checkpoint(output_dir / ckpt.LAST, state)
                ckpt.save_checkpoint(output_dir / ckpt.checkpoint_name(args.model, experiment, done),
                                     state)
            barrier(context)
        pending.restart_clock()
    bar.close()
    if end_epoch < args.epochs:
        log(context, f"stopping after epoch {end_epoch} (--stop-after {args.stop_after}); "
                     "continue with --resume auto")
    metrics.close()
    # End to end: epoch boundaries, evaluation, logging and checkpoints included.
    loop_seconds = time.perf_counter() - loop_start
    samples = epochs_run * steps_per_epoch * args.batch_size * context.world_size
    end_to_end = samples / max(loop_seconds, 1e-9)
    log(context, f"{samples} training samples in {loop_seconds:.1f} s: "
                 f"{end_to_end:.1f} images/s end to end")
    summary = {"mode": args.mode, "model": args.model, "epochs": args.epochs,
               "num_classes": num_classes, "best_acc1": best["acc1"], "best_epoch": best["epoch"],
               "last": last_epoch_stats, "world_size": context.world_size,
               "train_seconds": loop_seconds, "train_samples": samples,
               "images_per_s_end_to_end": end_to_end,
               "replicas_identical": replicas_identical(model, context)}
    if not summary["replicas_identical"]:
        log(context, "warning: the model's copies differ between processes after training")
    if context.is_main:
        # the last checkpoint's weights as a Hub model folder, which timm loads alone
        export.export_run(output_dir, args, model, getattr(train_set, "classes", None))
        ckpt.atomic_write_text(output_dir / run_folder.SUMMARY, json.dumps(summary, indent=2) + "\n")
        if best["acc1"] is not None:
            log(context, f"best val top-1 {best['acc1']:.2f} at epoch {best['epoch']}; "
                         f"last {last_epoch_stats.get('val_acc1', math.nan):.2f}")
    return 0


def replicas_identical(model, context: Context) -> bool:
    """Whether every process ends with bit-identical parameters (DDP keeps them so; a
    difference means a rank diverged, e.g. through a non-deterministic collective)."""
    if not context.distributed:
        return True
    import torch.distributed as dist

    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    digest = torch.stack([flat.sum(), (flat * flat).sum(),
                          (flat * torch.arange(len(flat), device=flat.device, dtype=flat.dtype)).sum()])
    gathered = [torch.empty_like(digest) for _ in range(context.world_size)]
    dist.all_gather(gathered, digest)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def evaluate_checkpoint(args, context: Context) -> int:
    """`eval`: top-1/top-5 and per-class counts of a checkpoint on an image folder."""
    stored = {}
    path = Path(args.ckpt)
    if path.is_file():
        try:  # never unpickles code: a downloaded file is not trusted
            stored = pretrained.read_checkpoint_safely(path).get("args") or {}
        except ckpt.CheckpointError:
            stored = {}
    for key in EVAL_FROM_CHECKPOINT:
        if key in stored and key not in args.explicit:
            setattr(args, key, stored[key])
    # The head must fit the folder's classes: checked on its listing, before anything is decoded.
    option = "--val-dir" if args.val_dir else "--data-dir"
    classes = data_module.dataset_classes(args.dataset, val_root(args), option)
    model = create_model(args, len(classes))
    load_weights(args, model, context)
    _, val_set, num_classes = open_datasets(args, context)
    model.to(context.device)
    start = time.perf_counter()
    result = engine.evaluate(model, eval_loader(args, val_set, context), context=context,
                             num_classes=num_classes, amp_dtype=amp_dtype_for(args, context.device),
                             progress=args.progress)
    result["seconds"] = time.perf_counter() - start
    result["classes"] = val_set.classes
    if context.is_main:
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"top-1 {result['acc1']:.2f}  top-5 {result['acc5']:.2f}  loss {result['loss']:.4f}"
              f"  on {result['samples']} images of {num_classes} classes")
        for name, right, total in zip(val_set.classes, result["per_class_correct"],
                                      result["per_class_total"]):
            print(f"  {name}: {right}/{total}")
    return 0
