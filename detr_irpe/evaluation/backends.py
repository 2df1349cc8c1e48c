"""The COCO evaluation backends: ``faster_coco_eval`` (C++ evaluate/accumulate, the default) and
``pycocotools`` (the reference implementation) give the same 12 numbers; the ground truth as the
chosen backend's COCO object."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from ..data.coco_json import read_coco_json
from ..data.errors import DatasetError
from ..core.errors import UsageError
from ..core.names import BACKENDS


def backend_classes(backend: str):
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


@contextlib.contextmanager
def quiet():
    """Swallow what the COCO tools print (pycocotools prints every step to stdout)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def coco_from_dataset(dataset: dict, backend: str):
    """A backend COCO object indexing ``dataset`` (a parsed instances JSON)."""
    coco_cls, _ = backend_classes(backend)
    with quiet():
        coco = coco_cls()  # pycocotools' constructor only takes a file name, so index by hand
        coco.dataset = dataset
        coco.createIndex()
    return coco


def load_ground_truth(coco_gt, backend: str = "faster_coco_eval"):
    """The ground truth as the backend's COCO object. ``coco_gt`` may be a path to an instances
    JSON, its parsed dict, or a COCO object of either backend (re-indexed if of the other one)."""
    coco_cls, _ = backend_classes(backend)
    if isinstance(coco_gt, coco_cls):
        return coco_gt
    if isinstance(coco_gt, (str, os.PathLike)):
        dataset = read_coco_json(Path(coco_gt).expanduser())
    elif isinstance(coco_gt, dict):
        dataset = coco_gt
    elif isinstance(getattr(coco_gt, "dataset", None), dict):
        dataset = coco_gt.dataset  # a COCO object of the other backend: same data, new index
    else:
        raise TypeError(f"coco_gt must be a COCO object, an instances dict or a path, got {type(coco_gt).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in dataset:
            raise DatasetError(f"COCO ground truth has no '{key}' list")
    return coco_from_dataset(dataset, backend)
