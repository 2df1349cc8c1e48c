"""The ``DetrIrpe`` meta-architecture: this project's DETR, criterion and post-processor behind
detectron2's model interface.

Input: detectron2's batched inputs, a list of dicts with ``image`` (C, H, W, 0-255 in
``INPUT.FORMAT`` channel order), in training ``instances`` (``gt_boxes``, ``gt_classes``) and at
inference the original ``height`` / ``width``. Training returns the weighted loss terms, inference
``[{"instances": Instances(pred_boxes, scores, pred_classes)}]`` in original image pixels.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from torch import nn
from torchvision.ops import box_convert
from torchvision.transforms.v2 import functional as F

from ...data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ...models import build_model, pad_images
from ...config.resolve import resolve_config
from .class_map import ClassMap
from .config import detr_config_from_cfg, imagenet_pixel_stats

INPUT_FORMATS = ("RGB", "BGR")


def _check_pixel_stats(cfg) -> None:
    """DetrIrpe normalises as this project does (ImageNet mean and std); the detectron2 keys must
    say the same, so that nothing else reads other values from them."""
    mean, std = imagenet_pixel_stats(cfg.INPUT.FORMAT)
    for key, want in (("PIXEL_MEAN", mean), ("PIXEL_STD", std)):
        got = [float(v) for v in cfg.MODEL[key]]
        if len(got) != 3 or max(abs(a - b) for a, b in zip(got, want)) > 1e-3:
            raise ValueError(f"MODEL.{key} must be the ImageNet values {[round(v, 3) for v in want]} in "
                             f"INPUT.FORMAT {cfg.INPUT.FORMAT} order for DetrIrpe; got {got}")


def _float(outputs: dict) -> dict:
    """DETR outputs (auxiliary ones included) in float32."""
    out = {k: v.float() for k, v in outputs.items() if k != "aux_outputs"}
    if "aux_outputs" in outputs:
        out["aux_outputs"] = [_float(a) for a in outputs["aux_outputs"]]
    return out


@META_ARCH_REGISTRY.register()
class DetrIrpe(nn.Module):
    """DETR with iRPE as a detectron2 model; ``self.detr`` is this project's DETR, so that a state
    dict is the project's under the prefix ``detr.`` (see checkpoint_bridge)."""

    @configurable
    def __init__(self, *, detr_cfg, class_map: ClassMap, input_format: str = "RGB", size_divisibility: int = 0):
        """``detr_cfg``: this project's Config, its class count filled in from ``class_map`` (see from_config)."""
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"INPUT.FORMAT must be one of {', '.join(INPUT_FORMATS)} for DetrIrpe; "
                             f"got {input_format!r}")
        detr_cfg = resolve_config(detr_cfg, source="detectron2 config")
        num_classes = detr_cfg.model.num_classes
        self.detr, self.criterion, post = build_model(detr_cfg)
        self.postprocess = post["bbox"]
        self.input_format, self.size_divisibility = input_format, size_divisibility
        self.class_map = class_map
        # derived from the config, not learned: kept out of state dicts, so that a checkpoint holds
        # exactly the DETR weights
        self.register_buffer("to_detr", class_map.to_detr_table(), persistent=False)
        self.register_buffer("from_detr", class_map.from_detr_table(num_classes), persistent=False)

    @classmethod
    def from_config(cls, cfg):
        _check_pixel_stats(cfg)
        class_map = ClassMap.from_datasets(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
        return {"detr_cfg": detr_config_from_cfg(cfg, class_map.num_detr_classes), "class_map": class_map,
                "input_format": cfg.INPUT.FORMAT, "size_divisibility": cfg.MODEL.DETR_IRPE.SIZE_DIVISIBILITY}

    @property
    def device(self) -> torch.device:
        return self.to_detr.device

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """A detectron2 image (0-255) as this project's model input: RGB in [0, 1], ImageNet-normalised,
        with the same operations as this project's transforms (so the values are identical)."""
        image = image.to(self.device)
        if self.input_format == "BGR":
            image = image.flip(0)
        if image.is_floating_point():  # DefaultPredictor passes float 0-255 values
            image = image.to(torch.float32).mul_(1.0 / 255)
        else:
            image = F.to_dtype(image, torch.float32, scale=True)
        return F.normalize(image, IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, batched_inputs: list[dict]):
        images = [self.normalize(x["image"]) for x in batched_inputs]
        batch, mask = pad_images(images, self.size_divisibility)
        outputs = self.detr(batch, mask)
        if self.training:
            targets = [self._target(x, img.shape[-2:]) for x, img in zip(batched_inputs, images)]
            return self._losses(outputs, targets)
        sizes = torch.tensor([[x.get("height", img.shape[-2]), x.get("width", img.shape[-1])]
                              for x, img in zip(batched_inputs, images)], device=self.device)
        return [{"instances": self._instances(det, (int(h), int(w)))}
                for det, (h, w) in zip(self.postprocess(outputs, sizes), sizes.tolist())]

    def _target(self, x: dict, size) -> dict:
        """detectron2 instances (XYXY pixels, contiguous ids) as a DETR target (normalised cxcywh,
        dataset ids)."""
        if "instances" not in x:
            raise KeyError("DetrIrpe in training needs 'instances' in every input (a training data mapper)")
        inst = x["instances"].to(self.device)
        h, w = size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
        boxes = box_convert(inst.gt_boxes.tensor.float(), "xyxy", "cxcywh") / scale
        return {"labels": self.to_detr[inst.gt_classes], "boxes": boxes}

    def _losses(self, outputs: dict, targets: list[dict]) -> dict:
        # matching and loss in float32 also under detectron2's AMP, as in this project's trainer
        with torch.autocast(self.device.type, enabled=False):
            terms = self.criterion(_float(outputs), targets)
        weights = self.criterion.weight_dict
        self._log_errors(terms)
        # detectron2's trainer sums every value it gets, so only the weighted loss terms go back
        return {k: v * weights[k] for k, v in terms.items() if k in weights}

    @staticmethod
    def _log_errors(terms: dict) -> None:
        """class_error and cardinality_error into detectron2's event storage, when training in its loop."""
        from detectron2.utils.events import get_event_storage

        try:
            storage = get_event_storage()
        except AssertionError:  # no storage outside a detectron2 training loop
            return
        storage.put_scalars(**{k: float(terms[k]) for k in ("class_error", "cardinality_error") if k in terms})

    def _instances(self, det: dict, size: tuple[int, int]) -> Instances:
        """PostProcess detections (DETR classes) as Instances (contiguous ids); queries on a class
        the dataset does not have are dropped, as COCO evaluation ignores them anyway."""
        classes = self.from_detr[det["labels"]]
        keep = classes >= 0
        out = Instances(size)
        out.pred_boxes = Boxes(det["boxes"][keep])
        out.scores = det["scores"][keep]
        out.pred_classes = classes[keep]
        return out
