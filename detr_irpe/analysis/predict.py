"""A checkpoint run on image files: loading, the validation preprocessing, detections in original
pixels, a COCO results JSON with its image mapping, and detections drawn on the images.

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

import numpy as np
import torch

log = logging.getLogger(__name__)

#: files with these suffixes (any case) are read as images; other files in a folder are skipped
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")

#: COCO 2017 category names by category id (the ids DETR's 91-way head predicts; 80 are used)
COCO_NAMES = dict(enumerate((
    None, "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", None, "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", None, "backpack", "umbrella", None, None, "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", None, "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana",
    "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", None, "dining table", None, None, "toilet", None, "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", None, "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)))
COCO_NAMES = {k: v for k, v in COCO_NAMES.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# the model


@dataclass
class LoadedModel:
    """A model in eval mode with its post-processor and the config it was built from."""

    model: torch.nn.Module
    postprocess: torch.nn.Module
    cfg: object
    checkpoint: str
    device: torch.device

    @property
    def label(self) -> str:
        """A short description for figure titles: file name and position encoding."""
        irpe = self.cfg.model.irpe
        return f"{Path(self.checkpoint).name} ({irpe if irpe else 'abs only'})"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available; use --device cpu")
    return device


def load_model(checkpoint, config: str | None = None, overrides: Sequence[str] = (), device="cpu") -> LoadedModel:
    """Build the model of ``checkpoint`` (its stored config, or the reference's ``args``; or
    ``config``) with ``key=value`` overrides (for the data section, e.g. ``data.root=...``), load the
    weights strictly and put it in eval mode on ``device``."""
    from ..checkpoint import config_of_checkpoint, load_checkpoint, load_state_dict
    from ..config import apply_overrides, load_config
    from ..models import build_model

    ckpt = load_checkpoint(checkpoint)
    if config:
        cfg = load_config(config, list(overrides))
    else:
        cfg = apply_overrides(config_of_checkpoint(ckpt), list(overrides), f"checkpoint {checkpoint}")
    head = ckpt["model"].get("class_embed.weight")
    if head is not None and ("config" not in ckpt or cfg.model.num_classes is None):
        cfg.model.num_classes = int(head.shape[0]) - 1  # the class count is the head's
    cfg.model.backbone.weights = "none"  # the checkpoint holds the backbone
    model, _, post = build_model(cfg)
    load_state_dict(model, ckpt["model"], source=f"checkpoint {checkpoint}")
    device = resolve_device(device) if isinstance(device, str) else device
    model.eval().to(device)
    return LoadedModel(model, post["bbox"], cfg, str(checkpoint), device)


# ---------------------------------------------------------------------------------------------
# class names


def class_names(cfg, annotations: str | None = None) -> dict[int, str]:
    """Category id -> name: from ``annotations`` (a COCO JSON file) when given, else from the
    annotation file of the config's val split when it is on this machine (a synthetic dataset is
    not generated for this), else the COCO names for a 91-class head; ids not listed are shown as
    ``class <id>`` (see :func:`name_of`)."""
    from ..data.coco import coco_paths, read_coco_json
    from ..data.synthetic import dataset_folder

    if annotations:
        return _names_of(read_coco_json(annotations))
    try:
        if cfg.data.dataset == "synthetic":
            path = dataset_folder(cfg.data.synthetic) / "annotations" / "instances_val.json"
        else:
            path = coco_paths(cfg.data, "val")[1]
        if path.is_file():
            return _names_of(read_coco_json(path))
    except Exception as exc:  # names are a convenience: any problem with the file falls back
        log.warning("class names: %s; showing category ids", str(exc).splitlines()[0] if str(exc) else exc)
    return dict(COCO_NAMES) if cfg.model.num_classes == 91 else {}


def _names_of(data: dict) -> dict[int, str]:
    return {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]
            if isinstance(c, dict) and isinstance(c.get("id"), int)}


def name_of(names: Mapping[int, str], label: int) -> str:
    return names.get(int(label), f"class {int(label)}")


# ---------------------------------------------------------------------------------------------
# one image


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

    def __init__(self, loaded: LoadedModel):
        from ..data.transforms import build_transforms

        self.loaded = loaded
        self.transform = build_transforms(loaded.cfg.data, train=False)

    def prepare(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """(padded batch (1, 3, H, W), mask (1, H, W), resized (h, w)) on the model's device."""
        from ..models.detr import pad_images

        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected an RGB image of shape (3, height, width), got {tuple(image.shape)}")
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


# ---------------------------------------------------------------------------------------------
# files


def list_inputs(path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(image files, skipped files with the reason) of a file or a folder (not recursive; files in
    sorted name order). A named file is always tried as an image; in a folder, files whose suffix
    is not an image suffix are skipped with a warning. A missing path raises FileNotFoundError,
    a folder without any image file ValueError."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_file():
        return [p], []
    if not p.is_dir():
        raise ValueError(f"{p} is neither a file nor a folder")
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
        raise ValueError(f"folder {p} holds no image files ({len(skipped)} other file(s); "
                         f"image suffixes: {', '.join(IMAGE_SUFFIXES)})")
    return files, skipped


def read_image(path) -> torch.Tensor:
    """A file as a uint8 RGB CHW tensor (no EXIF rotation, as the dataset reads images)."""
    from ..data.coco import load_image

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

    from ..engine.evaluator import results_json

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
    from ..utils.io import atomic_write_json

    out = Path(output_dir).expanduser()
    results = atomic_write_json(out / "results.json", run.results)
    images = atomic_write_json(out / "images.json", run.mapping(**extra), indent=1)
    return results, images


# ---------------------------------------------------------------------------------------------
# drawing

#: distinct colours, one per category id (cycled)
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0))


def colour_of(label: int) -> tuple[int, int, int]:
    return PALETTE[int(label) % len(PALETTE)]


def draw_detections(image: torch.Tensor, det: Prediction, names: Mapping[int, str] | None = None):
    """A PIL image: ``image`` (uint8 CHW) with each detection's box and ``name score``."""
    from PIL import Image, ImageDraw, ImageFont

    pil = Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy()))
    draw = ImageDraw.Draw(pil)
    h, w = pil.height, pil.width
    width = max(1, round(min(h, w) / 200))
    font = ImageFont.load_default(size=max(8, round(min(h, w) / 40)))
    names = names or {}
    # lowest score first, so that the best boxes are drawn on top
    for i in torch.argsort(det.scores, stable=True).tolist():
        x0, y0, x1, y1 = det.boxes[i].tolist()
        colour = colour_of(det.labels[i])
        draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=colour, width=width)
        text = f"{name_of(names, det.labels[i])} {float(det.scores[i]):.2f}"
        _, top, _, bottom = draw.textbbox((x0, y0), text, font=font)
        ty = y0 - (bottom - top) - 2 if y0 - (bottom - top) - 2 >= 0 else y0  # above the box if it fits
        box = draw.textbbox((x0, ty), text, font=font)
        draw.rectangle(box, fill=colour)
        draw.text((x0, ty), text, fill=(255, 255, 255), font=font)
    return pil
