"""Model building: ``build_model(cfg)`` returns (model, criterion, postprocessors)."""

from __future__ import annotations

from .attention import MultiheadAttention
from .backbone import Backbone, Joiner
from .criterion import SetCriterion, build_weight_dict
from .detr import DETR, pad_images
from ..core.rpe_spec import RPESpec
from .matcher import HungarianMatcher
from .position_encoding import build_position_encoding
from .postprocess import PostProcess
from .size import check_model_fits
from .transformer import Transformer

__all__ = ["build_model", "DETR", "MultiheadAttention", "RPESpec", "SetCriterion", "HungarianMatcher",
           "PostProcess", "Transformer", "pad_images"]


def build_model(cfg):
    """Build (model, criterion, {"bbox": PostProcess}) from a Config (or its ``model`` section
    with default loss) whose class count is known (see detr_irpe.config.resolve.resolve_config)."""
    from ..config import ConfigError, LossConfig

    mcfg = getattr(cfg, "model", cfg)
    lcfg = getattr(cfg, "loss", None) or LossConfig()
    n = mcfg.num_classes
    if n is None:
        raise ConfigError("model.num_classes is null: the class count comes from the dataset or the weights "
                          "when the config is resolved, or set model.num_classes")
    check_model_fits(cfg)  # before anything is allocated: sizes that cannot fit are refused, not crashed on
    b = mcfg.backbone
    backbone = Backbone(b.name, b.weights, norm=b.norm, trainable_layers=b.trainable_layers, dilation=b.dilation,
                        allow_random_init=b.allow_random_init, width=b.width)
    joiner = Joiner(backbone, build_position_encoding(mcfg.position_embedding, mcfg.hidden_dim))
    transformer = Transformer(mcfg.hidden_dim, mcfg.nheads, num_encoder_layers=mcfg.enc_layers,
                              num_decoder_layers=mcfg.dec_layers, dim_feedforward=mcfg.dim_feedforward,
                              dropout=mcfg.dropout, pre_norm=mcfg.pre_norm, rpe=mcfg.irpe,
                              encoder_pos=mcfg.encoder_abs_pos, attention_kernel=mcfg.attention_kernel)
    model = DETR(joiner, transformer, num_classes=n, num_queries=mcfg.num_queries, aux_loss=mcfg.aux_loss)
    matcher = HungarianMatcher(lcfg.set_cost_class, lcfg.set_cost_bbox, lcfg.set_cost_giou)
    weight_dict = build_weight_dict(1.0, lcfg.bbox_loss_coef, lcfg.giou_loss_coef,
                                    mcfg.dec_layers - 1 if mcfg.aux_loss else 0)
    criterion = SetCriterion(n, matcher, weight_dict, eos_coef=lcfg.eos_coef)
    return model, criterion, {"bbox": PostProcess()}
