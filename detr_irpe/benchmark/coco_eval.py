"""COCO box evaluation time: faster-coco-eval against pycocotools on the same synthetic ground
truth and DETR-like detections (a fixed number per image, as DETR keeps all its queries), with a
check that both give the same 12 numbers.

    python -m detr_irpe.benchmark.coco_eval --images 5000 --dets 100
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

from ..evaluation.backends import load_ground_truth
from ..evaluation.metrics import evaluate_detections
from ..core.names import BACKENDS, METRIC_NAMES

# COCO's 80 category ids (1..90 with gaps), so the synthetic set has the same non-contiguous ids
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def synthetic_coco(num_images: int, dets_per_image: int, seed: int = 0, objects_per_image: float = 7.3,
                   category_ids: list[int] | None = None) -> tuple[dict, dict]:
    """A synthetic instances dict and detections (id -> PostProcess-style dict with numpy arrays,
    xyxy boxes). Ground truth: Poisson-many objects per image (COCO averages 7.3), sizes
    log-uniform from a few pixels to most of the image so all three COCO area ranges occur.
    Detections: a jittered copy of each object (mostly the right category, high scores), then
    random boxes with random categories and lower scores up to ``dets_per_image``."""
    rng = np.random.default_rng(seed)
    cats = list(category_ids or COCO_CATEGORY_IDS)
    images, annotations, detections = [], [], {}
    ann_id = 1
    for image_id in range(1, num_images + 1):
        width, height = int(rng.integers(320, 641)), int(rng.integers(240, 641))
        images.append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id:012d}.jpg"})
        n = int(rng.poisson(objects_per_image))
        # side lengths log-uniform in [4, 0.9 * image side]
        wh = np.exp(rng.uniform(np.log(4), np.log(0.9 * np.array([width, height])), size=(n, 2)))
        xy = rng.uniform(0, 1, size=(n, 2)) * (np.array([width, height]) - wh)
        labels = rng.choice(cats, size=n)
        for (x, y), (w, h), c in zip(xy.tolist(), wh.tolist(), labels.tolist()):
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": c, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0})
            ann_id += 1
        m = min(n, dets_per_image)
        gt_xyxy = np.concatenate([xy, xy + wh], 1)[:m]
        jitter = rng.normal(0, 0.08, size=(m, 4)) * np.concatenate([wh, wh], 1)[:m]
        tp_labels = np.where(rng.random(m) < 0.85, labels[:m], rng.choice(cats, size=m))
        k = dets_per_image - m
        fp_xy = rng.uniform(0, 1, size=(k, 2)) * np.array([width, height])
        fp_wh = np.exp(rng.uniform(np.log(4), np.log(200), size=(k, 2)))
        boxes = np.concatenate([gt_xyxy + jitter, np.concatenate([fp_xy, fp_xy + fp_wh], 1)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, m), rng.uniform(0.0, 0.6, k)])
        detections[image_id] = {"boxes": boxes, "scores": scores,
                                "labels": np.concatenate([tp_labels, rng.choice(cats, size=k)]).astype(np.int64)}
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c, "name": f"category_{c}"} for c in cats]}
    return gt, detections


def benchmark_eval(num_images: int = 5000, dets_per_image: int = 100, seed: int = 0, tolerance: float = 1e-6) -> dict:
    """Seconds of one full evaluation (results conversion, loadRes, evaluate, accumulate,
    summarize) with each backend on the same data; the ground truth is indexed beforehand, as a
    trainer does once. Returns the times, the speed-up, the largest difference of the 12 numbers
    and whether it is within ``tolerance``."""
    gt_dict, dets = synthetic_coco(num_images, dets_per_image, seed)
    out: dict = {"num_images": num_images, "dets_per_image": dets_per_image,
                 "num_annotations": len(gt_dict["annotations"]), "num_detections": num_images * dets_per_image}
    metrics = {}
    for backend in BACKENDS:
        gt = load_ground_truth(gt_dict, backend)
        gc.collect()
        t0 = time.perf_counter()
        metrics[backend] = evaluate_detections(gt, dets, backend)
        out[f"{backend}_s"] = time.perf_counter() - t0
        del gt
    diffs = [abs(metrics["faster_coco_eval"][k] - metrics["pycocotools"][k]) for k in METRIC_NAMES]
    out["speedup"] = out["pycocotools_s"] / out["faster_coco_eval_s"]
    out["max_abs_diff"] = max(diffs)
    out["agree"] = out["max_abs_diff"] <= tolerance
    out["AP"] = metrics["pycocotools"]["AP"]
    out["metrics"] = metrics
    return out


def main(argv=None):
    from .common import print_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    r = benchmark_eval(args.images, args.dets, args.seed)
    print_table("COCO bbox evaluation time (one process)", ["backend", "seconds", "speed-up"],
                [["pycocotools", r["pycocotools_s"], 1.0],
                 ["faster_coco_eval", r["faster_coco_eval_s"], r["speedup"]]], as_json=args.json,
                extra={"images": r["num_images"], "detections": r["num_detections"],
                       "ground-truth boxes": r["num_annotations"], "AP": round(r["AP"], 4),
                       "max |diff| of the 12 numbers": r["max_abs_diff"]})
    return 0 if r["agree"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
