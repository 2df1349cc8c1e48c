"""detectron2 config keys of DETR-iRPE and their translation to this project's Config.

``MODEL.DETR_IRPE`` mirrors this project's ``model`` section (``model.backbone.name`` is
``MODEL.DETR_IRPE.BACKBONE.NAME``, and so on) with ``LOSS`` for the ``loss`` section; the keys and
their defaults are derived from the dataclasses of detr_irpe.config, so every model option,
iRPE included, is there. ``IRPE`` takes the reference string ("" for plain DETR) and
``NUM_CLASSES`` None means "the largest category id of the datasets + 1".
"""

from __future__ import annotations

import dataclasses
import re

from detectron2.config import CfgNode as CN

from ...config import (ConfigError, DataConfig, EvalConfig, LossConfig, ModelConfig, SyntheticConfig, TrainConfig,
                       config_from_dict)
from ...data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ...core.rpe_spec import RPESpec

#: the iRPE of the paper's detection setting, the default of MODEL.DETR_IRPE.IRPE
REFERENCE_IRPE = "rpe-2.0-product-ctx-1-k"
#: the synthetic dataset names that register_synthetic knows
SYNTHETIC_TRAIN, SYNTHETIC_VAL = "detr_irpe_synthetic_train", "detr_irpe_synthetic_val"


def imagenet_pixel_stats(input_format: str) -> tuple[list[float], list[float]]:
    """ImageNet mean and std in detectron2's units (0-255) and channel order of ``input_format``."""
    mean, std = [m * 255 for m in IMAGENET_MEAN], [s * 255 for s in IMAGENET_STD]
    if input_format == "BGR":
        mean, std = mean[::-1], std[::-1]
    return mean, std


def _node(obj) -> CN:
    """A CfgNode with the fields of a config dataclass as upper-case keys and their defaults."""
    node = CN()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, RPESpec):
            value = _node(value)
        elif isinstance(value, RPESpec):
            value = str(value)
        node[f.name.upper()] = value
    return node


def add_detr_irpe_config(cfg: CN) -> CN:
    """Add the DETR-iRPE keys to a detectron2 config and set detectron2's own keys to the reference
    recipe (AdamW 1e-4, backbone x0.1, weight decay 1e-4, full-model gradient clipping at 0.1, the
    DETR multi-scale and crop augmentation, ImageNet normalisation on RGB), each value taken from
    the defaults of this project's data, train and eval sections. Returns ``cfg``."""
    data, train, evaluation = DataConfig(), TrainConfig(), EvalConfig()
    model = _node(ModelConfig())
    model.IRPE = REFERENCE_IRPE
    model.NUM_CLASSES = None
    model.LOSS = _node(LossConfig())
    # pad each batch to a multiple of this (0: to the largest image, as the reference)
    model.SIZE_DIVISIBILITY = data.size_divisibility
    cfg.MODEL.DETR_IRPE = model
    cfg.MODEL.META_ARCHITECTURE = "DetrIrpe"
    cfg.MODEL.MASK_ON = False
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = imagenet_pixel_stats("RGB")

    cfg.INPUT.MIN_SIZE_TRAIN = tuple(data.scales)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = data.max_size
    cfg.INPUT.MIN_SIZE_TEST = data.val_size
    cfg.INPUT.MAX_SIZE_TEST = data.max_size
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    # the reference's crop branch: with probability PROB, resize the shorter side to one of
    # PRE_RESIZE, crop a random region with sides in SIZE, then the multi-scale resize
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute_range"
    cfg.INPUT.CROP.SIZE = list(data.crop_size)
    cfg.INPUT.CROP.PRE_RESIZE = list(data.crop_resize)
    cfg.INPUT.CROP.PROB = data.crop_prob
    # the reference trains on every image, also those without objects, in random order
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = data.aspect_ratio_grouping

    cfg.SOLVER.BASE_LR = train.lr
    cfg.SOLVER.BACKBONE_MULTIPLIER = round(train.lr_backbone / train.lr, 12)
    cfg.SOLVER.WEIGHT_DECAY = train.weight_decay
    cfg.SOLVER.IMS_PER_BATCH = 16  # the paper: 8 GPUs x 2 images
    cfg.SOLVER.WARMUP_FACTOR = 1.0
    cfg.SOLVER.WARMUP_ITERS = train.warmup_iters
    cfg.SOLVER.GAMMA = 0.1
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    # one norm over all parameters together, as the reference (detectron2's "norm" clips each
    # parameter on its own)
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = train.clip_max_norm
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    # images per process per evaluation batch: padding changes AP slightly
    cfg.TEST.IMS_PER_BATCH = evaluation.batch_size

    cfg.DATASETS.DETR_IRPE_SYNTHETIC = _node(SyntheticConfig())
    return cfg


