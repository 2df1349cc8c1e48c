"""detectron2's checkpointer for DetrIrpe: reads this project's and the reference code's
checkpoints too (``MODEL.WEIGHTS=checkpoint_best.pth``), loads without running pickled code, and
stores the run's DETR-iRPE config in the checkpoints it writes."""

from __future__ import annotations

from detectron2.checkpoint import DetectionCheckpointer

from ...checkpoint import load_checkpoint
from .checkpoint_bridge import EXTRA_KEY, is_d2_layout, to_d2


class ConfigRecord:
    """A checkpointable holding this project's config (plain data) under ``detr_irpe``."""

    def __init__(self, config: dict):
        self.config = config

    def state_dict(self) -> dict:
        return {"config": self.config}

    def load_state_dict(self, state: dict) -> None:
        pass  # on resume the run's own config stands


class DetrIrpeCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that converts this project's checkpoints on load and writes
    ``config`` (this project's config as plain data) into every checkpoint it saves."""

    def __init__(self, model, save_dir: str = "", *, config: dict | None = None, **checkpointables):
        if config is not None:
            checkpointables[EXTRA_KEY] = ConfigRecord(config)
        super().__init__(model, save_dir, **checkpointables)

    def _torch_load(self, f):
        ckpt = load_checkpoint(f)  # weights only, with this project's allow-list (reference ``args``)
        if not is_d2_layout(ckpt["model"]):
            self.logger.info("Reading a DETR-iRPE / reference DETR checkpoint: converting it to DetrIrpe's names")
            ckpt = to_d2(ckpt)
        return ckpt
