"""The flex_attention kernel equals the naive per-pair reference and the plain kernel, outputs and
gradients (q, k, v, the iRPE tables), over the iRPE modes and sides it takes, with padding and
with its dropout; its padding block mask equals torch's own; compilation is bounded.

On the CPU torch refuses flex's backward at the API level, although its unfused implementation
has one: the gradient tests lift that check (fixture ``flex_backward_on_cpu``) to verify the score
modification and its gradients into the tables; the CUDA cases at the end run the compiled
kernels and skip without a CUDA device."""

import itertools

import pytest
import torch
import torch.nn.attention.flex_attention as torch_flex
from naive_irpe import naive_attention, outputs_and_grads

from detr_irpe.config import ConfigError, load_config
from detr_irpe.models import attention_flex as flex
from detr_irpe.models.attention import KernelError, MultiheadAttention
from detr_irpe.models.attention_kernel import attention_plain
from detr_irpe.core.rpe_spec import RPESpec

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

H, W, E, HEADS, B = 3, 4, 8, 2, 2
L = H * W
TOL = 1e-10
METHODS = [("euc", 1.9), ("quant", 2.0), ("cross", 2.0), ("product", 1.9)]
# every mode x side x head sharing that flex takes (iRPE on values runs the fused kernel), the
# four bucket methods in turn: the kernel sees a method only through its bucket index
SPECS = [RPESpec(ratio=ratio, method=method, mode=mode, shared_head=shared, rpe_on=on)
         for n, (mode, on, shared) in enumerate(itertools.product(["bias", "ctx"], ["q", "k", "qk"], [True, False]))
         for method, ratio in [METHODS[n % 4]]]


@pytest.fixture
def flex_backward_on_cpu(monkeypatch):
    monkeypatch.setattr(torch_flex, "_validate_device", lambda *tensors: None)
    monkeypatch.setattr(flex, "backward_supported", lambda device: True)


