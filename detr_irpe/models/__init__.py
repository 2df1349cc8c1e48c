"""Model building: ``build_model(cfg)`` returns (model, criterion, postprocessors)."""

from __future__ import annotations

from .attention import MultiheadAttention
from .backbone import Backbone, Joiner
from .criterion import SetCriterion, build_weight_dict
from .detr import DETR, pad_images
from .irpe import RPESpec
from .matcher import HungarianMatcher
from .position_encoding import build_position_encoding
from .postprocess import PostProcess
from .size import check_model_fits
from .transformer import Transformer

__all__ = ["build_model", "DETR", "MultiheadAttention", "RPESpec", "SetCriterion", "HungarianMatcher",
           "PostProcess", "Transformer", "pad_images"]


def build_model(cfg):
    """Build (model, criterion, {"bbox": PostProcess}) from a Config (or its ``model`` section
    with default loss) whose class count is known (see detr_irpe.resolve.resolve_config)."""
    from ..config import ConfigError, LossConfig

    mcfg = getattr(cfg, "model", cfg)
    lcfg = getattr(cfg, "loss", None) or LossConfig()
    n = mcfg.num_classes
    if n is None:
        raise ConfigError("model.num_classes is null: the class count comes from the dataset or the weights "
                          "when the config is resolved, or set model.num_classes")
    check_model_fits(cfg)  # before anything is allocated: sizes that cannot fit are refused, not crashed on
    b = mcfg.backbone
    backbone = Backbone(b.name, b.weights, b.norm, b.trainable_layers, b.dilation, b.allow_random_init, b.width)
    joiner = Joiner(backbone, build_position_encoding(mcfg.position_embedding, mcfg.hidden_dim))
    transformer = Transformer(mcfg.hidden_dim, mcfg.nheads, mcfg.enc_layers, mcfg.dec_layers, mcfg.dim_feedforward,
                              mcfg.dropout, mcfg.pre_norm, mcfg.irpe, mcfg.encoder_abs_pos, mcfg.attention_kernel)
    model = DETR(joiner, transformer, n, mcfg.num_queries, mcfg.aux_loss)
    matcher = HungarianMatcher(lcfg.set_cost_class, lcfg.set_cost_bbox, lcfg.set_cost_giou)
    weight_dict = build_weight_dict(1.0, lcfg.bbox_loss_coef, lcfg.giou_loss_coef,
                                    mcfg.dec_layers - 1 if mcfg.aux_loss else 0)
    criterion = SetCriterion(n, matcher, weight_dict, lcfg.eos_coef)
    return model, criterion, {"bbox": PostProcess()}
