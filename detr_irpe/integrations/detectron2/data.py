"""Data for DetrIrpe in detectron2: the reference augmentations as detectron2 augmentations, the
dataset mapper, and registration of this project's synthetic dataset."""

from __future__ import annotations

import numpy as np
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.datasets import register_coco_instances

from ...config import config_from_dict
from ...data.synthetic import ensure_synthetic, split_files
from ...data.transforms import resize_shape
from .config import SYNTHETIC_TRAIN, SYNTHETIC_VAL, node_to_dict


class ResizeShortSide(T.Augmentation):
    """Resize so that the shorter side is one of ``sizes`` (drawn uniformly) and the longer side at
    most ``max_size`` (None: no limit), with the reference's size arithmetic (detectron2's
    ResizeShortestEdge rounds differently, which changes sizes, and so padding, by a pixel)."""

    def __init__(self, sizes, max_size: int | None = None):
        super().__init__()
        if not len(sizes) or min(sizes) <= 0:
            raise ValueError(f"ResizeShortSide needs positive sizes, got {list(sizes)}")
        self.sizes, self.max_size = [int(s) for s in sizes], max_size

    def get_transform(self, image):
        h, w = image.shape[:2]
        size = self.sizes[np.random.randint(len(self.sizes))] if len(self.sizes) > 1 else self.sizes[0]
        new_h, new_w = resize_shape(h, w, size, self.max_size)
        if (new_h, new_w) == (h, w):
            return T.NoOpTransform()
        return T.ResizeTransform(h, w, new_h, new_w)


def build_augmentations(cfg, is_train: bool) -> list:
    """Train: flip, the crop branch with probability ``INPUT.CROP.PROB``, the multi-scale resize;
    test: the resize to ``INPUT.MIN_SIZE_TEST`` (0: none)."""
    inp = cfg.INPUT
    if not is_train:
        return [ResizeShortSide([inp.MIN_SIZE_TEST], inp.MAX_SIZE_TEST)] if inp.MIN_SIZE_TEST > 0 else []
    if inp.MIN_SIZE_TRAIN_SAMPLING != "choice":
        raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING must be 'choice' for DetrIrpe (the reference draws one of "
                         f"INPUT.MIN_SIZE_TRAIN); got {inp.MIN_SIZE_TRAIN_SAMPLING!r}")
    augs = []
    if inp.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=inp.RANDOM_FLIP == "horizontal", vertical=inp.RANDOM_FLIP == "vertical"))
    if inp.CROP.ENABLED and inp.CROP.PROB > 0:
        # the reference resizes before its crop without a longer-side limit: the crop bounds the size
        crop = T.AugmentationList([ResizeShortSide(inp.CROP.PRE_RESIZE), T.RandomCrop(inp.CROP.TYPE, inp.CROP.SIZE)])
        augs.append(T.RandomApply(crop, prob=inp.CROP.PROB))
    augs.append(ResizeShortSide(inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN))
    return augs


def build_mapper(cfg, is_train: bool) -> DatasetMapper:
    """detectron2's DatasetMapper with the DETR augmentations (crowd boxes are left out of the
    training targets there, as the reference does)."""
    return DatasetMapper(cfg, is_train, augmentations=build_augmentations(cfg, is_train))


def register_synthetic(cfg) -> list[str]:
    """Generate (once, cached) and register this project's synthetic dataset under the names
    ``detr_irpe_synthetic_train`` / ``detr_irpe_synthetic_val`` where DATASETS.TRAIN or TEST use
    them, with the parameters of ``DATASETS.DETR_IRPE_SYNTHETIC``. Returns the names registered."""
    wanted = [n for n in (SYNTHETIC_TRAIN, SYNTHETIC_VAL) if n in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST)]
    if not wanted:
        return []
    params = node_to_dict(cfg.DATASETS.DETR_IRPE_SYNTHETIC)
    synth = config_from_dict({"data": {"synthetic": params}}, "DATASETS.DETR_IRPE_SYNTHETIC").data.synthetic
    root = ensure_synthetic(synth)
    for name in wanted:
        split = "train" if name == SYNTHETIC_TRAIN else "val"
        json_file = str(split_files(root, split)[1])
        if name in DatasetCatalog:
            if MetadataCatalog.get(name).get("json_file") == json_file:
                continue
            # registered earlier in this process with other parameters: replace it
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, {}, json_file, str(root / split))
    return wanted
