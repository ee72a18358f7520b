"""PNG encoding of the generators' gray images: 8-bit grayscale or a 1-bit palette."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

BITS = (8, 1)


def encode_png(image: np.ndarray, bits: int = 8, compression: int = 1) -> bytes:
    """PNG bytes that decode to exactly `image` (uint8, 2-D).

    bits=1 writes a two-entry palette (0 and the single ink value), which needs an
    image with at most one non-zero value; it decodes to the same gray levels.
    """
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError("encode_png needs a 2-D uint8 image")
    if bits == 8:
        ok, buffer = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, compression])
        if not ok:
            raise RuntimeError("OpenCV could not encode the PNG")
        return buffer.tobytes()
    if bits == 1:
        inks = np.unique(image[image != 0])
        if len(inks) > 1:
            raise ValueError(f"a 1-bit PNG holds one ink value, this image has {len(inks)}")
        ink = int(inks[0]) if len(inks) else 255
        palette_image = Image.frombytes("P", image.shape[::-1], (image != 0).astype(np.uint8).tobytes())
        palette_image.putpalette([0, 0, 0, ink, ink, ink])
        out = io.BytesIO()
        palette_image.save(out, format="PNG", bits=1, compress_level=compression)
        return out.getvalue()
    raise ValueError(f"PNG bit depth {bits} is not one of {BITS}")


def decode_gray(data_or_path) -> np.ndarray:
    """A saved image as a 2-D uint8 array of gray levels (palette expanded)."""
    source = io.BytesIO(data_or_path) if isinstance(data_or_path, (bytes, bytearray)) else data_or_path
    with Image.open(source) as image:
        return np.asarray(image.convert("L"))
