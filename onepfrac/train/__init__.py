"""Pre-training and fine-tuning timm models on 1p-frac and real data (`python -m onepfrac.train`)."""
