"""Linear probing (`python -m onepfrac.train.probe`): features of blocks 1..k and of the full
model from a frozen backbone, one linear classifier per depth, one metrics line per depth."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import timm
import torch

from conftest import read_metrics, train_env
from onepfrac.errors import UsageError
from onepfrac.train import probe

TINY_KWARGS = dict(patch_size=4, embed_dim=16, depth=2, num_heads=2)
TINY_ARGS = dict(model="vit_tiny_patch16_224", img_size=16, model_kwargs=TINY_KWARGS,
                 mean=[0.5] * 3, std=[0.5] * 3, interpolation="bicubic", crop_pct=0.875)
QUIET = ["--device", "cpu", "--no-progress"]


def tiny_vit(seed=0, num_classes=8):
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", img_size=16, num_classes=num_classes,
                             **TINY_KWARGS).eval()


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """A randomly initialised tiny ViT in this project's checkpoint layout (weights + args)."""
    path = tmp_path_factory.mktemp("random_vit") / "checkpoint_last.pth"
    torch.save({"model": tiny_vit().state_dict(), "args": TINY_ARGS}, path)
    return path


def run_probe(capsys, *argv):
    capsys.readouterr()
    code = probe.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_probe_on_digits_beats_chance_by_a_wide_margin_even_with_random_features(
        tmp_path, capsys, random_checkpoint, digits_folder):
    # Measured with 100 epochs on these 100 training digits: 36-45% val top-1 at every depth
    # over five random initialisations; 25% (2.5x chance) leaves room for platform noise.
    out = tmp_path / "probe"
    code, stdout, err = run_probe(capsys, "--ckpt", random_checkpoint, "--data-dir", digits_folder,
                                  "--blocks", "1", "2", "full", "--output-dir", out, *QUIET)
    assert code == 0, err
    records = read_metrics(out)
    assert [r["probe"] for r in records] == ["block1", "block2", "full"]
    for record in records:
        assert record["val_acc1"] > 25.0, record
        assert record["val_acc1"] <= record["val_acc5"] <= 100.0
        assert record["feature_dim"] == 16 and record["epochs"] == 100
        assert record["num_train"] == 100 and record["num_val"] == 1797 - 100
    assert "block2" in stdout and "val@1" in stdout


def test_metrics_has_one_line_per_requested_depth_in_the_order_asked(
        tmp_path, capsys, random_checkpoint, digits_folder):
    out = tmp_path / "probe"
    code, _, err = run_probe(capsys, "--ckpt", random_checkpoint, "--data-dir", digits_folder,
                             "--blocks", "full", "2", "full", "--epochs", "2",
                             "--output-dir", out, *QUIET)
    assert code == 0, err
    records = read_metrics(out)
    assert [r["probe"] for r in records] == ["full", "block2"]  # a repeated depth is probed once
    assert {"probe", "feature_dim", "train_acc1", "val_acc1", "val_acc5", "epochs"} <= set(records[0])


def test_block_k_features_equal_a_manual_forward_through_the_first_k_blocks():
    model = tiny_vit()
    images = torch.randn(3, 3, 16, 16)
    probes = probe.probe_depths(["1", "2", "full"], model, "tiny")
    features = probe.batch_features(model, images, probes)
    with torch.no_grad():
        x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(images))))
        for k, block in enumerate(model.blocks, start=1):
            x = block(x)
            expected = torch.nn.functional.layer_norm(x[:, 0], (16,))  # class token, no affine
            torch.testing.assert_close(features[f"block{k}"], expected)
        full = model.forward_head(model.norm(x), pre_logits=True)
    torch.testing.assert_close(features["full"], full)
    # Without forward_intermediates (older timm), the block-by-block path gives the same.
    class WithoutIntermediates:
        def __getattr__(self, name):
            if name == "forward_intermediates":
                raise AttributeError(name)
            return getattr(model, name)
    fallback = probe.batch_features(WithoutIntermediates(), images, probes)
    for name in features:
        torch.testing.assert_close(fallback[name], features[name])


def test_models_without_a_class_token_are_probed_on_the_mean_patch_token():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=16, num_classes=0,
                              class_token=False, global_pool="avg", **TINY_KWARGS).eval()
    images = torch.randn(2, 3, 16, 16)
    features = probe.batch_features(model, images, probe.probe_depths(["1"], model, "tiny"))
    with torch.no_grad():
        x = model.blocks[0](model.norm_pre(model._pos_embed(model.patch_embed(images))))
    torch.testing.assert_close(features["block1"], torch.nn.functional.layer_norm(x.mean(1), (16,)))