def node_to_dict(node) -> dict:
    """A CfgNode as plain data with lower-case keys (this project's field names)."""
    out = {}
    for key, value in node.items():
        if isinstance(value, CN):
            value = node_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[key.lower()] = value
    return out


def _d2_names(message: str) -> str:
    """An error message of this project's config with its ``model.*`` / ``loss.*`` keys written as
    the detectron2 keys the user set."""
    def upper(m: re.Match) -> str:
        prefix = "MODEL.DETR_IRPE." + ("LOSS." if m.group(1) == "loss" else "")
        return prefix + m.group(2).upper()
    return re.sub(r"\b(model|loss)\.([a-z_]+(?:\.[a-z_]+)*)", upper, message)


def _data_source(cfg: CN) -> dict:
    """The dataset entries of this project's data section for DATASETS.TRAIN[0] and TEST[0]: the
    synthetic dataset, or the COCO-format files of registered datasets, so that a converted
    checkpoint evaluates with this project's tools on the data it was trained for."""
    from detectron2.data import MetadataCatalog

    if SYNTHETIC_TRAIN in cfg.DATASETS.TRAIN or SYNTHETIC_VAL in cfg.DATASETS.TEST:
        return {"dataset": "synthetic", "synthetic": node_to_dict(cfg.DATASETS.DETR_IRPE_SYNTHETIC)}
    out = {"dataset": "coco"}
    for split, names in (("train", cfg.DATASETS.TRAIN), ("val", cfg.DATASETS.TEST)):
        meta = MetadataCatalog.get(names[0]) if names else None
        if meta is not None and meta.get("json_file") and meta.get("image_root"):
            out[f"{split}_annotations"], out[f"{split}_images"] = meta.json_file, meta.image_root
    return out


def detr_config_from_cfg(cfg: CN, num_classes: int | None = None):
    """This project's Config of a detectron2 config: model and loss from ``MODEL.DETR_IRPE``; the
    datasets, augmentation, optimizer and evaluation batch from the detectron2 keys that play their
    part.
    ``num_classes`` fills in ``NUM_CLASSES`` when that is None."""
    if "DETR_IRPE" not in cfg.MODEL:
        raise ConfigError("detectron2 config has no MODEL.DETR_IRPE; call add_detr_irpe_config(cfg) before merging")
    model = node_to_dict(cfg.MODEL.DETR_IRPE)
    loss = model.pop("loss")
    size_divisibility = model.pop("size_divisibility")
    if model["irpe"] in ("", "none", "None"):
        model["irpe"] = None
    if model["num_classes"] is None:
        model["num_classes"] = num_classes
    crop, solver = cfg.INPUT.CROP, cfg.SOLVER
    clip = solver.CLIP_GRADIENTS
    data = {
        **_data_source(cfg),
        "scales": list(cfg.INPUT.MIN_SIZE_TRAIN), "max_size": cfg.INPUT.MAX_SIZE_TRAIN,
        "val_size": cfg.INPUT.MIN_SIZE_TEST, "crop_resize": list(crop.PRE_RESIZE), "crop_size": list(crop.SIZE),
        "crop_prob": float(crop.PROB) if crop.ENABLED else 0.0,
        "hflip_prob": 0.5 if cfg.INPUT.RANDOM_FLIP == "horizontal" else 0.0,
        "size_divisibility": size_divisibility,
    }
    train = {
        "lr": solver.BASE_LR, "lr_backbone": solver.BASE_LR * solver.BACKBONE_MULTIPLIER,
        "weight_decay": solver.WEIGHT_DECAY,
        "clip_max_norm": clip.CLIP_VALUE if clip.ENABLED and clip.CLIP_TYPE == "full_model" else 0.0,
    }
    try:
        return config_from_dict({"model": model, "loss": loss, "data": data, "train": train,
                                 "eval": {"batch_size": cfg.TEST.IMS_PER_BATCH}}, "detectron2 config")
    except ConfigError as exc:
        raise ConfigError(_d2_names(str(exc))) from None
