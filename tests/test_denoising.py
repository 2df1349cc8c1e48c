"""DN-DETR query denoising on the DAB-DETR decoder (``model.dn_groups``) against the reference code.

tests/data/dn_fixture.pt is made by tests/fixture_makers/dn_detr.py from IDEA-Research/DN-DETR
(see its docstring for the command). Both sides take every weight from its name
(tests/family_fixtures.py). Checked against the reference: the self-attention mask for given
(queries, groups, target counts); the noise drawn under one seed; the decoder's input queries;
given the reference's noised queries, every output (matching and denoising parts), every loss
term (the ``tgt_*`` denoising terms included) and the gradients after the backbone; the inference
outputs (no denoising part). Then: denoising off changes nothing, a training step with the built
model and criterion has finite denoising terms, and the option is refused off the dab decoder.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from detr_irpe.config import ConfigError
from detr_irpe.models import build_model
from detr_irpe.models.backbone import Backbone, Joiner
from detr_irpe.models.dab_detr import DABDETR
from detr_irpe.models.denoising import (DenoisingFocalSetCriterion, NoisedTargets, attention_mask, denoising_losses,
                                        denoising_queries, denoising_weight_dict, known_targets, matching_content,
                                        noise_targets)
from detr_irpe.models.matcher import HungarianMatcher
from detr_irpe.models.position_encoding import build_position_encoding

sys.path.insert(0, str(Path(__file__).resolve().parent))
from family_fixtures import fill_by_name, gradient_summary  # noqa: E402
from helpers import tiny_config  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "data" / "dn_fixture.pt"
DAB_FIXTURE = Path(__file__).resolve().parent / "data" / "dab_detr_fixture.pt"
SETTINGS = ("anchors", "patterns")
ATOL = 1e-5
LOSS_RTOL = 1e-5
GRAD_FLOOR = 1e-4
GRAD_RTOL = 2e-3


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def _images(fixture) -> list[torch.Tensor]:
    return [s.float() / fixture["image_step_count"] for s in fixture["image_steps"]]


def _targets(fixture) -> list[dict]:
    return [{"labels": t["labels"], "boxes": t["boxes"].float()} for t in fixture["targets"]]


def _model(fixture, name: str, **overrides) -> DABDETR:
    cfg, s = fixture["config"], fixture["settings"][name]["setting"]
    joiner = Joiner(Backbone(cfg["backbone"], "none", dilation=cfg["dilation"]),
                    build_position_encoding("sine", cfg["hidden_dim"], temperature=cfg["pe_temperatureH"]))
    kwargs = dict(num_classes=cfg["num_classes"], num_queries=cfg["num_queries"], hidden_dim=cfg["hidden_dim"],
                  nheads=cfg["nheads"], enc_layers=s["enc_layers"], dec_layers=s["dec_layers"],
                  dim_feedforward=cfg["dim_feedforward"], dropout=cfg["dropout"],
                  activation=cfg["transformer_activation"], aux_loss=cfg["aux_loss"],
                  num_patterns=s["num_patterns"], random_refpoints_xy=s["random_refpoints_xy"],
                  dn_groups=s["scalar"], dn_label_noise=s["label_noise_scale"], dn_box_noise=s["box_noise_scale"])
    kwargs.update(overrides)
    return fill_by_name(DABDETR(joiner, **kwargs))


def _criterion(fixture, dec_layers: int) -> DenoisingFocalSetCriterion:
    cfg = fixture["config"]
    matcher = HungarianMatcher(cfg["set_cost_class"], cfg["set_cost_bbox"], cfg["set_cost_giou"],
                               focal_alpha=cfg["focal_alpha"])
    weights = {"loss_ce": cfg["cls_loss_coef"], "loss_bbox": cfg["bbox_loss_coef"], "loss_giou": cfg["giou_loss_coef"]}
    weights.update({f"{k}_{i}": v for i in range(dec_layers - 1) for k, v in list(weights.items())})
    weights.update(denoising_weight_dict(weights))
    return DenoisingFocalSetCriterion(cfg["num_classes"], matcher, weights, focal_alpha=cfg["focal_alpha"])


def _recorded_noise(fixture, name: str) -> NoisedTargets:
    """The reference's noised queries as the project's NoisedTargets."""
    setting, train = fixture["settings"][name]["setting"], fixture["settings"][name]["train"]
    noised = known_targets(_targets(fixture), setting["scalar"])
    noised.labels, noised.boxes = train["noised_labels"], train["noised_boxes"]
    return noised


def _close(actual, expected, what, atol=ATOL):
    torch.testing.assert_close(actual, expected.to(actual.dtype), atol=atol, rtol=0.0, msg=lambda m: f"{what}: {m}")


# -- deterministic parts ------------------------------------------------------------------------


def test_attention_mask_equals_the_reference_for_given_queries_groups_and_counts(fixture):
    for probe in fixture["mask_probes"]:
        mask = attention_mask(probe["num_queries"], probe["groups"], probe["counts"])
        assert torch.equal(mask, probe["mask"]), probe


def test_attention_mask_blocks_matching_from_denoising_and_groups_from_each_other():
    mask = attention_mask(4, 3, [2, 1])  # 3 groups of 2, then 4 matching queries
    assert mask.shape == (10, 10) and mask.dtype == torch.bool
    assert mask[6:, :6].all() and not mask[:, 6:].any()  # matching sees no dn; dn sees matching
    for g in range(3):
        block = slice(2 * g, 2 * g + 2)
        assert not mask[block, block].any()
        assert mask[block, :6].sum() == 2 * 4
    assert not attention_mask(5, 2, [0, 0]).any() and attention_mask(5, 2, []).shape == (5, 5)


@pytest.mark.parametrize("name", SETTINGS)
def test_noise_under_a_seed_is_the_reference_noise(fixture, name):
    setting, train = fixture["settings"][name]["setting"], fixture["settings"][name]["train"]
    torch.manual_seed(fixture["noise_seed"])
    noised = noise_targets(_targets(fixture), setting["scalar"], setting["label_noise_scale"],
                           setting["box_noise_scale"], fixture["config"]["num_classes"])
    assert torch.equal(noised.labels, train["noised_labels"])
    assert torch.equal(noised.boxes, train["noised_boxes"])
    assert torch.equal(noised.known_labels, train["known_labels"])
    assert torch.equal(noised.known_boxes, train["known_boxes"])
    assert torch.equal(noised.query_index, train["map_known_indice"])
    assert noised.pad_size == train["pad_size"]
    assert not torch.equal(noised.labels, noised.known_labels)  # the fixture does flip labels


@pytest.mark.parametrize("name", SETTINGS)
def test_decoder_input_queries_are_the_reference_ones(fixture, name):
    train = fixture["settings"][name]["train"]
    model = _model(fixture, name)
    noised = _recorded_noise(fixture, name)
    pad = noised.pad_size
    with torch.no_grad():
        content, anchors = denoising_queries(noised, model.label_enc, 2)
        matching = matching_content(model.label_enc, model.num_classes)
    assert torch.equal(content, train["input_query_label"][:, :pad])
    assert torch.equal(anchors, train["input_query_bbox"][:, :pad])
    assert torch.equal(matching.expand_as(train["input_query_label"][:, pad:]), train["input_query_label"][:, pad:])
    queries = model.num_queries * max(model.transformer.num_patterns, 1)
    assert torch.equal(attention_mask(queries, noised.groups, [noised.single_pad]), train["attn_mask"])


# -- the model and loss given the reference's noise ---------------------------------------------


@pytest.fixture(scope="module", params=SETTINGS)
def trained(request, fixture):
    name = request.param
    model = _model(fixture, name).train()
    noised = _recorded_noise(fixture, name)
    outputs = model(_images(fixture), noised=noised)
    criterion = _criterion(fixture, fixture["settings"][name]["setting"]["dec_layers"])
    losses = criterion(outputs, _targets(fixture))
    total = sum(losses[k] * w for k, w in criterion.weight_dict.items() if k in losses)
    total.backward()
    return name, model, outputs, criterion, losses, total


def test_state_dict_keys_are_the_reference_ones_in_order(fixture, trained):
    name, model = trained[0], trained[1]
    assert list(model.state_dict().keys()) == fixture["settings"][name]["state_dict_keys"]


def test_outputs_are_the_reference_ones(fixture, trained):
    name, _, outputs, *_ = trained
    train = fixture["settings"][name]["train"]
    ref, pad = train["outputs"], train["pad_size"]
    for key in ("pred_logits", "pred_boxes"):
        _close(outputs[key], ref[key], key)
        _close(outputs["dn"][key], train["dn_logits" if key == "pred_logits" else "dn_boxes"][-1], f"dn {key}")
        for i, (a, r) in enumerate(zip(outputs["aux_outputs"], ref["aux_outputs"], strict=True)):
            _close(a[key], r[key], f"aux {i} {key}")
        for i, a in enumerate(outputs["dn"]["aux_outputs"]):
            _close(a[key], train["dn_logits" if key == "pred_logits" else "dn_boxes"][i], f"dn aux {i} {key}")
    _close(outputs["anchors"], ref["anchors"][:, :, pad:], "anchors")


def test_loss_terms_are_the_reference_ones(fixture, trained):
    name, _, _, criterion, losses, total = trained
    train = fixture["settings"][name]["train"]
    # the reference also logs the unweighted loss_xy / loss_hw, which the project does not
    ref = {k: v for k, v in train["losses"].items() if not k.startswith(("loss_xy", "loss_hw"))}
    dn_terms = {k for k in ref if k.startswith("tgt_")}
    assert dn_terms and set(ref) <= set(losses)
    for k in ref:
        got = float(losses[k].detach())
        assert math.isclose(got, ref[k], rel_tol=LOSS_RTOL, abs_tol=1e-5), (k, got, ref[k])
    assert {k: v for k, v in criterion.weight_dict.items()} == train["weight_dict"]
    assert math.isclose(float(total.detach()), train["total_loss"], rel_tol=LOSS_RTOL)


def test_gradients_after_the_backbone_are_the_reference_ones(fixture, trained):
    name, model = trained[0], trained[1]
    train = fixture["settings"][name]["train"]
    ref = dict(zip(train["gradient_names"], train["gradients"]))
    mine = gradient_summary(model)
    assert set(mine) == set(ref)
    floor = GRAD_FLOOR * max(float(r[1]) for r in ref.values())
    checked = 0
    for k, r in ref.items():
        if k.startswith("backbone."):
            continue
        scale = max(float(r[1]), floor)
        got = mine[k]
        assert abs(float(got[1]) - float(r[1])) <= GRAD_RTOL * scale, (k, float(got[1]), float(r[1]))
        assert abs(float(got[0]) - float(r[0])) <= GRAD_RTOL * scale * math.sqrt(max(float(r[2]), 1)) + 1e-6, k
        assert torch.allclose(got[3:], r[3:], atol=GRAD_RTOL * scale, rtol=0), k
        checked += 1
    assert "label_enc.weight" in mine and checked > 50


@pytest.mark.parametrize("name", SETTINGS)
def test_inference_has_no_denoising_part_and_is_the_reference(fixture, name):
    model = _model(fixture, name).eval()
    with torch.no_grad():
        out = model(_images(fixture), targets=_targets(fixture))
    assert "dn" not in out
    ref = fixture["settings"][name]["inference"]
    _close(out["pred_logits"], ref["pred_logits"], "pred_logits")
    _close(out["pred_boxes"], ref["pred_boxes"], "pred_boxes")


# -- off by default, the hook, the loss edges ---------------------------------------------------


def test_denoising_off_leaves_keys_and_outputs_unchanged(fixture):
    dab = torch.load(DAB_FIXTURE, weights_only=True)
    plain = _model(fixture, "anchors", dn_groups=0)
    assert plain.label_enc is None
    # the DAB-DETR reference's names, with dn_groups=0 as without the option
    cfg = dab["settings"]["anchors"]["setting"]
    ref_keys = _model(fixture, "anchors", dn_groups=0, enc_layers=cfg["enc_layers"],
                      dec_layers=cfg["dec_layers"]).state_dict().keys()
    assert list(ref_keys) == dab["settings"]["anchors"]["state_dict_keys"]
    dn_keys = list(_model(fixture, "anchors").state_dict().keys())
    assert [k for k in dn_keys if k != "label_enc.weight"] == list(plain.state_dict().keys())
    images, targets = _images(fixture), _targets(fixture)
    plain.train()
    with torch.no_grad():
        a = plain(images)
        b = plain(images, targets=targets)  # targets are ignored without denoising
    assert "dn" not in a and "dn" not in b
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])


def test_training_with_denoising_needs_the_targets(fixture):
    model = _model(fixture, "patterns").train()
    with pytest.raises(ValueError, match="targets=targets"):
        model(_images(fixture))


def test_a_batch_without_targets_has_no_denoising_part_and_zero_terms(fixture):
    model = _model(fixture, "patterns").train()
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)} for _ in range(2)]
    out = model(_images(fixture), targets=empty)
    assert "dn" not in out and out["pred_logits"].shape[1] == 20
    losses = denoising_losses(out, 0.25)
    assert set(losses) == {"tgt_loss_ce", "tgt_class_error", "tgt_loss_bbox", "tgt_loss_giou",
                           "tgt_loss_ce_0", "tgt_class_error_0", "tgt_loss_bbox_0", "tgt_loss_giou_0"}
    assert all(float(v) == 0 for v in losses.values())


def test_a_training_step_of_the_built_model_has_finite_denoising_terms():
    cfg = tiny_config("model.decoder=dab", "model.dn_groups=3")
    model, criterion, _ = build_model(cfg)
    assert "label_enc.weight" in model.state_dict()
    for k in ("tgt_loss_ce", "tgt_loss_bbox", "tgt_loss_giou", "tgt_loss_ce_0", "tgt_loss_bbox_0", "tgt_loss_giou_0"):
        assert criterion.weight_dict[k] == criterion.weight_dict[k[len("tgt_"):]]
    torch.manual_seed(0)
    images = [torch.randn(3, 64, 80), torch.randn(3, 48, 64)]
    targets = [{"labels": torch.tensor([1, 4]), "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.6, 0.4, 0.5]])},
               {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])}]
    model.train()
    outputs = model(images, targets=targets)
    assert outputs["dn"]["pred_logits"].shape == (2, 3 * 2, 5)
    assert outputs["pred_logits"].shape == (2, 10, 5)
    losses = criterion(outputs, targets)
    assert {k for k in criterion.weight_dict if k.startswith("tgt_")} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    total = sum(losses[k] * w for k, w in criterion.weight_dict.items() if k in losses)
    total.backward()
    assert model.label_enc.weight.grad is not None and torch.isfinite(model.label_enc.weight.grad).all()
    assert model.label_enc.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert "dn" not in out and out["pred_logits"].shape == (2, 10, 5)
    assert all(float(v) == 0 for k, v in criterion(out, targets).items() if k.startswith("tgt_"))


def test_denoising_is_off_by_default_and_builds_no_label_embedding():
    cfg = tiny_config("model.decoder=dab")
    assert cfg.model.dn_groups == 0
    model, criterion, _ = build_model(cfg)
    assert "label_enc.weight" not in model.state_dict()
    assert not isinstance(criterion, DenoisingFocalSetCriterion)
    assert not any(k.startswith("tgt_") for k in criterion.weight_dict)


@pytest.mark.parametrize("overrides, message", [
    (("model.decoder=conditional", "model.dn_groups=5"), "model.dn_groups=5 is an option of the DAB-DETR decoder"),
    (("model.dn_groups=2",), "model.dn_groups=2 is an option of the DAB-DETR decoder"),
    (("model.decoder=dab", "model.dn_groups=-1"), "model.dn_groups must be >= 0"),
    (("model.decoder=dab", "model.dn_label_noise=1.5"), "model.dn_label_noise must be in [0, 1]"),
    (("model.decoder=dab", "model.dn_box_noise=-0.1"), "model.dn_box_noise must be a finite number >= 0"),
])
def test_bad_denoising_options_are_refused_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        tiny_config(*overrides)
    text = str(err.value)
    assert message in text and "\n" not in text
