"""Attention with iRPE logit terms through ``torch.nn.attention.flex_attention``.

The iRPE terms enter as a score modification evaluated inside the attention kernel, so no
(batch, heads, L, S) tensor is built, neither for the terms nor for their gradients
(q already multiplied by head_dim ** -0.5):

    logits[b, h, i, j] = q_i . k_j + bias_k[h, index[i, j]] + bias_q[h, index[j, i]]
                         + xk[b, h, i, index[i, j]] + xq[b, h, j, index[j, i]]

``bias_k`` / ``bias_q`` are the bias-mode tables (heads' x K) and ``xk`` / ``xq`` each token's
score against every bucket in contextual mode (the small L x K product ``q @ T``), gathered by
bucket index in the kernel; flex's backward scatters their gradients into those small tensors.
The key padding is a block mask: key blocks that are all padding are skipped, the others are
masked per key.

What flex does not provide, and how it is handled here:

- Attention dropout. Flex has none, so training with dropout ``p`` makes two calls: one with
  the dropped pairs masked (output ``o'``, log-sum-exp ``lse'``) and one without (``lse``); the
  dropout result is ``o' * exp(lse' - lse) / (1 - p)`` exactly, since ``o'`` is normalised over
  the kept pairs only. The keep mask is a counter-based hash of (seed, batch, head, query, key)
  recomputed inside both kernels (forward and backward), so it is never stored; its rate is
  resolved to 2^-16 (see :func:`dropout_keep`).
- The value term (iRPE on values needs per-bucket sums of the attention weights, which flex does
  not expose): not taken here; such layers run the fused kernel (attention_kernel.py).
- A backward pass on the CPU: torch refuses it, so on the CPU this kernel serves inference only
  (unfused: flex materialises the scores there, which makes it a reference path, not a fast one).

Compilation: on CUDA the call goes through one ``torch.compile`` of :func:`flex_call` (inside
an already compiled model it is traced with the model). Feature-map sizes change from batch to
batch; compilation follows torch's automatic dynamic shapes: the first shape compiles a static
kernel, the first different shape one kernel with symbolic sizes that serves every later shape.
So a run compiles at most two kernels (forward and backward each) per combination of terms,
dropout on/off and dtype, at some 10-40 s each on the first steps; ``data.size_divisibility``
does not change that count.
"""

from __future__ import annotations

import functools
import weakref

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import AuxRequest, BlockMask, flex_attention

#: flex's block size (queries x keys) for the padding block mask
BLOCK = 128
#: the smallest head dimension flex's CUDA kernels accept
MIN_HEAD_DIM = 16
#: torch.compile options of compiled_flex_call: sizes symbolic from the first call
COMPILE_OPTIONS = {"dynamic": True, "fullgraph": True}


def backward_supported(device: torch.device) -> bool:
    """Whether torch runs flex_attention's backward on this device: it refuses on the CPU."""
    return device.type != "cpu"