def _module(spec, dim=E, heads=HEADS, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    attn = MultiheadAttention(dim, heads, dropout=0.0, rpe=spec, kernel="flex").to(dtype)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return attn


def _inputs(padded, height=H, width=W, dim=E, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, height * width, dim, dtype=dtype, generator=g)
    pos = torch.randn(B, height * width, dim, dtype=dtype, generator=g)
    mask = None
    if padded:  # bottom-right padding of the second image: last row and last column
        mask = torch.zeros(B, height, width, dtype=torch.bool)
        mask[1, -1, :] = True
        mask[1, :, -1] = True
        mask = mask.flatten(1).to(device)
    return x.to(device), pos.to(device), mask


def _run(attn, kernel, mask, shape=(H, W)):
    def fn(xi, pi):
        attn.kernel = kernel
        qk = xi + pi
        return attn(qk, qk, xi, key_padding_mask=mask, shape=shape)[0]
    return fn


# without padding (no block mask) the no-iRPE and the q + k cases
CASES = [(spec, True) for spec in [None, *SPECS]] + [(spec, False) for spec in [None, *SPECS] if spec is None or spec.rpe_on == "qk"]


@pytest.mark.parametrize("spec,padded", CASES, ids=lambda c: c if isinstance(c, bool) else str(c) if c else "no-irpe")
def test_flex_matches_naive_reference_and_plain_kernel(spec, padded, flex_backward_on_cpu):
    attn = _module(spec)
    x, pos, mask = _inputs(padded)
    weight = torch.randn(B, L, E, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    naive = lambda xi, pi: naive_attention(attn, xi + pi, xi, mask, W)  # noqa: E731
    ref_out, ref_grads = outputs_and_grads(naive, attn, x, pos, weight)
    plain_out, plain_grads = outputs_and_grads(_run(attn, "plain", mask), attn, x, pos, weight)
    out, grads = outputs_and_grads(_run(attn, "flex", mask), attn, x, pos, weight)
    assert (out - ref_out).abs().max() < TOL
    assert (out - plain_out).abs().max() < TOL
    tables = [n for n in grads if "lookup_table" in n]
    assert len(tables) == (0 if spec is None else len(spec.rpe_on) * (2 if spec.method == "cross" else 1))
    for name, g in ref_grads.items():
        assert grads[name] is not None, name
        assert (grads[name] - g).abs().max() < TOL, name
        assert (grads[name] - plain_grads[name]).abs().max() < TOL, name


def test_flex_inference_matches_without_lifting_any_check():
    """Without autograd flex runs on the CPU through torch's public API as it stands."""
    attn = _module(RPESpec.parse("rpe-2.0-product-ctx-1-qk")).eval()
    x, pos, mask = _inputs(True)
    with torch.no_grad():
        out = _run(attn, "flex", mask)(x, pos)
        ref = naive_attention(attn, x + pos, x, mask, W)
    assert (out - ref).abs().max() < TOL


def _dropout_reference(q, k, v, xk, index, mask, p, seed):
    """Attention with dropout applied through the keep mask of dropout_keep, materialised."""
    _, weights = attention_plain(q, k, v, xk=xk, index=index, key_padding_mask=mask)
    b, h, i, j = torch.meshgrid(*(torch.arange(n, dtype=torch.int32, device=q.device) for n in weights.shape),
                                indexing="ij")
    keep = flex.dropout_keep(seed[0], b, h, i, j, flex.dropout_threshold(p))
    return torch.matmul(weights * keep / (1 - p), v)


def test_flex_dropout_equals_the_keep_mask_applied_to_the_attention_weights(flex_backward_on_cpu):
    p = 0.3
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(B, HEADS, 40, 4, dtype=torch.float64, generator=g).requires_grad_() for _ in range(3))
    index = torch.randint(0, 9, (40, 40), generator=g)
    xk = torch.randn(B, HEADS, 40, 9, dtype=torch.float64, generator=g).requires_grad_()
    mask = torch.zeros(B, 40, dtype=torch.bool)
    mask[1, -15:] = True
    weight = torch.randn(B, HEADS, 40, 4, dtype=torch.float64, generator=g)
    results = []
    for fn in ("flex", "reference"):
        torch.manual_seed(7)
        if fn == "flex":
            out = flex.attention_flex(q, k, v, xk=xk, index=index, key_padding_mask=mask, dropout_p=p, training=True)
        else:  # the seed the kernel draws from the same generator state
            seed = torch.randint(2**31 - 1, (1,), dtype=torch.int32)
            out = _dropout_reference(q, k, v, xk, index, mask, p, seed)
        grads = torch.autograd.grad((out * weight).sum(), (q, k, v, xk))
        results.append((out, grads))
    (out, grads), (ref, ref_grads) = results
    assert (out - ref).abs().max() < TOL
    for g_flex, g_ref in zip(grads, ref_grads):
        assert (g_flex - g_ref).abs().max() < TOL
    # a different generator state draws another mask
    torch.manual_seed(8)
    other = flex.attention_flex(q, k, v, xk=xk, index=index, key_padding_mask=mask, dropout_p=p, training=True)
    assert (other - out).abs().max() > 1e-3


def test_dropout_keep_has_the_requested_rate_and_no_pattern():
    p = 0.1
    b, h, i, j = torch.meshgrid(*(torch.arange(n, dtype=torch.int32) for n in (2, 8, 300, 300)), indexing="ij")
    keep = flex.dropout_keep(torch.tensor(12345, dtype=torch.int32), b, h, i, j, flex.dropout_threshold(p))
    assert abs(keep.float().mean().item() - (1 - p)) < 0.002
    kept = keep.float() - keep.float().mean()
    for dim in (1, 2, 3):  # neighbouring heads, queries and keys are uncorrelated
        a, c = kept.narrow(dim, 0, kept.shape[dim] - 1), kept.narrow(dim, 1, kept.shape[dim] - 1)
        assert abs((a * c).mean().item()) / kept.var().item() < 0.01
    other = flex.dropout_keep(torch.tensor(12346, dtype=torch.int32), b, h, i, j, flex.dropout_threshold(p))
    assert (other != keep).float().mean() > 0.15  # two independent masks differ in about 2p(1-p)


@pytest.mark.parametrize("queries,keys,pad", [(12, 12, [0, 3]), (300, 300, [0, 150]), (100, 300, [5, 200]),
                                              (256, 256, [0, 256 - 10]), (130, 400, [128, 1])],
                         ids=["one-block", "two-images", "decoder", "divisible", "all-padding-block"])
def test_padding_block_mask_equals_torch_create_block_mask(queries, keys, pad):
    mask = torch.zeros(len(pad), keys, dtype=torch.bool)
    for b, n in enumerate(pad):
        if n:
            mask[b, -n:] = True
    mask[0, 1] = True  # an isolated padded key inside the first block
    ours = flex.padding_block_mask(mask, queries)
    ref = torch_flex.create_block_mask(lambda b, h, q, kv: ~mask[b, kv], len(pad), None, queries, keys, device="cpu")
    assert ours.to_dense().equal(ref.to_dense())
    for name in ("kv", "full_kv", "q", "full_q"):
        count = getattr(ours, f"{name}_num_blocks")
        assert count.equal(getattr(ref, f"{name}_num_blocks")), name
        idx, ref_idx = getattr(ours, f"{name}_indices"), getattr(ref, f"{name}_indices")
        for pos in itertools.product(*(range(n) for n in count.shape)):
            assert idx[pos][: count[pos]].equal(ref_idx[pos][: count[pos]]), name


def test_compilation_is_one_graph_for_every_map_larger_than_a_block():
    """The options of compiled_flex_call (dynamic sizes) under a backend that counts the graphs
    dynamo hands it: the first shape compiles, later shapes reuse it."""
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    call = torch.compile(flex.flex_call, backend=counting_backend, **flex.COMPILE_OPTIONS)
    for height, width in [(12, 13), (15, 16), (11, 20)]:
        n = height * width
        g = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(B, HEADS, n, 16, generator=g) for _ in range(3))
        xk = torch.randn(B, HEADS, n, 25, generator=g)
        index = torch.randint(0, 25, (n, n), generator=g)
        mask = torch.zeros(B, n, dtype=torch.bool)
        mask[1, -width:] = True
        block_mask = flex.padding_block_mask(mask, n)
        with torch.no_grad():
            out = call(q, k, v, xk=xk, index=index, block_mask=block_mask)
            ref = flex.flex_call(q, k, v, xk=xk, index=index, block_mask=block_mask)
        assert (out - ref).abs().max() < 1e-5
    assert len(graphs) == 1
    torch._dynamo.reset()


