"""DAB-DETR against the reference code and the project's encoder options.

tests/data/dab_detr_fixture.pt is made by tests/fixture_makers/dab_detr.py from
IDEA-Research/DAB-DETR (see its docstring for the command). Both sides take every weight from its
name (tests/family_fixtures.py); the project's model must then load with ``strict=True``,
under the reference's state-dict names in the reference's order, and reproduce the reference's
outputs, anchors, encoder attention, loss terms (through the project's focal set criterion),
matches, top-k detections and gradients.

Gradients are checked in float64 for every parameter. In float32, a few inputs of the random
ResNet's ReLUs lie within rounding of zero, so whether they pass depends on the summation order
(thread count, CPU); each flip moves the backbone gradients upstream of it by up to 1e-2 of their
norm. The float32 check is therefore tight for everything after the backbone and takes only the
gradient norms of the backbone, loosely.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from detr_irpe.core.rpe_spec import RPESpec
from detr_irpe.models.backbone import Backbone, Joiner
from detr_irpe.models.dab_detr import INVERSE_SIGMOID_EPS, DABDETR, anchor_sine_embedding
from detr_irpe.models.decoder_parts import inverse_sigmoid
from detr_irpe.models.detr import pad_images
from detr_irpe.models.focal_criterion import FocalSetCriterion
from detr_irpe.models.matcher import HungarianMatcher
from detr_irpe.models.position_encoding import build_position_encoding
from detr_irpe.models.postprocess import TopKPostProcess
from detr_irpe.models.transformer import EncoderLayer, Transformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from family_fixtures import fill_by_name, gradient_summary  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "data" / "dab_detr_fixture.pt"
SETTINGS = ("anchors", "patterns")
IRPE = RPESpec.parse("rpe-2.0-product-ctx-1-k")
#: float32 outputs (logits up to about 2, boxes and anchors in [0, 1])
ATOL = 1e-5
#: gradients: relative to max(the parameter's gradient norm, GRAD_FLOOR x the largest norm), so
#: that gradients that are zero in exact arithmetic (the self-attention key biases, the layer-0
#: self-attention of all-equal values) compare at the level of their rounding
GRAD_FLOOR = 1e-4
GRAD_RTOL_F32 = 2e-3
GRAD_RTOL_F64 = 2e-4
BACKBONE_NORM_RTOL_F32 = 2e-2


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def _images(fixture, dtype=torch.float32) -> list[torch.Tensor]:
    return [s.to(dtype) / fixture["image_step_count"] for s in fixture["image_steps"]]


def _targets(fixture, dtype=torch.float32) -> list[dict]:
    return [{"labels": t["labels"], "boxes": t["boxes"].to(dtype)} for t in fixture["targets"]]


def _reference_model(fixture, name: str, **overrides) -> DABDETR:
    """The project's DABDETR at the fixture's setting ``name``, weights not yet filled."""
    cfg, setting = fixture["config"], fixture["settings"][name]["setting"]
    joiner = Joiner(Backbone(cfg["backbone"], "none", dilation=cfg["dilation"]),
                    build_position_encoding("sine", cfg["hidden_dim"], temperature=cfg["pe_temperatureH"]))
    kwargs = dict(num_classes=cfg["num_classes"], num_queries=cfg["num_queries"], hidden_dim=cfg["hidden_dim"],
                  nheads=cfg["nheads"], enc_layers=setting["enc_layers"], dec_layers=setting["dec_layers"],
                  dim_feedforward=cfg["dim_feedforward"], dropout=cfg["dropout"],
                  activation=cfg["transformer_activation"], aux_loss=cfg["aux_loss"],
                  num_patterns=setting["num_patterns"], random_refpoints_xy=setting["random_refpoints_xy"])
    kwargs.update(overrides)
    return DABDETR(joiner, **kwargs)


def _criterion(fixture, name: str) -> FocalSetCriterion:
    cfg = fixture["config"]
    matcher = HungarianMatcher(cfg["set_cost_class"], cfg["set_cost_bbox"], cfg["set_cost_giou"],
                               focal_alpha=cfg["focal_alpha"])
    weight_dict = fixture["settings"][name]["float32"]["weight_dict"]
    return FocalSetCriterion(cfg["num_classes"], matcher, weight_dict, focal_alpha=cfg["focal_alpha"])


def _run(fixture, name: str, dtype) -> dict:
    """The project's forward, focal loss and backward at setting ``name`` in ``dtype``."""
    model = fill_by_name(_reference_model(fixture, name)).to(dtype).train()
    images = _images(fixture, dtype)
    outputs = model(images)
    criterion = _criterion(fixture, name)
    targets = _targets(fixture, dtype)
    losses = criterion(outputs, targets)
    total = sum(losses[k] * w for k, w in criterion.weight_dict.items())
    total.backward()
    with torch.no_grad():
        matches = criterion.matcher({k: v for k, v in outputs.items() if k != "aux_outputs"}, targets)
        sizes = torch.tensor([img.shape[-2:] for img in images])
        detections = TopKPostProcess(fixture["config"]["num_select"])(outputs, sizes)
    return {"model": model, "outputs": outputs, "losses": losses, "total": total, "matches": matches,
            "detections": detections, "gradients": gradient_summary(model)}


