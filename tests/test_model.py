"""The assembled model: reference parameter names, padding invariance, iRPE with zero tables is
plain DETR, reference initialisation, input forms."""

import argparse
import math

import pytest
import torch
import torchvision
from helpers import tiny_config

from detr_irpe.hub.checkpoint import load_checkpoint
from detr_irpe.hub.loader import load_model
from detr_irpe.config import load_config
from detr_irpe.models import build_model
from detr_irpe.core.rpe_spec import RPESpec
from detr_irpe.models.position_encoding import PositionEmbeddingSine
from detr_irpe.models.transformer import Transformer


def _reference_keys(spec: RPESpec | None, enc=6, dec=6, pre_norm=False, learned=False, heads=8, hd=32):
    """Expected state-dict keys and iRPE table shapes, written from the reference facts."""
    rn = torchvision.models.resnet50().state_dict()
    keys = {f"backbone.0.body.{k}" for k in rn if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    if learned:
        keys |= {"backbone.1.row_embed.weight", "backbone.1.col_embed.weight"}
    keys |= {"input_proj.weight", "input_proj.bias", "query_embed.weight", "class_embed.weight", "class_embed.bias"}
    keys |= {f"bbox_embed.layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    mha = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    lin = [f"{n}.{p}" for n in ("linear1", "linear2") for p in ("weight", "bias")]
    shapes = {}
    for n in range(enc):
        pre = f"transformer.encoder.layers.{n}"
        keys |= {f"{pre}.self_attn.{m}" for m in mha} | {f"{pre}.{x}" for x in lin}
        keys |= {f"{pre}.norm{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}
        if spec:
            hp = 1 if spec.shared_head else heads
            suffix = "lookup_table_bias" if spec.mode == "bias" else "lookup_table_weight"
            for side in spec.rpe_on:
                K = spec.num_buckets
                shape = (hp, K) if spec.mode == "bias" else ((hp, K, hd) if side == "v" else (hp, hd, K))
                parts = ["rp_rows.", "rp_cols."] if spec.method == "cross" else [""]
                for part in parts:
                    key = f"{pre}.self_attn.rpe_{side}.{part}{suffix}"
                    keys.add(key)
                    shapes[key] = shape
    for n in range(dec):
        pre = f"transformer.decoder.layers.{n}"
        keys |= {f"{pre}.{a}.{m}" for a in ("self_attn", "multihead_attn") for m in mha} | {f"{pre}.{x}" for x in lin}
        keys |= {f"{pre}.norm{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    keys |= {"transformer.decoder.norm.weight", "transformer.decoder.norm.bias"}
    if pre_norm:
        keys |= {"transformer.encoder.norm.weight", "transformer.encoder.norm.bias"}
    return keys, shapes


R50 = ["model.backbone.weights=none"]


@pytest.mark.parametrize("irpe,extra", [
    ("", []),
    ("rpe-2.0-product-ctx-1-k", []),
    ("rpe-1.9-cross-bias-0-qk", ["model.pre_norm=true"]),
    ("rpe-2.5-euc-ctx-0-qkv", ["model.position_embedding=learned"]),
], ids=["detr", "irpe-product", "irpe-cross-prenorm", "irpe-euc-learned"])
def test_state_dict_keys_and_shapes_are_the_reference_ones(irpe, extra):
    cfg = load_config(None, R50 + [f"model.irpe={irpe}"] + extra)
    model, _, _ = build_model(cfg)
    state = model.state_dict()
    spec = RPESpec.parse(irpe)
    keys, shapes = _reference_keys(spec, pre_norm=cfg.model.pre_norm, learned=cfg.model.position_embedding == "learned")
    assert set(state) == keys
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert tuple(state["class_embed.weight"].shape) == (92, 256)
    assert tuple(state["input_proj.weight"].shape) == (256, 2048, 1, 1)
    assert tuple(state["query_embed.weight"].shape) == (100, 256)
    if cfg.model.position_embedding == "learned":
        assert tuple(state["backbone.1.row_embed.weight"].shape) == (50, 128)


def test_a_reference_checkpoint_loads_strictly_with_its_args(tmp_path):
    cfg = load_config(None, R50 + ["model.irpe=rpe-2.0-product-ctx-1-k"])
    model, _, _ = build_model(cfg)
    args = argparse.Namespace(hidden_dim=256, nheads=8, enc_layers=6, dec_layers=6, dim_feedforward=2048,
                              dropout=0.1, num_queries=100, pre_norm=False, position_embedding="sine",
                              backbone="resnet50", dilation=False, aux_loss=True, set_cost_class=1,
                              set_cost_bbox=5, set_cost_giou=2, bbox_loss_coef=5, giou_loss_coef=2,
                              eos_coef=0.1, enc_rpe2d="rpe-2.0-product-ctx-1-k", lr=1e-4, masks=False)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "optimizer": {}, "lr_scheduler": {}, "epoch": 149, "args": args}, path)
    result = load_model(path)
    loaded, lcfg = result.model, result.cfg
    assert str(lcfg.model.irpe) == "rpe-2.0-product-ctx-1-k" and lcfg.model.num_classes == 91
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert load_checkpoint(path)["epoch"] == 149


def _transformer(spec):
    torch.manual_seed(0)
    t = Transformer(32, 4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64, dropout=0.0,
                    pre_norm=False, rpe=spec).double().eval()
    for m in t.modules():
        for name, p in m.named_parameters(recurse=False):
            if "lookup_table" in name:
                torch.nn.init.normal_(p, std=0.5)
    return t


@pytest.mark.parametrize("irpe", ["", "rpe-2.0-product-ctx-0-qkv", "rpe-1.9-cross-bias-1-qk", "rpe-2.0-euc-ctx-1-k"])
def test_transformer_is_padding_invariant(irpe):
    spec = RPESpec.parse(irpe)
    t = _transformer(spec)
    pe = PositionEmbeddingSine(16)
    g = torch.Generator().manual_seed(3)
    h, w = 4, 5
    feat = torch.randn(1, 32, h, w, dtype=torch.float64, generator=g)
    query = torch.randn(10, 32, dtype=torch.float64, generator=g)
    alone_mask = torch.zeros(1, h, w, dtype=torch.bool)
    batch = torch.randn(2, 32, h + 2, w + 3, dtype=torch.float64, generator=g)
    batch[0, :, :h, :w] = feat[0]
    mask = torch.zeros(2, h + 2, w + 3, dtype=torch.bool)
    mask[0, h:, :] = True
    mask[0, :, w:] = True
    with torch.no_grad():
        hs1, mem1, _ = t(feat, alone_mask, query, pe(alone_mask).double())
        hs2, mem2, _ = t(batch, mask, query, pe(mask).double())
    assert (mem1[0] - mem2[0, :, :h, :w]).abs().max() < 1e-10
    assert (hs1[:, 0] - hs2[:, 0]).abs().max() < 1e-10


@pytest.mark.parametrize("irpe", ["rpe-2.0-product-ctx-1-k", "rpe-1.9-quant-ctx-0-qkv", "rpe-2.0-cross-bias-0-qk"])
def test_irpe_with_zero_tables_computes_exactly_plain_detr(irpe):
    torch.manual_seed(0)
    rel, _, _ = build_model(tiny_config(f"model.irpe={irpe}"))
    plain, _, _ = build_model(tiny_config())
    rel, plain = rel.double().eval(), plain.double().eval()
    state = {k: v for k, v in rel.state_dict().items() if "rpe_" not in k}
    plain.load_state_dict(state, strict=True)
    with torch.no_grad():
        for name, p in rel.named_parameters():
            if "lookup_table" in name:
                p.zero_()
        images = [torch.rand(3, 96, 128, dtype=torch.float64), torch.rand(3, 128, 96, dtype=torch.float64)]
        for kernel in ("plain", "fused") + (("sdpa",) if "v" not in RPESpec.parse(irpe).rpe_on else ()):
            for m in (rel, plain):
                for mod in m.modules():
                    if hasattr(mod, "kernel"):
                        mod.kernel = kernel
            a, b = rel(images), plain(images)
            assert (a["pred_logits"] - b["pred_logits"]).abs().max() < 1e-12, kernel
            assert (a["pred_boxes"] - b["pred_boxes"]).abs().max() < 1e-12, kernel


def test_tables_start_xavier_uniform_as_the_reference():
    model, _, _ = build_model(load_config(None, R50 + ["model.irpe=rpe-2.0-product-ctx-1-kv"]))
    k = model.transformer.encoder.layers[0].self_attn.rpe_k.lookup_table_weight  # (1, 32, 81)
    v = model.transformer.encoder.layers[0].self_attn.rpe_v.lookup_table_weight  # (1, 81, 32)
    for t in (k, v):
        fan_in, fan_out = t.shape[1] * t.shape[2], t.shape[0] * t.shape[2]
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert t.abs().max() <= bound
        assert abs(t.std().item() - bound / math.sqrt(3)) < 0.1 * bound
    assert not torch.equal(model.transformer.encoder.layers[0].self_attn.rpe_k.lookup_table_weight,
                           model.transformer.encoder.layers[1].self_attn.rpe_k.lookup_table_weight)


def test_list_input_equals_padded_batch_with_mask():
    torch.manual_seed(0)
    model, _, _ = build_model(tiny_config("model.irpe=rpe-2.0-product-ctx-1-k"))
    model.eval()
    imgs = [torch.rand(3, 64, 96), torch.rand(3, 96, 64)]
    batch = torch.zeros(2, 3, 96, 96)
    mask = torch.ones(2, 96, 96, dtype=torch.bool)
    for i, im in enumerate(imgs):
        batch[i, :, : im.shape[1], : im.shape[2]] = im
        mask[i, : im.shape[1], : im.shape[2]] = False
    with torch.no_grad():
        a, b = model(imgs), model(batch, mask)
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])
    assert a["pred_logits"].shape == (2, 10, 6) and a["pred_boxes"].shape == (2, 10, 4)
    assert len(a["aux_outputs"]) == 1
    assert ((a["pred_boxes"] >= 0) & (a["pred_boxes"] <= 1)).all()


