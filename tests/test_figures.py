"""onepfrac.figures: sample grids of a dataset and the paper's delta / sigma grids."""

import numpy as np
from PIL import Image

from conftest import TINY_CONFIG
from onepfrac import figures
from onepfrac.datasets import single_fractal


def test_grid_command_draws_the_requested_number_of_classes(tiny_dataset, tmp_path):
    out = tmp_path / "grid.png"
    assert figures.main(["grid", str(tiny_dataset), "--out", str(out), "--count", "6", "--columns", "3"]) == 0
    with Image.open(out) as grid:
        width, height = grid.size
        pixels = np.asarray(grid.convert("L"))
    thumb = 128 + 4
    assert width == figures.LABEL_WIDTH + 3 * thumb
    assert height == figures.TITLE_HEIGHT + 2 * thumb  # 6 classes in rows of 3, under a title
    # every thumbnail shows a fractal: some of its pixels are stretched ink (white), some background
    for row in range(2):
        for col in range(3):
            y, x = figures.TITLE_HEIGHT + row * thumb, figures.LABEL_WIDTH + col * thumb
            cell = pixels[y:y + 128, x:x + 128]
            assert (cell > 200).mean() > 0.01 and (cell == 0).mean() > 0.1


def test_grid_command_refuses_a_folder_without_manifest(tmp_path, capsys):
    try:
        figures.main(["grid", str(tmp_path), "--out", str(tmp_path / "grid.png")])
    except SystemExit as stop:
        assert stop.code == 2
    assert "manifest.json" in capsys.readouterr().err
    assert not (tmp_path / "grid.png").exists()


def test_delta_grid_uses_one_base_system_and_grows_the_differences_with_delta():
    config = single_fractal.Config(**TINY_CONFIG)
    image = np.asarray(figures.delta_grid(config, deltas=(0.0, 0.2), classes=3, thumb=32))
    top = 2 * figures.TITLE_HEIGHT
    cells = [[image[top + r * 36: top + r * 36 + 32, figures.LABEL_WIDTH + c * 36: figures.LABEL_WIDTH + c * 36 + 32]
              for c in range(3)] for r in range(2)]
    # delta 0 with the fixed orbit: the classes differ only through their patch masks, so their
    # shapes coincide far more than those of delta 0.2
    def disagreement(row):
        shapes = [cell > 0 for cell in row]
        return np.mean([(shapes[0] != other).mean() for other in shapes[1:]])
    assert disagreement(cells[0]) < disagreement(cells[1])


def test_sigma_grid_shows_one_base_per_sigma_and_seed():
    config = single_fractal.Config(**TINY_CONFIG)
    grid = figures.sigma_grid(config, sigmas=(3.5, 5.0), seeds=(0, 1), thumb=32)
    assert grid.size == (figures.LABEL_WIDTH + 2 * 36, 2 * figures.TITLE_HEIGHT + 2 * 36)


def test_datasets_and_paper_commands_write_their_pngs_atomically(tmp_path):
    # both save through save_atomic without a format hint: the extension decides it
    assert figures.main(["datasets", "--out-dir", str(tmp_path), "--names", "ofdb"]) == 0
    assert figures.main(["paper", "--out-dir", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["1p-frac_delta.png", "1p-frac_sigma.png", "ofdb.png"]
    for name in written:
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
