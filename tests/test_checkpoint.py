"""Checkpoint formats, head dropping, embedding resampling and atomic saves, on tiny timm ViTs (CPU)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from onepfrac.train import checkpoint, pretrained  # noqa: E402
from onepfrac.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from onepfrac.train.pretrained import load_pretrained, read_state_dict  # noqa: E402

TINY = dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2)


def tiny_vit(num_classes=10, seed=0, **overrides):
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", num_classes=num_classes, **{**TINY, **overrides}).eval()


def same_outputs(a, b, size=32) -> bool:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


def classy_checkpoint(model) -> dict:
    """A ClassyVision checkpoint of `model`'s weights, laid out and named as ClassyVision's ViT."""
    trunk = {}
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            continue
        key = (key.replace("patch_embed.proj.", "conv_proj.").replace("cls_token", "class_token")
               .replace("norm1.", "ln_1.").replace("norm2.", "ln_2.")
               .replace("attn.qkv.weight", "self_attention.in_proj_weight")
               .replace("attn.qkv.bias", "self_attention.in_proj_bias")
               .replace("attn.proj.", "self_attention.out_proj.")
               .replace("mlp.fc1.", "mlp.linear_1.").replace("mlp.fc2.", "mlp.linear_2."))
        if key.startswith("blocks."):
            key = "encoder.layers.layer_" + key[len("blocks."):]
        elif key.startswith("norm."):
            key = "encoder.ln." + key[len("norm."):]
        elif key == "pos_embed":
            key, value = "encoder.pos_embedding", value.permute(1, 0, 2)  # ClassyVision: (seq, 1, dim)
        trunk[key] = value.clone()
    heads = {"block": {"default_head": {"layers.head.weight": model.head.weight.clone(),
                                        "layers.head.bias": model.head.bias.clone()}}}
    return {"classy_state_dict": {"base_model": {"model": {"trunk": trunk, "heads": heads}}}, "train": True}


# ---------------------------------------------------------------- formats round trip

def write(path: Path, kind: str, model) -> Path:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if kind == "released":  # the released 1p-frac trainer's dict
        torch.save({"model": state, "optimizer": {}, "lr_scheduler": {}, "scaler": None, "epoch": 80000}, path)
    elif kind == "timm":  # timm's train.py: state_dict (+ EMA) and args as a Namespace
        torch.save({"epoch": 9, "arch": "vit", "state_dict": state, "state_dict_ema": state,
                    "args": argparse.Namespace(lr=1e-3, output=Path("runs"))}, path)
    elif kind == "classy":
        torch.save(classy_checkpoint(model), path)
    elif kind == "bare":
        torch.save(state, path)
    elif kind == "safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


@pytest.mark.parametrize("kind, suffix", [("released", ".pth"), ("timm", ".pth.tar"), ("classy", ".torch"),
                                          ("bare", ".pth"), ("safetensors", ".safetensors")])
def test_every_format_round_trips_to_identical_outputs(tmp_path, kind, suffix):
    source = tiny_vit(seed=1)
    path = write(tmp_path / f"weights{suffix}", kind, source)
    target = tiny_vit(seed=2)
    assert not same_outputs(source, target)
    report = load_pretrained(target, path)
    assert same_outputs(source, target)
    assert report["dropped"] == [] and report["resampled"] == {}
    assert report["loaded"] == len(source.state_dict())


def test_safetensors_are_recognised_without_their_suffix(tmp_path):
    model = tiny_vit()
    path = write(tmp_path / "drive-1D9uQbvh", "safetensors", model)
    assert torch.equal(read_state_dict(path)["pos_embed"], model.pos_embed)


def test_vissl_trunk_prefixes_are_stripped_and_unmappable_heads_noted():
    source = tiny_vit(seed=1)
    trunk = {f"_feature_blocks.{k}": v for k, v in source.state_dict().items() if not k.startswith("head.")}
    heads = {"0.clf.0.weight": torch.zeros(5, 32), "0.clf.0.bias": torch.zeros(5)}
    obj = {"classy_state_dict": {"base_model": {"model": {"trunk": trunk, "heads": heads}}}}
    target = tiny_vit(seed=2)
    report = load_pretrained(target, obj)
    assert report["format"] == "ClassyVision .torch (trunk, names kept)"
    assert any("heads not loaded" in note for note in report["notes"])
    assert torch.equal(target.pos_embed, source.pos_embed)


def test_read_state_dict_accepts_an_already_loaded_object():
    model = tiny_vit()
    for obj in ({"model": model.state_dict()}, model.state_dict(), model):
        assert read_state_dict(obj).keys() == model.state_dict().keys()


def test_auto_prefers_the_non_ema_weights_and_ema_can_be_chosen(tmp_path):
    plain, ema = tiny_vit(seed=1), tiny_vit(seed=2)
    path = tmp_path / "both.pth.tar"
    torch.save({"state_dict": plain.state_dict(), "state_dict_ema": ema.state_dict()}, path)
    for which, expected in [("auto", plain), ("state_dict", plain), ("model", plain),
                            ("ema", ema), ("state_dict_ema", ema)]:
        assert torch.equal(read_state_dict(path, which)["pos_embed"], expected.pos_embed), which


def test_deit_model_ema_entry_counts_as_ema():
    plain, ema = tiny_vit(seed=1), tiny_vit(seed=2)
    loaded = read_state_dict({"model": plain.state_dict(), "model_ema": ema.state_dict()}, "ema")
    assert torch.equal(loaded["cls_token"], ema.cls_token)


def test_asking_for_a_missing_ema_names_the_entries_present():
    with pytest.raises(CheckpointError, match="state_dict_ema.*entries model, epoch"):
        read_state_dict({"model": tiny_vit().state_dict(), "epoch": 3}, "ema")


def test_unknown_which_is_refused():
    with pytest.raises(CheckpointError, match="which='best'"):
        read_state_dict(tiny_vit().state_dict(), "best")


def test_module_and_compile_prefixes_are_stripped(tmp_path):
    source = tiny_vit(seed=1)
    wrapped = {f"module._orig_mod.{k}": v for k, v in source.state_dict().items()}
    torch.save({"model": wrapped}, tmp_path / "ddp.pth")
    target = tiny_vit(seed=2)
    load_pretrained(target, tmp_path / "ddp.pth")
    assert same_outputs(source, target)


def test_a_ddp_wrapped_model_receives_the_weights():
    source, target = tiny_vit(seed=1), tiny_vit(seed=2)
    load_pretrained(torch.nn.DataParallel(target), source.state_dict())
    assert same_outputs(source, target)


def test_files_with_arbitrary_objects_need_trust_pickle(tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"model": tiny_vit().state_dict(), "config": torch.nn.ReLU()}, path)
    with pytest.raises(CheckpointError, match="type torch.nn.modules.activation.ReLU.*trust_pickle=True"):
        read_state_dict(path)
    assert "pos_embed" in read_state_dict(path, trust_pickle=True)


# ---------------------------------------------------------------- heads and embeddings

def test_head_is_dropped_when_the_number_of_classes_differs():
    source = tiny_vit(num_classes=1000, seed=1)
    target = tiny_vit(num_classes=100, seed=2)
    fresh_head = target.head.weight.clone()
    report = load_pretrained(target, {"model": source.state_dict()})
    assert report["dropped"] == ["head.weight", "head.bias"]
    assert torch.equal(target.head.weight, fresh_head)
    assert torch.equal(target.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)


def test_head_of_equal_shape_is_kept_unless_dropping_is_forced():
    source = tiny_vit(seed=1)
    kept = tiny_vit(seed=2)
    load_pretrained(kept, source.state_dict())
    assert torch.equal(kept.head.weight, source.head.weight)
    forced = tiny_vit(seed=2)
    report = load_pretrained(forced, source.state_dict(), drop_head=True)
    assert report["dropped"] == ["head.weight", "head.bias"]
    assert not torch.equal(forced.head.weight, source.head.weight)


def test_head_of_other_shape_raises_when_dropping_is_disabled():
    with pytest.raises(CheckpointError, match=r"head\.weight: checkpoint \(1000, 32\) vs model \(10, 32\)"):
        load_pretrained(tiny_vit(), tiny_vit(num_classes=1000).state_dict(), drop_head=False)


def test_headless_model_takes_a_checkpoint_with_a_head():
    source = tiny_vit(seed=1)
    target = tiny_vit(num_classes=0, seed=2)
    report = load_pretrained(target, source.state_dict())
    assert report["dropped"] == ["head.weight", "head.bias"]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(target(x), source.forward_head(source.forward_features(x), pre_logits=True))


def test_distilled_heads_are_dropped_together():
    source = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=1000, **TINY)
    target = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=7, **TINY)
    report = load_pretrained(target, source.state_dict())
    assert sorted(report["dropped"]) == ["head.bias", "head.weight", "head_dist.bias", "head_dist.weight"]


def test_224_patch16_weights_resample_into_a_32_patch4_model():
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", num_classes=1000, embed_dim=32, depth=2, num_heads=2)
    target = tiny_vit(num_classes=100, seed=1)
    report = load_pretrained(target, {"model": source.state_dict()})
    assert report["resampled"] == {"pos_embed": ((1, 197, 32), (1, 65, 32)),
                                   "patch_embed.proj.weight": ((32, 3, 16, 16), (32, 3, 4, 4))}
    # the class token's position embedding is carried over, not interpolated
    assert torch.equal(target.pos_embed[0, 0], source.pos_embed[0, 0])
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert torch.isfinite(target(torch.randn(1, 3, 32, 32))).all()


def test_resampled_position_embeddings_follow_the_grid():
    source = tiny_vit(num_classes=10, img_size=64, seed=1)  # grid 16 x 16
    with torch.no_grad():  # a smooth ramp along x survives bicubic down-sampling
        ramp = torch.linspace(-1, 1, 16).repeat(16)
        source.pos_embed[0, 1:] = ramp[:, None].expand(-1, 32)
    target = tiny_vit(num_classes=10, seed=2)  # grid 8 x 8
    load_pretrained(target, source.state_dict())
    grid = target.pos_embed[0, 1:, 0].reshape(8, 8)
    assert (grid[:, 1:] > grid[:, :-1]).all() and torch.allclose(grid[0], grid[7])


# ---------------------------------------------------------------- mismatches

def test_a_checkpoint_of_another_architecture_raises_listing_keys_and_loads_nothing():
    source = tiny_vit(depth=3, seed=1)
    target = tiny_vit(depth=2, seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as caught:
        load_pretrained(target, {"model": source.state_dict()})
    message = str(caught.value)
    assert "unexpected in the checkpoint (12): blocks.2.norm1.weight" in message
    assert "nothing was loaded" in message and "3 blocks, width 32; model: 2 blocks, width 32" in message
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in before.items())


def test_missing_keys_are_listed_and_long_lists_truncated():
    state = tiny_vit(depth=2).state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("blocks.")}
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint \(24\): blocks\.0\..*and 12 more"):
        load_pretrained(tiny_vit(depth=2), partial)


def test_a_width_mismatch_is_reported_as_shapes():
    with pytest.raises(CheckpointError, match=r"shape mismatch .*cls_token: checkpoint \(1, 1, 64\)"):
        load_pretrained(tiny_vit(), tiny_vit(embed_dim=64).state_dict())


def test_missing_and_corrupt_files_raise_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_state_dict(tmp_path / "absent.pth")
    good = tmp_path / "good.pth"
    torch.save({"model": tiny_vit().state_dict()}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        read_state_dict(cut)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_state_dict(garbage)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


# ---------------------------------------------------------------- training checkpoints

def training_state(model) -> dict:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    import numpy as np
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
            "args": {"lr": 1e-3}, "rng": {"torch": torch.get_rng_state(),
                                           "numpy": np.random.get_state()}}


def test_save_then_load_restores_a_training_checkpoint(tmp_path):
    model = tiny_vit()
    state = training_state(model)
    path = tmp_path / "runs" / "deep" / "checkpoint.pth"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["args"] == {"lr": 1e-3}
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    # a training checkpoint is also a weights file in the released format
    target = tiny_vit(seed=5)
    load_pretrained(target, path)
    assert same_outputs(model, target)
    assert os.listdir(path.parent) == ["checkpoint.pth"]


def test_a_failure_mid_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(path, {"epoch": 1})
    before = path.read_bytes()

    def failing_save(obj, stream, *args, **kwargs):
        stream.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


def test_our_training_checkpoints_read_safely_without_unpickling_code(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(path, training_state(tiny_vit()))
    assert pretrained.read_checkpoint_safely(path)["args"] == {"lr": 1e-3}


def test_loading_a_missing_or_truncated_training_checkpoint_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pth")
    path = tmp_path / "cut.pth"
    save_checkpoint(path, {"model": tiny_vit().state_dict(), "epoch": 1})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cut\.pth: corrupt or truncated"):
        load_checkpoint(path)


# ---------------------------------------------------------------- weights_only and the first format

def test_a_checkpoint_of_the_trainer_loads_with_weights_only(pretrained_checkpoint):
    state = torch.load(pretrained_checkpoint, map_location="cpu", weights_only=True)
    assert state["format"] == checkpoint.FORMAT and state["epoch"] == 2
    assert isinstance(state["rng"]["numpy"]["key"], torch.Tensor)


def test_rng_states_are_plain_data_and_restore_exactly(tmp_path):
    import random

    import numpy as np

    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    random.gauss(0, 1), np.random.standard_normal()  # each keeps a cached second normal
    path = tmp_path / "rng.pth"
    save_checkpoint(path, {"rng": checkpoint.rng_state()})
    expected = random.gauss(0, 1), np.random.standard_normal(), np.random.rand(), torch.rand(3)
    checkpoint.set_rng_state(torch.load(path, weights_only=True)["rng"])
    drawn = random.gauss(0, 1), np.random.standard_normal(), np.random.rand(), torch.rand(3)
    assert expected[:3] == drawn[:3] and torch.equal(expected[3], drawn[3])


def first_format(state: dict) -> dict:
    """`state` as format /1 wrote it: the RNG states as random's and numpy's own tuples."""
    import random

    import numpy as np

    checkpoint.set_rng_state(state["rng"])
    return {**state, "format": "onepfrac-checkpoint/1",
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                    "torch": torch.get_rng_state(), "cuda": None}}


def test_a_first_format_checkpoint_is_read_as_data_and_its_rng_restored(tmp_path):
    import numpy as np

    path = tmp_path / "old.pth"
    state = first_format({"model": tiny_vit().state_dict(), "epoch": 1, "rng": checkpoint.rng_state()})
    save_checkpoint(path, state)
    with pytest.raises(Exception, match="weights_only"):
        torch.load(path, weights_only=True)
    loaded = load_checkpoint(path)
    assert loaded["format"] == "onepfrac-checkpoint/1"
    assert checkpoint.read_progress(path)["epoch"] == 1
    checkpoint.set_rng_state(loaded["rng"])
    first = np.random.rand()
    checkpoint.set_rng_state(loaded["rng"])
    assert np.random.rand() == first


def test_a_checkpoint_holding_code_is_refused_for_resume(tmp_path):
    path = tmp_path / "odd.pth"
    save_checkpoint(path, {"epoch": 1, "args": argparse.ArgumentParser})
    with pytest.raises(CheckpointError, match=r"odd\.pth: holds a Python object of type .*ArgumentParser"):
        load_checkpoint(path)


@pytest.mark.slow  # trains end to end
def test_a_run_stopped_in_the_first_format_resumes_exactly(tmp_path, train_fractal):
    from conftest import LIGHT_RECIPE, TINY_MODEL, run_train

    def train(out, *extra):
        result = run_train(["pretrain", "--data-dir", train_fractal, *TINY_MODEL, *LIGHT_RECIPE,
                            "--batch-size", "4", "--epochs", "2", "--output-dir", out, *extra])
        assert result.returncode == 0, result.stderr
        return result

    full, part = tmp_path / "full", tmp_path / "part"
    train(full)
    train(part, "--stop-after", "1")
    last = part / checkpoint.LAST
    save_checkpoint(last, first_format(torch.load(last, weights_only=True)))
    assert "resuming after epoch 1" in train(part, "--resume", "auto").stdout
    a, b = (torch.load(d / checkpoint.LAST, weights_only=True)["model"] for d in (full, part))
    assert all(torch.equal(a[k], b[k]) for k in a)
