"""onepfrac: 1p-frac ("Scaling Backwards: Minimal Synthetic Pre-training?", ECCV 2024) and its kin."""

__version__ = "0.2.0"

__all__ = ["FractalFolder", "OnTheFlyDataset", "__version__"]


def __getattr__(name: str):
    """The datasets, imported when first asked for, so that `import onepfrac` loads no torch."""
    if name == "OnTheFlyDataset":
        from onepfrac.datasets.onthefly import OnTheFlyDataset as value
    elif name == "FractalFolder":
        from onepfrac.train.data import FractalFolder as value
    else:
        raise AttributeError(f"module 'onepfrac' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
