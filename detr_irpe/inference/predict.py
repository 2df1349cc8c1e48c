"""A model run on image files: the validation preprocessing, detections in original pixels, a COCO
results JSON with its image mapping (drawing is in detr_irpe.analysis.drawing).

Every image is run on its own (batch 1, padded only to ``data.size_divisibility``), so a result does
not depend on which other images were given. Image ids are the indices, in sorted file-name order,
of the images that were read; ``images.json`` maps them to the file names.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import UsageError, UserError

log = logging.getLogger(__name__)

#: files with these suffixes (any case) are read as images; other files in a folder are skipped
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


def class_names(loaded, annotations: str | None = None) -> dict[int, str]:
    """Category id -> name: from ``annotations`` (a COCO JSON file) when given, else the model's
    resolved class names, else the annotation file of the config's val split when it is on this
    machine (a synthetic dataset is not generated for this); ids not listed are shown as
    ``class <id>`` (see detr_irpe.analysis.drawing.name_of)."""
    from ..data.coco import coco_paths
    from ..data.coco_json import read_coco_json
    from ..data.synthetic import dataset_folder, split_files

    if annotations:
        return names_of_categories(read_coco_json(annotations))
    if loaded.class_names:
        return {i: name for i, name in enumerate(loaded.class_names) if name}
    cfg = loaded.cfg
    try:
        if cfg.data.dataset == "synthetic":
            path = split_files(dataset_folder(cfg.data.synthetic), "val")[1]
        else:
            path = coco_paths(cfg.data, "val")[1]
        if path.is_file():
            return names_of_categories(read_coco_json(path))
    except UserError as exc:  # names are a convenience: a problem with the file falls back to ids
        log.warning("class names: %s; showing category ids", str(exc).splitlines()[0])
    return {}


def names_of_categories(data: dict) -> dict[int, str]:
    """Category id -> name of a COCO file's ``categories``."""
    return {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]
            if isinstance(c, dict) and isinstance(c.get("id"), int)}




@dataclass
class Prediction:
    """Detections of one image (all queries in query order, best class each) with
    ``boxes`` in xyxy pixels of the original image, and what the model saw."""

    scores: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    orig_size: tuple[int, int]  # (height, width) of the file
    input_size: tuple[int, int]  # (height, width) after the validation resize
    padded_size: tuple[int, int]  # (height, width) of the padded batch
    outputs: dict = field(repr=False, default_factory=dict)

    def above(self, threshold: float) -> "Prediction":
        """Only the detections with score >= threshold (in query order)."""
        keep = torch.nonzero(self.scores >= threshold).flatten()
        return Prediction(self.scores[keep], self.labels[keep], self.boxes[keep], self.orig_size, self.input_size,
                          self.padded_size, self.outputs)


class Predictor:
    """``predictor(image)`` -> Prediction for a uint8 CHW RGB image tensor: the validation resize
    and normalisation of the model's config, batch of one, boxes scaled back to the original size."""

    def __init__(self, loaded):
        from ..data.transforms import build_transforms

        self.loaded = loaded
        self.transform = build_transforms(loaded.cfg.data, train=False)

    def prepare(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """(padded batch (1, 3, H, W), mask (1, H, W), resized (h, w)) on the model's device."""
        from ..models.detr import pad_images

        if image.dim() != 3 or image.shape[0] != 3:
            raise UsageError(f"expected an RGB image of shape (3, height, width), got {tuple(image.shape)}")
        x, _ = self.transform(image, {})
        batch, mask = pad_images([x], self.loaded.cfg.data.size_divisibility)
        device = self.loaded.device
        return batch.to(device), mask.to(device), (int(x.shape[-2]), int(x.shape[-1]))

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, need_weights: bool = False) -> Prediction:
        batch, mask, size = self.prepare(image)
        outputs = self.loaded.model(batch, mask, need_weights=need_weights)
        h0, w0 = int(image.shape[-2]), int(image.shape[-1])
        det = self.loaded.postprocess(outputs, torch.tensor([[h0, w0]], device=batch.device))[0]
        return Prediction(det["scores"].cpu(), det["labels"].cpu(), det["boxes"].cpu(), (h0, w0), size,
                          (int(batch.shape[-2]), int(batch.shape[-1])), outputs)


