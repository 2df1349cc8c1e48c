"""COCO box evaluation of DETR detections, in one process or across a torch.distributed job.

Detections arrive as :class:`~detr_irpe.models.postprocess.PostProcess` gives them: per image a
dict with ``scores`` (N,), ``labels`` (N,) and ``boxes`` (N, 4) in absolute xyxy pixels of the
original image. DETR's class indices are COCO category ids, so ``category_id = label``. All
detections are kept (no NMS, no score threshold), as the reference does; COCOeval itself keeps the
100 best per image.

Two backends give the same 12 numbers: ``faster_coco_eval`` (C++ evaluate/accumulate, the
default) and ``pycocotools`` (the reference implementation).

Distributed evaluation: a ``DistributedSampler`` pads the dataset with repeated images so that
every rank gets the same number, so some images are evaluated on two ranks. :meth:`synchronize`
gathers every rank's detections and keeps each image once (the first copy, in rank order), so AP
does not depend on the world size.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..utils.io import atomic_write_json
from .names import AP_NAMES, BACKENDS, METRIC_NAMES

logger = logging.getLogger(__name__)



# one image's detections as stored: (boxes xywh float64 (N, 4), scores float64 (N,), labels int64 (N,))
_Dets = tuple[np.ndarray, np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------------------------
# backends


def _backend_classes(backend: str):
    """(COCO, COCOeval) classes of a backend; imported lazily so that a missing optional backend
    only fails when it is asked for."""
    if backend == "faster_coco_eval":
        # COCOeval_faster gives pycocotools' 12 numbers in .stats (its .all_stats appends AR50/AR75)
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    raise UsageError(f"evaluation backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


def _dataset_error(message: str):
    """A DatasetError (imported here: the dataset module loads torchvision, this one stays light)."""
    from ..data.errors import DatasetError

    return DatasetError(message)


@contextlib.contextmanager
def _quiet():
    """Swallow what the COCO tools print (pycocotools prints every step to stdout)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _coco_from_dataset(dataset: dict, backend: str):
    """A backend COCO object indexing ``dataset`` (a parsed instances JSON)."""
    coco_cls, _ = _backend_classes(backend)
    with _quiet():
        coco = coco_cls()  # pycocotools' constructor only takes a file name, so index by hand
        coco.dataset = dataset
        coco.createIndex()
    return coco


def load_ground_truth(coco_gt, backend: str = "faster_coco_eval"):
    """The ground truth as the backend's COCO object. ``coco_gt`` may be a path to an instances
    JSON, its parsed dict, or a COCO object of either backend (re-indexed if of the other one)."""
    coco_cls, _ = _backend_classes(backend)
    if isinstance(coco_gt, coco_cls):
        return coco_gt
    if isinstance(coco_gt, (str, os.PathLike)):
        from ..data.coco_json import read_coco_json

        dataset = read_coco_json(Path(coco_gt).expanduser())
    elif isinstance(coco_gt, dict):
        dataset = coco_gt
    elif isinstance(getattr(coco_gt, "dataset", None), dict):
        dataset = coco_gt.dataset  # a COCO object of the other backend: same data, new index
    else:
        raise TypeError(f"coco_gt must be a COCO object, an instances dict or a path, got {type(coco_gt).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in dataset:
            raise _dataset_error(f"COCO ground truth has no '{key}' list")
    return _coco_from_dataset(dataset, backend)


# ---------------------------------------------------------------------------------------------
# detections


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on the GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _convert(det: Mapping) -> _Dets:
    """PostProcess output (xyxy) -> stored arrays (COCO xywh)."""
    try:
        scores = _to_numpy(det["scores"]).astype(np.float64).reshape(-1)
        labels = _to_numpy(det["labels"]).astype(np.int64).reshape(-1)
        boxes = _to_numpy(det["boxes"]).astype(np.float64).reshape(-1, 4)
    except KeyError as exc:
        raise KeyError(f"a detection dict needs 'scores', 'labels' and 'boxes'; {exc} is missing") from None
    if not len(scores) == len(labels) == len(boxes):
        raise ValueError(f"detections of one image disagree in length: {len(scores)} scores, "
                         f"{len(labels)} labels, {len(boxes)} boxes")
    xywh = boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]
    return xywh, scores, labels


