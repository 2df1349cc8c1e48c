"""The reference code's command-line options (as stored under ``args`` in its checkpoints) as a
Config of this project."""

from __future__ import annotations



from .files import config_to_dict
from .schema import Config, ConfigError
from .typed import config_from_dict

_REFERENCE_MODEL_ARGS = {
    "hidden_dim": "hidden_dim", "nheads": "nheads", "enc_layers": "enc_layers", "dec_layers": "dec_layers",
    "dim_feedforward": "dim_feedforward", "dropout": "dropout", "num_queries": "num_queries",
    "pre_norm": "pre_norm", "aux_loss": "aux_loss", "num_classes": "num_classes",
}
_REFERENCE_LOSS_ARGS = ("set_cost_class", "set_cost_bbox", "set_cost_giou", "bbox_loss_coef",
                        "giou_loss_coef", "eos_coef")
_REFERENCE_TRAIN_ARGS = ("lr", "lr_backbone", "weight_decay", "epochs", "lr_drop", "clip_max_norm", "batch_size",
                         "seed")
_REFERENCE_POSITION = {"sine": "sine", "v2": "sine", "learned": "learned", "v3": "learned"}


def config_from_reference_args(args, base: Config | None = None) -> Config:
    """A Config equivalent to the reference code's command-line options (a dict or an
    argparse.Namespace, as stored under ``args`` in its checkpoints); options it does not name keep
    the values of ``base`` (default: this project's defaults). The backbone weights come from the
    checkpoint, so ``model.backbone.weights`` becomes ``none``."""
    a = dict(vars(args)) if not isinstance(args, dict) else dict(args)
    data = config_to_dict(base) if base is not None else {}
    model = data.setdefault("model", {})
    for src, dst in _REFERENCE_MODEL_ARGS.items():
        if src in a and a[src] is not None:
            model[dst] = a[src]
    if "position_embedding" in a:
        pe = a["position_embedding"]
        if pe not in _REFERENCE_POSITION:
            raise ConfigError(f"reference args: position_embedding {pe!r} is not one of {', '.join(_REFERENCE_POSITION)}")
        model["position_embedding"] = _REFERENCE_POSITION[pe]
    backbone = model.setdefault("backbone", {})
    if "backbone" in a:
        backbone["name"] = a["backbone"]
    if "dilation" in a:
        backbone["dilation"] = bool(a["dilation"])
    backbone["weights"] = "none"
    backbone["norm"] = "frozen_bn"
    if "enc_rpe2d" in a:
        model["irpe"] = a["enc_rpe2d"] or None
    loss = data.setdefault("loss", {})
    for name in _REFERENCE_LOSS_ARGS:
        if name in a and a[name] is not None:
            loss[name] = a[name]
    train = data.setdefault("train", {})
    for name in _REFERENCE_TRAIN_ARGS:
        if name in a and a[name] is not None:
            train[name] = a[name]
    return config_from_dict(data, "reference args")
