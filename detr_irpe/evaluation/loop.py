"""Run a model over a validation loader and compute COCO box AP."""

from __future__ import annotations

import contextlib
import logging
import time

import torch
from tqdm import tqdm

from ..core.runtime import is_main_process
from .evaluator import CocoEvaluator

log = logging.getLogger(__name__)


def autocast_context(device: torch.device, amp: str):
    """Mixed precision on CUDA (bf16 or fp16); nothing elsewhere."""
    if amp == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_device(images, mask, targets, device):
    """Move a collated batch to ``device``."""
    nb = device.type == "cuda"
    images = images.to(device, non_blocking=nb)
    mask = mask.to(device, non_blocking=nb)
    targets = [{k: v.to(device, non_blocking=nb) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return images, mask, targets


@torch.no_grad()
def evaluate(model, postprocess, loader, cfg, device, *, progress: bool = True, results_path=None) -> dict:
    """COCO box metrics of ``model`` on ``loader`` (a loader of detr_irpe.data.build, whose
    dataset holds the ground truth), as the resolved config ``cfg`` says (precision, memory
    format, COCO backend, per-category AP); the same dict on every process (collective). Adds
    ``eval_images``, ``eval_seconds``, ``inference_images_per_s``. With ``results_path`` the
    detections are also written there as a COCO results JSON."""
    amp, channels_last = cfg.train.amp, cfg.train.channels_last
    was_training = model.training
    model.eval()
    evaluator = CocoEvaluator(loader.dataset.coco, backend=cfg.eval.backend, per_category=cfg.eval.per_category)
    start = time.perf_counter()
    images_seen = 0
    model_seconds = 0.0
    bar = tqdm(loader, desc="eval", leave=False, dynamic_ncols=True,
               disable=not progress or not is_main_process())
    for images, mask, targets in bar:
        images, mask, targets = to_device(images, mask, targets, device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        with autocast_context(device, amp):
            outputs = model(images, mask)
        sizes = torch.stack([t["orig_size"] for t in targets])
        dets = postprocess(outputs, sizes)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        model_seconds += time.perf_counter() - t0
        evaluator.update([int(t["image_id"]) for t in targets], dets)
        images_seen += len(targets)
    evaluator.synchronize()
    metrics = evaluator.summarize()
    if results_path is not None:
        evaluator.write_results(results_path)
    metrics["eval_seconds"] = time.perf_counter() - start
    metrics["eval_images"] = images_seen
    # inference speed of the model and post-processing alone (no data loading, no COCO scoring)
    metrics["inference_images_per_s"] = images_seen / model_seconds if model_seconds > 0 else None
    model.train(was_training)
    return metrics