def _empty_dets() -> _Dets:
    return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)


def _annotations(dets_by_image: Mapping[int, _Dets]) -> list[dict]:
    """COCO results entries built fresh on every call: the COCO tools' loadRes writes into the
    dicts it is given (id, area, segmentation), so they must not be shared between runs."""
    out: list[dict] = []
    for image_id, (xywh, scores, labels) in dets_by_image.items():
        image_id = int(image_id)
        for box, score, label in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
            out.append({"image_id": image_id, "category_id": label, "bbox": box, "score": score})
    return out


def _image_ids(image_ids) -> list[int]:
    if hasattr(image_ids, "tolist"):
        image_ids = image_ids.tolist()
    return [int(i) for i in image_ids]


def results_json(detections_by_image: Mapping[int, Mapping]) -> list[dict]:
    """The COCO results list ({image_id, category_id, bbox [x, y, w, h], score}) of detections
    given per image id as PostProcess dicts (xyxy boxes)."""
    return _annotations({int(i): _convert(d) for i, d in detections_by_image.items()})


# ---------------------------------------------------------------------------------------------
# evaluation


def _undefined_metrics(cat_names: Mapping[int, str] | None) -> dict:
    metrics: dict[str, Any] = {name: -1.0 for name in METRIC_NAMES}
    if cat_names is not None:
        metrics["per_category"] = {name: -1.0 for name in cat_names.values()}
    return metrics


def _category_names(coco_gt) -> dict[int, str]:
    """Category id -> display name; a repeated name gets its id appended so none is lost."""
    names: dict[int, str] = {}
    seen: set[str] = set()
    for cat in sorted(coco_gt.dataset["categories"], key=lambda c: c["id"]):
        name = str(cat.get("name", cat["id"]))
        if name in seen:
            name = f"{name} (id {cat['id']})"
        seen.add(name)
        names[int(cat["id"])] = name
    return names


def _run_cocoeval(coco_gt, dets_by_image: Mapping[int, _Dets], backend: str, per_category: bool) -> dict:
    """COCOeval (bbox) over the images in ``dets_by_image`` (an image with no detections still
    counts: its objects are misses). Returns the metrics dict."""
    _, eval_cls = _backend_classes(backend)
    cat_names = _category_names(coco_gt) if per_category else None
    img_ids = sorted(int(i) for i in dets_by_image)
    if not img_ids:
        # nothing was evaluated: every number is undefined, as COCOeval reports an empty set
        logger.warning("COCO evaluation: no images were evaluated; all metrics are -1")
        return _undefined_metrics(cat_names)
    anns = _annotations(dets_by_image)
    t0 = time.perf_counter()
    with _quiet():
        if anns:
            coco_dt = coco_gt.loadRes(anns)
        else:
            # pycocotools' loadRes fails on an empty list (it reads anns[0]); an empty results
            # set over the ground truth's images and categories evaluates to AP 0
            coco_dt = _coco_from_dataset(
                {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]),
                 "annotations": []}, backend)
        kwargs = {"print_function": lambda *a, **k: None} if backend == "faster_coco_eval" else {}
        coco_eval = eval_cls(coco_gt, coco_dt, iouType="bbox", **kwargs)
        # like the reference, evaluate only the images that were seen (a partial pass, e.g. a
        # quick run with few steps, is then scored on its own images)
        coco_eval.params.imgIds = img_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = np.asarray(coco_eval.stats, dtype=np.float64)[: len(METRIC_NAMES)]
    metrics: dict[str, Any] = {name: float(v) for name, v in zip(METRIC_NAMES, stats)}
    if per_category:
        metrics["per_category"] = _per_category_ap(coco_eval, cat_names)
    logger.info("COCO bbox (%s, %d images, %d detections, %.1fs): %s", backend, len(img_ids), len(anns),
                time.perf_counter() - t0,
                " ".join(f"{k} {metrics[k]:.3f}" for k in AP_NAMES))
    return metrics


