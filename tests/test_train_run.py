"""The trainer end to end on one CPU process: pretrain -> finetune -> eval, checkpoints, exact
resume, a non-finite loss, and every bad input's error before any training."""

import json

import pytest
import torch

from conftest import LIGHT_RECIPE, TINY_MODEL, poison_loss_from_call, read_metrics, run_train
from onepfrac.train import build, checkpoint, engine
from onepfrac.train.cli import main
from onepfrac.train.distributed import Context


def pretrain_args(data_dir, out, *extra):
    return ["pretrain", "--data-dir", str(data_dir), *TINY_MODEL, *LIGHT_RECIPE, "--batch-size", "4",
            "--output-dir", str(out), *extra]


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_pretraining_writes_released_format_checkpoints_and_a_metrics_line_per_epoch(pretrained_checkpoint):
    out = pretrained_checkpoint.parent
    state = torch.load(pretrained_checkpoint, map_location="cpu", weights_only=False)
    assert {"model", "optimizer", "lr_scheduler", "scaler", "epoch", "args", "rng"} <= set(state)
    assert state["epoch"] == 2 and not any(k.startswith("module.") for k in state["model"])
    assert state["model"]["head.weight"].shape[0] == 8
    assert (out / "vit_tiny_patch16_224_p4-d16x2-h2-16px_sigma3.5_perturb0.1_sample8_seed0_002ep.pth").is_file()
    records = read_metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]
    assert all({"train_loss", "lr", "images_per_s"} <= set(r) for r in records)


@pytest.mark.slow  # trains end to end
def test_finetuning_drops_the_pretrained_head_and_reports_top1_and_top5(tmp_path, pretrained_checkpoint, digits_folder):
    out = tmp_path / "fine"
    result = run_train(["finetune", "--data-dir", digits_folder, *TINY_MODEL, *LIGHT_RECIPE,
                        "--ckpt", pretrained_checkpoint, "--batch-size", "10", "--epochs", "2",
                        "--output-dir", out])
    assert result.returncode == 0, result.stderr
    assert "head.weight" in result.stdout and "dropped" in result.stdout
    records = read_metrics(out)
    assert all(0 <= r["val_acc1"] <= r["val_acc5"] <= 100 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_acc1"] == max(r["val_acc1"] for r in records)
    # End-to-end throughput: every sample of every epoch over the loop's wall time.
    assert summary["train_samples"] > 0 and summary["train_samples"] % (10 * len(records)) == 0
    assert summary["train_seconds"] > 0
    assert summary["images_per_s_end_to_end"] == pytest.approx(
        summary["train_samples"] / summary["train_seconds"])
    assert weights(out / "checkpoint_last.pth")["head.weight"].shape[0] == 10
    # The pre-trained trunk was loaded: the first block differs from a scratch model of the same seed.
    scratch = tmp_path / "scratch"
    result = run_train(["finetune", "--data-dir", digits_folder, *TINY_MODEL, *LIGHT_RECIPE,
                        "--batch-size", "10", "--epochs", "1", "--lr", "1e-12", "--output-dir", scratch])
    assert result.returncode == 0, result.stderr
    pretrained = weights(pretrained_checkpoint)["blocks.0.attn.qkv.weight"]
    assert not torch.equal(weights(scratch / "checkpoint_last.pth")["blocks.0.attn.qkv.weight"], pretrained)


@pytest.mark.slow  # trains end to end
def test_eval_reads_the_model_from_the_checkpoint_and_prints_per_class_counts(tmp_path, pretrained_checkpoint, digits_folder):
    fine = tmp_path / "fine"
    assert run_train(["finetune", "--data-dir", digits_folder, *TINY_MODEL, *LIGHT_RECIPE,
                      "--ckpt", pretrained_checkpoint, "--batch-size", "10", "--epochs", "1",
                      "--output-dir", fine]).returncode == 0
    result = run_train(["eval", "--ckpt", fine / "checkpoint_last.pth", "--data-dir", digits_folder,
                        "--workers", "0", "--device", "cpu", "--no-progress", "--output-dir", tmp_path / "ev"])
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("top-1 ") for line in result.stdout.splitlines())
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["samples"] == sum(report["per_class_total"]) == 1797 - 100
    finetune_last = read_metrics(fine)[-1]["val_acc1"]
    assert report["acc1"] == pytest.approx(finetune_last)


@pytest.mark.slow  # trains end to end
def test_resumed_run_reaches_the_same_weights_as_an_uninterrupted_one(tmp_path, train_fractal):
    full, part = tmp_path / "full", tmp_path / "part"
    extra = ["--aa", "rand-m9-mstd0.5-inc1", "--mixup", "0.8", "--cutmix", "1.0", "--reprob", "0.5",
             "--save-every", "1"]
    assert run_train(pretrain_args(train_fractal, full, "--epochs", "4", *extra)).returncode == 0
    stopped = run_train(pretrain_args(train_fractal, part, "--epochs", "4", "--stop-after", "2", *extra))
    assert stopped.returncode == 0 and "stopping after epoch 2" in stopped.stdout
    result = run_train(pretrain_args(train_fractal, part, "--epochs", "4", "--resume", "auto", *extra))
    assert result.returncode == 0, result.stderr
    assert "resuming after epoch 2" in result.stdout
    a, b = weights(full / "checkpoint_last.pth"), weights(part / "checkpoint_last.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    def untimed(records):
        return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]
    assert untimed(read_metrics(full)) == untimed(read_metrics(part))  # one line per epoch, same values


