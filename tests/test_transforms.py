"""The DETR augmentations: boxes stay on the pixels they annotate through flips, resizes and crops;
sizes follow the reference rule; per-box entries stay in step; runs are reproducible."""

import dataclasses

import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from detr_irpe.config import DataConfig
from detr_irpe.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomSizeCrop,
    build_transforms,
    resize_shape,
)

# non-overlapping filled rectangles (XYXY pixels) on a grey 120x160 image; the label names the colour
RECTS = {
    1: ((10, 10, 60, 50), (220, 30, 30)),
    2: ((90, 20, 150, 70), (30, 200, 40)),
    3: ((30, 70, 100, 110), (30, 40, 220)),
    4: ((128, 88, 152, 114), (230, 220, 30)),
}
GREY = 128
H, W = 120, 160
# small sizes keep the many transform runs cheap while still scaling up, down and cropping boxes away
SMALL = dict(scales=[96, 128, 160], max_size=200, crop_resize=[100, 120], crop_size=[60, 100])


def painted_sample():
    img = torch.full((3, H, W), GREY, dtype=torch.uint8)
    boxes, labels = [], []
    for label, ((x1, y1, x2, y2), colour) in RECTS.items():
        img[:, y1:y2, x1:x2] = torch.tensor(colour, dtype=torch.uint8)[:, None, None]
        boxes.append([x1, y1, x2, y2])
        labels.append(label)
    n = len(labels)
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=(H, W)),
        "labels": torch.tensor(labels), "area": torch.tensor([float((b[2] - b[0]) * (b[3] - b[1])) for b in boxes]),
        "iscrowd": torch.zeros(n, dtype=torch.int64), "image_id": torch.tensor(7),
        "orig_size": torch.tensor([H, W]), "size": torch.tensor([H, W]),
    }
    return tv_tensors.Image(img), target


def to_rgb255(image):
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (image * std + mean) * 255


def pixel_boxes(target, height, width):
    cx, cy, w, h = target["boxes"].unbind(-1)
    return torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)


def check_boxes_on_colours(image, target):
    """Every box covers its colour (inside, away from the resampled border) and no more than it
    (just outside it, the colour is absent); every clearly visible rectangle still has its box."""
    rgb = to_rgb255(image)
    height, width = image.shape[-2:]
    assert target["size"].tolist() == [height, width]
    n = len(target["labels"])
    for key in ("boxes", "area", "iscrowd"):
        assert len(target[key]) == n, key
    assert target["boxes"].dtype == torch.float32 and type(target["boxes"]) is torch.Tensor
    assert ((target["boxes"] >= 0) & (target["boxes"] <= 1)).all()
    assert (target["area"] > 0).all()
    for (x1, y1, x2, y2), label in zip(pixel_boxes(target, height, width).tolist(), target["labels"].tolist()):
        colour = torch.tensor(RECTS[label][1], dtype=torch.float32)
        assert x2 - x1 >= 1 and y2 - y1 >= 1
        ix1, iy1, ix2, iy2 = int(x1) + 2, int(y1) + 2, int(x2 + 0.999) - 2, int(y2 + 0.999) - 2
        if ix2 > ix1 and iy2 > iy1:
            mean = rgb[:, iy1:iy2, ix1:ix2].mean(dim=(1, 2))
            assert (mean - colour).abs().max() < 12, (label, mean.tolist(), colour.tolist())
        # three pixels beyond each side, inside the image, the colour must be gone
        for sl in ((slice(iy1, iy2), int(x1) - 3), (slice(iy1, iy2), int(x2 + 0.999) + 2),
                   (int(y1) - 3, slice(ix1, ix2)), (int(y2 + 0.999) + 2, slice(ix1, ix2))):
            ys, xs = sl
            if isinstance(xs, int) and not 0 <= xs < width or isinstance(ys, int) and not 0 <= ys < height:
                continue
            strip = rgb[:, ys, xs].reshape(3, -1)
            if strip.shape[1]:
                assert ((strip - colour[:, None]).abs().max(0).values > 40).all(), ("box too large", label)
    present = set(target["labels"].tolist())
    for label, (_, colour) in RECTS.items():
        close = ((rgb - torch.tensor(colour, dtype=torch.float32)[:, None, None]).abs().max(0).values < 12)
        if close.sum() >= 16:
            assert label in present, f"colour of label {label} visible ({int(close.sum())} px) but its box was removed"


@pytest.mark.parametrize("crop_prob", [0.0, 1.0])
def test_train_boxes_follow_the_pixels(crop_prob):
    cfg = DataConfig(**SMALL, crop_prob=crop_prob, hflip_prob=0.5)
    transform = build_transforms(cfg, train=True)
    image, target = painted_sample()
    flipped, sizes, removed = 0, set(), 0
    for seed in range(24):
        torch.manual_seed(seed)
        out_img, out = transform(image, target)
        check_boxes_on_colours(out_img, out)
        sizes.add(tuple(out_img.shape[-2:]))
        removed += len(out["labels"]) < len(RECTS)
        if crop_prob == 0:
            red = out["boxes"][out["labels"] == 1][0]
            flipped += bool(red[0] > 0.5)  # drawn on the left; on the right only when flipped
    assert len(sizes) > 2  # several scales (and crop sizes) were drawn
    if crop_prob == 0:
        assert 0 < flipped < 24
        assert removed == 0
        assert all(min(s) in SMALL["scales"] or max(s) <= SMALL["max_size"] for s in sizes)
    else:
        assert removed > 0  # some crops cut boxes away, and their labels went with them


