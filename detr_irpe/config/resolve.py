"""A run's configuration resolved once: the class count and class names decided from the config,
the weights and the dataset in one place, the result frozen. Every tool and the trainer read the
resolved value; nothing sets a field of it afterwards."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from ..core.names import SIGMOID_DECODERS
from . import ConfigError, apply_overrides, freeze, is_frozen

log = logging.getLogger(__name__)

#: the weights whose first dimension is the class count (+ 1 for DETR's no-object class)
CLASS_HEAD = "class_embed.weight"

#: COCO 2017 category names by category id (the ids of DETR's 91-way head; 80 are used, "" elsewhere)
COCO_CLASS_NAMES = (
    "", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "", "backpack", "umbrella", "", "", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana",
    "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "", "dining table", "", "", "toilet", "", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)


def head_classes(state: Mapping, decoder: str = "detr") -> int | None:
    """The class count of a state dict's class head (None without one): its rows, less DETR's
    no-object row (the sigmoid decoders have none)."""
    w = state.get(CLASS_HEAD)
    if w is None:
        return None
    return int(w.shape[0]) - (0 if decoder in SIGMOID_DECODERS else 1)


def names_by_id(categories: Sequence[Mapping], num_classes: int) -> list[str]:
    """Class names indexed by category id from COCO ``categories`` ("" for ids without one)."""
    names = [""] * num_classes
    for c in categories:
        if isinstance(c, Mapping) and isinstance(c.get("id"), int) and 0 <= c["id"] < num_classes:
            names[c["id"]] = str(c.get("name", c["id"]))
    return names


def resolve_config(cfg, *, weights: Mapping | None = None, dataset=None, class_names: Sequence[str] | None = None,
                   device=None, source: str = "config"):
    """A frozen copy of ``cfg`` with ``model.num_classes`` and ``model.class_names`` decided:
    the class count is the weights' head when there are weights (a different ``model.num_classes``
    is replaced, with a warning), else ``model.num_classes``, else the dataset's (largest category
    id + 1); class names come from the config, then
    ``class_names`` (e.g. a Hugging Face folder's id2label), then the dataset's categories, then
    COCO's for a 91-class model. A dataset whose ids exceed the class count is a ConfigError.
    ``device`` (the torch.device the run uses) replaces ``train.device=auto`` by what it chose.
    ``model.attention_kernel=auto`` stays: the kernel is chosen per call from the input (see
    detr_irpe.models.attention)."""
    if is_frozen(cfg):
        return cfg
    n = cfg.model.num_classes
    head = head_classes(weights, cfg.model.decoder) if weights is not None else None
    if head is not None:
        if n is not None and n != head:
            log.warning("%s: model.num_classes=%d is replaced by the weights' class head (%d classes)", source, n, head)
        n = head
    elif n is None and dataset is not None:
        n = dataset.num_classes
    if n is None:
        raise ConfigError(f"{source}: model.num_classes is null and neither weights nor a dataset give the "
                          f"class count; set model.num_classes")
    if dataset is not None and dataset.num_classes > n:
        raise ConfigError(f"{source}: the dataset's category ids reach {dataset.num_classes - 1} but the model "
                          f"has {n} classes (ids 0..{n - 1}); set model.num_classes={dataset.num_classes} or "
                          f"remap the category ids")
    names = cfg.model.class_names or class_names
    if not names and dataset is not None:
        names = names_by_id(dataset.coco.dataset.get("categories", []), n)
    if not names and n == len(COCO_CLASS_NAMES):
        names = COCO_CLASS_NAMES
    if names and len(names) != n:
        raise ConfigError(f"{source}: model.class_names has {len(names)} names for {n} classes; give one per "
                          f"class id ('' for ids without a class)")
    resolved = apply_overrides(cfg, [], source)
    resolved.model.num_classes = n
    resolved.model.class_names = list(names) if names else None
    if device is not None:
        resolved.train.device = str(device)
    return freeze(resolved)

