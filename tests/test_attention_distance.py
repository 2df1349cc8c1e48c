"""Attention distance: the vectorised sums equal per-pair loops, uniform attention meets its own
baseline, self-attention to the own cell has distance 0, padding queries do not count, and the
hooks record every encoder layer without changing the model's output."""

import math

import numpy as np
import pytest
import torch
from helpers import tiny_config

from detr_irpe.analysis.attention_distance import (AttentionError, DistanceAccumulator, EncoderAttentionRecorder,
                                                   distance_figure, measure, offset_figure)
from detr_irpe.models import build_model


def _loops(weights: np.ndarray, h: int, w: int) -> float:
    total = 0.0
    for q in range(h * w):
        for k in range(h * w):
            total += weights[q, k] * math.hypot(k // w - q // w, k % w - q % w)
    return total / (h * w)


def _result(weights, shape, padding=None, max_offset=6):
    acc = DistanceAccumulator(1, weights.shape[1], max_offset)
    acc.add(0, weights, padding, shape)
    return acc.result()


def test_distance_equals_the_per_pair_loops():
    h, w = 3, 4
    weights = torch.rand(2, 3, h * w, h * w).softmax(-1)
    d = _result(weights, (h, w))
    for head in range(3):
        expected = np.mean([_loops(weights[b, head].numpy(), h, w) for b in range(2)])
        assert d.distance[0, head] == pytest.approx(expected)
    assert d.images == 2 and d.queries == 2 * h * w
    # the offset masses of a query sum to 1 (every offset of a 3 x 4 map is within 6 cells)
    assert d.offset_mass[0].sum(axis=(1, 2)) == pytest.approx(np.ones(3))


def test_uniform_attention_meets_its_baseline_and_self_attention_has_distance_zero():
    h, w = 4, 5
    uniform = torch.full((1, 2, h * w, h * w), 1 / (h * w))
    d = _result(uniform, (h, w))
    assert d.distance[0] == pytest.approx(np.full(2, d.uniform[0]))
    assert np.allclose(d.offset_mass[0, 0], d.uniform_offset_mass)
    own = _result(torch.eye(h * w).expand(1, 2, -1, -1), (h, w))
    assert own.distance[0] == pytest.approx(np.zeros(2))
    assert own.offset_mass[0, :, 6, 6] == pytest.approx(np.ones(2))


def test_padding_queries_do_not_count():
    h, w = 2, 3
    weights = torch.rand(1, 1, h * w, h * w)
    padding = torch.tensor([[False, False, True, False, False, True]])  # last column is padding
    weights = weights.masked_fill(padding[:, None, None, :], 0)
    weights = weights / weights.sum(-1, keepdim=True)
    d = _result(weights, (h, w), padding)
    valid = [0, 1, 3, 4]
    dists = [sum(weights[0, 0, q, k].item() * math.hypot(k // w - q // w, k % w - q % w) for k in range(6))
             for q in valid]
    assert d.queries == 4 and d.distance[0, 0] == pytest.approx(np.mean(dists))
    # uniform over the 2 x 2 image: each query sees 1, 1 and sqrt 2 away besides itself
    assert d.uniform[0] == pytest.approx((2 + math.sqrt(2)) / 4)


def test_hooks_record_every_layer_and_leave_the_output_alone():
    torch.manual_seed(0)
    model, _, _ = build_model(tiny_config("model.irpe=rpe-2.0-product-ctx-1-k"))
    model.eval()
    images, mask = torch.rand(2, 3, 64, 96), torch.zeros(2, 64, 96, dtype=torch.bool)
    mask[1, :, 64:] = True
    with torch.no_grad():
        plain = model(images, mask)["pred_boxes"]
        with EncoderAttentionRecorder(model) as rec:
            hooked = model(images, mask)["pred_boxes"]
    assert torch.allclose(plain, hooked, atol=1e-6)
    assert len(rec.records) == 2 and all(len(r) == 1 for r in rec.records)
    weights, padding, shape = rec.records[0][0]
    assert weights.shape == (2, 4, shape[0] * shape[1], shape[0] * shape[1]) and padding.shape == (2, shape[0] * shape[1])
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, shape[0] * shape[1]), atol=1e-5)
    assert not model.transformer.encoder.layers[0].self_attn._forward_hooks  # removed on exit


def test_measure_stops_at_the_image_count_and_draws():
    torch.manual_seed(0)
    model, _, _ = build_model(tiny_config())
    loader = [(torch.rand(3, 3, 64, 64), torch.zeros(3, 64, 64, dtype=torch.bool), None)] * 3
    d = measure(model, loader, torch.device("cpu"), max_images=5)
    assert d.images == 5 and d.distance.shape == (2, 4) and np.all(d.distance > 0)
    for fig in (distance_figure([("a", d), ("b", d)]), offset_figure([("a", d), ("b", d)])):
        fig.canvas.draw()
        assert len(np.unique(np.asarray(fig.canvas.buffer_rgba())[..., 0])) > 10
    with pytest.raises(AttentionError, match="no encoder layers"):
        measure(build_model(tiny_config("model.enc_layers=0"))[0], loader, torch.device("cpu"), 1)
