"""Hugging Face folders of the DETR family beyond DETR: ``ConditionalDetrForObjectDetection``
(``model_type`` conditional_detr) and ``DabDetrForObjectDetection`` (dab-detr). What this module
holds, per architecture: the key map between the Hub's names and this project's (the reference
codes' names, which ``models.conditional_detr`` and ``models.dab_detr`` keep), the ``config.json``
fields read into this project's overrides, and DAB-DETR's shared box head. Reading the folder
(weights, backbone, class names, the fit check) is ``hub.huggingface``'s, which dispatches here on
``model_type``; this module imports nothing of it, so the two do not form an import cycle.

Names (transformers 5.x; checked against transformers' own models in
tests/test_huggingface_family.py):

- ``save_pretrained`` writes Conditional DETR in the Hub's (4.x) layout: ``sa_*`` / ``ca_*``
  projections keep the reference's names, ``out_proj`` / ``fc1`` / ``fc2`` / layer-norm names as
  DETR's, the cross-attention is ``encoder_attn``, the encoder's in-projection is split into
  ``q_proj`` / ``k_proj`` / ``v_proj``. transformers renames them at load time
  (``self_attn.q_content_proj``, ``o_proj``, ``mlp.fc1``, ``model.backbone.model``...); a folder
  saved with ``save_original_format=False`` holds those, read here as aliases.
- DAB-DETR has no load-time renaming: its folder holds the names of the running model
  (``self_attn.self_attn_query_content_proj``, ``cross_attn.cross_attn.output_proj``,
  ``mlp.activation_fn``, a timm backbone under ``conv_encoder.model._backbone``). Its box head is
  one module used twice (``bbox_predictor`` and ``model.decoder.bbox_embed``), saved once; the
  reference's state dict holds it twice (``bbox_embed.*`` and ``transformer.decoder.bbox_embed.*``).

Where transformers computes differently from the references (this project follows the references):

- Conditional DETR with ``auxiliary_loss`` true: transformers' decoder feeds each layer's
  *normalised* output to the next layer; the reference feeds the un-normalised one (a warning).
- DAB-DETR's ``inverse_sigmoid`` clamps at 1e-5 in transformers, 1e-3 in the reference: boxes
  differ where an anchor comes within 1e-3 of 0 or 1.
- transformers' loss weighs the classification term 1 whatever ``cls_loss_coefficient`` says; the
  references' recipes weigh it 2 (Conditional DETR) and 1 (DAB-DETR), which ``loss.ce_loss_coef``
  takes here.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..core.errors import SourceError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"

_ENC = "transformer.encoder.layers.{n}"
_DEC = "transformer.decoder.layers.{n}"

#: the projections of a decoder layer: reference name <-> Conditional DETR's 5.x runtime name (its
#: Hub name is the reference's) <-> DAB-DETR's name
_SELF_PROJECTIONS = (("sa_qcontent", "q_content", "query_content"), ("sa_qpos", "q_pos", "query_pos"),
                     ("sa_kcontent", "k_content", "key_content"), ("sa_kpos", "k_pos", "key_pos"),
                     ("sa_v", "v", "value"))
_CROSS_PROJECTIONS = (("ca_qcontent", "q_content", "query_content"), ("ca_qpos", "q_pos", "query_pos"),
                      ("ca_kcontent", "k_content", "key_content"), ("ca_kpos", "k_pos", "key_pos"),
                      ("ca_v", "v", "value"), ("ca_qpos_sine", "q_pos_sine", "query_pos_sine"))


def _encoder_layer(hub: str, out_proj: str, mlp: str) -> tuple:
    """DETR-style encoder layer names: (Hub, reference) pairs, ``{n}`` the layer, ``{p}`` weight or bias."""
    return ((f"{hub}.self_attn.{out_proj}.{{p}}", f"{_ENC}.self_attn.out_proj.{{p}}"),
            (f"{hub}.self_attn_layer_norm.{{p}}", f"{_ENC}.norm1.{{p}}"),
            (f"{hub}.final_layer_norm.{{p}}", f"{_ENC}.norm2.{{p}}"),
            (f"{hub}.{mlp}fc1.{{p}}", f"{_ENC}.linear1.{{p}}"),
            (f"{hub}.{mlp}fc2.{{p}}", f"{_ENC}.linear2.{{p}}"))


def _mlp(hub: str, ours: str) -> tuple:
    return ((f"{hub}.layers.{{n}}.{{p}}", f"{ours}.layers.{{n}}.{{p}}"),)


_ENC_HUB = "model.encoder.layers.{n}"
_DEC_HUB = "model.decoder.layers.{n}"

CONDITIONAL_RENAMES = (
    ("model.backbone.conv_encoder.model.{rest}", "backbone.0.body.{rest}"),
    ("model.position_embedding.row_embeddings.weight", "backbone.1.row_embed.weight"),
    ("model.position_embedding.column_embeddings.weight", "backbone.1.col_embed.weight"),
    ("model.input_projection.{p}", "input_proj.{p}"),
    ("model.query_position_embeddings.weight", "query_embed.weight"),
    *_encoder_layer(_ENC_HUB, "out_proj", ""),
    *((f"{_DEC_HUB}.{ref}_proj.{{p}}", f"{_DEC}.{ref}_proj.{{p}}") for ref, _, _ in _SELF_PROJECTIONS),
    *((f"{_DEC_HUB}.{ref}_proj.{{p}}", f"{_DEC}.{ref}_proj.{{p}}") for ref, _, _ in _CROSS_PROJECTIONS),
    (f"{_DEC_HUB}.self_attn.out_proj.{{p}}", f"{_DEC}.self_attn.out_proj.{{p}}"),
    (f"{_DEC_HUB}.encoder_attn.out_proj.{{p}}", f"{_DEC}.cross_attn.out_proj.{{p}}"),
    (f"{_DEC_HUB}.self_attn_layer_norm.{{p}}", f"{_DEC}.norm1.{{p}}"),
    (f"{_DEC_HUB}.encoder_attn_layer_norm.{{p}}", f"{_DEC}.norm2.{{p}}"),
    (f"{_DEC_HUB}.final_layer_norm.{{p}}", f"{_DEC}.norm3.{{p}}"),
    (f"{_DEC_HUB}.fc1.{{p}}", f"{_DEC}.linear1.{{p}}"),
    (f"{_DEC_HUB}.fc2.{{p}}", f"{_DEC}.linear2.{{p}}"),
    ("model.decoder.layernorm.{p}", "transformer.decoder.norm.{p}"),
    *_mlp("model.decoder.query_scale", "transformer.decoder.query_scale"),
    *_mlp("model.decoder.ref_point_head", "transformer.decoder.ref_point_head"),
    ("class_labels_classifier.{p}", "class_embed.{p}"),
    *_mlp("bbox_predictor", "bbox_embed"),
)
#: the names of transformers 5.x's running Conditional DETR (``save_original_format=False``), read only
CONDITIONAL_ALIASES = (
    ("model.backbone.model.{rest}", "backbone.0.body.{rest}"),
    *_encoder_layer(_ENC_HUB, "o_proj", "mlp."),
    *((f"{_DEC_HUB}.self_attn.{hf}_proj.{{p}}", f"{_DEC}.{ref}_proj.{{p}}") for ref, hf, _ in _SELF_PROJECTIONS),
    *((f"{_DEC_HUB}.encoder_attn.{hf}_proj.{{p}}", f"{_DEC}.{ref}_proj.{{p}}") for ref, hf, _ in _CROSS_PROJECTIONS),
    (f"{_DEC_HUB}.self_attn.o_proj.{{p}}", f"{_DEC}.self_attn.out_proj.{{p}}"),
    (f"{_DEC_HUB}.encoder_attn.o_proj.{{p}}", f"{_DEC}.cross_attn.out_proj.{{p}}"),
    (f"{_DEC_HUB}.mlp.fc1.{{p}}", f"{_DEC}.linear1.{{p}}"),
    (f"{_DEC_HUB}.mlp.fc2.{{p}}", f"{_DEC}.linear2.{{p}}"),
)
#: the encoder's separate q / k / v projections <-> the packed ``in_proj`` (q, k, v stacked)
ENCODER_QKV = ((f"{_ENC_HUB}.self_attn.{{x}}_proj.{{p}}", f"{_ENC}.self_attn.in_proj_{{p}}"),)

DAB_RENAMES = (
    # a timm backbone sits one module deeper (transformers' TimmBackbone wrapper); written so
    ("model.backbone.conv_encoder.model._backbone.{rest}", "backbone.0.body.{rest}"),
    ("model.input_projection.{p}", "input_proj.{p}"),
    ("model.query_refpoint_embeddings.weight", "refpoint_embed.weight"),
    ("model.patterns.weight", "transformer.patterns.weight"),
    *_encoder_layer(_ENC_HUB, "out_proj", ""),
    (f"{_ENC_HUB}.activation_fn.weight", f"{_ENC}.activation.weight"),
    *_mlp("model.encoder.query_scale", "transformer.encoder.query_scale"),
    *((f"{_DEC_HUB}.self_attn.self_attn_{hf}_proj.{{p}}", f"{_DEC}.{ref}_proj.{{p}}")
      for ref, _, hf in _SELF_PROJECTIONS),
    (f"{_DEC_HUB}.self_attn.self_attn.output_proj.{{p}}", f"{_DEC}.self_attn.out_proj.{{p}}"),
    (f"{_DEC_HUB}.self_attn.self_attn_layer_norm.{{p}}", f"{_DEC}.norm1.{{p}}"),
    *((f"{_DEC_HUB}.cross_attn.cross_attn_{hf}_proj.{{p}}", f"{_DEC}.{ref}_proj.{{p}}")
      for ref, _, hf in _CROSS_PROJECTIONS),
    (f"{_DEC_HUB}.cross_attn.cross_attn.output_proj.{{p}}", f"{_DEC}.cross_attn.out_proj.{{p}}"),
    (f"{_DEC_HUB}.cross_attn.cross_attn_layer_norm.{{p}}", f"{_DEC}.norm2.{{p}}"),
    (f"{_DEC_HUB}.mlp.fc1.{{p}}", f"{_DEC}.linear1.{{p}}"),
    (f"{_DEC_HUB}.mlp.fc2.{{p}}", f"{_DEC}.linear2.{{p}}"),
    (f"{_DEC_HUB}.mlp.final_layer_norm.{{p}}", f"{_DEC}.norm3.{{p}}"),
    (f"{_DEC_HUB}.mlp.activation_fn.weight", f"{_DEC}.activation.weight"),
    ("model.decoder.layernorm.{p}", "transformer.decoder.norm.{p}"),
    *_mlp("model.decoder.query_scale", "transformer.decoder.query_scale"),
    *_mlp("model.decoder.ref_point_head", "transformer.decoder.ref_point_head"),
    *_mlp("model.decoder.ref_anchor_head", "transformer.decoder.ref_anchor_head"),
    ("class_embed.{p}", "class_embed.{p}"),
    *_mlp("bbox_predictor", "bbox_embed"),
)
#: read only: transformers' own ResNet backbone (no wrapper), and the decoder's copy of the shared
#: box head where a folder holds it (it is written once, as ``bbox_predictor``)
DAB_ALIASES = (
    ("model.backbone.conv_encoder.model.{rest}", "backbone.0.body.{rest}"),
    *_mlp("model.decoder.bbox_embed", "transformer.decoder.bbox_embed"),
)

#: DAB-DETR's box head: the reference's state dict holds it under both prefixes, the same tensors
SHARED_HEAD = ("bbox_embed.", "transformer.decoder.bbox_embed.")

#: ConditionalDetrConfig's and DabDetrConfig's defaults (transformers 5.x), for fields a config.json
#: leaves out
CONDITIONAL_DEFAULTS = {"d_model": 256, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
                        "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048,
                        "num_queries": 300, "dropout": 0.1, "auxiliary_loss": False,
                        "position_embedding_type": "sine", "activation_function": "relu"}
DAB_DEFAULTS = {"hidden_size": 256, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
                "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048, "num_queries": 300,
                "dropout": 0.1, "auxiliary_loss": False, "activation_function": "prelu", "temperature_height": 20,
                "temperature_width": 20, "query_dim": 4, "num_patterns": 0, "random_refpoints_xy": False,
                "keep_query_pos": False, "normalize_before": False, "sine_position_embedding_scale": None,
                "tie_word_embeddings": True}
#: the config's matching costs and loss coefficients -> this project's; given where config.json has
#: them (``cls_loss_coefficient`` is not: transformers' loss ignores it, see the module's docstring)
LOSS_FIELDS = {"class_cost": "set_cost_class", "bbox_cost": "set_cost_bbox", "giou_cost": "set_cost_giou",
               "bbox_loss_coefficient": "bbox_loss_coef", "giou_loss_coefficient": "giou_loss_coef",
               "focal_alpha": "focal_alpha"}
#: the weight of the classification loss in the references' recipes (configs/conditional/base.yaml,
#: configs/dab/base.yaml)
RECIPE_CE_LOSS_COEF = {"conditional": 2.0, "dab": 1.0}


@dataclass(frozen=True)
class Architecture:
    """One detection model of the family as a Hugging Face folder holds it."""

    model_type: str
    #: transformers' class of the detection model
    architecture: str
    #: the model's name in messages
    label: str
    #: this project's ``model.decoder``
    decoder: str
    #: (Hub name, this project's name) templates, read and written
    renames: tuple
    #: more Hub names of the same tensors, read only
    aliases: tuple
    #: the encoder's q / k / v projections <-> its packed ``in_proj``
    qkv: tuple
    #: the Hub's name of the class head's weight
    class_head: str

    def overrides(self, config: Mapping, num_classes: int, where: str) -> list[tuple[str, object]]:
        """The model's ``(key, value)`` overrides after the backbone's (which the caller adds)."""
        if self.decoder == "conditional":
            return _conditional(config, num_classes, where)
        return _dab(config, num_classes, where)

    def tie(self, state: dict[str, torch.Tensor], config: Mapping, source: str) -> dict[str, torch.Tensor]:
        """``state`` with DAB-DETR's shared box head under both its names (SourceError if a folder
        holds two different heads); other architectures' state as it is."""
        if self.decoder != "dab":
            return state
        head, copy = SHARED_HEAD
        heads = {k.removeprefix(head): v for k, v in state.items() if k.startswith(head)}
        copies = {k.removeprefix(copy): v for k, v in state.items() if k.startswith(copy)}
        if copies and heads:
            differ = [k for k in heads if k in copies and not torch.equal(heads[k], copies[k])]
            if differ:
                raise SourceError(f"{source}: model.decoder.bbox_embed.{differ[0]} differs from "
                                  f"bbox_predictor.{differ[0]}; DAB-DETR shares one box head between its decoder "
                                  f"and its predictions, expected the same tensors")
        elif not copies and config.get("tie_word_embeddings", True) is False:
            raise SourceError(f"{source}: tie_word_embeddings is false in {CONFIG_FILE} but the folder holds no "
                              f"model.decoder.bbox_embed; DAB-DETR shares one box head (bbox_predictor) between "
                              f"its decoder and its predictions, expected tie_word_embeddings true")
        state = dict(state)
        for name, tensor in (heads or copies).items():
            state.setdefault(head + name, tensor)
            state.setdefault(copy + name, tensor)
        return state

    def untie(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` without the decoder's copy of the shared box head (written once, as transformers does)."""
        if self.decoder != "dab":
            return dict(state)
        return {k: v for k, v in state.items() if not k.startswith(SHARED_HEAD[1])}


CONDITIONAL = Architecture(model_type="conditional_detr", architecture="ConditionalDetrForObjectDetection",
                           label="Conditional DETR", decoder="conditional", renames=CONDITIONAL_RENAMES,
                           aliases=CONDITIONAL_ALIASES, qkv=ENCODER_QKV, class_head="class_labels_classifier.weight")
DAB = Architecture(model_type="dab-detr", architecture="DabDetrForObjectDetection", label="DAB-DETR", decoder="dab",
                   renames=DAB_RENAMES, aliases=DAB_ALIASES, qkv=ENCODER_QKV, class_head="class_embed.weight")
#: model_type -> architecture
ARCHITECTURES = {a.model_type: a for a in (CONDITIONAL, DAB)}


def _same(hf: Mapping, where: str, label: str) -> None:
    for enc, dec in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if hf[enc] != hf[dec]:
            raise SourceError(f"{where}: {enc}={hf[enc]} and {dec}={hf[dec]} differ; this project's {label} has one "
                              f"value for both")


def _sizes(hf: Mapping, hidden: int, num_classes: int, aux_loss: bool) -> list[tuple[str, object]]:
    return [("model.encoder_abs_pos", True), ("model.irpe", None), ("model.pre_norm", False),
            ("model.hidden_dim", hidden), ("model.nheads", hf["encoder_attention_heads"]),
            ("model.enc_layers", hf["encoder_layers"]), ("model.dec_layers", hf["decoder_layers"]),
            ("model.dim_feedforward", hf["encoder_ffn_dim"]), ("model.num_queries", hf["num_queries"]),
            ("model.num_classes", num_classes), ("model.dropout", hf["dropout"]), ("model.aux_loss", aux_loss)]


def _losses(config: Mapping, decoder: str) -> list[tuple[str, object]]:
    pairs = [(f"loss.{ours}", config[theirs]) for theirs, ours in LOSS_FIELDS.items() if theirs in config]
    return pairs + [("loss.ce_loss_coef", RECIPE_CE_LOSS_COEF[decoder])]


def _conditional(config: Mapping, num_classes: int, where: str) -> list[tuple[str, object]]:
    from ..config.reference_args import CONDITIONAL_NUM_SELECT

    hf = {**CONDITIONAL_DEFAULTS, **config}
    _same(hf, where, CONDITIONAL.label)
    if hf["activation_function"] != "relu":
        raise SourceError(f"{where}: activation_function {hf['activation_function']!r} is not supported by "
                          f"Conditional DETR here; expected relu")
    if hf["position_embedding_type"] not in ("sine", "learned"):
        raise SourceError(f"{where}: position_embedding_type {hf['position_embedding_type']!r}: "
                          f"expected sine or learned")
    if hf["auxiliary_loss"]:
        log.warning("%s: auxiliary_loss is true; transformers' Conditional DETR then feeds each decoder layer's "
                    "normalised output to the next layer, the reference (this project) does not, so detections "
                    "can differ from transformers' for these weights", where)
    return [("model.decoder", "conditional"), ("model.position_embedding", hf["position_embedding_type"]),
            ("model.pe_temperature", 10000.0),
            *_sizes(hf, hf["d_model"], num_classes, bool(hf["auxiliary_loss"])),
            ("model.num_select", CONDITIONAL_NUM_SELECT), *_losses(config, "conditional")]


def _dab(config: Mapping, num_classes: int, where: str) -> list[tuple[str, object]]:
    from .infer import RECIPE_DEFAULTS

    hf = {**DAB_DEFAULTS, **config}
    _same(hf, where, DAB.label)
    if hf["temperature_height"] != hf["temperature_width"]:
        raise SourceError(f"{where}: temperature_height={hf['temperature_height']} and "
                          f"temperature_width={hf['temperature_width']} differ; this project has one sine "
                          f"temperature (model.pe_temperature), expected equal values")
    fixed = [("query_dim", 4), ("keep_query_pos", False), ("normalize_before", False)]
    for name, value in fixed:
        if hf[name] != value:
            raise SourceError(f"{where}: {name}={json_value(hf[name])} is not supported: the reference DAB-DETR "
                              f"has {name}={json_value(value)}")
    scale = hf["sine_position_embedding_scale"]
    if scale is not None and (not isinstance(scale, (int, float)) or not math.isclose(scale, 2 * math.pi)):
        raise SourceError(f"{where}: sine_position_embedding_scale={scale}: expected null or 2 pi (the reference's)")
    if hf["activation_function"] not in ("relu", "prelu"):
        raise SourceError(f"{where}: activation_function {hf['activation_function']!r} is not supported by DAB-DETR "
                          f"here; expected prelu or relu")
    patterns = hf["num_patterns"]
    if not isinstance(patterns, int) or isinstance(patterns, bool) or patterns < 0:
        raise SourceError(f"{where}: num_patterns={json_value(patterns)}: expected a count >= 0")
    return [("model.decoder", "dab"), ("model.position_embedding", "sine"),
            ("model.pe_temperature", float(hf["temperature_height"])),
            *_sizes(hf, hf["hidden_size"], num_classes, bool(hf["auxiliary_loss"])),
            ("model.activation", hf["activation_function"]), ("model.num_patterns", patterns),
            ("model.random_refpoints_xy", bool(hf["random_refpoints_xy"])),
            ("model.num_select", RECIPE_DEFAULTS["dab"]["model.num_select"]), *_losses(config, "dab")]


def json_value(value) -> str:
    """``value`` as config.json spells it (true, null, 3)."""
    return json.dumps(value)