def list_inputs(path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(image files, skipped files with the reason) of a file or a folder (not recursive; files in
    sorted name order). A named file is always tried as an image; in a folder, files whose suffix
    is not an image suffix are skipped with a warning. A missing path, or a folder without any
    image file, is a UsageError."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{p}: no such file or folder")
    if p.is_file():
        return [p], []
    if not p.is_dir():
        raise UsageError(f"{p} is neither a file nor a folder")
    files, skipped = [], []
    for entry in sorted(p.iterdir(), key=lambda e: e.name):
        if not entry.is_file():
            continue
        if entry.suffix.lower() in IMAGE_SUFFIXES:
            files.append(entry)
        else:
            skipped.append((entry, f"not an image file (suffix {entry.suffix or 'none'!r})"))
            log.warning("skipping %s: %s", entry, skipped[-1][1])
    if not files:
        raise UsageError(f"folder {p} holds no image files ({len(skipped)} other file(s); "
                         f"image suffixes: {', '.join(IMAGE_SUFFIXES)})")
    return files, skipped


def read_image(path) -> torch.Tensor:
    """A file as a uint8 RGB CHW tensor (no EXIF rotation, as the dataset reads images)."""
    from ..data.images import load_image

    return load_image(path).as_subclass(torch.Tensor)


@dataclass
class PredictionRun:
    """What a run over files produced: COCO results, the image entries (id, file_name, size,
    number of detections kept) and the skipped files."""

    results: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    drawn: list[Path] = field(default_factory=list)

    def mapping(self, **extra) -> dict:
        """The content of images.json."""
        return {"images": self.images, "file_name_to_id": {im["file_name"]: im["id"] for im in self.images},
                "skipped": self.skipped, **extra}


def _drawn_names(files: Sequence[Path]) -> list[str]:
    """Output names of drawn images: the file's stem with .png, or the whole name with .png when two
    files share a stem."""
    stems = Counter(f.stem for f in files)
    return [f"{f.stem}.png" if stems[f.stem] == 1 else f"{f.name}.png" for f in files]


def predict_files(predictor: Predictor, files: Sequence[Path], score_threshold: float = 0.0,
                  names: Mapping[int, str] | None = None, draw_dir=None, root: Path | None = None,
                  progress: bool | None = None) -> PredictionRun:
    """Run ``predictor`` on every file (unreadable ones are skipped with a warning and counted);
    ``root`` is the folder the file names in the mapping are relative to."""
    from tqdm import tqdm

    from ..evaluation.results import results_json
    from .drawing import draw_detections

    run = PredictionRun()
    names = names or {}
    draw_dir = Path(draw_dir).expanduser() if draw_dir is not None else None
    if draw_dir is not None:
        draw_dir.mkdir(parents=True, exist_ok=True)
    out_names = _drawn_names(files)
    show = sys.stderr.isatty() if progress is None else progress
    for path, out_name in zip(tqdm(files, desc="predict", unit="img", disable=not show), out_names):
        rel = path.name if root is None else path.relative_to(root).as_posix()
        try:
            image = read_image(path)
        except (OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0].replace(f"{path}: ", "")
            run.skipped.append({"file_name": rel, "reason": reason})
            log.warning("skipping %s: %s", path, reason)
            continue
        image_id = len(run.images)
        det = predictor(image).above(score_threshold)
        run.results.extend(results_json({image_id: {"scores": det.scores, "labels": det.labels, "boxes": det.boxes}}))
        h, w = det.orig_size
        run.images.append({"id": image_id, "file_name": rel, "height": h, "width": w,
                           "detections": int(len(det.scores))})
        if draw_dir is not None:
            target = draw_dir / out_name
            draw_detections(image, det, names).save(target)
            run.drawn.append(target)
    return run


def write_run(run: PredictionRun, output_dir, **extra) -> tuple[Path, Path]:
    """Write ``results.json`` (the COCO results list) and ``images.json`` (the mapping) atomically."""
    from ..core.io import atomic_write_json

    out = Path(output_dir).expanduser()
    results = atomic_write_json(out / "results.json", run.results)
    images = atomic_write_json(out / "images.json", run.mapping(**extra), indent=1)
    return results, images