@pytest.mark.slow  # trains end to end
def test_dataloader_workers_do_not_change_the_result(tmp_path, train_fractal):
    zero, two = tmp_path / "zero", tmp_path / "two"
    assert run_train(pretrain_args(train_fractal, zero, "--epochs", "1", "--aa", "rand-m9-mstd0.5-inc1")).returncode == 0
    result = run_train(pretrain_args(train_fractal, two, "--epochs", "1", "--aa", "rand-m9-mstd0.5-inc1",
                                     "--workers", "2"))
    assert result.returncode == 0, result.stderr
    a, b = weights(zero / "checkpoint_last.pth"), weights(two / "checkpoint_last.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, train_fractal, monkeypatch, capsys):
    out = tmp_path / "out"
    poison_loss_from_call(monkeypatch, 5)  # 2 steps an epoch: NaN in epoch 3
    code = main(pretrain_args(train_fractal, out, "--epochs", "5", "--save-every", "1", "--check-every", "1"))
    err = capsys.readouterr().err
    assert code == 3 and "not finite at epoch 3" in err and "last good checkpoint" in err
    state = checkpoint.load_checkpoint(out / "checkpoint_last.pth")
    assert state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("extra, message", [
    (["--num-classes", "7"], "--num-classes 7 does not match the 8 classes"),
    (["--model", "vit_tiny_patch16_244"], "close matches: vit_tiny_patch16_224"),
    (["--batch-size", "16"], "more than the 8 images of one epoch"),
    (["--amp", "fp16"], "--amp: 'fp16' needs a CUDA device"),
    (["--resume", "nowhere.pth"], "--resume: 'nowhere.pth' does not exist"),
    (["--launcher", "mpi"], "not started by mpiexec"),
    (["--world-size", "2"], "--world-size 2 (NGPUS) does not match the 1 process"),
    (["--model-kwargs", "depth=two"], "--model-kwargs"),
])
def test_bad_inputs_fail_with_a_clear_error_before_training(tmp_path, train_fractal, capsys, extra, message):
    out = tmp_path / "out"
    code = main(pretrain_args(train_fractal, out, "--epochs", "1", *extra))
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (out / "metrics.jsonl").exists()


def test_missing_dataset_is_named(tmp_path, capsys):
    code = main(pretrain_args(tmp_path / "absent", tmp_path / "out", "--epochs", "1"))
    assert code == 2 and "--data-dir" in capsys.readouterr().err


def test_a_checkpoint_that_does_not_fit_the_model_lists_the_keys(tmp_path, digits_folder, capsys):
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"stem.conv.weight": torch.zeros(3), "blocks.0.norm1.weight": torch.zeros(16)}}, bad)
    code = main(["finetune", "--data-dir", str(digits_folder), *TINY_MODEL, *LIGHT_RECIPE,
                 "--ckpt", str(bad), "--batch-size", "10", "--epochs", "1", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "stem.conv.weight" in err


@pytest.mark.slow  # trains end to end
def test_freezing_blocks_leaves_their_weights_untouched(tmp_path, pretrained_checkpoint, digits_folder):
    out = tmp_path / "frozen"
    result = run_train(["finetune", "--data-dir", digits_folder, *TINY_MODEL, *LIGHT_RECIPE,
                        "--ckpt", pretrained_checkpoint, "--freeze-blocks", "1", "--batch-size", "10",
                        "--epochs", "1", "--output-dir", out])
    assert result.returncode == 0, result.stderr
    before, after = weights(pretrained_checkpoint), weights(out / "checkpoint_last.pth")
    assert torch.equal(before["blocks.0.mlp.fc1.weight"], after["blocks.0.mlp.fc1.weight"])
    assert torch.equal(before["pos_embed"], after["pos_embed"])
    assert not torch.equal(before["blocks.1.mlp.fc1.weight"], after["blocks.1.mlp.fc1.weight"])


def test_released_weight_decay_reaches_pos_embed_unless_asked_otherwise():
    import argparse

    import timm

    model = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2)
    context = Context("none", 0, 1, 0, torch.device("cpu"), None)

    def decay_of_pos_embed(decay_pos_embed):
        args = argparse.Namespace(decay_pos_embed=decay_pos_embed, weight_decay=0.05, opt="adamw", lr=1e-3,
                                  batch_size=32, lr_base_batch=512, momentum=0.9, opt_eps=1e-8)
        optimizer = build.create_optimizer(args, model, context)
        return next(g["weight_decay"] for g in optimizer.param_groups
                    if any(p is model.pos_embed for p in g["params"]))

    assert decay_of_pos_embed(True) == 0.05 and decay_of_pos_embed(False) == 0.0


def test_fused_optimizer_takes_the_same_step_as_the_default_one():
    import argparse

    import timm

    context = Context("none", 0, 1, 0, torch.device("cpu"), None)
    weights = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=16,
                                  depth=1, num_heads=2, num_classes=3)
        args = argparse.Namespace(decay_pos_embed=True, weight_decay=0.05, opt="adamw", lr=1e-2,
                                  batch_size=32, lr_base_batch=512, momentum=0.9, opt_eps=1e-8,
                                  fused_opt=fused)
        optimizer = build.create_optimizer(args, model, context)
        assert optimizer.defaults.get("fused") is (True if fused else None)
        for _ in range(3):
            model(torch.rand(4, 3, 16, 16)).logsumexp(1).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-5)  # rounding only


