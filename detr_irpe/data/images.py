"""Image files: their size from the header, the pixel limit checked before decoding, and decoding
to uint8 RGB whatever the stored mode."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2.functional import to_dtype

from .errors import ImageFileError, ImageTooLargeError
from ..core.limits import DEFAULT_MAX_IMAGE_PIXELS
from .values import one_line

#: PIL modes of 16 bits per sample, scaled to 8 bits (PIL's own conversion clips them)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header, without decoding the pixels; raises
    ImageFileError when the file is missing or not an image."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not an image file" if path.is_dir() else "image file not found"
        raise ImageFileError(f"{path}: {what}")
    try:
        with _no_pil_pixel_limit(), Image.open(path) as pil:
            return pil.size
    except Exception as exc:  # damaged files raise many types in PIL's plugins (OSError, SyntaxError, ...)
        raise ImageFileError(f"{path}: not a readable image ({one_line(exc)})") from None


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """Raise ImageTooLargeError when ``width * height`` exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(f"{what} is {width}x{height} = {width * height:,} pixels, more than "
                                 f"data.max_image_pixels={max_pixels} (raise it, or null for no limit, to read it)")


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> tv_tensors.Image:
    """An image file as a uint8 RGB ``tv_tensors.Image`` (CHW). Every mode becomes RGB: grayscale is
    repeated, palettes are looked up, CMYK is converted, alpha is dropped (the stored colour is
    kept, not composited) and 16-bit samples are scaled to 8 bits. The size is read from the header
    first and an image of more than ``max_pixels`` pixels is refused without being decoded. Raises
    ImageFileError (missing, not an image, truncated, too large) with a one-line reason."""
    path = Path(path)
    width, height = image_size(path)
    check_pixels(width, height, max_pixels, str(path))
    try:
        with warnings.catch_warnings():
            # torchvision >= 0.29 warns on every decode that torchcodec will take over image I/O
            warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities",
                                    category=DeprecationWarning)
            # no EXIF rotation: COCO boxes are annotated on the stored pixels (the reference reads with PIL,
            # which does not rotate either)
            pixels = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        return tv_tensors.Image(to_dtype(pixels, torch.uint8, scale=True))  # 16-bit PNGs decode as uint16
    except RuntimeError:
        pass  # formats torchvision cannot decode (BMP, TIFF, ...); PIL decides below, and names the error
    try:
        with _no_pil_pixel_limit(), Image.open(path) as pil:
            pil.load()  # decodes fully, so a truncated file fails here and not inside a transform
            if pil.mode in _SIXTEEN_BIT_MODES:
                gray = np.round(np.asarray(pil, dtype=np.float64) / 257).astype(np.uint8)
                rgb = np.repeat(gray[..., None], 3, axis=2)
            else:
                rgb = np.asarray(pil.convert("RGB"))
    except Exception as exc:  # damaged files raise many types in PIL's plugins (OSError, SyntaxError, ...)
        raise ImageFileError(f"{path}: not a readable image ({one_line(exc)})") from None
    return tv_tensors.Image(torch.from_numpy(rgb.copy()).permute(2, 0, 1))


@contextlib.contextmanager
def _no_pil_pixel_limit():
    """PIL's decompression-bomb check off while a file is opened: the size is checked against
    data.max_image_pixels instead (PIL's check would refuse sizes that limit allows)."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved
