"""COCO evaluator: backend agreement, edge cases, distributed de-duplication, result files."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import numpy as np
import pytest
import torch

from detr_irpe.evaluation.backends import load_ground_truth, quiet
from detr_irpe.evaluation.evaluator import CocoEvaluator
from detr_irpe.evaluation.metrics import evaluate_detections
from detr_irpe.evaluation.metrics_report import format_metrics_table, format_per_category, write_metrics
from detr_irpe.core.names import METRIC_NAMES
from detr_irpe.evaluation.results import results_json, write_results

CATS = {1: "person", 3: "car", 7: "train"}  # non-contiguous ids, as COCO's


def make_ground_truth(num_images: int = 30, seed: int = 0) -> dict:
    """Boxes from 4 px to most of the image (all three COCO area ranges); every 7th image empty."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(num_images):
        image_id = 100 + 3 * i  # ids that are neither contiguous nor start at 0
        w_img, h_img = int(rng.integers(300, 640)), int(rng.integers(240, 640))
        images.append({"id": image_id, "width": w_img, "height": h_img, "file_name": f"{image_id}.jpg"})
        if i % 7 == 3:
            continue
        for _ in range(int(rng.integers(1, 6))):
            w = float(np.exp(rng.uniform(np.log(4), np.log(0.9 * w_img))))
            h = float(np.exp(rng.uniform(np.log(4), np.log(0.9 * h_img))))
            x, y = float(rng.uniform(0, w_img - w)), float(rng.uniform(0, h_img - h))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(rng.choice(list(CATS))),
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": c, "name": n} for c, n in CATS.items()]}


def _gt_boxes(gt: dict, image_id: int):
    anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
    xyxy = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                     for a in anns]).reshape(-1, 4)
    return xyxy, np.array([a["category_id"] for a in anns], dtype=np.int64)


def make_detections(gt: dict, seed: int = 1, false_positives: int = 15) -> dict:
    """Ground truth with box noise and some wrong labels, plus random false positives; some scores
    rounded to two decimals so that ties occur (both backends must break them alike)."""
    rng = np.random.default_rng(seed)
    out = {}
    for img in gt["images"]:
        xyxy, labels = _gt_boxes(gt, img["id"])
        size = np.concatenate([xyxy[:, 2:] - xyxy[:, :2]] * 2, 1)
        boxes = xyxy + rng.normal(0, 0.07, xyxy.shape) * size
        labels = np.where(rng.random(len(labels)) < 0.85, labels, rng.choice(list(CATS), len(labels)))
        xy = rng.uniform(0, 1, (false_positives, 2)) * [img["width"], img["height"]]
        fp = np.concatenate([xy, xy + rng.uniform(4, 200, (false_positives, 2))], 1)
        out[img["id"]] = {
            "boxes": torch.tensor(np.concatenate([boxes, fp]), dtype=torch.float32),
            "scores": torch.tensor(np.concatenate([rng.uniform(0.2, 1, len(labels)),
                                                   np.round(rng.uniform(0, 0.7, false_positives), 2)]),
                                   dtype=torch.float32),
            "labels": torch.tensor(np.concatenate([labels, rng.choice(list(CATS), false_positives)])),
        }
    return out


def perfect_detections(gt: dict) -> dict:
    out = {}
    for img in gt["images"]:
        xyxy, labels = _gt_boxes(gt, img["id"])
        out[img["id"]] = {"boxes": torch.tensor(xyxy), "scores": torch.ones(len(labels)),
                          "labels": torch.tensor(labels)}
    return out


@pytest.fixture(scope="module")
def gt():
    return make_ground_truth()


@pytest.fixture(scope="module")
def dets(gt):
    return make_detections(gt)


def _check_metric_dict(m):
    for k in METRIC_NAMES:
        assert isinstance(m[k], float)
        assert m[k] == -1.0 or 0.0 <= m[k] <= 1.0, (k, m[k])


def test_ground_truth_covers_all_area_ranges(gt):
    areas = np.array([a["area"] for a in gt["annotations"]])
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any() and (areas >= 96**2).any()
    assert len({a["image_id"] for a in gt["annotations"]}) < len(gt["images"])  # some images empty


def test_backends_agree(gt, dets, tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(gt))
    fast = evaluate_detections(str(path), dets, "faster_coco_eval", per_category=True)
    ref = evaluate_detections(load_ground_truth(gt, "pycocotools"), dets, "pycocotools", per_category=True)
    _check_metric_dict(fast)
    # same algorithm on the same float64 inputs; the only difference is summation order in the
    # final means, hence a tolerance far below any printed digit rather than exact equality
    for k in METRIC_NAMES:
        assert abs(fast[k] - ref[k]) < 1e-6, (k, fast[k], ref[k])
    for name in CATS.values():
        assert abs(fast["per_category"][name] - ref["per_category"][name]) < 1e-6
    assert 0.05 < fast["AP"] < 0.95  # a non-trivial case (noise and false positives)
    # a COCO object of the other backend is re-indexed, not rejected
    assert evaluate_detections(load_ground_truth(gt, "pycocotools"), dets, "faster_coco_eval",
                               per_category=True) == fast


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_perfect_detections(gt, backend):
    m = evaluate_detections(gt, perfect_detections(gt), backend, per_category=True)
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert m[k] == pytest.approx(1.0), k
    assert list(m["per_category"].values()) == pytest.approx([1.0] * len(CATS))


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_empty_detections(gt, backend):
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    ev = CocoEvaluator(gt, backend, per_category=True)
    ev.update([img["id"] for img in gt["images"]], [empty] * len(gt["images"]))
    m = ev.summarize()
    _check_metric_dict(m)
    assert m["AP"] == 0.0 and m["AR100"] == 0.0 and set(m["per_category"].values()) == {0.0}
    # nothing evaluated at all: every number undefined, still no crash
    m = CocoEvaluator(gt, backend, per_category=True).summarize()
    assert all(m[k] == -1.0 for k in METRIC_NAMES) and set(m["per_category"]) == set(CATS.values())


def test_per_category_names_and_tables(gt, dets):
    m = evaluate_detections(gt, dets, per_category=True)
    assert list(m["per_category"]) == ["person", "car", "train"]
    table = format_per_category(m)
    for name in CATS.values():
        assert name in table
    text = format_metrics_table(m)
    assert all(k in text for k in METRIC_NAMES) and f"{100 * m['AP']:.1f}" in text
    assert "-" in format_metrics_table({k: -1.0 for k in METRIC_NAMES})


def test_update_accepts_batches_and_mapping(gt, dets):
    ids = list(dets)
    ev = CocoEvaluator(gt)
    ev.update(torch.tensor(ids[:10]), [dets[i] for i in ids[:10]])
    ev.update({i: dets[i] for i in ids[10:]})
    assert ev.summarize() == evaluate_detections(gt, dets)
    with pytest.raises(ValueError, match="not in the COCO ground truth"):
        ev.update([99999], [dets[ids[0]]])


def test_repeated_images_counted_once(gt, dets):
    once = CocoEvaluator(gt)
    once.update(list(dets), list(dets.values()))
    twice = CocoEvaluator(gt)
    ids = list(dets)
    twice.update(ids, list(dets.values()))
    twice.update(ids[:3], [dets[i] for i in ids[:3]])  # what a padded sampler repeats
    assert twice.num_duplicates == 3 and len(twice) == len(once)
    assert twice.summarize() == once.summarize()


def test_evaluates_only_seen_images(gt, dets):
    # like the reference: a partial pass is scored on its own images, not penalised for the rest
    ids = [i for i in dets if i in {a["image_id"] for a in gt["annotations"]}][:5]
    sub = {i: dets[i] for i in ids}
    sub_gt = dict(gt, images=[im for im in gt["images"] if im["id"] in ids],
                  annotations=[a for a in gt["annotations"] if a["image_id"] in ids])
    assert evaluate_detections(gt, sub) == evaluate_detections(sub_gt, sub)


def _sampler_indices(n: int, rank: int, world: int) -> list[int]:
    from torch.utils.data import DistributedSampler

    return list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False))


def _dist_worker(rank, world, init_file, gt, dets, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        ids = list(dets)
        ev = CocoEvaluator(gt, "faster_coco_eval", per_category=True)
        mine = [ids[k] for k in _sampler_indices(len(ids), rank, world)]
        for start in range(0, len(mine), 2):  # batches of 2, as the evaluation loop gives them
            batch = mine[start:start + 2]
            ev.update(batch, [dets[i] for i in batch])
        metrics = ev.summarize()
        written = ev.write_results(out_dir / "results.json")
        (out_dir / f"rank{rank}.json").write_text(json.dumps({"metrics": metrics, "held": len(ev),
                                                              "written": written}))
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(gt, dets, tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    # an odd image count, so DistributedSampler pads rank 1 with a repeat of the first image
    ids = list(dets)[:29]
    sub = {i: dets[i] for i in ids}
    assert sorted(_sampler_indices(29, 0, 2) + _sampler_indices(29, 1, 2)) == sorted(list(range(29)) + [0])
    single = evaluate_detections(gt, sub, per_category=True)
    sub_np = {i: {k: v.numpy() for k, v in d.items()} for i, d in sub.items()}  # cheap to pickle
    ctx = mp.start_processes(_dist_worker, args=(2, tmp_path / "pg_init", gt, sub_np, tmp_path), nprocs=2,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + 180
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("distributed evaluation did not finish in 180 s")
    finally:
        for p in ctx.processes:  # only our own two children, and only if still running
            if p.is_alive():
                p.kill()
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert got[0]["metrics"] == got[1]["metrics"]  # every rank returns the same dict
    assert got[0]["held"] == got[1]["held"] == 29  # after gathering, each image once
    for k in METRIC_NAMES:
        assert got[0]["metrics"][k] == pytest.approx(single[k], abs=1e-12), k
    assert got[0]["metrics"]["per_category"] == pytest.approx(single["per_category"], abs=1e-12)
    assert [g["written"] for g in got] == [True, False]  # results file from the main process only
    assert len({r["image_id"] for r in json.loads((tmp_path / "results.json").read_text())}) == 29


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_results_json_round_trip(gt, dets, tmp_path, backend):
    path = write_results(tmp_path / "out" / "results.json", dets)
    loaded = json.loads(path.read_text())
    assert loaded == results_json(dets)
    first = loaded[0]
    assert set(first) == {"image_id", "category_id", "bbox", "score"}
    d0 = dets[first["image_id"]]
    x1, y1, x2, y2 = d0["boxes"][0].tolist()
    assert first["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])  # xyxy -> xywh
    assert first["category_id"] == int(d0["labels"][0])  # label = COCO category id
    coco_gt = load_ground_truth(gt, backend)
    with quiet():
        res = coco_gt.loadRes(str(path))
    assert len(res.getAnnIds()) == sum(len(d["scores"]) for d in dets.values())
    # the evaluator's own results list holds the same detections
    ev = CocoEvaluator(coco_gt, backend)
    ev.update(dets)
    assert ev.results() == loaded and ev.write_results(tmp_path / "again.json")


def test_atomic_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_metrics(path, {"AP": 0.5}, {"eval_batch_size": 2, "backend": "pycocotools", "checkpoint": "a.pth"})
    before = path.read_text()
    assert json.loads(before) == {"metrics": {"AP": 0.5}, "eval_batch_size": 2, "backend": "pycocotools",
                                  "checkpoint": "a.pth"}
    import detr_irpe.core.io as io_mod
    real_fsync = io_mod.os.fsync

    def fsync_then_fail(fd):
        # the new content has reached the temporary file; the disk fills before it is durable
        raise OSError("disk full")

    monkeypatch.setattr(io_mod.os, "fsync", fsync_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_metrics(path, {"AP": 0.7}, {"eval_batch_size": 1})
    with pytest.raises(OSError, match="disk full"):
        write_results(tmp_path / "results.json", [])
    assert path.read_text() == before
    assert not (tmp_path / "results.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary files left
    monkeypatch.setattr(io_mod.os, "fsync", real_fsync)
    with pytest.raises(ValueError):
        write_metrics(path, {"AP": 0.7}, {"metrics": 1})


def test_benchmark_small():
    from detr_irpe.benchmark.coco_eval import benchmark_eval

    r = benchmark_eval(num_images=40, dets_per_image=30, seed=3)
    assert r["agree"] and r["max_abs_diff"] < 1e-6
    assert r["faster_coco_eval_s"] > 0 and r["pycocotools_s"] > 0 and r["speedup"] > 0
    assert 0 < r["AP"] < 1
