"""The errors of a dataset that cannot be used. Light to import (no torch), so that modules that
only report them need not load the image stack."""

from __future__ import annotations

from ..core.errors import UserError


class DatasetError(UserError, ValueError):
    """A dataset that cannot be used; the one-line message names the file and the entry."""


class ImageFileError(DatasetError):
    """An image file that is missing, cannot be decoded, or is larger than the pixel limit."""


class ImageTooLargeError(ImageFileError):
    """An image with more pixels than the configured limit (refused before decoding)."""