def test_mixup_chunks_draw_one_lambda_per_chunk():
    from timm.data import Mixup

    torch.manual_seed(0)
    import numpy as np
    np.random.seed(0)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, num_classes=4, label_smoothing=0.0)
    images, targets = torch.rand(8, 3, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    _, mixed = engine.mix(mixup, images, targets, chunk=4)
    lambdas = mixed.max(dim=1).values
    assert lambdas[:4].unique().numel() == 1 and lambdas[4:].unique().numel() == 1
    assert lambdas[0] != lambdas[4]


def test_learning_rate_is_scaled_by_total_batch_over_512():
    import argparse

    args = argparse.Namespace(batch_size=32, lr_base_batch=512)
    context = Context("torchrun", 0, 8, 0, torch.device("cpu"), "gloo")
    assert build.scaled(1e-3, args, context) == pytest.approx(5e-4)


@pytest.mark.slow  # trains end to end
def test_device_pipeline_trains_and_resumes_exactly(tmp_path, train_fractal):
    full, part = tmp_path / "full", tmp_path / "part"
    extra = ["--data-pipeline", "device", "--aa", "rand-m9-mstd0.5-inc1", "--mixup", "0.8",
             "--cutmix", "1.0", "--reprob", "0.5", "--save-every", "1"]
    result = run_train(pretrain_args(train_fractal, full, "--epochs", "3", *extra))
    assert result.returncode == 0, result.stderr
    assert "data pipeline: device (asked for" in result.stdout
    assert run_train(pretrain_args(train_fractal, part, "--epochs", "3", "--stop-after", "1", *extra)).returncode == 0
    assert run_train(pretrain_args(train_fractal, part, "--epochs", "3", "--resume", "auto", *extra)).returncode == 0
    a, b = weights(full / "checkpoint_last.pth"), weights(part / "checkpoint_last.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_device_pipeline_needs_the_dataset_in_memory(tmp_path, train_fractal, capsys):
    code = main(pretrain_args(train_fractal, tmp_path / "o", "--epochs", "1", "--data-pipeline", "device",
                              "--in-memory", "never"))
    assert code == 2 and "--data-pipeline device needs the dataset decoded in memory" in capsys.readouterr().err


@pytest.mark.slow  # trains end to end
def test_auto_pipeline_uses_the_loader_on_a_cpu(tmp_path, train_fractal):
    result = run_train(pretrain_args(train_fractal, tmp_path / "o", "--epochs", "1"))
    assert result.returncode == 0 and "data pipeline: loader with 0 worker(s) per process (auto: no GPU" in result.stdout


@pytest.mark.slow  # trains end to end
def test_pretraining_on_the_fly_equals_pretraining_on_the_generated_files(tmp_path, train_fractal):
    files, rendered = tmp_path / "files", tmp_path / "rendered"
    assert run_train(pretrain_args(train_fractal, files, "--epochs", "1")).returncode == 0
    args = pretrain_args(train_fractal, rendered, "--epochs", "1")
    args[args.index("--data-dir"):args.index("--data-dir") + 2] = [
        "--render", "1p-frac", "--render-kwargs", "samples=8", "seed=0", "size=64", "points=3000", "pad=2"]
    result = run_train(args)
    assert result.returncode == 0, result.stderr
    a, b = weights(files / "checkpoint_last.pth"), weights(rendered / "checkpoint_last.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_rendering_an_unknown_dataset_or_option_is_named(tmp_path, capsys):
    base = ["pretrain", *TINY_MODEL, "--batch-size", "4", "--epochs", "1", "--output-dir", str(tmp_path / "o")]
    assert main([*base, "--render", "mandelbrot"]) == 2
    assert "--render: 'mandelbrot' is not one of" in capsys.readouterr().err
    assert main([*base, "--render", "fractaldb", "--render-kwargs", "colour=3"]) == 2
    assert "--render-kwargs" in capsys.readouterr().err
