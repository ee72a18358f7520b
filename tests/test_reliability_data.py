"""Nothing silently wrong, nothing lost: the data and evaluation side of the trainer (issue 17).

Each case is a mistake a demanding user makes: a stray hidden folder, an empty class, an
interrupted or altered generated dataset, an undecodable image, a checkpoint whose head or
architecture does not fit. Each must end with the right exit code and one line on stderr that
names the option or the file, before anything is written to the output folder.
"""

import json
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from conftest import (LIGHT_RECIPE, TINY_MODEL, dataset_dir, interrupt_in_process, run_train,
                      snapshot, tiny_args, train_env)
from onepfrac import generate
from onepfrac.train import data, pretrained, probe, trainer
from onepfrac.train.checkpoint import CheckpointError
from onepfrac.train.cli import main

TINY_KWARGS = dict(patch_size=4, embed_dim=16, depth=2, num_heads=2)
RUN = ["--workers", "0", "--device", "cpu", "--no-progress", "--amp", "none"]


# ---------------------------------------------------------------- helpers

def make_folder(root, classes=3, per_class=4, size=16, first=0):
    """An ImageFolder of gray PNGs: classes {first:05d}.. with per_class images each."""
    for c in range(first, first + classes):
        folder = root / f"{c:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("L", (size, size), (c * 37 + i * 11) % 256).save(folder / f"{i}.png")
    return root


def tiny_vit(num_classes=3, **kwargs):
    return timm.create_model("vit_tiny_patch16_224", img_size=16, num_classes=num_classes,
                             **{**TINY_KWARGS, **kwargs})


def save_weights(path, num_classes=3, **kwargs):
    """A fine-tuned-looking checkpoint: weights with a head, and the arguments eval reads back."""
    model_kwargs = {**TINY_KWARGS, **kwargs}
    torch.save({"model": tiny_vit(num_classes, **kwargs).state_dict(),
                "args": {"model": "vit_tiny_patch16_224", "img_size": 16,
                         "model_kwargs": model_kwargs}}, path)
    return path


def refused(code, err, needles, expected_code=2):
    """The run ended with `expected_code` and exactly one stderr line holding every needle."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def run_main(argv, capsys):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def eval_args(ckpt, out, *data_args):
    return ["eval", "--ckpt", ckpt, *data_args, *RUN, "--output-dir", out]


def pretrain_args(data_dir, out, *extra):
    return ["pretrain", "--data-dir", data_dir, *TINY_MODEL, *LIGHT_RECIPE, "--batch-size", "4",
            "--epochs", "1", "--output-dir", out, *extra]


def truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])


@pytest.fixture
def split_folder(tmp_path):
    """train/ and val/ of 3 classes each, 4 images a class."""
    root = tmp_path / "split"
    make_folder(root / "train")
    make_folder(root / "val")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real training checkpoint: the tiny ViT pre-trained 1 epoch on 3 classes."""
    base = tmp_path_factory.mktemp("trained")
    make_folder(base / "data")
    out = base / "out"
    assert main([str(a) for a in pretrain_args(base / "data", out)]) == 0
    return out / "checkpoint_last.pth"


@pytest.fixture(scope="module")
def partial_dataset(tmp_path_factory):
    """A 1p-frac whose generation was interrupted after 2 of 6 classes (no manifest.json)."""
    base = tmp_path_factory.mktemp("partial")
    patch = pytest.MonkeyPatch()
    capture = _Capsys()
    try:
        code, _, _ = interrupt_in_process(tiny_args(base, 6, 0), capture, patch, after=2)
    finally:
        patch.undo()
    assert code == 130
    root = dataset_dir(base, samples=6)
    assert (root / generate.PARTIAL).exists() and not (root / generate.MANIFEST).exists()
    return root


class _Capsys:
    """The part of capsys interrupt_in_process uses, for a module-scoped fixture."""

    def readouterr(self):
        return "", ""


# ---------------------------------------------------------------- 1. eval never drops a head

