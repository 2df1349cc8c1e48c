"""The architecture read from weights alone: a model rebuilt from the inferred overrides has the
same keys, shapes and outputs; what the weights cannot tell is reported or must be given."""

import pytest
import torch
import torchvision

from detr_irpe.config import load_config
from detr_irpe.core.errors import SourceError
from detr_irpe.hub.infer import infer_architecture, infer_overrides
from detr_irpe.models import build_model
from helpers import TINY

NO_WEIGHTS = "model.backbone.weights=none"
SMALL = ["model.hidden_dim=64", "model.dim_feedforward=96", "model.enc_layers=1", "model.dec_layers=1"]

# (overrides of the model that makes the weights, values given to the inference)
VARIANTS = {
    "tiny": (TINY, ["model.nheads=4"]),
    "tiny_no_encoder": (TINY + ["model.enc_layers=0", "model.nheads=8"], []),
    "resnet18_gn_prenorm_learned": (
        ["model.backbone.name=resnet18", "model.backbone.norm=gn", "model.pre_norm=true",
         "model.position_embedding=learned", "model.num_queries=7", "model.num_classes=3", *SMALL], []),
    "resnet50_irpe_product_ctx_k": (["model.irpe=rpe-2.0-product-ctx-1-k", *SMALL], []),
    "tiny_product_bias_perhead_qk": (TINY + ["model.irpe=rpe-1.9-product-bias-0-qk"], []),
    "tiny_cross_ctx_perhead_qkv": (TINY + ["model.irpe=rpe-2.5-cross-ctx-0-qkv"], []),
    "tiny_cross_bias_shared_q": (TINY + ["model.nheads=8", "model.irpe=rpe-3.0-cross-bias-1-q"], []),
    "tiny_product_ctx_kv_prenorm": (TINY + ["model.irpe=rpe-2.0-product-ctx-1-kv", "model.pre_norm=true"], []),
    "tiny_product_ctx_perhead_v": (TINY + ["model.irpe=rpe-1.9-product-ctx-0-v", "model.num_queries=3"], []),
    "tiny_learned_product_bias_shared_k": (
        TINY + ["model.nheads=8", "model.position_embedding=learned", "model.irpe=rpe-2.0-product-bias-1-k"], []),
    "tiny_euc_ctx_k_given": (TINY + ["model.irpe=rpe-2.0-euc-ctx-1-k"], ["model.irpe=rpe-2.0-euc-ctx-1-k"]),
    "tiny_quant_bias_q_given": (TINY + ["model.irpe=rpe-3.0-quant-bias-0-q"], ["model.irpe=rpe-3.0-quant-bias-0-q"]),
    "tiny_ratio_outside_use_given": (TINY + ["model.irpe=rpe-1.2-product-ctx-1-k"],
                                     ["model.irpe=rpe-1.2-product-ctx-1-k"]),
    "tiny_conditional_irpe": (TINY + ["model.decoder=conditional", "model.irpe=rpe-2.0-product-ctx-1-k"], []),
    "tiny_dab_patterns": (TINY + ["model.decoder=dab", "model.activation=prelu", "model.num_patterns=3",
                                  "model.pe_temperature=20", "model.num_select=300"], ["model.nheads=4"]),
    "tiny_dab_relu_irpe": (TINY + ["model.decoder=dab", "model.irpe=rpe-2.0-product-ctx-1-k", "model.pe_temperature=20",
                                   "model.num_select=300"], []),
    "tiny_conditional_groups": (TINY + ["model.decoder=conditional", "model.num_groups=3"], ["model.nheads=4"]),
    "tiny_detr_groups_irpe": (TINY + ["model.num_groups=2", "model.irpe=rpe-2.0-product-ctx-1-k"], []),
    "tiny_dab_denoising": (TINY + ["model.decoder=dab", "model.dn_groups=5", "model.pe_temperature=20",
                                   "model.num_select=300"], ["model.nheads=4"]),
}


def _model(overrides, seed=0):
    torch.manual_seed(seed)
    return build_model(load_config(None, [NO_WEIGHTS, *overrides]))[0].eval()


def _meta_state(overrides):
    with torch.device("meta"):
        return build_model(load_config(None, [NO_WEIGHTS, *overrides]))[0].state_dict()


