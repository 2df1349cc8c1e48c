"""The real attention equals a naive per-pair implementation of the reference facts, for every
iRPE method x mode x rpe_on, shared and per-head tables, with and without padding, through every
kernel, forward and gradients (float64, 1e-10), on the CPU and (skipped without one) on CUDA. The
flex kernel has its own tests (test_attention_flex.py): its CUDA kernels need a head dimension of
16 or more."""

import itertools

import pytest
import torch
from naive_irpe import naive_attention, outputs_and_grads

from detr_irpe.models.attention import MultiheadAttention
from detr_irpe.core.rpe_spec import RPESpec

H, W, E, HEADS, B = 3, 4, 8, 2, 2
L = H * W
TOL = 1e-10
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

SPECS = [None] + [
    RPESpec(ratio=ratio, method=method, mode=mode, shared_head=shared, rpe_on=on)
    for (method, ratio), mode, shared, on in itertools.product(
        [("euc", 1.9), ("quant", 2.0), ("cross", 2.0), ("product", 1.9)], ["bias", "ctx"], [True, False],
        ["q", "k", "v", "qk", "qv", "kv", "qkv"])
    if not (mode == "bias" and "v" in on)
]


def _module(spec, seed=0):
    torch.manual_seed(seed)
    attn = MultiheadAttention(E, HEADS, dropout=0.0, rpe=spec).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return attn


def _inputs(padded):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, L, E, dtype=torch.float64, generator=g)
    pos = torch.randn(B, L, E, dtype=torch.float64, generator=g)
    mask = None
    if padded:  # bottom-right padding of the second image: last row and last column
        mask = torch.zeros(B, H, W, dtype=torch.bool)
        mask[1, -1, :] = True
        mask[1, :, -1] = True
        mask = mask.flatten(1)
    return x, pos, mask


def _kernels(spec):
    return ["plain", "fused"] + ([] if spec is not None and "v" in spec.rpe_on else ["sdpa"])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "pad"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: str(s) if s else "no-irpe")
def test_attention_matches_naive_reference(spec, padded, device):
    attn = _module(spec)
    x, pos, mask = _inputs(padded)
    weight = torch.randn(B, L, E, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    padding = mask.view(B, L) if mask is not None else None
    naive = lambda xi, pi: naive_attention(attn, xi + pi, xi, padding, W)  # noqa: E731
    ref_out, ref_grads = outputs_and_grads(naive, attn, x, pos, weight)
    if device != "cpu":
        attn, x, pos, weight = attn.to(device), x.to(device), pos.to(device), weight.to(device)
        mask = None if mask is None else mask.to(device)
        ref_out, ref_grads = ref_out.to(device), {n: g.to(device) for n, g in ref_grads.items()}
    for kernel in _kernels(spec):
        attn.kernel = kernel

        def real(xi, pi):
            qk = xi + pi
            return attn(qk, qk, xi, key_padding_mask=mask, shape=(H, W))[0]

        out, grads = outputs_and_grads(real, attn, x, pos, weight)
        assert (out - ref_out).abs().max() < TOL, kernel
        for name, g in ref_grads.items():
            assert grads[name] is not None, (kernel, name)
            assert (grads[name] - g).abs().max() < TOL, (kernel, name)


def test_every_method_mode_side_combination_is_covered():
    combos = {(s.method, s.mode, s.shared_head, s.rpe_on) for s in SPECS if s is not None}
    assert len(combos) == 4 * 2 * (3 + 7)


@pytest.mark.parametrize("spec", [None, RPESpec.parse("rpe-2.0-product-ctx-0-qkv"), RPESpec.parse("rpe-1.9-cross-bias-1-qk")],
                         ids=str)
def test_fused_kernel_with_dropout_has_exact_gradients(spec):
    """gradcheck (float64) of the fused kernel in training mode: the dropout mask is drawn from a
    re-seeded generator so that every evaluation uses the same mask."""
    attn = _module(spec)
    attn.dropout = 0.3
    attn.kernel = "fused"
    attn.train()
    x, pos, mask = _inputs(True)
    params = list(attn.parameters())

    def f(xi):
        torch.manual_seed(123)
        qk = xi + pos
        return attn(qk, qk, xi, key_padding_mask=mask, shape=(H, W))[0]

    xi = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (xi,), eps=1e-6, atol=1e-7)
    # every parameter: the analytic gradient of one entry against a central difference
    for p in params:
        attn.zero_grad()
        f(x).sum().backward()
        analytic = p.grad.clone()
        idx = tuple(torch.randint(0, n, ()).item() for n in p.shape)
        with torch.no_grad():
            old = p[idx].item()
            p[idx] = old + 1e-6
            up = f(x).sum().item()
            p[idx] = old - 1e-6
            down = f(x).sum().item()
            p[idx] = old
        assert abs((up - down) / 2e-6 - analytic[idx].item()) < 1e-6


def test_dropout_is_unbiased_and_has_the_requested_rate():
    torch.manual_seed(0)
    attn = MultiheadAttention(16, 2, dropout=0.25, kernel="fused").train()
    x = torch.randn(1, 64, 16)
    with torch.no_grad():
        ref = attn.eval()(x, x, x)[0]
        attn.train()
        mean = torch.stack([attn(x, x, x)[0] for _ in range(400)]).mean(0)
    assert (mean - ref).abs().max() < 0.05 * ref.abs().max() + 0.02
    from detr_irpe.models.attention_kernel import dropout_mask
    rate = dropout_mask((1000, 1000), 0.25, "cpu").float().mean().item()
    assert abs(rate - 0.25) < 0.002


def test_attention_weights_are_returned_per_head_and_sum_to_one():
    attn = _module(RPESpec.parse("rpe-2.0-product-ctx-1-k"))
    x, pos, mask = _inputs(True)
    _, w = attn(x + pos, x + pos, x, key_padding_mask=mask, shape=(H, W), need_weights=True)
    assert w.shape == (B, HEADS, L, L)
    assert torch.allclose(w.sum(-1), torch.ones(B, HEADS, L, dtype=w.dtype))
    assert (w[1][..., mask[1]] == 0).all()


def test_irpe_without_a_shape_is_refused():
    attn = _module(RPESpec())
    x = torch.randn(1, L, E, dtype=torch.float64)
    with pytest.raises(ValueError, match="feature-map shape"):
        attn(x, x, x)
    with pytest.raises(ValueError, match="feature-map shape"):
        attn(x, x, x, shape=(5, 5))


def test_sdpa_kernel_refuses_a_value_term():
    attn = _module(RPESpec(rpe_on="v"))
    attn.kernel = "sdpa"
    x = torch.randn(1, L, E, dtype=torch.float64)
    with pytest.raises(ValueError, match="values"):
        attn(x, x, x, shape=(H, W))


@pytest.mark.parametrize("spec", [s for s in SPECS if s is None or s.shared_head], ids=lambda s: str(s) if s else "no-irpe")
def test_inference_paths_match_naive_reference(spec):
    """Without autograd the kernels build their buffers in place; the result must not change."""
    attn = _module(spec).eval()
    x, pos, mask = _inputs(True)
    with torch.no_grad():
        ref = naive_attention(attn, x + pos, x, mask, W)
        for kernel in _kernels(spec):
            attn.kernel = kernel
            for _ in range(2):  # the second call reuses the scratch buffers
                out = attn(x + pos, x + pos, x, key_padding_mask=mask, shape=(H, W))[0]
                assert (out - ref).abs().max() < TOL, kernel
