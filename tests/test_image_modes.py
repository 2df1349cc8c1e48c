"""Every image mode becomes 8-bit RGB (docs/reliability.md): grayscale,
alpha, palettes, 16-bit samples, CMYK, bilevel."""

import numpy as np
import pytest
import torch
from PIL import Image

from detr_irpe.data.images import load_image


def _pixels():
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    return rgb


@pytest.mark.parametrize("name,make,expected", [
    ("gray.png", lambda: Image.fromarray(_pixels()[..., 0]), (200, 200, 200)),
    ("gray_alpha.png", lambda: Image.fromarray(np.dstack([_pixels()[..., 0], np.full((6, 8), 9, np.uint8)]), "LA"),
     (200, 200, 200)),
    ("palette.png", lambda: Image.fromarray(_pixels()).convert("P"), None),
    ("rgba.png", lambda: Image.fromarray(np.dstack([_pixels(), np.zeros((6, 8), np.uint8)]), "RGBA"), (200, 100, 50)),
    ("gray16.png", lambda: Image.fromarray(_pixels()[..., 0].astype(np.uint16) * 257), (200, 200, 200)),
    ("gray16.tif", lambda: Image.fromarray(_pixels()[..., 0].astype(np.uint16) * 257), (200, 200, 200)),
    ("cmyk.jpg", lambda: Image.fromarray(_pixels()).convert("CMYK"), None),
    ("bilevel.png", lambda: Image.fromarray(_pixels()[..., 0] > 100), (255, 255, 255)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_every_image_mode_becomes_8_bit_rgb(tmp_path, name, make, expected):
    image = make()
    image.save(tmp_path / name)
    pixels = load_image(tmp_path / name)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 6, 8)
    if expected is None:  # palette and CMYK: what PIL's own conversion gives
        with Image.open(tmp_path / name) as pil:
            expected = pil.convert("RGB").getpixel((0, 0))
    assert pixels[:, 0, 0].tolist() == list(expected)