def test_relative_only_keeps_the_absolute_encoding_out_of_the_encoder():
    torch.manual_seed(0)
    model, _, _ = build_model(tiny_config("model.irpe=rpe-2.0-product-ctx-1-k", "model.encoder_abs_pos=false"))
    model.eval()
    seen = []
    layer = model.transformer.encoder.layers[0]
    orig = layer.self_attn.forward
    layer.self_attn.forward = lambda q, k, v, **kw: (seen.append(torch.equal(q, v)), orig(q, k, v, **kw))[1]
    with torch.no_grad():
        model([torch.rand(3, 64, 64)])
    assert seen == [True]  # queries are the plain features: no position added


@pytest.mark.parametrize("irpe", ["", "rpe-2.0-product-ctx-1-k", "rpe-2.0-product-bias-1-k", "rpe-2.0-cross-ctx-0-qkv",
                                  "rpe-1.9-euc-ctx-1-qkv", "rpe-3.0-quant-bias-0-q"])
def test_every_variant_trains_one_step(irpe):
    torch.manual_seed(0)
    model, criterion, post = build_model(tiny_config(f"model.irpe={irpe}"))
    model.train()
    imgs = [torch.rand(3, 64, 96), torch.rand(3, 80, 64)]
    targets = [{"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.2, 0.3, 0.1, 0.1]])},
               {"labels": torch.tensor([4]), "boxes": torch.tensor([[0.6, 0.4, 0.3, 0.3]])}]
    out = model(imgs)
    losses = criterion(out, targets)
    loss = sum(losses[k] * w for k, w in criterion.weight_dict.items())
    loss.backward()
    assert torch.isfinite(loss)
    tables = [p for n, p in model.named_parameters() if "lookup_table" in n]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tables)
    dets = post["bbox"](out, torch.tensor([[64, 96], [80, 64]]))
    assert dets[0]["boxes"].shape == (10, 4) and dets[1]["boxes"][:, 2].max() <= 64 + 1e-4
