"""Group DETR (model.num_groups): K groups of queries in training, each group's self-attention kept
to itself, a one-to-one matched set loss per group; inference runs group 0 only, the
single-group model. Off (1) by default, where nothing changes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from detr_irpe.config import ConfigError
from detr_irpe.models import build_model
from detr_irpe.models.decoder_parts import ProjectedAttention, fold_groups, group_attn_mask, unfold_groups
from detr_irpe.models.group_criterion import GroupCriterion

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import tiny_config  # noqa: E402

DECODERS = {
    "detr": [],
    "detr-prenorm": ["model.pre_norm=true"],
    "conditional": ["model.decoder=conditional"],
    "dab": ["model.decoder=dab", "model.activation=prelu"],
    "dab-patterns": ["model.decoder=dab", "model.num_patterns=2"],
}
GROUP_PARAM = {"detr": "group_query_embed.weight", "detr-prenorm": "group_query_embed.weight",
               "conditional": "group_query_embed.weight",
               "dab": "group_refpoint_embed.weight", "dab-patterns": "group_refpoint_embed.weight"}
Q = 10  # the tiny config's num_queries


def _build(decoder: str, *overrides, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(tiny_config(*DECODERS[decoder], "model.dropout=0.0", *overrides))


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 64, 72, generator=g), torch.rand(3, 56, 64, generator=g)]
    targets = [{"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]])},
               {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]
    return images, targets


def _group_size(decoder: str) -> int:
    return Q * (2 if decoder == "dab-patterns" else 1)


def _assert_outputs_equal(a: dict, b: dict, atol: float = 0.0):
    assert a.keys() == b.keys()
    for key in a:
        if key == "aux_outputs":
            for x, y in zip(a[key], b[key]):
                _assert_outputs_equal(x, y, atol)
        elif torch.is_tensor(a[key]):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol)


# ------------------------------------------------------------------------------------------------
# the config


def test_default_is_one_group_and_bad_values_are_refused_in_one_line():
    assert tiny_config().model.num_groups == 1
    for bad in ("0", "-2"):
        with pytest.raises(ConfigError) as err:
            tiny_config(f"model.num_groups={bad}")
        assert "model.num_groups" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------
# K = 1: nothing changes


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_one_group_is_the_model_without_the_option(decoder):
    images, targets = _batch()
    plain, plain_crit, _ = _build(decoder)
    one, one_crit, _ = _build(decoder, "model.num_groups=1")
    assert list(one.state_dict()) == list(plain.state_dict())
    assert not any("group_" in k for k in one.state_dict())
    assert type(one_crit) is type(plain_crit) and one_crit.weight_dict == plain_crit.weight_dict
    for a, b in zip(one.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
    one.train(), plain.train()
    _assert_outputs_equal(one(images), plain(images))


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_a_released_style_state_dict_loads_strictly_into_a_one_group_model(decoder):
    released = _build(decoder, seed=3)[0].state_dict()
    model = _build(decoder, "model.num_groups=1")[0]
    model.load_state_dict(released, strict=True)
    # and a K > 1 model differs from it by the extra groups' parameter only
    grouped = _build(decoder, "model.num_groups=3")[0]
    missing, unexpected = grouped.load_state_dict(released, strict=False)
    assert missing == [GROUP_PARAM[decoder]] and unexpected == []


# ------------------------------------------------------------------------------------------------
# K = 3


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_training_outputs_hold_every_group(decoder):
    model = _build(decoder, "model.num_groups=3")[0].train()
    images, _ = _batch()
    n = _group_size(decoder)
    assert model.state_dict()[GROUP_PARAM[decoder]].shape[0] == 2 * Q
    out = model(images)
    assert out["pred_logits"].shape[1] == 3 * n and out["pred_boxes"].shape[1] == 3 * n
    assert all(a["pred_logits"].shape[1] == 3 * n for a in out["aux_outputs"])
    if decoder.startswith("dab"):
        assert out["anchors"].shape[2] == 3 * n
    if decoder == "conditional":
        assert out["reference_points"].shape[1] == 3 * n


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_groups_do_not_see_each_other(decoder):
    """Changing group 2's queries changes group 2's outputs and leaves groups 0 and 1's exactly."""
    model = _build(decoder, "model.num_groups=3")[0].train()
    images, _ = _batch()
    n = _group_size(decoder)
    before = model(images)
    extra = model.group_refpoint_embed if decoder.startswith("dab") else model.group_query_embed
    with torch.no_grad():
        extra.weight[Q:] += torch.randn_like(extra.weight[Q:])
    after = model(images)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(after[key][:, : 2 * n], before[key][:, : 2 * n], rtol=0, atol=0)
        assert not torch.allclose(after[key][:, 2 * n:], before[key][:, 2 * n:])
    for a, b in zip(after["aux_outputs"], before["aux_outputs"]):
        torch.testing.assert_close(a["pred_logits"][:, : 2 * n], b["pred_logits"][:, : 2 * n], rtol=0, atol=0)


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_each_training_group_is_the_single_group_model_on_its_queries(decoder):
    """Group g's training outputs equal those of a single-group model whose queries are group g's."""
    grouped = _build(decoder, "model.num_groups=3")[0].train()
    single = _build(decoder)[0].train()
    images, _ = _batch()
    n = _group_size(decoder)
    out = grouped(images)
    state = grouped.state_dict()
    name = GROUP_PARAM[decoder].replace("group_", "")
    for g in range(3):
        weights = {k: v for k, v in state.items() if k != GROUP_PARAM[decoder]}
        if g:
            weights[name] = state[GROUP_PARAM[decoder]][(g - 1) * Q: g * Q]
        single.load_state_dict(weights, strict=True)
        ref = single(images)
        for key in ("pred_logits", "pred_boxes"):
            torch.testing.assert_close(out[key][:, g * n: (g + 1) * n], ref[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_eval_mode_is_the_single_group_model(decoder):
    grouped = _build(decoder, "model.num_groups=3", seed=5)[0].eval()
    single = _build(decoder, seed=6)[0].eval()
    state = {k: v for k, v in grouped.state_dict().items() if k != GROUP_PARAM[decoder]}
    single.load_state_dict(state, strict=True)
    images, _ = _batch()
    with torch.no_grad():
        _assert_outputs_equal(grouped(images), single(images))
    assert grouped(images)["pred_logits"].shape[1] == _group_size(decoder)


# ------------------------------------------------------------------------------------------------
# the loss


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_loss_has_a_matched_term_per_group_and_trains(decoder):
    model, crit, _ = _build(decoder, "model.num_groups=3")
    _, single_crit, _ = _build(decoder)
    assert isinstance(crit, GroupCriterion)
    model.train()
    images, targets = _batch()
    out = model(images)
    losses = crit(out, targets)
    for g, suffix in enumerate(("", "_g1", "_g2")):
        for name, w in single_crit.weight_dict.items():
            assert f"{name}{suffix}" in losses
            assert crit.weight_dict[f"{name}{suffix}"] == pytest.approx(w / 3)
        assert f"class_error{suffix}" in losses and f"cardinality_error{suffix}" in losses
    assert set(crit.weight_dict) <= set(losses)
    # group 0's terms are those of the decoder's criterion on group 0's outputs, names unchanged
    n = _group_size(decoder)
    group0 = {k: (v[:, :n] if k != "anchors" else v[:, :, :n]) for k, v in out.items() if k != "aux_outputs"}
    group0["aux_outputs"] = [{k: v[:, :n] for k, v in a.items()} for a in out["aux_outputs"]]
    for name, value in single_crit(group0, targets).items():
        torch.testing.assert_close(losses[name], value)
    # the weighted loss: the mean of the groups' losses
    loss = sum(losses[k] * w for k, w in crit.weight_dict.items())
    per_group = [sum(losses[f"{k}{s}"] * w for k, w in single_crit.weight_dict.items()) for s in ("", "_g1", "_g2")]
    torch.testing.assert_close(loss, sum(per_group) / 3)
    loss.backward()
    extra = model.group_refpoint_embed if decoder.startswith("dab") else model.group_query_embed
    assert extra.weight.grad is not None and torch.isfinite(extra.weight.grad).all()
    assert extra.weight.grad[Q:].abs().sum() > 0  # group 2's queries get their own gradient
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


def test_group_loss_refuses_single_group_outputs():
    model, crit, _ = _build("conditional", "model.num_groups=3")
    images, targets = _batch()
    with torch.no_grad():
        out = model.eval()(images)
    with pytest.raises(ValueError, match="3 query groups"):
        crit(out, targets)


def test_dab_groups_and_denoising_are_not_combined():
    with pytest.raises(ConfigError, match="num_groups"):
        tiny_config(*DECODERS["dab"], "model.num_groups=2", "model.dn_groups=2")


# ------------------------------------------------------------------------------------------------
# the attention


def test_folded_groups_are_the_block_diagonal_mask():
    torch.manual_seed(0)
    attn = ProjectedAttention(16, 8, 2)
    q, k, v = torch.randn(2, 12, 16), torch.randn(2, 12, 16), torch.randn(2, 12, 8)
    masked = attn(q, k, v, attn_mask=group_attn_mask(3, 4))
    folded = unfold_groups(attn(fold_groups(q, 3), fold_groups(k, 3), fold_groups(v, 3)), 3)
    torch.testing.assert_close(masked, folded, rtol=1e-6, atol=1e-6)
    # a float mask is added to the logits: -inf where the boolean mask blocks is the same
    additive = torch.zeros(12, 12).masked_fill(group_attn_mask(3, 4), float("-inf"))
    torch.testing.assert_close(attn(q, k, v, attn_mask=additive), masked)
    # and no mask is the attention over all queries
    assert not torch.allclose(attn(q, k, v), masked)


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_the_extra_groups_are_drawn_after_every_other_parameter(decoder):
    """With the same seed, a K = 3 model's other parameters are those of the K = 1 model."""
    xy = ["model.random_refpoints_xy=true"] if decoder.startswith("dab") else []
    single = _build(decoder, *xy, seed=7)[0].state_dict()
    grouped = _build(decoder, *xy, "model.num_groups=3", seed=7)[0].state_dict()
    assert list(grouped) == list(single) + [GROUP_PARAM[decoder]]
    assert all(torch.equal(grouped[k], v) for k, v in single.items())
    if xy:  # the extra anchors start as refpoint_embed does: centres logit(U(0, 1))
        centres = grouped[GROUP_PARAM[decoder]][:, :2].sigmoid()
        assert centres.min() >= 0 and centres.max() <= 1 and centres.std() > 0.2
