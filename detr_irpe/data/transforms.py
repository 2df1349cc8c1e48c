"""The reference DETR augmentations on ``torchvision.transforms.v2``.

Train: horizontal flip, then either the multi-scale resize (shorter side drawn from ``scales``,
longer side at most ``max_size``) or, with probability ``crop_prob``, resize to one of
``crop_resize``, a random crop with sides in ``crop_size`` and the same multi-scale resize.
Validation: shorter side ``val_size``, longer at most ``max_size``. Then ImageNet normalisation, and
boxes as normalised (cx, cy, w, h).

Boxes travel as ``tv_tensors.BoundingBoxes`` so that torchvision moves, clips and scales them with the
pixels; the custom steps only choose sizes and offsets. All randomness comes from torch's global RNG,
so seeding torch (per DataLoader worker, as torch does) makes the augmentations reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: target entries with one row per box, removed together with the boxes they belong to
PER_BOX_KEYS = ("labels", "area", "iscrowd")


def resize_shape(height: int, width: int, size: int, max_size: int | None = None) -> tuple[int, int]:
    """``(height, width)`` with the shorter side ``size``, the aspect ratio kept, and ``size`` reduced
    when the longer side would exceed ``max_size`` (rounded, and the longer side truncated, exactly as
    the reference computes it, so that sizes and hence padding match)."""
    if max_size is not None:
        short, long = float(min(height, width)), float(max(height, width))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if min(height, width) == size:
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _randint(low: int, high: int) -> int:
    """A uniform integer in [low, high] (both included) from torch's RNG."""
    return int(torch.randint(low, high + 1, ()).item())


class RandomShortSideResize(v2.Transform):
    """Resize so that the shorter side is one of ``sizes`` (drawn uniformly) and the longer side at
    most ``max_size`` (None: no limit)."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None):
        super().__init__()
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"sizes must be a non-empty list of positive sizes, got {sizes}")
        self.sizes = list(sizes)
        self.max_size = max_size

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        # one size draws nothing, so validation leaves the RNG stream alone
        size = self.sizes[_randint(0, len(self.sizes) - 1)] if len(self.sizes) > 1 else self.sizes[0]
        return {"size": list(resize_shape(height, width, size, self.max_size))}

    def transform(self, inpt, params: dict):
        return self._call_kernel(F.resize, inpt, size=params["size"], antialias=True)


class RandomSizeCrop(v2.Transform):
    """Crop a random region whose width and height are drawn independently in
    ``[min_size, min(image side, max_size)]`` (the reference's RandomSizeCrop). An image side below
    ``min_size`` is kept whole (the reference would fail there)."""

    def __init__(self, min_size: int, max_size: int):
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"expected 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size = min_size, max_size

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        crop_w = _randint(min(self.min_size, width), min(width, self.max_size))
        crop_h = _randint(min(self.min_size, height), min(height, self.max_size))
        return {"top": _randint(0, height - crop_h), "left": _randint(0, width - crop_w),
                "height": crop_h, "width": crop_w}

    def transform(self, inpt, params: dict):
        return self._call_kernel(F.crop, inpt, **params)


def _per_box_entries(inputs) -> list[torch.Tensor]:
    """The target tensors that SanitizeBoundingBoxes must filter together with the boxes."""
    target = inputs[1]
    return [target[k] for k in PER_BOX_KEYS if k in target]


class DetrTransforms:
    """``(image, target) -> (normalised float CHW tensor, target)`` with the reference augmentations
    (``train``) or the validation resize; see the module docstring.

    The input is what CocoDetection returns (a PIL image or uint8 tensor and XYXY pixel boxes). The
    output target holds ``boxes`` as a float32 (N, 4) tensor of normalised (cx, cy, w, h), the per-box
    entries kept in step with them, ``size`` as the final [h, w] and ``area`` in final pixels.
    Boxes that end up below one pixel wide or high (for instance cut away by a crop) are removed."""

    def __init__(self, cfg, train: bool):
        self.train = train
        self.resize = RandomShortSideResize(cfg.scales if train else [cfg.val_size], cfg.max_size)
        self.flip = v2.RandomHorizontalFlip(cfg.hflip_prob)
        self.crop_prob = cfg.crop_prob if train else 0.0
        # the reference resizes before its crop without a longer-side limit: the crop bounds the size
        self.crop = v2.Compose([RandomShortSideResize(cfg.crop_resize), RandomSizeCrop(*cfg.crop_size)])
        # a resize can leave a box edge a float rounding error past the image border, which
        # SanitizeBoundingBoxes would take for a box outside the image and drop: clamp first
        self.sanitize = v2.Compose([v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(labels_getter=_per_box_entries)])
        self.to_float = v2.ToDtype(torch.float32, scale=True)
        self.normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def __repr__(self) -> str:
        steps = [self.flip, f"crop branch (p={self.crop_prob}): {self.crop}"] if self.train else []
        steps += [self.resize, self.sanitize, self.to_float, self.normalize]
        return f"DetrTransforms(train={self.train}, " + ", ".join(map(str, steps)) + ")"

    def __call__(self, image, target: dict):
        image, target = _as_tv_tensors(image, target)
        height0, width0 = image.shape[-2:]
        sample = (image, target)
        cropped = False
        if self.train:
            sample = self.flip(sample)
            if self.crop_prob > 0 and torch.rand(()) < self.crop_prob:
                sample = self.crop(sample)
                cropped = True
        sample = self.sanitize(self.resize(sample))
        image, target = self.normalize(self.to_float(sample))

        height, width = image.shape[-2:]
        boxes = target["boxes"]
        if "area" in target:
            if cropped:
                # the reference replaces the annotated area by the cropped box area, then scales it
                xyxy = F.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY)
                target["area"] = ((xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])).as_subclass(torch.Tensor)
            else:
                target["area"] = target["area"] * (height * width / (height0 * width0))
        cxcywh = F.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.CXCYWH)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        target["boxes"] = cxcywh.as_subclass(torch.Tensor).to(torch.float32) / scale
        target["size"] = torch.tensor([height, width], dtype=torch.int64)
        return image.as_subclass(torch.Tensor), target


def _as_tv_tensors(image, target: dict) -> tuple[tv_tensors.Image, dict]:
    """The image as a ``tv_tensors.Image`` and a copy of the target whose boxes are
    ``BoundingBoxes`` (plain tensors are taken as XYXY pixels), so torchvision transforms both."""
    if isinstance(image, PIL.Image.Image):
        image = F.to_image(image.convert("RGB"))
    elif not isinstance(image, tv_tensors.Image):
        image = tv_tensors.Image(image)
    target = dict(target)
    boxes = target.get("boxes")
    if boxes is None:
        boxes = torch.zeros(0, 4)
    if not isinstance(boxes, tv_tensors.BoundingBoxes):
        boxes = tv_tensors.BoundingBoxes(torch.as_tensor(boxes).reshape(-1, 4), format="XYXY",
                                         canvas_size=tuple(image.shape[-2:]))
    if not boxes.is_floating_point():
        # integer boxes would be truncated by every resize
        boxes = tv_tensors.wrap(boxes.to(torch.float32), like=boxes)
    target["boxes"] = boxes
    return image, target


def build_transforms(cfg, train: bool) -> DetrTransforms:
    """The train (augmenting) or validation transforms of a DataConfig."""
    return DetrTransforms(cfg, train)
