"""Sample grids: `python -m onepfrac.figures grid DATASET --out grid.png`,
`python -m onepfrac.figures paper --out-dir figure/` (delta and sigma-factor grids) and
`python -m onepfrac.figures datasets --out-dir figure/` (classes x instances of each dataset)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from onepfrac import datasets, png
from onepfrac.datasets import single_fractal
from onepfrac.errors import UsageError, UserError
from onepfrac.generate import MANIFEST, ManifestError, read_manifest

PAPER_DELTAS = (0.01, 0.05, 0.1, 0.2)  # Table 5
PAPER_SIGMAS = (3.25, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0)  # Table 6 range; 3.5 is the paper's choice
LABEL_WIDTH = 110
TITLE_HEIGHT = 22


def compose(rows: list[tuple[str, list[np.ndarray]]], thumb: int, title: str = "",
            column_labels: list[str] | None = None) -> Image.Image:
    """A labelled grid: one row per (label, images); gray images are shown with ink stretched to white."""
    n_cols = max(len(images) for _, images in rows)
    top = TITLE_HEIGHT * (bool(title) + bool(column_labels))
    canvas = Image.new("L", (LABEL_WIDTH + n_cols * (thumb + 4), top + len(rows) * (thumb + 4)), 255)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 4), title, fill=0)
    for c, label in enumerate(column_labels or []):
        draw.text((LABEL_WIDTH + c * (thumb + 4) + 4, top - TITLE_HEIGHT + 4), label, fill=0)
    for r, (label, images) in enumerate(rows):
        y = top + r * (thumb + 4)
        draw.text((4, y + thumb // 2 - 6), label, fill=0)
        for c, image in enumerate(images):
            peak = max(int(image.max()), 1)
            shown = Image.fromarray((image.astype(np.float32) * (255.0 / peak)).astype(np.uint8))
            canvas.paste(shown.resize((thumb, thumb), Image.BILINEAR), (LABEL_WIDTH + c * (thumb + 4), y))
    return canvas


def _read_class(root: Path, record: dict) -> np.ndarray:
    try:
        return png.decode_gray(root / record["file"])
    except (KeyError, TypeError):
        raise ManifestError(f"{root / MANIFEST}: class {record.get('index')} names no file; delete {root} "
                            "to generate the dataset again") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{root / record['file']} cannot be read ({error}); delete {root} to generate "
                        "the dataset again") from None


def dataset_grid(root: Path, count: int = 16, columns: int = 8, thumb: int = 128) -> Image.Image:
    """Evenly spaced classes of a generated dataset, read from its manifest."""
    classes = read_manifest(root / MANIFEST).get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, dict) for c in classes):
        raise ManifestError(f"{root / MANIFEST} lists no classes; delete {root} to generate the dataset again")
    picks = np.unique(np.linspace(0, len(classes) - 1, min(count, len(classes))).round().astype(int))
    images = [(classes[i].get("index", i), _read_class(root, classes[i])) for i in picks]
    rows = []
    for start in range(0, len(images), columns):
        chunk = images[start:start + columns]
        rows.append((f"classes {chunk[0][0]}-{chunk[-1][0]}", [image for _, image in chunk]))
    return compose(rows, thumb, title=root.name)


def delta_grid(config: single_fractal.Config, deltas=PAPER_DELTAS, classes: int = 6, thumb: int = 128) -> Image.Image:
    """One base system (found at the largest delta, so it serves every row), `classes` perturbations per delta."""
    base = single_fractal.find_base(replace(config, delta=max(deltas)))
    rows = []
    for delta in deltas:
        row_config = replace(config, delta=delta)
        rows.append((f"delta {delta}", [single_fractal.render_class(row_config, base, i).image for i in range(classes)]))
    return compose(rows, thumb, title=f"1p-frac: sigma {config.sigma}, classes 0-{classes - 1} per delta",
                  column_labels=[f"class {i}" for i in range(classes)])


def sigma_grid(config: single_fractal.Config, sigmas=PAPER_SIGMAS, seeds=(0, 1, 2), thumb: int = 128) -> Image.Image:
    """The base system of each sigma-factor (columns) for a few seeds (rows)."""
    rows = []
    for seed in seeds:
        images = []
        for sigma in sigmas:
            seeded = replace(config, sigma=sigma, seed=seed)
            base = single_fractal.find_base(seeded)
            images.append(single_fractal.render_base(seeded, base))
        rows.append((f"seed {seed}", images))
    return compose(rows, thumb, title="1p-frac base systems by sigma-factor (N = 2)",
                  column_labels=[f"sigma {s}" for s in sigmas])


# Instances shown per dataset (columns) and their labels; FractalDB's walk its weight rows.
SHOWN_INSTANCES = {
    "fractaldb": ([0, 40, 80, 120, 160, 200, 360, 520, 680, 840, 82],
                  ["a x0.2", "a x0.6", "all x1", "a x1.4", "a x1.8", "b x0.2", "c x0.2", "d x0.2", "e x0.2", "f x0.2",
                   "x1, left-right"]),
    "3d-ofdb": (list(range(0, 12, 2)), [f"view {k}" for k in range(0, 12, 2)]),
    "visualatom": (list(range(6)), [f"instance {i}" for i in range(6)]),
}
FIGURE_NAMES = {"fractaldb": "fractaldb.png", "ofdb": "ofdb.png", "3d-ofdb": "3d-ofdb.png",
                "visualatom": "visualatom.png", "real-image": "real-image.png"}


def formula_grid(name: str, config=None, classes: int = 4, thumb: int = 112) -> Image.Image:
    """Classes (rows) by instances (columns) of a formula-driven dataset, rendered in memory.

    Datasets with one image per class (2D-OFDB, real-image) show 4 x `columns` classes instead.
    """
    module = datasets.load(name)
    config = config if config is not None else module.Config()
    shared = datasets.prepare(module, config)
    _, instances = datasets.counts(module, config)
    if instances == 1:
        columns = 6
        images = [datasets.class_images(module, config, shared, c)[1].__next__() for c in range(classes * columns)]
        rows = [(f"classes {r * columns}-{r * columns + columns - 1}", images[r * columns:(r + 1) * columns])
                for r in range(classes)]
        return compose(rows, thumb, title=f"{name}: one image per class, seed {config.seed}")
    picks, labels = SHOWN_INSTANCES.get(name, (list(range(min(instances, 6))), None))
    picks = [i for i in picks if i < instances]
    rows = []
    for c in range(classes):
        params = module.class_params(config, shared, c)
        rows.append((f"class {c}", [module.render_instance(config, shared, params, i) for i in picks]))
    return compose(rows, thumb, title=f"{name}: classes (rows) x instances (columns), seed {config.seed}",
                   column_labels=(labels or [f"instance {i}" for i in picks])[:len(picks)])


def check_writable_folder(folder: Path, option: str) -> None:
    """`folder` is a folder we can write, or can be created: checked before anything is drawn."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder} is a file, not a folder")
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{option} {folder}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {folder} is not writable ({ancestor} denies writing)")


