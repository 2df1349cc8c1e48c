"""Model building: ``build_model(cfg)`` returns (model, criterion, postprocessors)."""

from __future__ import annotations

from .attention import MultiheadAttention
from .backbone import Backbone, Joiner
from ..core.rpe_spec import RPESpec
from .criterion import SetCriterion, build_weight_dict
from .denoising import DenoisingFocalSetCriterion, denoising_weight_dict
from .detr import DETR, pad_images
from .focal_criterion import FocalSetCriterion
from .group_criterion import GroupCriterion
from .matcher import HungarianMatcher
from .position_encoding import build_position_encoding
from .postprocess import PostProcess, TopKPostProcess
from .size import check_model_fits
from .transformer import Transformer

__all__ = ["build_model", "DETR", "FocalSetCriterion", "MultiheadAttention", "RPESpec", "SetCriterion",
           "HungarianMatcher", "PostProcess", "TopKPostProcess", "Transformer", "pad_images"]


def build_model(cfg):
    """Build (model, criterion, {"bbox": post-processor}) from a Config (or its ``model`` section
    with default loss) whose class count is known (see detr_irpe.config.resolve.resolve_config):
    DETR with its set loss and best-class post-processing, or a sigmoid decoder (``model.decoder``
    conditional or dab) with the focal set loss and top-k post-processing."""
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
    joiner = Joiner(backbone, build_position_encoding(mcfg.position_embedding, mcfg.hidden_dim,
                                                      temperature=mcfg.pe_temperature))
    model = _detector(mcfg, joiner, n)
    weight_dict = build_weight_dict(lcfg.ce_loss_coef, lcfg.bbox_loss_coef, lcfg.giou_loss_coef,
                                    mcfg.dec_layers - 1 if mcfg.aux_loss else 0)
    if mcfg.decoder == "detr":
        matcher = HungarianMatcher(lcfg.set_cost_class, lcfg.set_cost_bbox, lcfg.set_cost_giou)
        criterion = SetCriterion(n, matcher, weight_dict, eos_coef=lcfg.eos_coef)
        return model, _grouped(criterion, mcfg), {"bbox": PostProcess()}
    matcher = HungarianMatcher(lcfg.set_cost_class, lcfg.set_cost_bbox, lcfg.set_cost_giou,
                               focal_alpha=lcfg.focal_alpha)
    focal = FocalSetCriterion
    if mcfg.dn_groups > 0:  # DN-DETR: the denoising terms, weighted as their matching counterparts
        weight_dict.update(denoising_weight_dict(weight_dict))
        focal = DenoisingFocalSetCriterion
    criterion = focal(n, matcher, weight_dict, focal_alpha=lcfg.focal_alpha)
    return model, _grouped(criterion, mcfg), {"bbox": TopKPostProcess(mcfg.num_select)}


def _grouped(criterion, mcfg):
    """The criterion, or with ``model.num_groups`` K > 1 Group DETR's loss around it (each group of
    num_queries x max(num_patterns, 1) queries matched and scored on its own)."""
    groups = getattr(mcfg, "num_groups", 1)
    if groups == 1:
        return criterion
    return GroupCriterion(criterion, groups, mcfg.num_queries * max(mcfg.num_patterns, 1))


def _detector(mcfg, joiner: Joiner, num_classes: int):
    """The detector of ``model.decoder`` around the encoder the config describes."""
    encoder = dict(hidden_dim=mcfg.hidden_dim, nheads=mcfg.nheads, enc_layers=mcfg.enc_layers,
                   dec_layers=mcfg.dec_layers, dim_feedforward=mcfg.dim_feedforward, dropout=mcfg.dropout,
                   rpe=mcfg.irpe, encoder_pos=mcfg.encoder_abs_pos, attention_kernel=mcfg.attention_kernel)
    if mcfg.decoder == "conditional":
        from .conditional_detr import ConditionalDETR

        return ConditionalDETR(joiner, num_classes=num_classes, num_queries=mcfg.num_queries, aux_loss=mcfg.aux_loss,
                               num_groups=mcfg.num_groups, **encoder)
    if mcfg.decoder == "dab":
        from .dab_detr import DABDETR

        return DABDETR(joiner, num_classes=num_classes, num_queries=mcfg.num_queries, aux_loss=mcfg.aux_loss,
                       activation=mcfg.activation, num_patterns=mcfg.num_patterns,
                       random_refpoints_xy=mcfg.random_refpoints_xy, dn_groups=mcfg.dn_groups,
                       dn_label_noise=mcfg.dn_label_noise,
                       dn_box_noise=mcfg.dn_box_noise, num_groups=mcfg.num_groups, **encoder)
    transformer = Transformer(mcfg.hidden_dim, mcfg.nheads, num_encoder_layers=mcfg.enc_layers,
                              num_decoder_layers=mcfg.dec_layers, dim_feedforward=mcfg.dim_feedforward,
                              dropout=mcfg.dropout, pre_norm=mcfg.pre_norm, rpe=mcfg.irpe,
                              encoder_pos=mcfg.encoder_abs_pos, attention_kernel=mcfg.attention_kernel)
    return DETR(joiner, transformer, num_classes=num_classes, num_queries=mcfg.num_queries, aux_loss=mcfg.aux_loss,
                num_groups=mcfg.num_groups)
