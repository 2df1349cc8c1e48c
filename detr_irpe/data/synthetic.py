"""The built-in synthetic COCO-format dataset: a few classes of shapes on varied backgrounds.

Deterministic for a given parameter set, generated on first use into a cache folder (one
subfolder per parameter set), with the COCO layout ``train/``, ``val/`` and
``annotations/instances_{train,val}.json``. ``difficulty`` 0 gives flat backgrounds, large
upright objects and one colour per class (a tiny DETR learns it on a CPU in minutes); towards 1
backgrounds get cluttered, objects smaller and rotated, and colours stop telling the classes apart,
so that only shape does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring", "hexagon", "star")
PALETTE = ((220, 40, 40), (40, 170, 60), (40, 80, 220), (240, 150, 20),
           (150, 60, 200), (20, 190, 200), (230, 60, 180), (200, 200, 30))
VERSION = 1  # bump when the drawing changes, so that caches are regenerated


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Outline of a shape of circumradius r centred at (cx, cy), rotated by angle (radians)."""
    if shape in ("circle", "ring"):
        pts = [(math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
    elif shape == "square":
        pts = [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)]
    elif shape == "triangle":
        pts = [(0.0, -1.0), (0.87, 0.5), (-0.87, 0.5)]
    elif shape == "diamond":
        pts = [(0.0, -1.0), (0.65, 0.0), (0.0, 1.0), (-0.65, 0.0)]
    elif shape == "hexagon":
        pts = [(math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, 6, endpoint=False)]
    elif shape == "star":
        pts = [((1.0 if i % 2 == 0 else 0.45) * math.cos(t - math.pi / 2), (1.0 if i % 2 == 0 else 0.45) * math.sin(t - math.pi / 2))
               for i, t in enumerate(np.linspace(0, 2 * math.pi, 10, endpoint=False))]
    else:  # cross
        a, b = 0.3, 0.9
        pts = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _background(rng: np.random.Generator, h: int, w: int, difficulty: float) -> Image.Image:
    base = rng.integers(90, 200, size=3)
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = base
    if difficulty > 0:  # a gradient whose strength grows with difficulty
        gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
        direction = rng.normal(size=2)
        ramp = (gy * direction[0] + gx * direction[1]) / max(h, w)
        img += (ramp[..., None] * rng.normal(0, 60 * difficulty, size=3)).astype(np.float32)
    img += rng.normal(0, 4 + 12 * difficulty, size=(h, w, 3)).astype(np.float32)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(round(12 * difficulty))):  # clutter: lines and blobs that are not objects
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.5:
            draw.line([(x0, y0), (x0 + rng.normal(0, w / 3), y0 + rng.normal(0, h / 3))], fill=colour,
                      width=int(rng.integers(1, 4)))
        else:
            rr = rng.uniform(2, 0.06 * min(h, w) + 2)
            draw.ellipse([x0 - rr, y0 - rr * rng.uniform(0.3, 1), x0 + rr, y0 + rr], fill=colour)
    return pil