def _per_category_ap(coco_eval, cat_names: Mapping[int, str]) -> dict[str, float]:
    """AP @[.50:.95], all areas, 100 detections per category; -1 for a category without ground
    truth in the evaluated images (COCOeval's mark for undefined)."""
    # precision is indexed [IoU threshold, recall threshold, category, area range, max dets]
    precision = np.asarray(coco_eval.eval["precision"])
    cat_ids = list(coco_eval.params.catIds)
    out = {}
    for cat_id, name in cat_names.items():
        if cat_id not in cat_ids:
            out[name] = -1.0
            continue
        p = precision[:, :, cat_ids.index(cat_id), 0, -1]
        valid = p[p > -1]
        out[name] = float(valid.mean()) if valid.size else -1.0
    return out


def evaluate_detections(coco_gt, detections_by_image: Mapping[int, Mapping], backend: str = "faster_coco_eval",
                        per_category: bool = False) -> dict:
    """COCO box metrics of detections given per image id as PostProcess dicts (xyxy boxes) in one
    call, without the accumulate API; the images evaluated are the keys given."""
    gt = load_ground_truth(coco_gt, backend)
    dets = {}
    for image_id, det in detections_by_image.items():
        image_id = int(image_id)
        if image_id not in gt.imgs:
            raise _dataset_error(f"detections of image id {image_id}, which is not in the COCO ground truth")
        dets[image_id] = _convert(det)
    return _run_cocoeval(gt, dets, backend, per_category)


# ---------------------------------------------------------------------------------------------
# the accumulating, distributed evaluator


