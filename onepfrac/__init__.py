"""onepfrac: 1p-frac ("Scaling Backwards: Minimal Synthetic Pre-training?", ECCV 2024) and its kin."""

__version__ = "0.2.0"