@pytest.fixture(scope="module", params=SETTINGS)
def run32(request, fixture) -> tuple[str, dict]:
    return request.param, _run(fixture, request.param, torch.float32)


@pytest.fixture(scope="module", params=SETTINGS)
def run64(request, fixture) -> tuple[str, dict]:
    return request.param, _run(fixture, request.param, torch.float64)


def _close(actual, expected, atol, rtol=0.0, what=""):
    torch.testing.assert_close(actual, expected.to(actual.dtype), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------- the fixture and its reference


def test_fixture_records_the_reference_and_stays_small(fixture):
    assert fixture["reference"]["repository"] == "IDEA-Research/DAB-DETR"
    assert fixture["reference"]["commit"] == "723ddb8"
    assert FIXTURE.stat().st_size < 512 * 1024
    assert set(fixture["settings"]) == set(SETTINGS)
    settings = [fixture["settings"][n]["setting"] for n in SETTINGS]
    assert {s["num_patterns"] for s in settings} == {0, 3}
    assert any(s["random_refpoints_xy"] for s in settings)


def test_padding_is_the_reference_padding(fixture):
    batch, mask = pad_images(_images(fixture))
    assert torch.equal(mask, fixture["mask"])
    assert mask.any() and not mask.all()


@pytest.mark.parametrize("name", SETTINGS)
def test_state_dict_keys_are_the_reference_keys_in_its_order(fixture, name):
    model = _reference_model(fixture, name)
    keys = list(model.state_dict())
    assert keys == fixture["settings"][name]["state_dict_keys"]
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, strict=True)


def test_box_head_is_one_module_under_two_names(fixture):
    model = fill_by_name(_reference_model(fixture, "anchors"))
    assert model.transformer.decoder.bbox_embed is model.bbox_embed
    state = model.state_dict()
    for key in [k for k in state if k.startswith("bbox_embed.")]:
        assert state[key].data_ptr() == state[f"transformer.decoder.{key}"].data_ptr()