def test_default_recipe_boxes_follow_the_pixels():
    transform = build_transforms(DataConfig(), train=True)  # the reference sizes, crop branch half the time
    image, target = painted_sample()
    for seed in range(4):
        torch.manual_seed(seed)
        out_img, out = transform(image, target)
        check_boxes_on_colours(out_img, out)
        assert max(out_img.shape[-2:]) <= 1333


def test_same_seed_same_output_and_seeds_differ():
    transform = build_transforms(DataConfig(**SMALL), train=True)
    image, target = painted_sample()
    outputs = []
    for seed in (3, 3, 4, 5, 6):
        torch.manual_seed(seed)
        outputs.append(transform(image, target))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1]["boxes"], outputs[1][1]["boxes"])
    assert any(o[0].shape != outputs[0][0].shape or not torch.equal(o[1]["boxes"], outputs[0][1]["boxes"])
               for o in outputs[2:])


def test_input_target_is_not_modified():
    image, target = painted_sample()
    before = {k: v.clone() for k, v in target.items()}
    torch.manual_seed(0)
    build_transforms(DataConfig(**SMALL, crop_prob=1.0), train=True)(image, target)
    assert all(torch.equal(before[k], target[k]) for k in before)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)


def expected_reference_size(h, w, size, max_size):
    """The reference rule written out independently: shrink ``size`` so the longer side fits, then
    scale the shorter side to it and truncate the longer side."""
    short, long = min(h, w), max(h, w)
    if long * size / short > max_size:
        size = round(max_size * short / long)
    other = int(size * long / short)
    return (size, other) if h <= w else (other, size)


@pytest.mark.parametrize("h,w", [(480, 640), (640, 480), (500, 2000), (800, 800), (375, 500), (427, 640), (33, 1000)])
def test_val_resize_follows_the_reference_rule(h, w):
    cfg = DataConfig()
    image = tv_tensors.Image(torch.zeros(3, h, w, dtype=torch.uint8))
    out, target = build_transforms(cfg, train=False)(image, {"boxes": torch.zeros(0, 4),
                                                             "labels": torch.zeros(0, dtype=torch.int64)})
    assert tuple(out.shape[-2:]) == expected_reference_size(h, w, cfg.val_size, cfg.max_size)
    assert max(out.shape[-2:]) <= cfg.max_size
    assert target["size"].tolist() == list(out.shape[-2:])
    if max(h, w) / min(h, w) * cfg.val_size <= cfg.max_size:
        assert min(out.shape[-2:]) == cfg.val_size
    assert resize_shape(h, w, cfg.val_size, cfg.max_size) == tuple(out.shape[-2:])


def test_resize_shape_cases_worked_by_hand():
    assert resize_shape(480, 640, 800, 1333) == (800, 1066)  # 640 * 800 / 480 = 1066.7, truncated
    assert resize_shape(500, 2000, 800, 1333) == (333, 1332)  # size round(1333 / 4) = 333, 333 * 4
    assert resize_shape(600, 400, 600, None) == (900, 600)
    assert resize_shape(800, 1066, 800, 1333) == (800, 1066)  # already there: unchanged


def test_validation_draws_nothing_from_the_rng():
    transform = build_transforms(DataConfig(), train=False)
    image, target = painted_sample()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    transform(image, target)
    assert torch.equal(torch.rand(3), expected)


def test_random_size_crop_sides_in_range():
    crop = RandomSizeCrop(384, 600)
    torch.manual_seed(0)
    widths, heights = set(), set()
    for _ in range(60):
        h, w = crop(tv_tensors.Image(torch.zeros(1, 500, 700, dtype=torch.uint8))).shape[-2:]
        assert 384 <= h <= 500 and 384 <= w <= 600
        heights.add(h)
        widths.add(w)
    assert len(heights) > 10 and len(widths) > 10  # drawn independently, not one fixed size
    # a side below the minimum is kept whole instead of failing
    small = crop(tv_tensors.Image(torch.zeros(1, 200, 700, dtype=torch.uint8)))
    assert small.shape[-2] == 200 and 384 <= small.shape[-1] <= 600


def test_pil_input_plain_boxes_and_empty_targets():
    transform = build_transforms(DataConfig(**SMALL, crop_prob=1.0), train=True)
    pil = Image.new("RGB", (W, H), (GREY, GREY, GREY))
    torch.manual_seed(1)
    image, target = transform(pil, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                                     "area": torch.zeros(0), "iscrowd": torch.zeros(0, dtype=torch.int64)})
    assert image.dtype == torch.float32 and image.shape[0] == 3
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and target["area"].shape == (0,)
    # integer XYXY boxes as a plain tensor are taken as pixels and not truncated by the resize
    torch.manual_seed(2)
    image, target = build_transforms(DataConfig(), train=False)(pil, {"boxes": torch.tensor([[10, 10, 50, 40]]),
                                                                       "labels": torch.tensor([1])})
    assert torch.allclose(target["boxes"], torch.tensor([[30 / W, 25 / H, 40 / W, 30 / H]]), atol=1e-3)


def test_area_scales_with_the_image_without_crop():
    cfg = dataclasses.replace(DataConfig(**SMALL), crop_prob=0.0, hflip_prob=0.0)
    image, target = painted_sample()
    torch.manual_seed(0)
    out_img, out = build_transforms(cfg, train=True)(image, target)
    factor = out_img.shape[-2] * out_img.shape[-1] / (H * W)
    assert torch.allclose(out["area"], target["area"] * factor, rtol=1e-4)