def render_sample(rng: np.random.Generator, num_classes: int, image_size, min_objects: int, max_objects: int,
                  difficulty: float):
    """One image (H x W x 3 uint8) with its boxes (COCO x, y, w, h) and 0-based class indices."""
    lo, hi = image_size
    short = int(rng.integers(lo, hi + 1))
    long_ = int(rng.integers(short, hi + 1))
    h, w = (short, long_) if rng.random() < 0.5 else (long_, short)
    pil = _background(rng, h, w, difficulty)
    draw = ImageDraw.Draw(pil)
    n = int(rng.integers(min_objects, max_objects + 1))
    boxes, labels = [], []
    side = min(h, w)
    for _ in range(n):
        for _attempt in range(20):
            cls = int(rng.integers(0, num_classes))
            r = side * rng.uniform(0.14, 0.26) * (1 - 0.45 * difficulty)
            cx, cy = rng.uniform(r * 0.8, w - r * 0.8), rng.uniform(r * 0.8, h - r * 0.8)
            angle = math.radians(rng.uniform(-45, 45) * difficulty)
            pts = _polygon(SHAPES[cls % len(SHAPES)], cx, cy, r, angle)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
            x1, y1 = min(float(w), max(xs)), min(float(h), max(ys))
            if x1 - x0 < 4 or y1 - y0 < 4 or any(_iou((x0, y0, x1, y1), b) > 0.1 for b in boxes):
                continue
            if rng.random() < difficulty * 0.8:  # colour no longer tells the class
                colour = PALETTE[int(rng.integers(0, len(PALETTE)))]
            else:
                colour = PALETTE[cls % len(PALETTE)]
            colour = tuple(int(np.clip(c + rng.normal(0, 12), 0, 255)) for c in colour)
            draw.polygon(pts, fill=colour)
            if SHAPES[cls % len(SHAPES)] == "ring":
                inner = _polygon("circle", cx, cy, r * 0.5, 0.0)
                draw.polygon(inner, fill=pil.getpixel((int(min(w - 1, max(0, cx))), int(min(h - 1, max(0, cy - r * 0.75))))))
            boxes.append((x0, y0, x1, y1))
            labels.append(cls)
            break
    xywh = [(b[0], b[1], b[2] - b[0], b[3] - b[1]) for b in boxes]
    return np.asarray(pil), xywh, labels


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def dataset_folder(cfg) -> Path:
    """The cache folder of a SyntheticConfig's parameter set."""
    params = {k: v for k, v in asdict(cfg).items() if k != "cache_dir"}
    digest = hashlib.sha1(json.dumps({"v": VERSION, **params}, sort_keys=True).encode()).hexdigest()[:10]
    return Path(os.path.expanduser(cfg.cache_dir)) / f"shapes-{digest}"


def split_files(root: Path, split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of a split in a synthetic dataset folder: its layout."""
    return root / split, root / "annotations" / f"instances_{split}.json"


def ensure_synthetic_split(cfg, split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of a split, generating the dataset first if needed."""
    return split_files(ensure_synthetic(cfg), split)


def ensure_synthetic(cfg, progress: bool = True) -> Path:
    """Generate the dataset of a SyntheticConfig unless its cache folder is complete; returns it."""
    root = dataset_folder(cfg)
    if (root / "DONE").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    # generate beside the final folder and rename: a crash or a concurrent process never sees a
    # half-written dataset
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        _generate(cfg, tmp, progress)
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished first: keep its copy
            if not (root / "DONE").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _generate(cfg, out: Path, progress: bool) -> None:
    from tqdm import tqdm

    categories = [{"id": i + 1, "name": SHAPES[i % len(SHAPES)] + ("" if i < len(SHAPES) else f"_{i}"),
                   "supercategory": "shape"} for i in range(cfg.num_classes)]
    for split, count, offset in (("train", cfg.num_train, 0), ("val", cfg.num_val, 1)):
        image_dir, annotation_file = split_files(out, split)
        image_dir.mkdir(parents=True)
        images, annotations = [], []
        bar = tqdm(range(count), desc=f"synthetic {split}", disable=not progress or not sys.stderr.isatty(), leave=False)
        for i in bar:
            rng = np.random.default_rng([cfg.seed, offset, i])
            pixels, boxes, labels = render_sample(rng, cfg.num_classes, cfg.image_size, cfg.min_objects,
                                                  cfg.max_objects, cfg.difficulty)
            name = f"{i:06d}.png"
            Image.fromarray(pixels).save(image_dir / name, compress_level=1)
            image_id = i + 1
            images.append({"id": image_id, "file_name": name, "height": int(pixels.shape[0]),
                           "width": int(pixels.shape[1])})
            for box, label in zip(boxes, labels):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                    "bbox": [round(float(v), 2) for v in box], "area": round(float(box[2] * box[3]), 2),
                                    "iscrowd": 0})
        annotation_file.parent.mkdir(exist_ok=True)
        data = {"info": {"description": "detr-irpe synthetic shapes", "params": {k: v for k, v in asdict(cfg).items()
                                                                                if k != "cache_dir"}},
                "images": images, "annotations": annotations, "categories": categories}
        annotation_file.write_text(json.dumps(data))
    (out / "DONE").write_text(json.dumps(asdict(cfg), sort_keys=True))
    log.info("synthetic dataset: %d train and %d val images generated", cfg.num_train, cfg.num_val)
