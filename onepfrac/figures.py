"""Sample grids: `python -m onepfrac.figures grid DATASET --out grid.png`,
`python -m onepfrac.figures paper --out-dir figure/` (delta and sigma-factor grids) and
`python -m onepfrac.figures datasets --out-dir figure/` (classes x instances of each dataset) and
`python -m onepfrac.figures curves RUN_DIR [RUN_DIR ...] --out curves.png` (training curves of runs)."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from onepfrac import datasets, plots, png
from onepfrac.datasets import single_fractal
from onepfrac.argparsing import Parser
from onepfrac.errors import UsageError, UserError
from onepfrac.paths import check_writable_folder
from onepfrac.generate import MANIFEST, ManifestError, read_manifest

PAPER_DELTAS = (0.01, 0.05, 0.1, 0.2)  # Table 5
PAPER_SIGMAS = (3.25, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0)  # Table 6 range; 3.5 is the paper's choice
LABEL_WIDTH = 110
TITLE_HEIGHT = 22
METRICS = "metrics.jsonl"  # onepfrac.train.metrics.METRICS, named here so curves need no torch
# (record key, panel title) of the curves, as onepfrac.train.metrics writes them per epoch
CURVES = (("train_loss", "training loss"), ("lr", "learning rate"), ("val_acc1", "validation top-1 (%)"))


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


def check_out_file(out: Path, image_formats: dict[str, str] | None = None, hint: str = ".png or .jpg") -> str:
    """--out names an image file in a writable folder; returns the format its extension means
    (among `image_formats`, {'.png': 'png', ...}; Pillow's by default)."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name such as {out / 'grid.png'}")
    if image_formats is None:
        Image.init()
        image_formats = Image.EXTENSION
    image_format = image_formats.get(out.suffix.lower())
    if image_format is None:
        raise UsageError(f"--out {out}: {out.suffix or 'no extension'} is not an image format; use {hint}")
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


def read_run(run: Path) -> list[dict]:
    """The per-epoch records of a training run folder (or of its metrics.jsonl itself)."""
    path = run / METRICS if run.is_dir() else run
    if not path.is_file():
        raise UsageError(f"{run}: no {METRICS} there; give the --output-dir of a training run "
                         "that finished at least one epoch")
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise UsageError(f"{path}: line {number} is not a record of onepfrac.train "
                             "(a JSON object with an integer epoch)")
        records.append(record)
    if not records:
        raise UsageError(f"{path} is empty: the run has not finished an epoch yet")
    return records


def run_labels(runs: list[Path]) -> list[str]:
    """Each run's folder name, or its whole path where two runs share a name (a sweep's cells)."""
    names = [run.name if run.is_dir() else run.parent.name for run in runs]
    return [name if names.count(name) == 1 else str(run) for name, run in zip(names, runs)]


def curves_figure(runs: list[tuple[str, list[dict]]]):
    """Training loss, learning rate and validation top-1 by epoch, one line per run."""
    figure = plots.new_figure("curves", 13, 3.8)
    from matplotlib.ticker import MaxNLocator

    axes = figure.subplots(1, len(CURVES))
    for ax, (key, title) in zip(axes, CURVES):
        for label, records in runs:
            points = sorted((r["epoch"], r[key]) for r in records
                            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]))
            if points:
                # markers only where there are few points, e.g. a validation every few epochs
                ax.plot(*zip(*points), label=label, marker="o" if len(points) <= 30 else None, markersize=3)
            else:
                ax.plot([], [], label=label)  # keeps each run's colour the same in every panel
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.25
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))  # lr 5e-4, not 0.000500
        ax.grid(alpha=0.3)
        if not any(line.get_xdata().size for line in ax.lines):
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
    axes[0].legend(fontsize="small")
    return figure


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
    parser = Parser(prog="python -m onepfrac.figures", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    grid = sub.add_parser("grid", help="sample grid of a generated dataset folder")
    grid.add_argument("dataset", type=Path, help="a folder written by python -m onepfrac.generate")
    grid.add_argument("--out", type=Path, required=True, help="image file to write (.png, .jpg...)")
    grid.add_argument("--count", type=int, default=16, help="images in the grid")
    grid.add_argument("--columns", type=int, default=8, help="images per row")
    paper = sub.add_parser("paper", help="delta and sigma-factor grids, as in the paper's figures")
    paper.add_argument("--out-dir", type=Path, default=Path("figure"), help="folder for the PNGs")
    paper.add_argument("--seed", type=int, default=0, help="seed of the fractal drawn")
    formula = sub.add_parser("datasets", help="classes x instances of each formula-driven dataset, rendered in memory")
    formula.add_argument("--out-dir", type=Path, default=Path("figure"), help="folder for the PNGs")
    formula.add_argument("--names", nargs="+", choices=list(FIGURE_NAMES), default=list(FIGURE_NAMES),
                         help="the datasets to draw")
    curves = sub.add_parser("curves", help="training loss, learning rate and validation top-1 by epoch "
                                           "of one or more training runs (needs matplotlib)")
    curves.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR",
                        help="a training run's --output-dir (its metrics.jsonl)")
    curves.add_argument("--out", type=Path, required=True, help="the plot: .png, .pdf or .svg")
    args = parser.parse_args(argv)

    if args.command == "curves":
        return draw_curves(args.runs, args.out)

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


def draw_curves(runs: list[Path], out: Path) -> int:
    plots.require("curves")  # matplotlib's absence is the first thing said
    image_format = check_out_file(out, {k: v for k, v in plots.formats().items() if k in (".png", ".pdf", ".svg")},
                                  ".png, .pdf or .svg")
    records = [read_run(run) for run in runs]  # every run is checked before anything is drawn
    plots.save(curves_figure(list(zip(run_labels(runs), records))), out, image_format)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
