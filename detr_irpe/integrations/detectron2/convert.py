"""Convert checkpoints between this project and detectron2 (see checkpoint_bridge).

  python -m detr_irpe.integrations.detectron2.convert to-d2 checkpoint_best.pth model_d2.pth
  python -m detr_irpe.integrations.detectron2.convert to-project output/model_final.pth detr.pth \\
      [--config-file cfg.yaml KEY VALUE ...]

``--config-file`` (to-project) gives the DETR-iRPE config when the detectron2 checkpoint carries
none (one not written by DetrIrpeTrainer).
"""

from __future__ import annotations

import argparse
import sys

from ...hub.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .checkpoint_bridge import PREFIX, to_d2, to_project


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
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="to-project: detectron2 config overrides")
    args = parser.parse_intermixed_args(argv)
    try:
        ckpt = load_checkpoint(args.source)  # its errors name the file
        out = _convert(ckpt, args)
        save_checkpoint(out, args.dest)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (AssertionError, KeyError, ValueError) as exc:  # yacs and this project on the detectron2 config
        print(f"error: {args.config_file}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.dest} ({len(out['model'])} tensors, {args.direction})")
    return 0


def _check_fits(config: dict, state: dict) -> None:
    """Raise CheckpointError unless the weights fit the model of ``config`` key for key and shape
    for shape (a config given by hand may not be the one the weights were trained with)."""
    from ...hub.checkpoint import load_state_dict
    from ...config import config_from_dict
    from ...models import build_model

    cfg = config_from_dict(config, "--config-file")
    cfg.model.backbone.weights = "none"  # the checkpoint holds the backbone
    load_state_dict(build_model(cfg)[0], state, source="checkpoint")


def _convert(ckpt: dict, args) -> dict:
    try:
        if args.direction == "to-d2":
            return to_d2(ckpt)
        config = None
        if args.config_file:
            head = ckpt["model"].get(PREFIX + "class_embed.weight")
            if head is None:
                raise CheckpointError(f"has no {PREFIX}class_embed.weight; it is not a DetrIrpe checkpoint")
            config = _config_of_d2_file(args.config_file, args.opts, int(head.shape[0]) - 1)
        out = to_project(ckpt, config)
        if config is not None:
            _check_fits(config, out["model"])
    except CheckpointError as exc:
        raise CheckpointError(f"{args.source}: {exc}") from None
    if "config" not in out:
        raise CheckpointError(f"{args.source} carries no DETR-iRPE config; pass --config-file with the detectron2 "
                              f"config it was trained with")
    return out

if __name__ == "__main__":
    sys.exit(main())