@pytest.mark.parametrize("classes_in_folder", [4, 2])  # more and fewer classes than the head
def test_eval_refuses_a_folder_whose_class_count_differs_from_the_head(tmp_path, capsys, classes_in_folder):
    ckpt = save_weights(tmp_path / "fine.pth", num_classes=3)
    make_folder(tmp_path / "val", classes=classes_in_folder)
    out = tmp_path / "ev"
    code, _, err = run_main(eval_args(ckpt, out, "--val-dir", tmp_path / "val"), capsys)
    refused(code, err, ["--ckpt", "head has 3 classes", f"--val-dir '{tmp_path / 'val'}' has "
                        f"{classes_in_folder}"])
    assert not out.exists()


def test_eval_names_data_dir_when_the_folder_came_from_it(tmp_path, capsys, split_folder):
    ckpt = save_weights(tmp_path / "fine.pth", num_classes=10)
    code, _, err = run_main(eval_args(ckpt, tmp_path / "ev", "--data-dir", split_folder), capsys)
    refused(code, err, ["head has 10 classes", "--data-dir", "has 3"])


def test_eval_ignores_a_stray_hidden_folder_and_scores_the_trained_head(tmp_path, capsys, split_folder):
    ckpt = save_weights(tmp_path / "fine.pth", num_classes=3)
    stray = split_folder / "val" / ".ipynb_checkpoints"
    stray.mkdir()
    Image.new("L", (16, 16)).save(stray / "0-checkpoint.png")
    out = tmp_path / "ev"
    code, stdout, err = run_main(eval_args(ckpt, out, "--data-dir", split_folder), capsys)
    assert code == 0, err
    report = json.loads((out / "eval.json").read_text())
    assert report["classes"] == ["00000", "00001", "00002"] and report["samples"] == 12
    assert "on 12 images of 3 classes" in stdout


def test_eval_refuses_a_checkpoint_without_a_head(tmp_path, capsys, split_folder):
    ckpt = save_weights(tmp_path / "backbone.pth", num_classes=0)
    out = tmp_path / "ev"
    code, _, err = run_main(eval_args(ckpt, out, "--data-dir", split_folder), capsys)
    refused(code, err, [str(ckpt), "holds no classifier", "3 classes"])
    assert not out.exists()


@pytest.mark.slow  # a trainer subprocess
def test_eval_head_mismatch_from_the_command_line(tmp_path, split_folder):
    ckpt = save_weights(tmp_path / "fine.pth", num_classes=5)
    out = tmp_path / "ev"
    result = run_train(eval_args(ckpt, out, "--data-dir", split_folder))
    refused(result.returncode, result.stderr, ["error: --ckpt", "head has 5 classes", "has 3"])
    assert not out.exists()


def test_load_pretrained_keeping_the_head_raises_naming_both_counts():
    with pytest.raises(pretrained.HeadMismatch, match="its head scores 7 classes, the model 3") as caught:
        pretrained.load_pretrained(tiny_vit(3), tiny_vit(7).state_dict(), drop_head=False)
    assert (caught.value.checkpoint_classes, caught.value.model_classes) == (7, 3)
    assert "\n" not in str(caught.value)


def test_finetuning_says_in_one_line_that_it_replaces_the_head(tmp_path, capsys, split_folder):
    ckpt = save_weights(tmp_path / "pre.pth", num_classes=8)
    out = tmp_path / "fine"
    code, stdout, err = run_main(["finetune", "--data-dir", split_folder, *TINY_MODEL, *LIGHT_RECIPE,
                                  "--ckpt", ckpt, "--batch-size", "4", "--epochs", "1",
                                  "--output-dir", out], capsys)
    assert code == 0, err
    assert "finetune: the checkpoint's head (8 classes) is replaced by a new one for 3 classes" in stdout
    loaded = next(line for line in stdout.splitlines() if line.startswith(f"loaded {ckpt}"))
    assert "{" not in loaded and "dropped head.weight, head.bias" in loaded


def test_a_head_that_fits_is_kept_by_fine_tuning_without_a_replacement_line(tmp_path, capsys, split_folder):
    ckpt = save_weights(tmp_path / "pre.pth", num_classes=3)
    code, stdout, err = run_main(["finetune", "--data-dir", split_folder, *TINY_MODEL, *LIGHT_RECIPE,
                                  "--ckpt", ckpt, "--batch-size", "4", "--epochs", "1",
                                  "--output-dir", tmp_path / "fine"], capsys)
    assert code == 0, err
    assert "is replaced by" not in stdout and "dropped" not in stdout


