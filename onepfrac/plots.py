"""matplotlib for the project's plots (training curves, sweep results).

Figures are made with matplotlib's object API on its Agg canvas, so no display and no pyplot
state are needed (a login node, a Slurm job); saves are atomic. matplotlib is optional
(`pip install matplotlib`): asking for a plot without it is a one-line error.
"""

from __future__ import annotations

import io
from pathlib import Path

from onepfrac import atomic
from onepfrac.errors import UsageError

INSTALL = "install it with `pip install matplotlib`"


def require(what: str) -> None:
    """Nothing when matplotlib is there, else a UsageError naming `what` needed it."""
    if not available():
        raise UsageError(f"{what}: matplotlib is not installed; {INSTALL}")


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(what: str, width: float, height: float):
    """An empty matplotlib Figure (inches), or a UsageError naming `what` needed it."""
    require(what)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def formats() -> dict[str, str]:
    """{'.png': 'png', ...}: the file types matplotlib's Agg canvas writes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return {f".{ext}": ext for ext in FigureCanvasAgg.get_supported_filetypes()}


def render(figure, image_format: str = "png") -> bytes:
    """The figure's file, byte for byte the same for the same data (no time stamp, no version)."""
    buffer = io.BytesIO()
    metadata = {"Software": None} if image_format == "png" else None
    figure.savefig(buffer, format=image_format, metadata=metadata)
    return buffer.getvalue()


def save(figure, path: Path, image_format: str | None = None) -> None:
    """The whole file at `path` or nothing: written beside it, then renamed over it."""
    path = Path(path)
    data = render(figure, image_format or path.suffix.lower().lstrip(".") or "png")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, data)
