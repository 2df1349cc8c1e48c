"""The reference codes' command-line options (as stored under ``args`` in their checkpoints: DETR,
iRPE-DETR, Conditional DETR, DAB-DETR) as a Config of this project."""

from __future__ import annotations

from .files import config_to_dict
from .schema import Config, ConfigError
from .typed import config_from_dict

_REFERENCE_MODEL_ARGS = {
    "hidden_dim": "hidden_dim", "nheads": "nheads", "enc_layers": "enc_layers", "dec_layers": "dec_layers",
    "dim_feedforward": "dim_feedforward", "dropout": "dropout", "num_queries": "num_queries",
    "pre_norm": "pre_norm", "aux_loss": "aux_loss", "num_classes": "num_classes",
}
_REFERENCE_LOSS_ARGS = {"set_cost_class": "set_cost_class", "set_cost_bbox": "set_cost_bbox",
                        "set_cost_giou": "set_cost_giou", "bbox_loss_coef": "bbox_loss_coef",
                        "giou_loss_coef": "giou_loss_coef", "eos_coef": "eos_coef", "cls_loss_coef": "ce_loss_coef",
                        "focal_alpha": "focal_alpha"}
#: DAB-DETR's own model options
_REFERENCE_DAB_ARGS = {"num_select": "num_select", "num_patterns": "num_patterns",
                       "random_refpoints_xy": "random_refpoints_xy", "transformer_activation": "activation"}
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
    decoder = reference_decoder(a)
    model["decoder"] = decoder
    for src, dst in _REFERENCE_MODEL_ARGS.items():
        if src in a and a[src] is not None:
            model[dst] = a[src]
    if decoder == "conditional":
        model["num_select"] = CONDITIONAL_NUM_SELECT
    if decoder == "dab":
        for src, dst in _REFERENCE_DAB_ARGS.items():
            if src in a and a[src] is not None:
                model[dst] = a[src]
        temperatures = {a.get("pe_temperatureH", 20), a.get("pe_temperatureW", 20)}
        if len(temperatures) != 1:
            raise ConfigError(f"reference args: pe_temperatureH {a.get('pe_temperatureH')} and pe_temperatureW "
                              f"{a.get('pe_temperatureW')} differ; this project has one model.pe_temperature")
        model["pe_temperature"] = float(temperatures.pop())
    if decoder != "detr" and a.get("dataset_file", "coco") == "coco" and a.get("num_classes") is None:
        model["num_classes"] = COCO_NUM_CLASSES  # their heads: 91 for COCO, as DETR's
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
    for src, dst in _REFERENCE_LOSS_ARGS.items():
        if src in a and a[src] is not None:
            loss[dst] = a[src]
    train = data.setdefault("train", {})
    for name in _REFERENCE_TRAIN_ARGS:
        if name in a and a[name] is not None:
            train[name] = a[name]
    return config_from_dict(data, "reference args")


#: Conditional DETR keeps the 100 best (query, class) pairs per image (fixed in its code)
CONDITIONAL_NUM_SELECT = 100
#: the class head of the reference codes on COCO: category ids 0..90
COCO_NUM_CLASSES = 91


def reference_decoder(args: dict) -> str:
    """The decoder of a reference checkpoint's ``args``: DAB-DETR's name it (``modelname``),
    Conditional DETR's have a focal loss and no name, DETR's and iRPE-DETR's neither."""
    name = args.get("modelname")
    if name == "dab_detr":
        return "dab"
    if name is not None:
        raise ConfigError(f"reference args: modelname {name!r} is not a model of this project; expected dab_detr "
                          f"(DAB-DETR), or the args of DETR, iRPE-DETR or Conditional DETR")
    return "conditional" if "focal_alpha" in args or "cls_loss_coef" in args else "detr"