def _images():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 128, 160, generator=g), torch.rand(3, 96, 128, generator=g)]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_rebuilt_model_has_the_same_keys_shapes_and_outputs(name):
    overrides, given = VARIANTS[name]
    model = _model(overrides)
    state = model.state_dict()
    inferred = infer_architecture(state, source="weights.pth", given=given)
    rebuilt = _model([*inferred.overrides, *given], seed=1)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state.items()}
    rebuilt.load_state_dict(state)
    with torch.no_grad():  # the encoder's attention maps show the iRPE (its effect on logits is small here)
        expected, got = model(_images(), need_weights=True), rebuilt(_images(), need_weights=True)
    assert torch.equal(expected["pred_logits"], got["pred_logits"])
    assert torch.equal(expected["pred_boxes"], got["pred_boxes"])
    assert all(torch.equal(a, b) for a, b in zip(expected["encoder_attention"], got["encoder_attention"], strict=True))


@pytest.mark.parametrize("name, blocks_dilate", [("resnet18", False), ("resnet34", False),
                                                 ("resnet50", True), ("resnet101", True)])
def test_resnet_depth_from_block_counts_and_dilation_untold(name, blocks_dilate):
    state = _meta_state([f"model.backbone.name={name}", *SMALL])
    inferred = infer_architecture(state, source="w")
    assert f"model.backbone.name={name}" in inferred.overrides
    assert ("model.backbone.dilation" in inferred.undetermined) == blocks_dilate
    assert "model.nheads" in inferred.undetermined and "model.aux_loss" in inferred.undetermined


def test_norm_kind_from_buffers():
    for norm in ("frozen_bn", "bn", "gn"):
        state = _meta_state(["model.backbone.name=resnet18", f"model.backbone.norm={norm}", *SMALL])
        assert f"model.backbone.norm={norm}" in infer_overrides(state, source="w")


def test_heads_told_by_contextual_table():
    state = _meta_state(TINY + ["model.nheads=2", "model.irpe=rpe-2.0-product-ctx-1-k"])
    inferred = infer_architecture(state, source="w")
    assert "model.nheads=2" in inferred.overrides and "model.nheads" not in inferred.undetermined
    assert "model.irpe=rpe-2.0-product-ctx-1-k" in inferred.overrides


def test_given_value_leaves_undetermined():
    state = _meta_state(TINY)
    inferred = infer_architecture(state, source="w", given=["model.backbone.dilation=true", "data.root=/data"])
    assert "model.backbone.dilation=true" in inferred.overrides
    assert "model.backbone.dilation" not in inferred.undetermined


def test_euc_quant_ambiguity_names_the_option():
    state = _meta_state(TINY + ["model.irpe=rpe-2.0-euc-ctx-1-k"])
    with pytest.raises(SourceError, match=r"weights\.pth: .*rpe-2\.0-euc-ctx-1-k.*rpe-2\.0-quant-ctx-1-k.*"
                                          r"model\.irpe=rpe-2\.0-euc-ctx-1-k"):
        infer_overrides(state, source="weights.pth")


def test_ratio_outside_use_names_the_option():
    state = _meta_state(TINY + ["model.irpe=rpe-1.2-product-ctx-1-k"])
    with pytest.raises(SourceError, match=r"25 buckets.*floor\(2r\) = 2.*model\.irpe=rpe-1\.0-product-ctx-1-k"):
        infer_overrides(state, source="w")


def test_ratio_taken_from_the_ratios_in_use_is_reported():
    state = _meta_state(TINY + ["model.irpe=rpe-1.9-product-ctx-1-k"])
    inferred = infer_architecture(state, source="w")
    assert "model.irpe=rpe-1.9-product-ctx-1-k" in inferred.overrides
    assert "model.irpe" in inferred.undetermined


