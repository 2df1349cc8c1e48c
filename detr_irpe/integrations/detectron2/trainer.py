"""DetrIrpeTrainer: detectron2's DefaultTrainer with the DETR-iRPE optimizer, data mappers,
COCOEvaluator and checkpointer."""

from __future__ import annotations

import os

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator

from ...config import config_to_dict
from .checkpointer import DetrIrpeCheckpointer
from .config import detr_config_from_cfg
from .data import build_mapper
from .solver import build_optimizer


class DetrIrpeTrainer(DefaultTrainer):
    """Trains and evaluates DetrIrpe with detectron2's loop, hooks, loaders and COCOEvaluator."""

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_mapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=build_mapper(cfg, False),
                                           batch_size=cfg.TEST.IMS_PER_BATCH)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder)

    def build_hooks(self):
        # DefaultTrainer made a plain DetectionCheckpointer just before asking for its hooks; ours
        # replaces it here so that the periodic checkpointer uses it too
        old = self.checkpointer  # its model is the bare DetrIrpe (unwrapped from DDP)
        config = config_to_dict(detr_config_from_cfg(self.cfg, old.model.detr.num_classes))
        self.checkpointer = DetrIrpeCheckpointer(old.model, old.save_dir, save_to_disk=old.save_to_disk,
                                                 config=config, **old.checkpointables)
        return super().build_hooks()
