"""Conditional DETR against the reference code (Atten4Vis/ConditionalDETR): the same weights, given
by name (family_fixtures.named_tensor), give the same outputs, losses and gradients as the
reference did when tests/data/conditional_detr_fixture.pt was made
(tests/fixture_makers/conditional_detr.py); plus iRPE, relative-only encoding and the errors."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from family_fixtures import gradient_summary, named_state_dict

from detr_irpe.core.rpe_spec import RPESpec
from detr_irpe.models.backbone import Backbone, Joiner
from detr_irpe.models.conditional_detr import ConditionalDETR
from detr_irpe.models.detr import pad_images
from detr_irpe.models.focal_criterion import FocalSetCriterion
from detr_irpe.models.matcher import HungarianMatcher
from detr_irpe.models.position_encoding import PositionEmbeddingNone, PositionEmbeddingSine

FIXTURE = Path(__file__).parent / "data" / "conditional_detr_fixture.pt"
RTOL = 1e-5  # outputs and losses (observed: 0 at one thread, < 6e-6 at eight or with sdpa)
#: gradients: float32 leaves the decoder self-attention's query / key gradients of layers >= 1
#: ill-conditioned here (the queries' contents are alike, so those gradients are small differences
#: of large terms): the reference itself moves by 5e-5 of a norm, and 6e-6 of the norm in single
#: values, between one and eight threads. Norms get GRAD_RTOL, single values
#: GRAD_RTOL of themselves plus GRAD_ATOL of the gradient's norm, sums GRAD_RTOL of themselves
#: plus GRAD_ATOL of norm * sqrt(size), their largest possible magnitude.
GRAD_RTOL, GRAD_ATOL = 1e-4, 2e-5
IRPE = RPESpec.parse("rpe-2.0-product-ctx-1-k")

#: gradients that are zero in exact arithmetic, so that both codes hold rounding noise there:
#: a key bias shifts all of a query's scores alike (softmax ignores it), and layer 0's
#: self-attention attends over values that are all sa_v_proj.bias (the queries start at 0), so
#: its output does not depend on the attention weights
ZERO_BY_THEORY = re.compile(r"transformer\.decoder\.layers\.(\d+\.(sa|ca)_k(content|pos)_proj\.bias"
                            r"|0\.sa_(q|k)(content|pos)_proj\.(weight|bias)|0\.sa_v_proj\.weight)$")
NOISE = 1e-6  # far above that noise (< 1e-6 here), far below any other gradient norm (> 1e-4 here)


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture
def one_thread():
    """The reduction order the fixture was made with (one thread), whatever OMP_NUM_THREADS says."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(config: dict, *, position=None, **overrides) -> ConditionalDETR:
    """The project's model in the fixture's configuration (its default initialisation)."""
    joiner = Joiner(Backbone(config["backbone"], "none"), position or PositionEmbeddingSine(config["hidden_dim"] // 2))
    kwargs = dict(num_classes=config["num_classes"], num_queries=config["num_queries"],
                  hidden_dim=config["hidden_dim"], nheads=config["nheads"], enc_layers=config["enc_layers"],
                  dec_layers=config["dec_layers"], dim_feedforward=config["dim_feedforward"],
                  dropout=config["dropout"], aux_loss=config["aux_loss"])
    kwargs.update(overrides)
    return ConditionalDETR(joiner, **kwargs)


def with_reference_weights(model: ConditionalDETR, strict: bool = True) -> ConditionalDETR:
    """Every state-dict entry of ``model`` set by name, as the fixture maker set the reference's."""
    model.load_state_dict(named_state_dict({k: v.shape for k, v in model.state_dict().items()}), strict=strict)
    return model.train()


def criterion(config: dict, weight_dict: dict) -> FocalSetCriterion:
    matcher = HungarianMatcher(config["set_cost_class"], config["set_cost_bbox"], config["set_cost_giou"],
                               focal_alpha=config["focal_alpha"])
    return FocalSetCriterion(config["num_classes"], matcher, weight_dict, focal_alpha=config["focal_alpha"])


def assert_close(actual, expected, what: str):
    """Equal to RTOL of the expected tensor's largest magnitude."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * scale, msg=lambda m: f"{what}: {m}")


def test_fixture_records_the_reference(fixture):
    assert fixture["reference"]["repository"] == "Atten4Vis/ConditionalDETR"
    assert fixture["reference"]["commit"].startswith("8ea7c3f")
    assert FIXTURE.stat().st_size < 1_000_000


def test_state_dict_is_the_references(fixture):
    model = build(fixture["config"])
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == [tuple(e) for e in fixture["state_dict"]]
    with_reference_weights(model)  # strict
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(fixture["trainable"])
    keys = model.state_dict().keys()
    assert "transformer.decoder.layers.0.ca_qpos_proj.weight" in keys
    assert not any(k.startswith("transformer.decoder.layers.1.ca_qpos_proj") for k in keys)
    assert model.class_embed.out_features == fixture["config"]["num_classes"]  # no no-object logit


def test_initialisation_is_the_references(fixture):
    model = build(fixture["config"])
    torch.testing.assert_close(model.class_embed.bias, torch.full_like(model.class_embed.bias, -math.log(99)))
    last = model.bbox_embed.layers[-1]
    assert not last.weight.any() and not last.bias.any()
    bound = lambda w: math.sqrt(6 / (w.shape[0] + w.shape[1]))  # noqa: E731 (Xavier-uniform)
    for name, p in model.transformer.named_parameters():
        if p.dim() > 1:
            assert p.abs().max() <= bound(p) + 1e-7, name


@pytest.mark.parametrize("kernel", ["auto", "plain", "sdpa"])
def test_outputs_match_the_reference(fixture, kernel, one_thread):
    model = with_reference_weights(build(fixture["config"], attention_kernel=kernel))
    images, expected = fixture["images"], fixture["outputs"]
    batch, mask = pad_images(images)
    assert torch.equal(mask, fixture["mask"])  # padded the reference's way
    for out in (model(images), model(batch, mask)):
        assert_close(out["pred_logits"], expected["pred_logits"], "pred_logits")
        assert_close(out["pred_boxes"], expected["pred_boxes"], "pred_boxes")
        assert_close(out["reference_points"], expected["reference_points"], "reference_points")
        assert len(out["aux_outputs"]) == len(expected["aux_outputs"]) == fixture["config"]["dec_layers"] - 1
        for i, (a, e) in enumerate(zip(out["aux_outputs"], expected["aux_outputs"])):
            assert_close(a["pred_logits"], e["pred_logits"], f"aux {i} pred_logits")
            assert_close(a["pred_boxes"], e["pred_boxes"], f"aux {i} pred_boxes")


def test_losses_and_gradients_match_the_reference(fixture, one_thread):
    config, weight_dict = fixture["config"], fixture["weight_dict"]
    model = with_reference_weights(build(config))
    crit = criterion(config, weight_dict)
    matches = []
    solve = crit.matcher.forward

    def recording(outputs, targets):
        indices = solve(outputs, targets)
        matches.append([(i.tolist(), j.tolist()) for i, j in indices])
        return indices

    crit.matcher.forward = recording
    losses = crit(model(fixture["images"]), fixture["targets"])
    assert matches == [[tuple(m) for m in layer] for layer in fixture["matches"]]
    assert set(losses) == set(fixture["losses"])
    for name, expected in fixture["losses"].items():
        assert float(losses[name].detach()) == pytest.approx(expected, rel=RTOL, abs=1e-6), name
    total = sum(losses[k] * w for k, w in weight_dict.items())
    assert float(total.detach()) == pytest.approx(fixture["total_loss"], rel=RTOL)
    model.zero_grad()
    total.backward()

    grads = gradient_summary(model)
    assert list(grads) == fixture["gradient_names"]
    sizes = {k: p.numel() for k, p in model.named_parameters()}
    failures = []
    for name, ref in zip(fixture["gradient_names"], fixture["gradients"]):
        got = grads[name]
        r_sum, r_norm, n = ref[0].item(), ref[1].item(), int(ref[2])
        if ZERO_BY_THEORY.search(name):
            if max(r_norm, got[1].item()) > NOISE:
                failures.append(f"{name}: gradient norm {got[1].item():.3g} (reference {r_norm:.3g}) is not ~0")
            continue
        if r_norm <= NOISE:
            failures.append(f"{name}: the reference gradient is ~0 ({r_norm:.3g}) but not zero by theory")
            continue
        if abs(got[1].item() - r_norm) > GRAD_RTOL * r_norm:
            failures.append(f"{name}: norm {got[1].item():.8g} vs {r_norm:.8g}")
        # |sum| <= norm * sqrt(size): that bound scales the tolerance of sums that cancel to ~0
        if abs(got[0].item() - r_sum) > GRAD_RTOL * abs(r_sum) + GRAD_ATOL * r_norm * math.sqrt(sizes[name]):
            failures.append(f"{name}: sum {got[0].item():.8g} vs {r_sum:.8g}")
        first, r_first = got[3:3 + n], ref[3:3 + n]
        if ((first - r_first).abs() > GRAD_RTOL * r_first.abs() + GRAD_ATOL * r_norm).any():
            failures.append(f"{name}: first values {first.tolist()} vs {r_first.tolist()}")
    assert not failures, "\n".join(failures)
    # the theory's set is exactly the reference's near-zero gradients
    near_zero = {k for k, g in zip(fixture["gradient_names"], fixture["gradients"]) if g[1] <= NOISE}
    assert near_zero == {k for k in fixture["gradient_names"] if ZERO_BY_THEORY.search(k)}


def _train_step(model, fixture):
    out = model(fixture["images"])
    losses = criterion(fixture["config"], fixture["weight_dict"])(out, fixture["targets"])
    total = sum(losses[k] * w for k, w in fixture["weight_dict"].items() if k in losses)
    model.zero_grad()
    total.backward()
    return out, total


def test_irpe_adds_only_the_rpe_k_tables_and_trains(fixture):
    config = fixture["config"]
    model = build(config, rpe=IRPE)
    reference = {k for k, _ in fixture["state_dict"]}
    keys = set(model.state_dict())
    added = {f"transformer.encoder.layers.{i}.self_attn.rpe_k.lookup_table_weight" for i in range(config["enc_layers"])}
    assert keys - reference == added and reference <= keys
    # the reference's weights load into it, the iRPE tables left over
    missing, unexpected = model.load_state_dict(
        named_state_dict({k: s for k, s in fixture["state_dict"]}), strict=False)
    assert set(missing) == added and not unexpected
    out, total = _train_step(model.train(), fixture)
    assert torch.isfinite(total)
    for i in range(config["enc_layers"]):
        g = model.transformer.encoder.layers[i].self_attn.rpe_k.lookup_table_weight.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()


def test_relative_only_encoder_runs_and_drops_the_absolute_encoding(fixture):
    config = fixture["config"]
    both = with_reference_weights(build(config, rpe=IRPE))
    relative = with_reference_weights(build(config, rpe=IRPE, encoder_pos=False))
    out, total = _train_step(relative, fixture)
    assert torch.isfinite(total) and torch.isfinite(out["pred_logits"]).all()
    assert all(p.grad is not None for n, p in relative.named_parameters() if "rpe_k" in n)
    with torch.no_grad():
        assert not torch.allclose(both(fixture["images"])["pred_logits"], out["pred_logits"])


def test_attention_maps_and_feature_shape(fixture):
    config = fixture["config"]
    model = with_reference_weights(build(config, rpe=IRPE)).eval()
    with torch.no_grad():
        out = model(fixture["images"], need_weights=True)
    H, W = out["feature_shape"]
    assert (H, W) == (2, 3)
    assert len(out["encoder_attention"]) == config["enc_layers"]
    for w in out["encoder_attention"]:
        assert w.shape == (2, config["nheads"], H * W, H * W)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, config["nheads"], H * W))
    assert out["reference_points"].shape == (2, config["num_queries"], 2)


@pytest.mark.parametrize("hidden_dim, nheads", [(18, 2), (260, 8)])
def test_hidden_dim_that_cannot_split_is_refused(fixture, hidden_dim, nheads):
    with pytest.raises(ValueError, match=rf"hidden_dim divisible by 4 and by nheads, got hidden_dim {hidden_dim} "
                                         rf"and nheads {nheads}.*sine embedding"):
        build(fixture["config"], hidden_dim=hidden_dim, nheads=nheads)


def test_smaller_hidden_dim_keeps_the_design(fixture):
    """At hidden_dim 128 (the tiny configs) the reference-point sine embedding has 64 features per
    coordinate; the model trains."""
    joiner = Joiner(Backbone("cnn_tiny", "none", norm="bn"), PositionEmbeddingSine(64))
    model = ConditionalDETR(joiner, num_classes=7, num_queries=10, hidden_dim=128, nheads=8, enc_layers=1,
                            dec_layers=2, dim_feedforward=64, rpe=IRPE)
    seen = []
    model.transformer.decoder.layers[0].ca_qpos_sine_proj.register_forward_hook(
        lambda m, i, o: seen.append(i[0].shape))
    out, total = _train_step(model.train(), fixture)
    assert seen == [(2, 10, 128)] and out["pred_logits"].shape == (2, 10, 7)
    assert torch.isfinite(total) and all(p.grad is not None for p in model.transformer.parameters())


def test_no_absolute_encoding_is_refused(fixture):
    model = build(fixture["config"], position=PositionEmbeddingNone())
    with pytest.raises(ValueError, match="position encoding"):
        model(fixture["images"])