@pytest.mark.parametrize("model_overrides, given, message", [
    (TINY, ["model.num_queries=5"], r"model\.num_queries=5 was given, but the weights have model\.num_queries=10"),
    (TINY + ["model.irpe=rpe-2.0-product-ctx-1-k"], ["model.irpe=rpe-1.9-product-ctx-1-k"],
     r"model\.irpe=rpe-1\.9-product-ctx-1-k was given, but the weights have iRPE tables"),
    (TINY + ["model.irpe=rpe-2.0-product-ctx-1-k"], ["model.irpe=null"], r"model\.irpe=null was given"),
    (TINY, ["model.irpe=rpe-2.0-product-ctx-1-k"], r"model\.irpe=rpe-2\.0-product-ctx-1-k was given, .*no iRPE"),
    (TINY + ["model.irpe=rpe-2.0-product-ctx-1-k"], ["model.nheads=8"], r"model\.nheads=8 was given, .*nheads=4"),
    (["model.backbone.name=resnet18", *SMALL], ["model.backbone.name=resnet34"], r"model\.backbone\.name=resnet34"),
    (TINY, ["model.position_embedding=learned"], r"position_embedding=learned was given, .*sine or none"),
])
def test_given_value_inconsistent_with_weights_is_refused(model_overrides, given, message):
    with pytest.raises(SourceError, match=message):
        infer_overrides(_meta_state(model_overrides), source="w", given=given)


def test_default_heads_that_do_not_divide_hidden_must_be_given():
    state = _meta_state(TINY + ["model.hidden_dim=36", "model.nheads=4"])
    with pytest.raises(SourceError, match=r"model\.nheads=N \(a divisor of 36\)"):
        infer_overrides(state, source="w")
    assert "model.nheads=4" in infer_overrides(state, source="w", given=["model.nheads=4"])


def test_plain_resnet_is_no_detr():
    with torch.device("meta"):
        state = torchvision.models.resnet18().state_dict()
    with pytest.raises(SourceError, match=r"resnet18\.pth: not a DETR state dict: .*conv1\.weight.*expected "
                                          r"backbone\.0\.body\.conv1\.weight"):
        infer_overrides(state, source="resnet18.pth")


def test_random_keys_and_prefixed_keys_are_no_detr():
    with pytest.raises(SourceError, match=r"not a DETR state dict: it has 2 keys such as foo, bar"):
        infer_overrides({"foo": torch.zeros(2), "bar": torch.zeros(1)}, source="w")
    prefixed = {f"module.{k}": v for k, v in _meta_state(TINY).items()}
    with pytest.raises(SourceError, match=r"strip that prefix"):
        infer_overrides(prefixed, source="w")


def test_detr_names_with_a_foreign_part_are_refused():
    state = dict(_meta_state(TINY))
    state["transformer.encoder.layers.1.extra.weight"] = torch.zeros(3, device="meta")
    with pytest.raises(SourceError, match=r"do not fit .*unexpected transformer\.encoder\.layers\.1\.extra\.weight"):
        infer_overrides(state, source="w")


def test_weights_that_mix_two_decoders_are_refused_naming_both():
    state = _model(TINY + ["model.decoder=dab", "model.activation=prelu"]).state_dict()
    state["query_embed.weight"] = torch.zeros(10, 32)  # a Conditional DETR's query embedding
    with pytest.raises(SourceError, match=r"mixed.pth: the weights mix the decoders conditional and dab \(e.g. "
                                          r"query_embed.weight, refpoint_embed.weight\)"):
        infer_architecture(state, source="mixed.pth")


def test_the_class_count_of_a_sigmoid_head_has_no_no_object_row():
    for decoder in ("conditional", "dab"):
        state = _model(TINY + [f"model.decoder={decoder}", "model.num_classes=7"]).state_dict()
        assert state["class_embed.weight"].shape[0] == 7
        assert "model.num_classes=7" in infer_overrides(state, source=decoder, given=["model.nheads=4"])


def test_a_dab_option_the_weights_contradict_is_refused_naming_it():
    state = _model(TINY + ["model.decoder=dab", "model.activation=prelu", "model.num_patterns=3"]).state_dict()
    with pytest.raises(SourceError, match=r"dab.pth: model.num_patterns=0 was given, but the weights have "
                                          r"model.num_patterns=3 \(3 pattern embeddings\)"):
        infer_architecture(state, source="dab.pth", given=["model.nheads=4", "model.num_patterns=0"])
    with pytest.raises(SourceError, match=r"model.activation=relu was given, but the weights have "
                                          r"model.activation=prelu"):
        infer_architecture(state, source="dab.pth", given=["model.nheads=4", "model.activation=relu"])