# ---------------------------------------------------------------- 2. what is a class, what a sample

def test_hidden_folders_are_not_classes(tmp_path):
    root = make_folder(tmp_path / "d")
    make_folder(root / ".ipynb_checkpoints", classes=1)  # with images inside, even
    (root / ".git").mkdir()
    samples, classes = data.scan_folder(root, "--data-dir")
    assert classes == ["00000", "00001", "00002"] and len(samples) == 12
    assert all("/." not in path for path, _ in samples)


def test_hidden_files_and_hidden_subfolders_are_not_samples(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "00000" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS junk
    (root / "00001" / ".DS_Store").write_bytes(b"junk")
    make_folder(root / "00002" / ".thumbnails", classes=1)
    dataset = data.open_folder(root, "--data-dir", in_memory="always", progress=False)
    assert len(dataset) == 12 and dataset.classes == ["00000", "00001", "00002"]


def test_non_image_files_are_ignored_as_imagefolder_ignores_them(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "00000" / "labels.csv").write_text("a,b\n")
    (root / "00001" / "README").write_text("notes")
    (root / "00002" / "UPPER.PNG").write_bytes((root / "00002" / "0.png").read_bytes())
    samples, _ = data.scan_folder(root, "--data-dir")
    assert len(samples) == 13 and samples[-1][0].endswith("UPPER.PNG")


def test_an_empty_class_folder_is_refused_by_name(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "00003").mkdir()
    (root / "00004").mkdir()
    with pytest.raises(data.DataError, match=r"--train-dir: class folder '.*00003' \(and 1 more\) has no images"):
        data.scan_folder(root, "--train-dir")


def test_a_class_folder_with_only_other_files_counts_as_empty(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "00003").mkdir()
    (root / "00003" / "notes.txt").write_text("to do")
    (root / "00003" / ".hidden.png").write_bytes((root / "00000" / "0.png").read_bytes())
    with pytest.raises(data.DataError, match="00003' has no images"):
        data.scan_folder(root, "--data-dir")


def test_a_dataset_of_hidden_folders_only_has_no_classes(tmp_path, capsys):
    root = tmp_path / "d"
    make_folder(root / ".ipynb_checkpoints")
    out = tmp_path / "out"
    code, _, err = run_main(pretrain_args(root, out), capsys)
    refused(code, err, ["--data-dir", "has no class folders", "hidden folders"])
    assert not out.exists()


def test_listing_matches_torchvision_imagefolder_on_a_clean_folder(tmp_path):
    from torchvision.datasets import ImageFolder

    root = make_folder(tmp_path / "d", classes=4, per_class=3)
    make_folder(root / "00001" / "nested", classes=1, per_class=2)
    reference = ImageFolder(str(root))
    samples, classes = data.scan_folder(root, "--data-dir")
    assert classes == reference.classes and samples == reference.samples


def test_pretraining_on_a_folder_with_an_empty_class_writes_nothing(tmp_path, capsys):
    root = make_folder(tmp_path / "d")
    (root / "00007").mkdir()
    out = tmp_path / "out"
    code, _, err = run_main(pretrain_args(root, out), capsys)
    refused(code, err, ["--data-dir", "00007", "has no images"])
    assert not out.exists()


# ---------------------------------------------------------------- 3. generated datasets

def test_an_unfinished_dataset_is_refused_with_the_command_that_finishes_it(partial_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_main(pretrain_args(partial_dataset, out), capsys)
    line = refused(code, err, ["--data-dir", "unfinished", "2 class(es) written", generate.PARTIAL,
                               "python -m onepfrac.generate", "--samples 6"])
    assert not out.exists()
    # The command it prints is the one that finishes this very dataset.
    command = shlex.split(line.split("run", 1)[1].split(": ", 1)[1])
    assert command[:3] == ["python", "-m", "onepfrac.generate"]
    base = tmp_path / "copy"
    shutil.copytree(partial_dataset, base / partial_dataset.name)
    command[command.index("--base-savedir") + 1] = str(base)
    assert generate.main([*command[3:], "--workers", "1", "--no-progress"]) == 0
    assert data.scan_folder(base / partial_dataset.name, "--data-dir")[1] == [f"{i:05d}" for i in range(6)]


def test_an_unfinished_dataset_with_an_unreadable_log_is_still_refused(tmp_path):
    root = make_folder(tmp_path / "d", classes=2)
    (root / generate.PARTIAL).write_bytes(b'{"arguments": {"samp')  # cut by a kill
    with pytest.raises(data.DataError, match=r"unfinished dataset: .*running the same "
                                             r"`python -m onepfrac.generate` command again"):
        data.scan_folder(root, "--data-dir")


@pytest.mark.parametrize("mode", ["finetune", "eval"])
def test_an_unfinished_dataset_is_refused_for_fine_tuning_and_evaluation(partial_dataset, tmp_path, capsys, mode):
    ckpt = save_weights(tmp_path / "w.pth", num_classes=6)
    out = tmp_path / "out"
    if mode == "eval":
        argv = eval_args(ckpt, out, "--val-dir", partial_dataset)
        option = "--val-dir"
    else:
        argv = ["finetune", "--train-dir", partial_dataset, "--val-dir", partial_dataset, *TINY_MODEL,
                *LIGHT_RECIPE, "--ckpt", ckpt, "--batch-size", "2", "--epochs", "1", "--output-dir", out]
        option = "--train-dir"
    code, _, err = run_main(argv, capsys)
    refused(code, err, [option, "unfinished", "python -m onepfrac.generate"])
    assert not out.exists()


@pytest.mark.slow  # a trainer subprocess
def test_an_unfinished_dataset_is_refused_from_the_command_line(partial_dataset, tmp_path):
    out = tmp_path / "out"
    result = run_train(pretrain_args(partial_dataset, out))
    refused(result.returncode, result.stderr, ["error: --data-dir", "unfinished", "--samples 6"])
    assert not out.exists()


def test_probe_refuses_an_unfinished_dataset(partial_dataset, tmp_path, capsys):
    root = tmp_path / "probe"
    shutil.copytree(partial_dataset, root / "train")
    make_folder(root / "val", classes=2)
    ckpt = save_weights(tmp_path / "w.pth")
    out = tmp_path / "out"
    capsys.readouterr()
    code = probe.main(["--ckpt", str(ckpt), "--data-dir", str(root), "--device", "cpu",
                       "--no-progress", "--output-dir", str(out)])
    refused(code, capsys.readouterr().err, ["--data-dir", "unfinished"])
    assert not out.exists()


@pytest.fixture
def generated(train_fractal, tmp_path):
    """A private copy of the 8-class tiny 1p-frac, with its manifest.json."""
    root = tmp_path / train_fractal.name
    shutil.copytree(train_fractal, root)
    return root


def test_a_generated_dataset_that_lost_a_class_folder_is_refused(generated, tmp_path, capsys):
    shutil.rmtree(generated / "00003")
    out = tmp_path / "out"
    code, _, err = run_main(pretrain_args(generated, out), capsys)
    refused(code, err, ["--data-dir", "7 class folder(s)", "manifest.json lists 8", "first missing: '00003'"])
    assert not out.exists()


def test_a_generated_dataset_with_an_extra_file_is_refused(generated):
    shutil.copy(generated / "00001" / "00001.png", generated / "00001" / "copy.png")
    with pytest.raises(data.DataError, match=r"has 9 image\(s\) but its manifest.json lists 8 "
                                             r"\(first not listed: 00001/copy.png\)"):
        data.scan_folder(generated, "--data-dir")


def test_a_dataset_that_lost_one_of_several_files_of_a_class_is_refused(tmp_path):
    root = make_folder(tmp_path / "d", classes=2, per_class=3)
    records = [{"index": c, "files": [f"{c:05d}/{i}.png" for i in range(3)], "sha256": []}
               for c in range(2)]
    (root / "manifest.json").write_text(json.dumps({"classes": records}))
    (root / "00001" / "2.png").unlink()
    with pytest.raises(data.DataError, match=r"has 5 image\(s\) but its manifest.json lists 6 "
                                             r"\(first missing: 00001/2.png\)"):
        data.scan_folder(root, "--data-dir")


def test_an_unreadable_manifest_is_named(generated):
    (generated / "manifest.json").write_text('{"classes": [')
    with pytest.raises(data.DataError, match=r"manifest.json is not a readable manifest"):
        data.scan_folder(generated, "--data-dir")


def test_a_complete_dataset_whose_partial_log_was_not_yet_removed_is_accepted(generated):
    assert (data.MANIFEST, data.PARTIAL) == (generate.MANIFEST, generate.PARTIAL)  # one layout
    (generated / generate.PARTIAL).write_text("{}\n")  # killed between the two last steps
    assert len(data.scan_folder(generated, "--data-dir")[1]) == 8


# ---------------------------------------------------------------- 4. undecodable images

@pytest.mark.parametrize("damage", ["truncated", "junk"])
def test_an_undecodable_png_is_named_when_decoding_into_memory(tmp_path, damage):
    root = make_folder(tmp_path / "d")
    bad = root / "00001" / "2.png"
    truncate(bad) if damage == "truncated" else bad.write_bytes(b"this is not a PNG at all")
    with pytest.raises(data.DataError, match=rf"{bad}: not a readable image") as caught:
        data.open_folder(root, "--data-dir", in_memory="always", progress=False)
    assert "\n" not in str(caught.value)


def test_an_undecodable_png_is_named_by_the_file_backed_dataset_in_a_worker(tmp_path):
    root = make_folder(tmp_path / "d")
    bad = root / "00002" / "1.png"
    truncate(bad)
    dataset = data.open_folder(root, "--data-dir", in_memory="never", progress=False)
    loader = torch.utils.data.DataLoader(
        data.EvalSamples(dataset, lambda image: torch.from_numpy(np.asarray(image).copy())),
        batch_size=4, num_workers=1)
    with pytest.raises(data.DataError) as caught:
        list(loader)
    message = str(caught.value)
    assert message.startswith(f"{bad}: not a readable image") and "\n" not in message
    assert "Traceback" not in message


def test_an_undecodable_first_file_is_named_when_sizing_the_dataset(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "00000" / "0.png").write_bytes(b"")
    with pytest.raises(data.DataError, match="00000/0.png: not a readable image"):
        data.open_folder(root, "--data-dir", in_memory="auto", progress=False)


@pytest.mark.parametrize("pipeline", ["loader", "device"])
def test_pretraining_on_a_truncated_png_writes_nothing(tmp_path, capsys, pipeline):
    root = make_folder(tmp_path / "d")
    truncate(root / "00000" / "3.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    before = snapshot(out)
    code, _, err = run_main(pretrain_args(root, out, "--in-memory", "always", "--data-pipeline", pipeline),
                            capsys)
    refused(code, err, ["00000/3.png", "not a readable image"])
    assert snapshot(out) == before


@pytest.mark.slow  # a trainer subprocess with a DataLoader worker
def test_a_truncated_png_read_by_a_loader_worker_is_one_line_from_the_command_line(tmp_path):
    root = make_folder(tmp_path / "d")
    truncate(root / "00002" / "0.png")
    out = tmp_path / "out"
    args = pretrain_args(root, out, "--in-memory", "never")
    args[args.index("--workers") + 1] = "1"
    result = run_train(args)
    refused(result.returncode, result.stderr, ["error: ", "00002/0.png: not a readable image"])
    assert not (out / "checkpoint_last.pth").exists() and not list(out.glob("*.pth"))


def test_a_jpeg_named_png_is_decoded_by_its_content_as_imagefolder_does(tmp_path):
    root = make_folder(tmp_path / "d")
    Image.new("RGB", (16, 16), (200, 10, 10)).save(root / "00000" / "0.png", format="JPEG")
    dataset = data.open_folder(root, "--data-dir", in_memory="always", progress=False)
    image, label = dataset[0]
    assert label == 0 and image.mode == "RGB" and np.asarray(image)[8, 8, 0] > 150


def test_images_of_different_sizes_in_memory_name_two_files(tmp_path):
    root = make_folder(tmp_path / "d")
    Image.new("L", (20, 12)).save(root / "00002" / "1.png")
    with pytest.raises(data.DataError, match=r"00002/1.png is 20x12, .*00000/0.png 16x16.*--in-memory never"):
        data.open_folder(root, "--data-dir", in_memory="always", progress=False)


def test_probe_names_an_undecodable_file_found_while_extracting_features(tmp_path, capsys):
    root = tmp_path / "p"
    make_folder(root / "train")
    make_folder(root / "val")
    truncate(root / "val" / "00001" / "0.png")
    ckpt = save_weights(tmp_path / "w.pth")
    out = tmp_path / "out"
    capsys.readouterr()
    code = probe.main(["--ckpt", str(ckpt), "--data-dir", str(root), "--in-memory", "never",
                       "--device", "cpu", "--no-progress", "--epochs", "1", "--output-dir", str(out)])
    refused(code, capsys.readouterr().err, ["00001/0.png: not a readable image"])
    assert not out.exists()


# ---------------------------------------------------------------- 5. resuming and loading weights

def test_resuming_from_a_bare_state_dict_is_refused():
    with pytest.raises(CheckpointError, match=r"--resume x.pth: holds a bare state dict, not a training "
                                              r"checkpoint \(no optimizer/epoch\); use --ckpt"):
        pretrained.check_training_checkpoint(tiny_vit().state_dict(), tiny_vit(), "x.pth")


def test_resuming_from_weights_only_is_refused():
    with pytest.raises(CheckpointError, match=r"holds weights only.*no optimizer/lr_scheduler/epoch"):
        pretrained.check_training_checkpoint({"model": tiny_vit().state_dict()}, tiny_vit(), "w.pth")


def test_resuming_another_architecture_names_both_and_the_first_shape(trained):
    state = torch.load(trained, weights_only=False)
    other = tiny_vit(num_classes=3, embed_dim=32)
    with pytest.raises(CheckpointError) as caught:
        pretrained.check_training_checkpoint(state, other, trained)
    message = str(caught.value)
    assert message.startswith(f"--resume {trained}: was trained as vit_tiny_patch16_224 (depth=2 "
                              "embed_dim=16 num_heads=2 patch_size=4), this run builds "
                              "vit_tiny_patch16_224 (2 blocks, width 32)")
    assert "tensors differ in shape (first: cls_token [1, 1, 16] vs [1, 1, 32])" in message
    assert "\n" not in message


def test_resuming_with_a_deeper_model_counts_the_missing_tensors(trained):
    state = torch.load(trained, weights_only=False)
    with pytest.raises(CheckpointError, match=r"12 missing \(first: blocks.2"):
        pretrained.check_training_checkpoint(state, tiny_vit(num_classes=3, depth=3), trained)


def test_resuming_on_data_with_another_class_count_names_both(trained):
    state = torch.load(trained, weights_only=False)
    with pytest.raises(CheckpointError, match="its head scores 3 classes, this run's data 5"):
        pretrained.check_training_checkpoint(state, tiny_vit(num_classes=5), trained)


def test_a_matching_training_checkpoint_passes(trained):
    pretrained.check_training_checkpoint(torch.load(trained, weights_only=False), tiny_vit(3), trained)


def test_resume_from_a_bare_state_dict_on_the_command_line_writes_nothing(tmp_path, capsys):
    root = make_folder(tmp_path / "d")
    bare = tmp_path / "bare.pth"
    torch.save(tiny_vit().state_dict(), bare)
    out = tmp_path / "out"
    code, _, err = run_main(pretrain_args(root, out, "--resume", bare), capsys)
    refused(code, err, [f"--resume {bare}: holds a bare state dict"])
    assert not out.exists()


def test_resume_auto_from_another_models_last_checkpoint_keeps_it(tmp_path, capsys, trained):
    root = make_folder(tmp_path / "d")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(trained, out / "checkpoint_last.pth")
    before = snapshot(out)
    argv = pretrain_args(root, out, "--resume", "auto")
    argv[argv.index("embed_dim=16")] = "embed_dim=32"
    code, _, err = run_main(argv, capsys)
    refused(code, err, ["--resume", "checkpoint_last.pth", "that run used --model-kwargs", "embed_dim': 32"])
    assert snapshot(out) == before


def test_fine_tuning_from_another_architecture_is_one_line_naming_both(tmp_path, capsys, split_folder):
    ckpt = save_weights(tmp_path / "wide.pth", num_classes=3, embed_dim=32, num_heads=2)
    out = tmp_path / "fine"
    code, _, err = run_main(["finetune", "--data-dir", split_folder, *TINY_MODEL, *LIGHT_RECIPE,
                             "--ckpt", ckpt, "--batch-size", "4", "--epochs", "1", "--output-dir", out],
                            capsys)
    refused(code, err, [str(ckpt), "nothing was loaded", "trained as vit_tiny_patch16_224 (depth=2 "
                        "embed_dim=32", "the model is vit_tiny_patch16_224 (2 blocks, width 16)",
                        "shape mismatch"])
    assert not out.exists()


# ---------------------------------------------------------------- train and val must agree

def test_validation_classes_with_other_names_are_refused(tmp_path, capsys):
    root = tmp_path / "s"
    make_folder(root / "train")
    make_folder(root / "val", first=1)  # 00001..00003: same count, shifted labels
    out = tmp_path / "out"
    code, _, err = run_main(["finetune", "--data-dir", root, *TINY_MODEL, *LIGHT_RECIPE,
                             "--batch-size", "4", "--epochs", "1", "--output-dir", out], capsys)
    refused(code, err, ["validation set's classes differ", "'00001'", "'00000'"])
    assert not out.exists()


def test_validation_with_a_missing_class_names_both_folders(tmp_path, capsys):
    root = tmp_path / "s"
    make_folder(root / "train")
    make_folder(root / "val", classes=2)
    code, _, err = run_main(["finetune", "--data-dir", root, *TINY_MODEL, *LIGHT_RECIPE,
                             "--batch-size", "4", "--epochs", "1", "--output-dir", tmp_path / "out"], capsys)
    refused(code, err, [f"validation set '{root / 'val'}' has 2 classes", f"'{root / 'train'}' 3"])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a probe subprocess
def test_probe_refuses_validation_classes_with_other_names_from_the_command_line(tmp_path):
    root = tmp_path / "p"
    make_folder(root / "train")
    make_folder(root / "val", first=1)
    ckpt = save_weights(tmp_path / "w.pth")
    result = subprocess.run([sys.executable, "-m", "onepfrac.train.probe", "--ckpt", str(ckpt),
                             "--data-dir", str(root), "--device", "cpu", "--no-progress",
                             "--output-dir", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, env=train_env())
    refused(result.returncode, result.stderr, ["error: --data-dir", "validation set's classes differ"])
    assert not (tmp_path / "out").exists()


def test_probe_refuses_validation_classes_with_other_names(tmp_path, capsys):
    root = tmp_path / "p"
    make_folder(root / "train")
    make_folder(root / "val", first=1)
    ckpt = save_weights(tmp_path / "w.pth")
    capsys.readouterr()
    code = probe.main(["--ckpt", str(ckpt), "--data-dir", str(root), "--device", "cpu",
                       "--no-progress", "--output-dir", str(tmp_path / "out")])
    refused(code, capsys.readouterr().err, ["--data-dir", "validation set's classes differ"])
    assert not (tmp_path / "out").exists()


def test_probe_with_a_stray_hidden_folder_in_val_still_probes_three_classes(tmp_path, capsys):
    root = tmp_path / "p"
    make_folder(root / "train")
    make_folder(root / "val")
    make_folder(root / "val" / ".ipynb_checkpoints", classes=1)
    ckpt = save_weights(tmp_path / "w.pth")
    capsys.readouterr()
    code = probe.main(["--ckpt", str(ckpt), "--data-dir", str(root), "--device", "cpu", "--blocks", "1",
                       "--no-progress", "--epochs", "1", "--output-dir", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert "3 classes" in capsys.readouterr().out