def check_out_file(out: Path) -> str:
    """--out names an image file in a writable folder; returns the format its extension means."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name such as {out / 'grid.png'}")
    Image.init()
    image_format = Image.EXTENSION.get(out.suffix.lower())
    if image_format is None:
        raise UsageError(f"--out {out}: {out.suffix or 'no extension'} is not an image format; use .png or .jpg")
    check_writable_folder(out.parent, f"--out {out}: folder")
    return image_format


def save_atomic(image: Image.Image, path: Path, image_format: str | None = None, **options) -> None:
    """The whole image at `path` or nothing: written beside it, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        image.save(temporary, format=image_format or Image.EXTENSION[path.suffix.lower()], **options)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def main(argv=None) -> int:
    try:
        return make(argv)
    except UserError as error:  # e.g. a seed whose base search runs out of tries
        print(f"python -m onepfrac.figures: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("python -m onepfrac.figures: interrupted; nothing half-written is left", file=sys.stderr)
        return 130
    except OSError as error:  # the disk refused a write (full, read-only): one line, no traceback
        if error.filename is None:
            raise
        print(f"python -m onepfrac.figures: error: {error.strerror} writing {error.filename}", file=sys.stderr)
        return 1


def make(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onepfrac.figures", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    grid = sub.add_parser("grid", help="sample grid of a generated dataset folder")
    grid.add_argument("dataset", type=Path)
    grid.add_argument("--out", type=Path, required=True)
    grid.add_argument("--count", type=int, default=16)
    grid.add_argument("--columns", type=int, default=8)
    paper = sub.add_parser("paper", help="delta and sigma-factor grids, as in the paper's figures")
    paper.add_argument("--out-dir", type=Path, default=Path("figure"))
    paper.add_argument("--seed", type=int, default=0)
    formula = sub.add_parser("datasets", help="classes x instances of each formula-driven dataset, rendered in memory")
    formula.add_argument("--out-dir", type=Path, default=Path("figure"))
    formula.add_argument("--names", nargs="+", choices=list(FIGURE_NAMES), default=list(FIGURE_NAMES))
    args = parser.parse_args(argv)

    if args.command == "grid":
        if not (args.dataset / MANIFEST).is_file():
            parser.exit(2, f"{parser.prog}: error: {args.dataset} has no {MANIFEST}: not a finished dataset\n")
        for option, value in (("--count", args.count), ("--columns", args.columns)):
            if value < 1:
                raise UsageError(f"{option} {value} must be at least 1")
        image_format = check_out_file(args.out)
        save_atomic(dataset_grid(args.dataset, args.count, args.columns), args.out, image_format)
        print(args.out)
        return 0
    check_writable_folder(args.out_dir, "--out-dir")
    if args.command == "datasets":
        for name in args.names:
            try:
                image = formula_grid(name)
            except datasets.UnknownDataset as missing:
                print(f"skipped {name}: {missing}", file=sys.stderr)
                continue
            save_atomic(image, args.out_dir / FIGURE_NAMES[name], optimize=True)
            print(args.out_dir / FIGURE_NAMES[name])
        return 0
    config = single_fractal.Config(seed=args.seed)
    for name, image in (("1p-frac_delta.png", delta_grid(config)), ("1p-frac_sigma.png", sigma_grid(config))):
        save_atomic(image, args.out_dir / name, optimize=True)
        print(args.out_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