def _dist():
    """torch.distributed when a process group with more than one rank is initialised, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def is_main_process() -> bool:
    """True on rank 0 (or without torch.distributed)."""
    dist = _dist()
    return dist is None or dist.get_rank() == 0


class CocoEvaluator:
    """Accumulates detections over an evaluation pass and computes the 12 COCO box metrics.

    Every rank calls :meth:`update` with its own images, then :meth:`summarize` (a collective
    call: it gathers, evaluates on rank 0 and broadcasts, so every rank returns the same dict).
    With the NCCL backend the current CUDA device must be set, as torch's object collectives
    require.
    """

    def __init__(self, coco_gt, backend: str = "faster_coco_eval", per_category: bool = False):
        if backend not in BACKENDS:
            raise UsageError(f"evaluation backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        self.backend = backend
        self.per_category = per_category
        self.coco_gt = load_ground_truth(coco_gt, backend)
        self.reset()

    def reset(self) -> None:
        """Forget all detections (for the next evaluation pass)."""
        self._dets: dict[int, _Dets] = {}
        self._synchronized = False
        #: detections of an image already held that were dropped (padding repeats)
        self.num_duplicates = 0

    def __len__(self) -> int:
        return len(self._dets)

    @property
    def image_ids(self) -> list[int]:
        """Ids of the images held, in the order they were first seen."""
        return list(self._dets)

    def update(self, image_ids, detections: Iterable[Mapping] | None = None) -> None:
        """Add one batch: ``image_ids`` (ints or a tensor) and their PostProcess dicts, in the same
        order; or a single mapping image id -> dict. An image seen before keeps its first
        detections (a padded sampler repeats images)."""
        if detections is None:
            if not isinstance(image_ids, Mapping):
                raise TypeError("update() needs image ids and detections, or a mapping image id -> detections")
            image_ids, detections = list(image_ids.keys()), list(image_ids.values())
        ids = _image_ids(image_ids)
        detections = list(detections)
        if len(ids) != len(detections):
            raise ValueError(f"{len(ids)} image ids but {len(detections)} detection dicts")
        for image_id, det in zip(ids, detections):
            if image_id not in self.coco_gt.imgs:
                raise _dataset_error(f"detections of image id {image_id}, which is not in the COCO ground truth")
            if image_id in self._dets:
                self.num_duplicates += 1
                continue
            self._dets[image_id] = _convert(det)
        self._synchronized = False

    def synchronize(self) -> None:
        """Gather every rank's detections onto every rank, each image once (the first copy in rank
        order), so that the result equals a single-process evaluation. A no-op in one process.
        Collective: every rank must call it."""
        dist = _dist()
        if dist is None or self._synchronized:
            self._synchronized = True
            return
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._dets)
        merged: dict[int, _Dets] = {}
        repeats = 0
        for part in gathered:
            for image_id, dets in part.items():
                if image_id in merged:
                    repeats += 1
                else:
                    merged[image_id] = dets
        if repeats:
            logger.debug("COCO evaluation: %d images were evaluated on more than one rank (sampler padding); "
                         "each is counted once", repeats)
        self._dets = merged
        self.num_duplicates += repeats
        self._synchronized = True

    def summarize(self) -> dict:
        """The metrics dict: the 12 numbers under ``AP, AP50, AP75, APs, APm, APl, AR1, AR10,
        AR100, ARs, ARm, ARl`` (in [0, 1], -1 when undefined) and, if asked for,
        ``per_category`` (name -> AP). Collective: synchronises first, evaluates on rank 0 and
        sends the result to all ranks; a failure on rank 0 is raised on every rank (none hangs)."""
        self.synchronize()
        dist = _dist()
        metrics, error = None, None
        if dist is None or dist.get_rank() == 0:
            try:
                metrics = _run_cocoeval(self.coco_gt, self._dets, self.backend, self.per_category)
            except Exception as exc:
                if dist is None:
                    raise
                error = f"{type(exc).__name__}: {exc}"
                failure = exc
        if dist is not None:
            box = [metrics, error]
            dist.broadcast_object_list(box, src=0)
            metrics, error = box
            if error is not None:
                if dist.get_rank() == 0:
                    raise failure
                raise RuntimeError(f"COCO evaluation failed on rank 0: {error}")
        return metrics

    def results(self) -> list[dict]:
        """The COCO results list of the detections held (all ranks' after :meth:`synchronize`)."""
        return _annotations(self._dets)

    def write_results(self, path: str | os.PathLike) -> bool:
        """Write :meth:`results` as a COCO results JSON (atomically) on the main process only;
        True where written. Call :meth:`synchronize` (or :meth:`summarize`) first in a
        distributed run."""
        if not is_main_process():
            return False
        write_results(path, self.results())
        return True


# ---------------------------------------------------------------------------------------------
# files


def write_results(path: str | os.PathLike, results) -> Path:
    """Write a COCO results JSON atomically. ``results`` is a results list (see
    :func:`results_json`) or detections per image id as PostProcess dicts."""
    if isinstance(results, Mapping):
        results = results_json(results)
    return atomic_write_json(path, list(results))


def write_metrics(path: str | os.PathLike, metrics: Mapping, extra: Mapping | None = None) -> Path:
    """Write ``{"metrics": metrics, **extra}`` as JSON atomically; ``extra`` records how the
    numbers were made (evaluation batch size, backend, checkpoint, ...), which a reported AP
    needs (the evaluation batch size changes it slightly)."""
    extra = dict(extra or {})
    if "metrics" in extra:
        raise ValueError("write_metrics: 'extra' must not contain the key 'metrics'")
    return atomic_write_json(path, {"metrics": dict(metrics), **extra})


# ---------------------------------------------------------------------------------------------
# text


def _cell(value: float, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value < 0:
        return "-"  # COCOeval's -1: undefined (no ground truth of that kind)
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def format_metrics_table(metrics: Mapping, percent: bool = True) -> str:
    """The 12 COCO numbers as a two-block text table (percent by default; '-' = undefined)."""
    lines = []
    for names in (METRIC_NAMES[:6], METRIC_NAMES[6:]):
        cells = [_cell(metrics.get(n, -1.0), percent) for n in names]
        widths = [max(len(n), len(c), 5) for n, c in zip(names, cells)]
        lines.append("  ".join(n.rjust(w) for n, w in zip(names, widths)))
        lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    return "\n".join(lines)


def format_per_category(metrics: Mapping, percent: bool = True) -> str:
    """A per-category AP table (category, AP), in the order the categories were given."""
    per_cat = metrics.get("per_category")
    if not per_cat:
        return "(no per-category AP; evaluate with per_category=True)"
    width = max(len("category"), *(len(str(n)) for n in per_cat))
    lines = [f"{'category'.ljust(width)}  {'AP':>6}", f"{'-' * width}  {'-' * 6}"]
    lines += [f"{str(name).ljust(width)}  {_cell(ap, percent):>6}" for name, ap in per_cat.items()]
    return "\n".join(lines)
