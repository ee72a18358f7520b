"""onepfrac.png: lossless 8-bit and 1-bit encodings of the gray images."""

import io

import numpy as np
import pytest
from PIL import Image

from onepfrac import png


def ink_image(seed=0, shape=(37, 53)):
    rng = np.random.default_rng(seed)
    return np.where(rng.random(shape) < 0.3, 127, 0).astype(np.uint8)


@pytest.mark.parametrize("bits", [8, 1])
def test_encoded_png_decodes_to_exactly_the_image(bits, tmp_path):
    image = ink_image()
    data = png.encode_png(image, bits)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert np.array_equal(png.decode_gray(data), image)
    path = tmp_path / "image.png"
    path.write_bytes(data)
    assert np.array_equal(png.decode_gray(path), image)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.size == (53, 37)
        assert opened.mode == ("L" if bits == 8 else "P")


def test_eight_bit_png_keeps_any_gray_levels():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(png.decode_gray(png.encode_png(image, 8)), image)


def test_one_bit_png_of_an_empty_image_decodes_to_zeros():
    image = np.zeros((8, 8), dtype=np.uint8)
    assert np.array_equal(png.decode_gray(png.encode_png(image, 1)), image)


def test_one_bit_png_is_smaller_than_eight_bit_at_the_same_compression():
    image = ink_image(shape=(128, 128))
    assert len(png.encode_png(image, 1, 9)) < len(png.encode_png(image, 8, 9))


def test_one_bit_png_refuses_more_than_one_ink_value():
    image = ink_image()
    image[0, 0] = 200
    with pytest.raises(ValueError, match="one ink"):
        png.encode_png(image, 1)


@pytest.mark.parametrize("level", range(10))
def test_every_compression_level_is_lossless(level):
    image = ink_image(seed=level)
    for bits in (8, 1):
        assert np.array_equal(png.decode_gray(png.encode_png(image, bits, level)), image)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), dtype=np.uint16), np.zeros((4, 4, 3), dtype=np.uint8),
                                 np.zeros((4, 4), dtype=np.float32)])
def test_only_two_dimensional_uint8_images_are_encoded(bad):
    with pytest.raises(ValueError, match="2-D uint8"):
        png.encode_png(bad)


def test_unknown_bit_depth_is_refused():
    with pytest.raises(ValueError, match="bit depth"):
        png.encode_png(ink_image(), 4)


def test_encoding_is_deterministic():
    image = ink_image()
    for bits in (8, 1):
        assert png.encode_png(image, bits, 6) == png.encode_png(image.copy(), bits, 6)
