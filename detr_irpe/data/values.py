"""Tests of the values read from a dataset file (JSON types, sizes) and their short descriptions
for one-line messages."""

from __future__ import annotations

import math

from ..core.limits import ID_RANGE


def is_int(value) -> bool:
    """Whether ``value`` is a JSON integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_id(value) -> bool:
    """Whether ``value`` is an integer that fits an int64 id."""
    return is_int(value) and ID_RANGE[0] <= value <= ID_RANGE[1]


def is_number(value) -> bool:
    """Whether ``value`` is a JSON number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_size(value) -> bool:
    """Whether ``value`` is a positive whole number (a size in pixels)."""
    return is_number(value) and math.isfinite(value) and value > 0 and float(value).is_integer()


def json_type(value) -> str:
    """The JSON type of ``value`` as messages name it ("an object", "a list", ...)."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def show_value(value, limit: int = 60) -> str:
    """``value`` as a short one-line repr for messages."""
    text = one_line(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(value) -> str:
    """``value`` as text on one line (whitespace runs become one space)."""
    text = " ".join(str(value).split())
    return text or type(value).__name__