def padding_block_mask(key_padding_mask: torch.Tensor, num_queries: int) -> BlockMask:
    """A flex BlockMask for ``num_queries`` queries over keys padded where ``key_padding_mask``
    (B, S) is True, laid out as ``create_block_mask`` lays it out but built from per-block counts
    of the (B, S) mask instead of an evaluation of the (B, L, S) one. A tile without padding is
    "full" (no mask evaluation), one with some padding, or past the end of the queries or keys,
    "partial"; an all-padding key block is skipped."""
    B, S = key_padding_mask.shape
    blocks, q_blocks = -(-S // BLOCK), -(-num_queries // BLOCK)
    valid = F.pad(~key_padding_mask, (0, blocks * BLOCK - S), value=False).view(B, blocks, BLOCK).sum(-1)
    some = (valid > 0)[:, None, None, :].expand(B, 1, q_blocks, blocks)
    full = (valid == BLOCK)[:, None, None, :].repeat(1, 1, q_blocks, 1)
    if num_queries % BLOCK:
        full[:, :, -1] = False
    partial = some & ~full

    def ordered(selected):
        # the selected blocks first, in increasing order
        order = torch.argsort((~selected).to(torch.int32), dim=-1, stable=True).to(torch.int32)
        return selected.sum(-1, dtype=torch.int32), order

    pad = key_padding_mask

    def keep(b, h, q_idx, kv_idx):
        return ~pad[b, kv_idx]

    kv_num, kv_idx = ordered(partial)
    full_num, full_idx = ordered(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=BLOCK, mask_mod=keep,
                                    seq_lengths=(num_queries, S))


_last_block_mask: list = [None, None, None]  # [weak reference to the padding, queries, block mask]


def shared_block_mask(key_padding_mask: torch.Tensor, num_queries: int) -> BlockMask:
    """padding_block_mask, built once for the layers that share one padding tensor (the encoder's
    six layers get the same one): a dozen small kernels fewer per layer."""
    ref, queries, block_mask = _last_block_mask
    if ref is not None and ref() is key_padding_mask and queries == num_queries:
        return block_mask
    block_mask = padding_block_mask(key_padding_mask, num_queries)
    _last_block_mask[:] = [weakref.ref(key_padding_mask), num_queries, block_mask]
    return block_mask


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (two multiply-xorshift rounds). The arithmetic is int32 with
    wrap-around, the same in torch and in generated kernels; the masks after each shift make
    the arithmetic shift a logical one."""
    x = (x ^ ((x >> 16) & 0xFFFF)) * 0x45D9F3B
    x = (x ^ ((x >> 16) & 0xFFFF)) * 0x45D9F3B
    return x ^ ((x >> 16) & 0xFFFF)


def dropout_threshold(p: float) -> int:
    """The 16-bit threshold below which :func:`dropout_keep` drops a pair: rate ``p`` resolved to 2^-16."""
    return round(p * 65536)


def dropout_keep(seed, b, h, i, j, threshold: int) -> torch.Tensor:
    """True where the attention pair (query ``i``, key ``j``) of head ``h`` of image ``b`` is kept:
    the low 16 bits of a hash of (seed, b, h, i, j) against ``threshold``. Integer tensors
    (int32) that broadcast; evaluated inside flex's kernels and, by the tests, on whole grids.
    The hash takes no tensor size, which would be a symbolic value inside a compiled kernel;
    (b, h) and (i, j) are distinct for fewer than 4099 heads and 65599 keys."""
    b, h, i, j = (t.to(torch.int32) for t in (b, h, i, j))
    x = _mix(seed + (b * 4099 + h) * 0x61C88647)
    x = _mix(x ^ (i * 65599 + j))
    return (x & 0xFFFF) >= threshold


def flex_call(q, k, v, bias_k=None, bias_q=None, xk=None, xq=None, index=None, block_mask=None,
              seed=None, threshold: int = 0, return_lse: bool = False):
    """One flex_attention call with the iRPE score modification; with ``seed`` the pairs that
    :func:`dropout_keep` drops are masked. Returns the output, and its log-sum-exp with
    ``return_lse``."""
    shared_bk = bias_k is not None and bias_k.shape[0] == 1
    shared_bq = bias_q is not None and bias_q.shape[0] == 1

    def score_mod(score, b, h, i, j):
        if bias_k is not None:
            score = score + bias_k[0 if shared_bk else h, index[i, j]]
        if bias_q is not None:
            score = score + bias_q[0 if shared_bq else h, index[j, i]]
        if xk is not None:
            score = score + xk[b, h, i, index[i, j]]
        if xq is not None:
            score = score + xq[b, h, j, index[j, i]]
        if seed is not None:
            score = torch.where(dropout_keep(seed[0], b, h, i, j, threshold), score, float("-inf"))
        return score

    if not return_lse:
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=1.0)
    out, aux = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=1.0,
                              return_aux=AuxRequest(lse=True))
    return out, aux.lse


@functools.cache
def compiled_flex_call():
    """:func:`flex_call` through torch.compile (one per process; see the module docstring)."""
    return torch.compile(flex_call, **COMPILE_OPTIONS)


def attention_flex(q, k, v, bias_k=None, bias_q=None, xk=None, xq=None, index=None, key_padding_mask=None,
                   dropout_p: float = 0.0, training: bool = False):
    """Attention with iRPE logit terms through flex_attention; returns the output (B, H, L, D).
    The contextual scores are used in float32 (their gradients are sums of many terms)."""
    compiling = torch.compiler.is_compiling()
    call = flex_call if q.device.type == "cpu" or compiling else compiled_flex_call()
    block_mask = None
    if key_padding_mask is not None:
        block_mask = padding_block_mask(key_padding_mask, q.shape[2]) if compiling else \
            shared_block_mask(key_padding_mask, q.shape[2])
    wide = lambda x: None if x is None else x.to(torch.promote_types(x.dtype, torch.float32))
    terms = dict(bias_k=bias_k, bias_q=bias_q, xk=wide(xk), xq=wide(xq), index=index, block_mask=block_mask)
    p = dropout_p if training else 0.0
    if p == 0:
        return call(q, k, v, **terms)
    seed = torch.randint(2**31 - 1, (1,), device=q.device, dtype=torch.int32)
    kept, lse_kept = call(q, k, v, seed=seed, threshold=dropout_threshold(p), return_lse=True, **terms)
    _, lse = call(q, k, v, return_lse=True, **terms)
    scale = torch.exp(lse_kept - lse) * (1.0 / (1.0 - p))
    return kept * scale.unsqueeze(-1).to(kept.dtype)
