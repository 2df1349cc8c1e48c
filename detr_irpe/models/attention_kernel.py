"""Scaled dot-product attention with iRPE terms: a plain path and a fused, memory-lean path.

Both compute, per head (q already multiplied by head_dim ** -0.5):

    logits[i, j] = q_i . k_j + bias[i, j] + xk[i, index[i, j]] + xq[j, index[j, i]]
    a = dropout(softmax(logits masked on padded keys))
    out_i = sum_j a_ij v_j + sum_j a_ij tv[index[i, j]]

``bias`` is an additive logit map shared by the batch (iRPE bias mode), ``xk`` / ``xq`` hold each
token's score against every bucket (contextual mode: ``q @ T``) and ``tv`` is the value table.
All terms are optional; with none of them this is plain multi-head attention.

The fused path is an autograd Function written for the CPU, where a fresh tensor of the size of
the attention matrix costs more in page faults than the arithmetic done on it: it computes every
L x L step in place or in a reused scratch buffer, keeps only the softmax output and the dropout
mask for the backward pass, gathers the iRPE terms straight into the logit buffer, and computes
their gradients with scatter-adds into the small per-bucket tables.
"""

from __future__ import annotations

import threading

import torch

_scratch = threading.local()


def workspace(shape, like: torch.Tensor, slot: int = 0) -> torch.Tensor:
    """A reusable buffer for temporaries that never leave a kernel call (CPU only: the CUDA
    caching allocator already recycles memory)."""
    numel = 1
    for s in shape:
        numel *= s
    if like.device.type != "cpu":
        return like.new_empty(shape)
    pool = getattr(_scratch, "pool", None)
    if pool is None:
        pool = _scratch.pool = {}
    key = (like.dtype, slot)
    buf = pool.get(key)
    if buf is None or buf.numel() < numel:
        buf = pool[key] = like.new_empty(numel)
    return buf[:numel].view(shape)


def _gather_rows(x, index, shape, out=None):
    """out[..., i, j] = x[..., i, index[i, j]] for x broadcastable to shape[:-1] + (K,)."""
    return torch.gather(x.expand(*shape[:-1], x.shape[-1]), -1, index.expand(shape), out=out)


def _scatter_rows(grad, index, buckets):
    """Adjoint of _gather_rows: out[..., i, k] = sum_j grad[..., i, j] [index[i, j] == k]."""
    out = grad.new_zeros(*grad.shape[:-1], buckets)
    return out.scatter_add_(-1, index.expand(grad.shape), grad)


def _reduce_to(grad, shape):
    """Sum a gradient over the dimensions along which its input was broadcast."""
    lead = grad.dim() - len(shape)
    if lead:
        grad = grad.sum(dim=tuple(range(lead)))
    dims = [i for i, (g, s) in enumerate(zip(grad.shape, shape)) if s == 1 and g != 1]
    return grad.sum(dim=dims, keepdim=True) if dims else grad


def attention_plain(q, k, v, bias=None, xk=None, xq=None, tv=None, index=None, key_padding_mask=None,
                    dropout_p: float = 0.0, training: bool = False):
    """Attention with iRPE terms in ordinary autograd ops; returns (out, weights before dropout).
    Used for attention maps, export and tracing."""
    logits = torch.matmul(q, k.transpose(-1, -2))
    shape = logits.shape
    if bias is not None:
        logits = logits + bias
    if xk is not None:
        logits = logits + _gather_rows(xk, index, shape)
    if xq is not None:
        logits = logits + _gather_rows(xq, index, shape).transpose(-1, -2)
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(logits, dim=-1)
    a = torch.nn.functional.dropout(weights, dropout_p, training) if dropout_p > 0 and training else weights
    out = torch.matmul(a, v)
    if tv is not None:
        out = out + torch.matmul(_scatter_rows(a, index, tv.shape[-2]), tv)
    return out, weights


def dropout_mask(shape, p: float, device) -> torch.Tensor:
    """Bernoulli(p) mask, True where dropped, from 16-bit uniform draws (p resolved to 2^-16):
    four draws per 64-bit random word, several times cheaper than torch's float Bernoulli."""
    n = 1
    for s in shape:
        n *= s
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    threshold = -32768 + round(p * 65536)
    return (words.view(torch.int16)[:n] < threshold).view(shape)


