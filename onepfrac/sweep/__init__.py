"""Sweeps over (dataset, delta, sigma, L, seed): grids of generate -> pre-train -> fine-tune cells.

    python -m onepfrac.sweep GRID.yaml --out DIR [--dry-run] [--only CELL ...] [--no-progress]
    python -m onepfrac.sweep aggregate DIR

grid.py reads and checks a grid and expands it into cells (pure); stages.py gives each cell's
stages their options and command lines (pure); results.py turns cell records into tables and a
plot (pure); runner.py runs the CLIs and keeps the records; cli.py is the command line. See
docs/sweeps.md.
"""