def test_the_backbone_is_unchanged_after_probing(digits_folder):
    from onepfrac.train import data

    model = tiny_vit(num_classes=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = SimpleNamespace(epochs=3, lr=0.03, weight_decay=1e-4, opt="adamw", batch_size=64,
                           eval_every=1, seed=0, progress=False, verbose=False,
                           **{k: v for k, v in TINY_ARGS.items() if k != "model_kwargs"})
    transform = data.eval_transform(args)
    loaders = [torch.utils.data.DataLoader(
        data.EvalSamples(data.open_folder(digits_folder / split, "--data-dir"), transform),
        batch_size=64) for split in ("train", "val")]
    probes = probe.probe_depths(["1", "full"], model, "tiny")
    records = probe.probe_model(model, *loaders, probes, 10, args, torch.device("cpu"),
                                log=lambda _: None)
    assert len(records) == 2
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("value, expected", [
    ("3", "--blocks: 3 is out of range; vit_tiny_patch16_224 has 2 blocks (allowed 1..2 or full)"),
    ("0", "--blocks: 0 is out of range; vit_tiny_patch16_224 has 2 blocks"),
    ("last", "--blocks: 'last' is not a block number or 'full'"),
])
def test_a_block_out_of_range_stops_before_any_work_naming_the_models_depth(
        tmp_path, capsys, random_checkpoint, digits_folder, value, expected):
    out = tmp_path / "probe"
    code, stdout, err = run_probe(capsys, "--ckpt", random_checkpoint, "--data-dir", digits_folder,
                                  "--blocks", value, "--output-dir", out, *QUIET)
    assert code == 2
    assert err.startswith("error: " + expected) and err.count("\n") == 1
    assert not out.exists() and stdout == ""


def test_the_default_depths_are_the_papers_1_2_3_and_full_less_blocks_the_model_lacks():
    assert probe.default_depths(tiny_vit()) == ["1", "2", "full"]
    assert probe.default_depths(torch.nn.Linear(2, 2)) == ["full"]


def test_a_model_without_blocks_can_only_be_probed_in_full():
    with pytest.raises(UsageError, match="a_cnn has no transformer `blocks`"):
        probe.probe_depths(["1"], torch.nn.Linear(2, 2), "a_cnn")
    assert probe.probe_depths(["full"], torch.nn.Linear(2, 2), "a_cnn") == [("full", None)]


def test_missing_checkpoint_or_dataset_exits_2_with_one_error_line(
        tmp_path, capsys, random_checkpoint, digits_folder):
    code, _, err = run_probe(capsys, "--ckpt", tmp_path / "nope.pth", "--data-dir", digits_folder,
                             *QUIET)
    assert code == 2 and err.startswith("error: --ckpt") and err.count("\n") == 1
    code, _, err = run_probe(capsys, "--ckpt", random_checkpoint, "--data-dir", tmp_path / "none",
                             *QUIET)
    assert code == 2 and err.startswith("error: --data-dir") and err.count("\n") == 1


def test_a_foreign_checkpoint_needs_model_and_then_loads_with_its_head_dropped(
        tmp_path, capsys, digits_folder):
    bare = tmp_path / "bare.pth"
    torch.save(tiny_vit(num_classes=1000).state_dict(), bare)
    code, _, err = run_probe(capsys, "--ckpt", bare, "--data-dir", digits_folder, *QUIET)
    assert code == 2 and err.startswith("error: --model:") and err.count("\n") == 1
    code, stdout, err = run_probe(capsys, "--ckpt", bare, "--data-dir", digits_folder,
                                  "--model", "vit_tiny_patch16_224", "--img-size", "16",
                                  "--model-kwargs", *[f"{k}={v}" for k, v in TINY_KWARGS.items()],
                                  "--blocks", "full", "--epochs", "2",
                                  "--output-dir", tmp_path / "probe", *QUIET)
    assert code == 0, err
    assert "head dropped: head.weight, head.bias" in stdout


@pytest.mark.slow  # trains end to end
def test_the_command_reads_model_and_input_options_from_a_trained_checkpoint(
        tmp_path, pretrained_checkpoint, digits_folder):
    out = tmp_path / "probe"
    result = subprocess.run(
        [sys.executable, "-m", "onepfrac.train.probe", "--ckpt", str(pretrained_checkpoint),
         "--data-dir", str(digits_folder), "--epochs", "5", "--blocks", "1", "2", "full",
         "--output-dir", str(out), *QUIET],
        capture_output=True, text=True, timeout=120, env=train_env())
    assert result.returncode == 0, result.stderr
    assert "into vit_tiny_patch16_224" in result.stdout
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["probe"] for line in lines] == ["block1", "block2", "full"]
    assert all(json.loads(line)["feature_dim"] == 16 for line in lines)