def test_flex_refuses_what_it_cannot_run():
    x = torch.randn(1, L, E, dtype=torch.float64)
    with pytest.raises(KernelError, match="no backward pass on the cpu"):
        _module(RPESpec.parse("rpe-2.0-product-ctx-1-k"))(x, x, x, shape=(H, W))
    with pytest.raises(KernelError, match="values"):
        with torch.no_grad():
            _module(RPESpec.parse("rpe-2.0-product-ctx-1-kv"))(x, x, x, shape=(H, W))
    with pytest.raises(ConfigError, match="flex.*values"):
        load_config(None, ["model.attention_kernel=flex", "model.irpe=rpe-2.0-euc-ctx-1-qkv"])
    assert load_config(None, ["model.attention_kernel=flex"]).model.attention_kernel == "flex"


def test_auto_never_picks_flex_on_the_cpu(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("flex called")

    monkeypatch.setattr(flex, "attention_flex", refuse)
    attn = _module(RPESpec.parse("rpe-2.0-product-ctx-1-k"), dim=64, heads=2)
    attn.kernel = "auto"
    x = torch.randn(1, L, 64, dtype=torch.float64)
    attn(x, x, x, shape=(H, W))[0].sum().backward()
    with torch.no_grad():
        attn(x, x, x, shape=(H, W))


CUDA_SPECS = ["", "rpe-2.0-product-ctx-1-k", "rpe-1.9-cross-bias-0-qk", "rpe-2.0-euc-ctx-0-qk", "rpe-2.0-quant-bias-1-k"]


def _cuda_pair(spec_text, dim=64, heads=4):
    """A float32 flex module on CUDA and a plain-kernel copy of it (head dim 16: flex's smallest)."""
    attn = _module(RPESpec.parse(spec_text), dim=dim, heads=heads, dtype=torch.float32).cuda()
    plain = _module(RPESpec.parse(spec_text), dim=dim, heads=heads, dtype=torch.float32).cuda()
    plain.load_state_dict(attn.state_dict())
    plain.kernel = "plain"
    return attn, plain


@cuda
@pytest.mark.parametrize("height,width", [(7, 9), (13, 11)], ids=["one-block", "two-blocks"])
@pytest.mark.parametrize("spec", CUDA_SPECS, ids=lambda s: s or "no-irpe")
def test_cuda_flex_matches_plain_kernel(spec, height, width):
    attn, plain = _cuda_pair(spec)
    x, pos, mask = _inputs(True, height, width, 64, torch.float32, "cuda")
    weight = torch.randn(B, height * width, 64, generator=torch.Generator().manual_seed(2)).cuda()
    ref, ref_grads = outputs_and_grads(_run(plain, "plain", mask, (height, width)), plain, x, pos, weight)
    out, grads = outputs_and_grads(_run(attn, "flex", mask, (height, width)), attn, x, pos, weight)
    assert (out - ref).abs().max() < 1e-4 * ref.abs().max()
    for name, g in ref_grads.items():
        assert (grads[name] - g).abs().max() < 1e-3 * g.abs().max() + 1e-6, name


@cuda
def test_cuda_flex_dropout_equals_the_keep_mask():
    """The keep mask hashed inside the compiled kernels is the one dropout_keep gives in torch."""
    p = 0.1
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(B, 4, 150, 16, generator=g).cuda().requires_grad_() for _ in range(3))
    index = torch.randint(0, 25, (150, 150), generator=g).cuda()
    xk = torch.randn(B, 4, 150, 25, generator=g).cuda().requires_grad_()
    mask = torch.zeros(B, 150, dtype=torch.bool, device="cuda")
    mask[1, -30:] = True
    weight = torch.randn(B, 4, 150, 16, generator=g).cuda()
    torch.manual_seed(7)
    out = flex.attention_flex(q, k, v, xk=xk, index=index, key_padding_mask=mask, dropout_p=p, training=True)
    grads = torch.autograd.grad((out * weight).sum(), (q, k, v, xk))
    torch.manual_seed(7)
    seed = torch.randint(2**31 - 1, (1,), device="cuda", dtype=torch.int32)
    ref = _dropout_reference(q, k, v, xk, index, mask, p, seed)
    ref_grads = torch.autograd.grad((ref * weight).sum(), (q, k, v, xk))
    assert (out - ref).abs().max() < 1e-4 * ref.abs().max()
    for g_flex, g_ref in zip(grads, ref_grads):
        assert (g_flex - g_ref).abs().max() < 1e-3 * g_ref.abs().max()