def test_small_functions_are_the_reference_functions(fixture):
    x, expected = fixture["probes"]["inverse_sigmoid"]
    torch.testing.assert_close(inverse_sigmoid(x, INVERSE_SIGMOID_EPS), expected, atol=1e-6, rtol=1e-6)
    # the clamp at 1e-3 (Conditional DETR's is 1e-5): logit(0) = log(1e-3 / 1)
    assert inverse_sigmoid(torch.tensor([0.0, 1.0]), INVERSE_SIGMOID_EPS).tolist() == pytest.approx([-math.log(1000), math.log(1000)])
    anchors, expected = fixture["probes"]["anchor_sine"]
    torch.testing.assert_close(anchor_sine_embedding(anchors, 256), expected, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- float32: outputs, loss, gradients


def test_outputs_match_the_reference(fixture, run32):
    name, run = run32
    ref = fixture["settings"][name]["float32"]["outputs"]
    out = run["outputs"]
    B = len(fixture["image_steps"])
    layers = fixture["settings"][name]["setting"]["dec_layers"]
    queries = fixture["config"]["num_queries"] * max(1, fixture["settings"][name]["setting"]["num_patterns"])
    assert out["pred_logits"].shape == (B, queries, fixture["config"]["num_classes"])
    assert out["anchors"].shape == (layers, B, queries, 4)
    _close(out["pred_logits"], ref["pred_logits"], ATOL, what="pred_logits")
    _close(out["pred_boxes"], ref["pred_boxes"], ATOL, what="pred_boxes")
    _close(out["anchors"], ref["anchors"], ATOL, what="anchors")
    assert len(out["aux_outputs"]) == len(ref["aux_outputs"]) == layers - 1
    for i, (a, r) in enumerate(zip(out["aux_outputs"], ref["aux_outputs"])):
        _close(a["pred_logits"], r["pred_logits"], ATOL, what=f"aux {i} logits")
        _close(a["pred_boxes"], r["pred_boxes"], ATOL, what=f"aux {i} boxes")


def test_encoder_attention_matches_the_reference(fixture, run32):
    name, run = run32
    ref = fixture["settings"][name]["float32"]
    model = run["model"]
    with torch.no_grad():
        out = model(_images(fixture), need_weights=True)
    _close(out["pred_logits"], ref["outputs"]["pred_logits"], ATOL, what="pred_logits with weights")
    weights = out["encoder_attention"]
    H, W = out["feature_shape"]
    assert len(weights) == len(ref["encoder_attention_mean"]) == fixture["settings"][name]["setting"]["enc_layers"]
    for i, (w, r) in enumerate(zip(weights, ref["encoder_attention_mean"])):
        assert w.shape == (len(fixture["image_steps"]), fixture["config"]["nheads"], H * W, H * W)
        _close(w.mean(1), r, ATOL, what=f"encoder layer {i} attention")


def test_loss_terms_and_matches_match_the_reference(fixture, run32):
    name, run = run32
    ref = fixture["settings"][name]["float32"]
    losses = run["losses"]
    compared = [k for k in ref["losses"] if not k.startswith(("loss_xy", "loss_hw"))]  # the reference's logs only
    assert set(compared) == set(losses)
    for k in compared:
        assert losses[k].item() == pytest.approx(ref["losses"][k], rel=1e-5, abs=1e-6), k
    assert run["total"].item() == pytest.approx(ref["total_loss"], rel=1e-5)
    for (i, j), (ri, rj) in zip(run["matches"], ref["matches"]):
        assert torch.equal(i, ri) and torch.equal(j, rj)


def test_topk_detections_match_the_reference(fixture, run32):
    name, run = run32
    for mine, ref in zip(run["detections"], fixture["settings"][name]["float32"]["detections"]):
        assert torch.equal(mine["labels"], ref["labels"])
        _close(mine["scores"], ref["scores"], ATOL, what="scores")
        _close(mine["boxes"], ref["boxes"], 1e-3, rtol=1e-5, what="boxes (pixels)")


def _gradient_rows(run, ref) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    names = ref["gradient_names"]
    assert set(run["gradients"]) == set(names), "parameters with gradients differ"
    return names, torch.stack([run["gradients"][n] for n in names]), ref["gradients"]


def _gradient_errors(mine: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per parameter: the largest difference of sum, norm and first values over the scale."""
    scale = torch.maximum(ref[:, 1], GRAD_FLOOR * ref[:, 1].max())
    assert torch.equal(mine[:, 2], ref[:, 2])  # as many first values
    diff = (mine - ref).abs()
    return torch.cat([diff[:, :2], diff[:, 3:]], dim=1).max(1).values / scale


def test_float32_gradients_match_the_reference(fixture, run32):
    name, run = run32
    names, mine, ref = _gradient_rows(run, fixture["settings"][name]["float32"])
    backbone = torch.tensor([n.startswith("backbone.") for n in names])
    assert backbone.any() and (~backbone).any()
    errors = _gradient_errors(mine, ref)
    worst = int(torch.where(backbone, torch.zeros_like(errors), errors).argmax())
    assert errors[~backbone].max() < GRAD_RTOL_F32, f"{names[worst]}: {errors[worst]:.2e} of its scale"
    torch.testing.assert_close(mine[backbone, 1], ref[backbone, 1], rtol=BACKBONE_NORM_RTOL_F32, atol=0)


def test_float64_outputs_losses_and_gradients_match_the_reference(fixture, run64):
    name, run = run64
    ref = fixture["settings"][name]["float64"]
    for key in ("pred_logits", "pred_boxes", "anchors"):
        _close(run["outputs"][key], ref["outputs"][key], 1e-12, what=key)
    # the project's focal criterion computes in float32
    for k, v in run["losses"].items():
        assert v.item() == pytest.approx(ref["losses"][k], rel=1e-6, abs=1e-6), k
    names, mine, expected = _gradient_rows(run, ref)
    errors = _gradient_errors(mine, expected)
    worst = int(errors.argmax())
    assert errors.max() < GRAD_RTOL_F64, f"{names[worst]}: {errors[worst]:.2e} of its scale"


def test_fixture_sees_the_images(fixture):
    """The weights by name keep the image in the heads' inputs (a bare 0.05 N(0, 1) everywhere
    would not: see family_fixtures)."""
    model = fill_by_name(_reference_model(fixture, "anchors")).eval()
    images = _images(fixture)
    with torch.no_grad():
        a = model(images)["pred_logits"]
        b = model([images[0] + 0.25, images[1]])["pred_logits"]
    assert (a[0] - b[0]).abs().max() > 1e3 * ATOL
    torch.testing.assert_close(a[1], b[1])


# ---------------------------------------------------------------- the reference's facts at default sizes


def _default_model(**kwargs) -> DABDETR:
    joiner = Joiner(Backbone("resnet50", "none"), build_position_encoding("sine", 256, temperature=20.0))
    return DABDETR(joiner, num_classes=91, **kwargs)


def test_default_state_dict_has_the_reference_key_counts():
    keys = list(_default_model().state_dict())
    assert len(keys) == 590
    with_patterns = list(_default_model(num_patterns=3).state_dict())
    assert len(with_patterns) == 591 and set(with_patterns) - set(keys) == {"transformer.patterns.weight"}
    for part in ("transformer.encoder.query_scale.layers.1.bias",
                 "transformer.decoder.ref_anchor_head.layers.1.weight",
                 "transformer.decoder.ref_point_head.layers.0.weight",
                 "transformer.decoder.query_scale.layers.1.weight",
                 "transformer.encoder.layers.5.activation.weight", "transformer.decoder.layers.5.activation.weight",
                 "transformer.decoder.bbox_embed.layers.2.bias", "refpoint_embed.weight"):
        assert part in keys, part
    assert "transformer.decoder.layers.0.ca_qpos_proj.weight" in keys
    assert not any(k.startswith("transformer.decoder.layers.1.ca_qpos_proj") for k in keys)
    assert not any("query_embed" in k for k in keys)


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    model = _default_model(num_patterns=3)
    assert model.refpoint_embed.weight.shape == (300, 4)
    assert model.transformer.decoder.ref_point_head.layers[0].weight.shape == (256, 512)
    assert model.class_embed.weight.shape == (91, 256)
    assert torch.allclose(model.class_embed.bias, torch.full((91,), -math.log(99)))
    assert not model.bbox_embed.layers[2].weight.any() and not model.bbox_embed.layers[2].bias.any()
    slopes = [m.weight for n, m in model.named_modules() if n.endswith(".activation")]
    assert len(slopes) == 12 and all(s.numel() == 1 and s.item() == 0.25 for s in slopes)
    assert 0.8 < model.transformer.patterns.weight.std() < 1.2  # N(0, 1), after the Xavier pass
    q = model.transformer.encoder.query_scale.layers[0].weight
    assert q.abs().max() <= math.sqrt(6 / 512)  # Xavier-uniform, as every transformer matrix


def test_random_refpoints_xy_initialises_xy_and_leaves_them_trainable(fixture):
    torch.manual_seed(0)
    model = _default_model(random_refpoints_xy=True)
    w = model.refpoint_embed.weight
    xy = w[:, :2].sigmoid()
    # logit of U(0, 1): uniform after the sigmoid (clamped at 1e-3), and N(0, 1) for w, h
    assert xy.min() >= 1e-3 - 1e-7 and xy.max() <= 1 - 1e-3 + 1e-7
    assert abs(xy.mean().item() - 0.5) < 0.05 and abs(xy.var().item() - 1 / 12) < 0.02
    # the reference's "requires_grad = False" on a slice freezes nothing
    assert fixture["settings"]["anchors"]["refpoint_requires_grad_at_init"] is True
    assert w.requires_grad


def test_anchor_xy_get_gradients_as_in_the_reference(fixture, run32):
    name, run = run32
    ref = fixture["settings"][name]["float32"]
    row = ref["gradient_names"].index("refpoint_embed.weight")
    first = ref["gradients"][row, 3:]  # query 0 (x, y, w, h), query 1 (x, y, w, h)
    assert first[[0, 1, 4, 5]].abs().min() > 0
    torch.testing.assert_close(run["gradients"]["refpoint_embed.weight"][3:], first, atol=1e-6, rtol=1e-3)


# ---------------------------------------------------------------- the project's encoder in DAB-DETR


def _tiny(**kwargs) -> DABDETR:
    joiner = Joiner(Backbone("cnn_tiny", "none", norm="bn", width=8),
                    build_position_encoding("sine", 32, temperature=20.0))
    base = dict(num_classes=5, num_queries=6, hidden_dim=32, nheads=4, enc_layers=2, dec_layers=2, dim_feedforward=64)
    base.update(kwargs)
    return DABDETR(joiner, **base)


def _tiny_images():
    g = torch.Generator().manual_seed(3)
    return [torch.randn(3, 96, 128, generator=g), torch.randn(3, 64, 96, generator=g)]


def test_irpe_adds_exactly_the_rpe_k_tables_and_trains():
    plain, irpe = _tiny(), _tiny(rpe=IRPE)
    extra = set(irpe.state_dict()) - set(plain.state_dict())
    assert set(plain.state_dict()) <= set(irpe.state_dict())
    assert extra == {f"transformer.encoder.layers.{i}.self_attn.rpe_k.lookup_table_weight" for i in range(2)}
    out = irpe(_tiny_images())
    loss = out["pred_logits"].sum() + out["pred_boxes"].sum() + sum(a["pred_boxes"].sum() for a in out["aux_outputs"])
    loss.backward()
    assert torch.isfinite(loss)
    for i in range(2):
        grad = irpe.transformer.encoder.layers[i].self_attn.rpe_k.lookup_table_weight.grad
        assert grad is not None and grad.abs().sum() > 0


def test_irpe_with_zero_tables_is_the_model_without_it():
    plain, irpe = fill_by_name(_tiny()).eval(), fill_by_name(_tiny(rpe=IRPE)).eval()
    images = _tiny_images()
    with torch.no_grad():
        reference = plain(images)["pred_logits"]
        assert (irpe(images)["pred_logits"] - reference).abs().max() > 1e-4  # the tables are used
        for layer in irpe.transformer.encoder.layers:
            layer.self_attn.rpe_k.lookup_table_weight.zero_()
        torch.testing.assert_close(irpe(images)["pred_logits"], reference, atol=1e-5, rtol=1e-5)


def test_encoder_scales_the_position_by_query_scale_at_every_layer():
    model = fill_by_name(_tiny(enc_layers=3)).eval()
    encoder = model.transformer.encoder
    seen = []
    for layer in encoder.layers:
        layer.register_forward_pre_hook(lambda m, args: seen.append((args[0], args[2])))
    B, L, C = 2, 12, 32
    src, pos = torch.randn(B, L, C), torch.randn(B, L, C)
    with torch.no_grad():
        encoder(src, torch.zeros(B, L, dtype=torch.bool), pos, (3, 4))
    assert len(seen) == 3
    for layer_input, layer_pos in seen:
        torch.testing.assert_close(layer_pos, pos * encoder.query_scale(layer_input))


def test_relative_only_drops_the_absolute_term_and_query_scale():
    full, relative = _tiny(rpe=IRPE), _tiny(rpe=IRPE, encoder_pos=False)
    missing = set(full.state_dict()) - set(relative.state_dict())
    assert missing == {f"transformer.encoder.query_scale.layers.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")}
    assert set(relative.state_dict()) <= set(full.state_dict())
    fill_by_name(relative).train()
    out = relative(_tiny_images())
    (out["pred_logits"].sum() + out["pred_boxes"].sum()).backward()
    assert all(p.grad is not None for n, p in relative.named_parameters() if "rpe_k" in n)
    # the encoder reads no absolute position; the decoder's cross-attention keys still do
    encoder = relative.transformer.encoder
    src, mask = torch.randn(2, 12, 32), torch.zeros(2, 12, dtype=torch.bool)
    with torch.no_grad():
        a, _ = encoder(src, mask, torch.randn(2, 12, 32), (3, 4))
        b, _ = encoder(src, mask, torch.randn(2, 12, 32), (3, 4))
    assert torch.equal(a, b)
    with torch.no_grad():
        other = relative.eval()
        first = other(_tiny_images())["pred_logits"]
        other.backbone[1].temperature = 10000.0
        assert (other(_tiny_images())["pred_logits"] - first).abs().max() > 1e-6


def test_forward_contract_is_detrs():
    model = fill_by_name(_tiny(num_patterns=2)).eval()
    images = _tiny_images()
    batch, mask = pad_images(images)
    with torch.no_grad():
        listed = model(images)
        padded = model(batch, mask)
        weighted = model(images, need_weights=True)
    torch.testing.assert_close(listed["pred_logits"], padded["pred_logits"])
    assert listed["pred_logits"].shape == (2, 12, 5) and listed["pred_boxes"].shape == (2, 12, 4)
    assert listed["anchors"].shape == (2, 2, 12, 4) and len(listed["aux_outputs"]) == 1
    assert "encoder_attention" not in listed
    H, W = weighted["feature_shape"]
    assert [w.shape for w in weighted["encoder_attention"]] == [(2, 4, H * W, H * W)] * 2
    torch.testing.assert_close(weighted["pred_logits"], listed["pred_logits"], atol=1e-5, rtol=1e-5)
    assert "aux_outputs" not in fill_by_name(_tiny(aux_loss=False)).eval()(images)
    # the first anchors are the sigmoid of the embedding, pattern-major: query p * 6 + q has anchor q
    anchors = listed["anchors"][0, 0]
    torch.testing.assert_close(anchors, model.refpoint_embed.weight.sigmoid().repeat(2, 1))


def test_a_missing_position_encoding_is_refused():
    joiner = Joiner(Backbone("cnn_tiny", "none", norm="bn", width=8), build_position_encoding("none", 32))
    model = DABDETR(joiner, num_classes=5, num_queries=6, hidden_dim=32, nheads=4, enc_layers=1, dec_layers=1,
                    dim_feedforward=64)
    with pytest.raises(ValueError, match="absolute position encoding"):
        model(_tiny_images())


# ---------------------------------------------------------------- EncoderLayer's activation option


def test_encoder_layer_activation_leaves_detrs_keys_and_output_unchanged():
    torch.manual_seed(0)
    default = EncoderLayer(32, 4, 64, 0.0)
    relu = EncoderLayer(32, 4, 64, 0.0, activation="relu")
    prelu = EncoderLayer(32, 4, 64, 0.0, activation="prelu")
    assert list(relu.state_dict()) == list(default.state_dict())
    assert not any("activation" in k for k in default.state_dict())
    assert list(prelu.state_dict()) == list(default.state_dict()) + ["activation.weight"]
    assert prelu.activation.weight.item() == 0.25
    detr = Transformer(32, 4, num_encoder_layers=2, num_decoder_layers=2)
    assert not any("activation" in k for k in detr.state_dict())
    # a zero slope is ReLU
    relu.load_state_dict(default.state_dict())
    prelu.load_state_dict({**default.state_dict(), "activation.weight": torch.zeros(1)})
    src, pos = torch.randn(2, 12, 32), torch.randn(2, 12, 32)
    out = default(src, None, pos)[0]
    assert torch.equal(relu(src, None, pos)[0], out)
    torch.testing.assert_close(prelu(src, None, pos)[0], out, atol=1e-6, rtol=0)
    prelu.activation.weight.data.fill_(0.25)
    assert (prelu(src, None, pos)[0] - out).abs().max() > 1e-4
    with pytest.raises(ValueError, match="activation"):
        EncoderLayer(32, 4, 64, 0.0, activation="gelu")
