"""detectron2's checkpointer for DetrIrpe: reads every model source of this project's loader too
(``MODEL.WEIGHTS`` = a checkpoint of this project or of the reference code, weights only, a zoo
name such as ``detr-r50``, or an http(s) URL, downloaded and checked as ``detr-irpe evaluate``
does), loads without running pickled code, and stores the run's DETR-iRPE config in the
checkpoints it writes."""

from __future__ import annotations

from detectron2.checkpoint import DetectionCheckpointer

from ...hub.loader import local_file, open_source
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

    def load(self, path: str, *args, **kwargs):
        # a zoo name or URL becomes the cached file of this project's downloader
        return super().load(str(local_file(path)) if path else path, *args, **kwargs)

    def _torch_load(self, f):
        src = open_source(f)  # weights only, with this project's allow-list (reference ``args``)
        if is_d2_layout(src.state):
            return src.checkpoint
        self.logger.info("Reading a DETR-iRPE / reference DETR checkpoint: converting it to DetrIrpe's names")
        return to_d2({**src.checkpoint, "model": src.state})