@cuda
def test_cuda_flex_compiles_once_for_changing_map_sizes():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    attn, _ = _cuda_pair("rpe-2.0-product-ctx-1-k")
    attn.dropout = 0.1
    attn.train()
    for height, width in [(15, 20), (17, 21), (19, 25), (14, 30)]:
        x, pos, mask = _inputs(True, height, width, 64, torch.float32, "cuda")
        _run(attn, "flex", mask, (height, width))(x, pos).sum().backward()
    # one graph (forward and backward) for each of dropout's two calls
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])


@cuda
def test_cuda_auto_picks_flex_for_irpe_logit_terms(monkeypatch):
    calls = []
    original = flex.attention_flex
    monkeypatch.setattr(flex, "attention_flex", lambda *a, **k: calls.append(1) or original(*a, **k))
    attn, _ = _cuda_pair("rpe-2.0-product-ctx-1-k")
    attn.kernel = "auto"
    x, pos, mask = _inputs(True, 9, 10, 64, torch.float32, "cuda")
    _run(attn, "auto", mask, (9, 10))(x, pos).sum().backward()
    assert calls


@cuda
def test_cuda_flex_under_bf16_autocast_is_close_to_float32():
    attn, _ = _cuda_pair("rpe-2.0-product-ctx-1-qk")
    x, pos, mask = _inputs(True, 13, 17, 64, torch.float32, "cuda")
    ref = _run(attn, "flex", mask, (13, 17))(x, pos)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = _run(attn, "flex", mask, (13, 17))(x, pos)
    out.float().sum().backward()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_layers_sharing_a_padding_tensor_share_its_block_mask():
    mask = torch.zeros(B, 300, dtype=torch.bool)
    mask[1, -100:] = True
    first = flex.shared_block_mask(mask, 300)
    assert flex.shared_block_mask(mask, 300) is first
    assert flex.shared_block_mask(mask, 100) is not first  # other queries: another mask
    other = mask.clone()
    other[0, -50:] = True
    assert flex.shared_block_mask(other, 300).to_dense().equal(flex.padding_block_mask(other, 300).to_dense())
