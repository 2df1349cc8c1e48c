"""Detections drawn on an image: one colour per class, the class name and score above each box."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

#: distinct colours, one per category id (cycled)
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0))


def colour_of(label: int) -> tuple[int, int, int]:
    """The colour of class ``label``."""
    return PALETTE[int(label) % len(PALETTE)]


def draw_detections(image: torch.Tensor, det, names: Mapping[int, str] | None = None):
    """A PIL image: ``image`` (uint8 CHW) with each detection's box and ``name score``."""
    from PIL import Image, ImageDraw, ImageFont

    pil = Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy()))
    draw = ImageDraw.Draw(pil)
    h, w = pil.height, pil.width
    width = max(1, round(min(h, w) / 200))
    font = ImageFont.load_default(size=max(8, round(min(h, w) / 40)))
    names = names or {}
    # lowest score first, so that the best boxes are drawn on top
    for i in torch.argsort(det.scores, stable=True).tolist():
        x0, y0, x1, y1 = det.boxes[i].tolist()
        colour = colour_of(det.labels[i])
        draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=colour, width=width)
        text = f"{name_of(names, det.labels[i])} {float(det.scores[i]):.2f}"
        _, top, _, bottom = draw.textbbox((x0, y0), text, font=font)
        ty = y0 - (bottom - top) - 2 if y0 - (bottom - top) - 2 >= 0 else y0  # above the box if it fits
        box = draw.textbbox((x0, ty), text, font=font)
        draw.rectangle(box, fill=colour)
        draw.text((x0, ty), text, fill=(255, 255, 255), font=font)
    return pil


def name_of(names: Mapping[int, str], label: int) -> str:
    """The name of class ``label``, or ``class <id>`` when it has none."""
    return names.get(int(label), f"class {int(label)}")
