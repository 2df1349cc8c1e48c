"""The accumulating COCO evaluator, in one process or across a torch.distributed job.

A ``DistributedSampler`` pads the dataset with repeated images so that every rank gets the same
number, so some images are evaluated on two ranks. :meth:`CocoEvaluator.synchronize` gathers every
rank's detections and keeps each image once (the first copy, in rank order), so AP does not depend
on the world size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

from ..core.errors import UsageError
from ..core.names import BACKENDS
from ..core.runtime import gather_objects, is_main_process, world_size
from ..data.errors import DatasetError
from .backends import load_ground_truth
from .metrics import run_cocoeval
from .results import Detections, convert_detections, results_entries, write_results

logger = logging.getLogger(__name__)


def _image_ids(image_ids) -> list[int]:
    if hasattr(image_ids, "tolist"):
        image_ids = image_ids.tolist()
    return [int(i) for i in image_ids]


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
        self._dets: dict[int, Detections] = {}
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
                raise DatasetError(f"detections of image id {image_id}, which is not in the COCO ground truth")
            if image_id in self._dets:
                self.num_duplicates += 1
                continue
            self._dets[image_id] = convert_detections(det)
        self._synchronized = False

    def synchronize(self) -> None:
        """Gather every rank's detections onto every rank, each image once (the first copy in rank
        order), so that the result equals a single-process evaluation. A no-op in one process.
        Collective: every rank must call it."""
        if world_size() == 1 or self._synchronized:
            self._synchronized = True
            return
        gathered = gather_objects(self._dets)
        merged: dict[int, Detections] = {}
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
        single = world_size() == 1
        metrics, error = None, None
        if is_main_process():
            try:
                metrics = run_cocoeval(self.coco_gt, self._dets, self.backend, self.per_category)
            except Exception as exc:
                if single:
                    raise
                error = f"{type(exc).__name__}: {exc}"
                failure = exc
        if not single:
            # rank 0's result (or its failure) reaches every rank, so that none waits for the others
            metrics, error = gather_objects((metrics, error))[0]
            if error is not None:
                if is_main_process():
                    raise failure
                raise RuntimeError(f"COCO evaluation failed on rank 0: {error}")
        return metrics

    def results(self) -> list[dict]:
        """The COCO results list of the detections held (all ranks' after :meth:`synchronize`)."""
        return results_entries(self._dets)

    def write_results(self, path: str | os.PathLike) -> bool:
        """Write :meth:`results` as a COCO results JSON (atomically) on the main process only;
        True where written. Call :meth:`synchronize` (or :meth:`summarize`) first in a
        distributed run."""
        if not is_main_process():
            return False
        write_results(path, self.results())
        return True
