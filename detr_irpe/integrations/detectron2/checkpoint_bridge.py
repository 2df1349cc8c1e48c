"""This project's checkpoints <-> detectron2's, both ways, tensor for tensor.

DetrIrpe holds this project's DETR as ``self.detr`` and nothing else persistent, so a detectron2
state dict is this project's (the reference DETR names) under the prefix ``detr.``. The other
entries of a project checkpoint (config, epoch, ...) travel under ``detr_irpe``, where
DetrIrpeTrainer also stores the run's config. detectron2's trainer state (optimizer, scheduler,
iteration) does not go across: it is tied to detectron2's parameter groups. Files convert with
``python -m detr_irpe.integrations.detectron2.convert``.
"""

from __future__ import annotations

from ...hub.checkpoint import CheckpointError

PREFIX = "detr."
#: the entry of a detectron2 checkpoint that carries this project's checkpoint entries
EXTRA_KEY = "detr_irpe"


def is_d2_layout(state: dict) -> bool:
    """Whether a state dict has DetrIrpe's names (``detr.*``) rather than this project's."""
    return any(k.startswith(PREFIX) for k in state)


def to_d2(ckpt: dict) -> dict:
    """The detectron2 checkpoint of a checkpoint of this project or of the reference code."""
    state = ckpt["model"]
    if is_d2_layout(state):
        raise CheckpointError(f"checkpoint is already in detectron2's layout (keys start with {PREFIX!r})")
    return {"model": {PREFIX + k: v for k, v in state.items()}, "__author__": "detr_irpe",
            EXTRA_KEY: {k: v for k, v in ckpt.items() if k != "model"}}


def to_project(ckpt: dict, config: dict | None = None) -> dict:
    """This project's checkpoint of a DetrIrpe detectron2 checkpoint: the DETR weights and the
    entries carried under ``detr_irpe``; ``config`` (plain data, see config_to_dict) replaces the
    carried config."""
    state = ckpt["model"]
    if not is_d2_layout(state):
        raise CheckpointError(f"checkpoint is in this project's layout already (no key starts with {PREFIX!r})")
    other = [k for k in state if not k.startswith(PREFIX)]
    if other:
        raise CheckpointError(f"checkpoint holds {len(other)} key(s) outside DetrIrpe's DETR (e.g. "
                              f"{', '.join(other[:3])}); it is not a DetrIrpe checkpoint")
    out = {"model": {k[len(PREFIX):]: v for k, v in state.items()}, **ckpt.get(EXTRA_KEY, {})}
    if config is not None:
        out["config"] = config
    return out
