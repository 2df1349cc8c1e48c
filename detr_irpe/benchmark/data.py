"""The training data pipeline alone (decode, augment, batch) on COCO-sized JPEG images, in
images/s with 0, 1 and 2 loader workers, beside how fast a training step consumes images."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import load_config
from ..data.build import build_dataset, build_loader
from .common import machine_description, print_table


def make_coco_like(folder: Path, n: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """``n`` random JPEG images of COCO's sizes (about 640 x 480) with a few boxes each."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = (640, int(rng.integers(360, 481))) if rng.random() < 0.7 else (int(rng.integers(360, 481)), 640)
        pixels = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).resize((w, h), Image.BILINEAR).save(folder / "images" / f"{i:06d}.jpg", quality=90)
        images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": w, "height": h})
        for _ in range(7):
            bw, bh = rng.uniform(20, w / 2), rng.uniform(20, h / 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(rng.integers(1, 91)),
                         "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
    ann_file = folder / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": c, "name": str(c)} for c in range(1, 91)]}))
    return folder / "images", ann_file


def _decode_rates(files) -> dict[str, float]:
    """JPEG decoding alone: torchvision.io (what the dataset uses) against PIL."""
    import torchvision.io as tio

    rates = {}
    t0 = time.perf_counter()
    for f in files:
        tio.decode_image(tio.read_file(str(f)))
    rates["torchvision.io"] = len(files) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            np.asarray(im.convert("RGB"))
    rates["PIL"] = len(files) / (time.perf_counter() - t0)
    return rates


def run(workers=(0, 1, 2), images=64, batch_size=2, step_seconds: float | None = None, as_json=False):
    """Print the data table; ``step_seconds`` (a measured training step) adds the consumption rate."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        img_dir, ann = make_coco_like(Path(tmp), images)
        decode = _decode_rates(sorted(img_dir.iterdir()))
        for n in workers:
            cfg = load_config(None, ["data.dataset=coco", f"data.train_images={img_dir}", f"data.train_annotations={ann}",
                                     f"data.num_workers={n}", f"train.batch_size={batch_size}", "model.num_classes=91"])
            ds = build_dataset(cfg, "train")
            loader = build_loader(ds, cfg, train=True)
            loader.batch_sampler.set_epoch(0)
            it = iter(loader)
            next(it)  # workers started
            count, t0 = batch_size, time.perf_counter()
            for _ in it:
                count += batch_size
            dt = time.perf_counter() - t0
            rate = (count - batch_size) / dt
            rows.append([n, rate, rate / max(1, n)])
            del it, loader
    extra = {"machine": machine_description(torch.device("cpu")),
             "setting": f"{images} JPEG images ~640 x 480, the reference training augmentation, batches of {batch_size}"}
    extra["decode only"] = ", ".join(f"{k} {v:.0f} images/s" for k, v in decode.items())
    if step_seconds:
        extra["training step consumes"] = f"{batch_size / step_seconds:.1f} images/s per process ({step_seconds:.2f} s/step)"
    print_table("Data pipeline", ["workers", "images/s", "images/s per worker"], rows, as_json, extra)
    return rows