class _FusedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, xk, xq, tv, index, key_padding_mask, dropout_p: float, needs_grad: bool):
        B, H, L, D = q.shape
        S = k.shape[2]
        BH = B * H
        q3, k3 = q.reshape(BH, L, D), k.reshape(BH, S, D)
        # the softmax output is saved for backward: it needs a buffer of its own; without
        # autograd the scratch buffer serves
        logits = q.new_empty((B, H, L, S)) if needs_grad else workspace((B, H, L, S), q, 1)
        l3 = logits.view(BH, L, S)
        if xk is not None:
            _gather_rows(xk, index, (B, H, L, S), out=logits)
            if bias is not None:
                logits.add_(bias)
            l3.baddbmm_(q3, k3.transpose(1, 2))
        elif bias is not None:
            logits.copy_(bias.expand(B, H, L, S))
            l3.baddbmm_(q3, k3.transpose(1, 2))
        else:
            torch.bmm(q3, k3.transpose(1, 2), out=l3)
        if xq is not None:
            logits.add_(_gather_rows(xq, index, (B, H, S, L), out=workspace((B, H, S, L), q)).transpose(-1, -2))
        if key_padding_mask is not None and (key_padding_mask.is_cuda or key_padding_mask.any()):
            logits.masked_fill_(key_padding_mask[:, None, None, :], float("-inf"))
        attn = torch.ops.aten._softmax.out(logits, -1, False, out=logits)
        drop = None
        if dropout_p > 0:
            drop = dropout_mask(attn.shape, dropout_p, attn.device)
            attn_d = torch.where(drop, attn.new_zeros(()), attn, out=workspace(attn.shape, attn))
        else:
            attn_d = attn
        out = torch.matmul(attn_d, v)
        bucket_weights = None
        if tv is not None:
            bucket_weights = _scatter_rows(attn_d, index, tv.shape[-2])
            out.add_(torch.matmul(bucket_weights, tv))
        if dropout_p > 0:
            out.mul_(1.0 / (1.0 - dropout_p))
            if bucket_weights is not None:
                bucket_weights.mul_(1.0 / (1.0 - dropout_p))
        ctx.dropout_p = dropout_p
        ctx.shapes = tuple(None if t is None else t.shape for t in (bias, xk, xq, tv))
        ctx.save_for_backward(q, k, v, tv, index, attn, drop, bucket_weights)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, tv, index, attn, drop, bucket_weights = ctx.saved_tensors
        bias_shape, xk_shape, xq_shape, tv_shape = ctx.shapes
        B, H, L, D = q.shape
        S = k.shape[2]
        BH = B * H
        p = ctx.dropout_p
        grad_out = grad_out.contiguous()
        # the dropout scale is folded into the small grad_out instead of an L x L pass
        go_s = grad_out * (1.0 / (1.0 - p)) if p > 0 else grad_out
        go3 = go_s.reshape(BH, L, D)
        scratch = workspace((B, H, L, S), attn)
        attn_d = torch.where(drop, attn.new_zeros(()), attn, out=scratch) if p > 0 else attn
        grad_v = torch.matmul(attn_d.transpose(-1, -2), go_s)
        grad_tv = None
        g_attn = scratch  # attn_d is no longer needed: its buffer takes the gradient
        if tv is not None:
            grad_tv = _reduce_to(torch.matmul(bucket_weights.transpose(-1, -2), grad_out), tv_shape)
            _gather_rows(torch.matmul(go_s, tv.transpose(-1, -2)), index, (B, H, L, S), out=g_attn)
            g_attn.view(BH, L, S).baddbmm_(go3, v.reshape(BH, S, D).transpose(1, 2))
        else:
            torch.bmm(go3, v.reshape(BH, S, D).transpose(1, 2), out=g_attn.view(BH, L, S))
        if p > 0:
            g_attn.masked_fill_(drop, 0)
        g_logits = torch.ops.aten._softmax_backward_data.out(g_attn, attn, -1, attn.dtype, grad_input=g_attn)
        g3 = g_logits.view(BH, L, S)
        grad_q = torch.bmm(g3, k.reshape(BH, S, D)).view(B, H, L, D)
        grad_k = torch.bmm(g3.transpose(1, 2), q.reshape(BH, L, D)).view(B, H, S, D)
        grad_bias = grad_xk = grad_xq = None
        if bias_shape is not None:
            grad_bias = _reduce_to(g_logits, bias_shape)
        if xk_shape is not None:
            grad_xk = _reduce_to(_scatter_rows(g_logits, index, xk_shape[-1]), xk_shape)
        if xq_shape is not None:
            g_t = workspace((B, H, S, L), attn, 1).copy_(g_logits.transpose(-1, -2))
            grad_xq = _reduce_to(_scatter_rows(g_t, index, xq_shape[-1]), xq_shape)
        return grad_q, grad_k, grad_v, grad_bias, grad_xk, grad_xq, grad_tv, None, None, None, None


def attention_fused(q, k, v, bias=None, xk=None, xq=None, tv=None, index=None, key_padding_mask=None,
                    dropout_p: float = 0.0, training: bool = False):
    """Attention with iRPE terms through the fused autograd Function; returns the output."""
    inputs = (q, k, v, bias, xk, xq, tv)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    return _FusedAttention.apply(*inputs, index, key_padding_mask, dropout_p if training else 0.0, needs_grad)
