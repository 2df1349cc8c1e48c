"""This project's checkpoints <-> detectron2's, both ways, tensor for tensor.

DetrIrpe holds this project's DETR as ``self.detr`` and nothing else persistent, so a detectron2
state dict is this project's (the reference DETR names) under the prefix ``detr.``. The other
entries of a project checkpoint (config, epoch, ...) travel under ``detr_irpe``, where
DetrIrpeTrainer also stores the run's config. detectron2's trainer state (optimizer, scheduler,
iteration) does not go across: it is tied to detectron2's parameter groups.

  python -m detr_irpe.integrations.detectron2.checkpoint_bridge to-d2 checkpoint_best.pth model_d2.pth
  python -m detr_irpe.integrations.detectron2.checkpoint_bridge to-project output/model_final.pth detr.pth \
      [--config-file cfg.yaml KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import sys

from ...checkpoint import CheckpointError, load_checkpoint, save_checkpoint

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
    other = [k for k in state if not k.startswith(PREFIX)]
    if other:
        raise CheckpointError(f"checkpoint holds {len(other)} key(s) outside DetrIrpe's DETR (e.g. "
                              f"{', '.join(other[:3])}); it is not a DetrIrpe checkpoint")
    out = {"model": {k[len(PREFIX):]: v for k, v in state.items()}, **ckpt.get(EXTRA_KEY, {})}
    if config is not None:
        out["config"] = config
    return out


def _config_of_d2_file(path: str, opts: list[str], num_classes: int) -> dict:
    """This project's config (plain data) of a detectron2 config file with overrides."""
    from detectron2.config import get_cfg

    from ...config import config_to_dict
    from .config import add_detr_irpe_config, detr_config_from_cfg

    cfg = add_detr_irpe_config(get_cfg())
    cfg.merge_from_file(path)
    cfg.merge_from_list(opts)
    return config_to_dict(detr_config_from_cfg(cfg, num_classes))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("direction", choices=["to-d2", "to-project"])
    parser.add_argument("source", help="checkpoint to convert (.pth)")
    parser.add_argument("dest", help="where the converted checkpoint goes (.pth)")
    parser.add_argument("--config-file", help="to-project: the detectron2 config the checkpoint was trained with "
                                              "(needed when the checkpoint carries no DETR-iRPE config)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="to-project: detectron2 config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    try:
        ckpt = load_checkpoint(args.source)
        if args.direction == "to-d2":
            out = to_d2(ckpt)
        else:
            config = None
            if args.config_file:
                num_classes = int(ckpt["model"][PREFIX + "class_embed.weight"].shape[0]) - 1
                config = _config_of_d2_file(args.config_file, args.opts, num_classes)
            out = to_project(ckpt, config)
            if "config" not in out:
                raise CheckpointError(f"{args.source} carries no DETR-iRPE config; pass --config-file with the "
                                      f"detectron2 config it was trained with")
        save_checkpoint(out, args.dest)
    except (CheckpointError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.dest} ({len(out['model'])} tensors, {args.direction})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
