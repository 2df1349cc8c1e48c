"""The one multi-head attention of the model, with optional iRPE on q, k and v.

Parameters carry the names of ``torch.nn.MultiheadAttention`` (``in_proj_weight``,
``in_proj_bias``, ``out_proj``) plus ``rpe_q`` / ``rpe_k`` / ``rpe_v``, so released DETR and
iRPE-DETR checkpoints load unchanged. Tensors are batch-first: (batch, tokens, channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UserError
from ..core.names import KERNELS, NO_VALUE_TERM
from . import attention_flex as flex
from .attention_kernel import workspace, attention_fused, attention_plain
from .irpe import RelativePositionEncoding, bucket_ids, cached_index
from ..core.rpe_spec import RPESpec



class KernelError(UserError, ValueError):
    """An attention kernel that cannot run the call it was chosen for."""


class MultiheadAttention(nn.Module):
    """Multi-head attention; ``rpe`` adds iRPE (self-attention over a feature map only)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0,
                 rpe: RPESpec | None = None, kernel: str = "auto"):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if kernel not in KERNELS:
            raise KernelError(f"attention kernel {kernel!r} is not one of {KERNELS}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim ** -0.5
        self.kernel = kernel
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.rpe = rpe
        for side in "qkv":
            enc = RelativePositionEncoding(rpe, side, num_heads, self.head_dim) if rpe and side in rpe.rpe_on else None
            setattr(self, f"rpe_{side}", enc)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None, shape: tuple[int, int] | None = None,
                need_weights: bool = False):
        """Attend ``query`` (B, L, E) to ``key`` / ``value`` (B, S, E); ``key_padding_mask`` (B, S) is
        True on padding; ``shape`` = (H, W) of the feature map that iRPE needs (L = S = H * W).
        Returns (output (B, L, E), per-head weights (B, heads, L, S) or None)."""
        B, L, E = query.shape
        S = key.shape[1]
        # split, not sliced: the gradient of a split is one concatenation, that of each slice a
        # zero-filled copy of the whole weight
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is key:
            (w_qk, w_v), (b_qk, b_v) = w.split([2 * E, E]), b.split([2 * E, E])
            q, k = F.linear(query, w_qk, b_qk).chunk(2, dim=-1)
        else:
            (w_q, w_k, w_v), (b_q, b_k, b_v) = w.split(E), b.split(E)
            q, k = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k)
        v = F.linear(value, w_v, b_v)
        heads = lambda x, n: x.view(B, n, self.num_heads, self.head_dim).transpose(1, 2)
        q, k, v = heads(q, L) * self.scaling, heads(k, S), heads(v, S)

        p = self.dropout if self.training else 0.0
        kernel = self._kernel(q, need_weights)
        terms = self._rpe_terms(q, k, shape, L, S, kernel) if self.rpe is not None else {}
        out, weights = self._attend(q, k, v, terms, key_padding_mask, kernel, p, need_weights)
        out = out.transpose(1, 2).reshape(B, L, E)
        return self.out_proj(out), weights

    def _kernel(self, q, need_weights: bool) -> str:
        """The kernel of this call: ``self.kernel``, or plain for attention maps and export."""
        if need_weights or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return "plain"
        value_term = self.rpe_v is not None
        if self.kernel == "auto":
            return _auto_kernel(q, self.rpe is not None, value_term)
        if self.kernel in NO_VALUE_TERM and value_term:
            raise KernelError(f"attention kernel {self.kernel!r} cannot apply iRPE on values; use 'auto' or 'fused'")
        if self.kernel == "flex" and q.requires_grad and not flex.backward_supported(q.device):
            raise KernelError(f"attention kernel 'flex' has no backward pass on the {q.device.type} in torch "
                              f"{torch.__version__}; use 'auto' or 'fused' to train there")
        return self.kernel

    def _rpe_terms(self, q, k, shape, L, S, kernel: str) -> dict:
        """The iRPE inputs of the attention kernel (see attention_kernel): a logit ``bias`` map
        (bias mode; for flex the tables ``bias_k`` / ``bias_q`` instead), per-token bucket scores
        ``xk`` / ``xq`` (contextual) and the value table ``tv``."""
        if shape is None or shape[0] * shape[1] != L or L != S:
            raise ValueError(f"iRPE needs the feature-map shape of a self-attention; got shape={shape} "
                             f"for {L} queries and {S} keys")
        if torch.compiler.is_compiling():
            # torch.export / dynamo trace with fake tensors: a cached index made there would be a
            # fake tensor that poisons every later call, so the index is computed in the graph
            index = bucket_ids(self.rpe, int(shape[0]), int(shape[1]), q.device)["index"]
        else:
            index = cached_index(self.rpe, int(shape[0]), int(shape[1]), q.device)
        terms = {"index": index}
        if self.rpe.mode == "bias" and kernel == "flex":
            for side, enc in (("k", self.rpe_k), ("q", self.rpe_q)):
                if enc is not None:
                    terms[f"bias_{side}"] = enc.effective_table()
            return terms
        if self.rpe.mode == "bias":
            # shared by the whole batch: computed once per call as (1, heads', L, L)
            bias = None
            for enc, idx in ((self.rpe_k, index), (self.rpe_q, index.t())):
                if enc is not None:
                    # a gather (its gradient a scatter-add) rather than advanced indexing, whose
                    # accumulating backward sorts the indices and is slow on GPUs
                    table = enc.effective_table()
                    term = torch.gather(table[:, None, :].expand(-1, L, -1), 2, idx.expand(table.shape[0], L, L))
                    bias = term if bias is None else bias + term
            terms["bias"] = bias.unsqueeze(0)
            return terms
        if self.rpe_k is not None:
            terms["xk"] = torch.matmul(q, self.rpe_k.effective_table())
        if self.rpe_q is not None:
            terms["xq"] = torch.matmul(k * self.scaling, self.rpe_q.effective_table())
        if self.rpe_v is not None:
            terms["tv"] = self.rpe_v.effective_table()
        return terms

    def _attend(self, q, k, v, terms, key_padding_mask, kernel, p, need_weights):
        if kernel == "sdpa":
            return _sdpa(q, k, v, terms, key_padding_mask, p), None
        if kernel == "flex":
            return flex.attention_flex(q, k, v, key_padding_mask=key_padding_mask, dropout_p=p, training=self.training,
                                  **terms), None
        if kernel == "fused":
            return attention_fused(q, k, v, key_padding_mask=key_padding_mask, dropout_p=p,
                                   training=self.training, **terms), None
        out, weights = attention_plain(q, k, v, key_padding_mask=key_padding_mask, dropout_p=p,
                                       training=self.training, **terms)
        return out, weights if need_weights else None

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, rpe={self.rpe}"


def _auto_kernel(q: torch.Tensor, irpe: bool, value_term: bool) -> str:
    """The kernel for this call (see detr-irpe benchmark encoder).

    - iRPE on values: fused (the only kernel with the per-bucket value term besides plain).
    - CUDA with iRPE logit terms: flex, whose fused kernel evaluates the terms per score, where
      sdpa needs them as a materialised (batch, heads, L, S) mask (and its gradient), which also
      rules out sdpa's flash kernel. Not on the CPU: torch has no flex backward there, and its
      CPU forward materialises the scores. Not below flex's smallest head dimension.
    - Otherwise sdpa for inference and on CUDA, fused for CPU training (measured fastest)."""
    if value_term:
        return "fused"
    if irpe and q.is_cuda and q.shape[-1] >= flex.MIN_HEAD_DIM:
        return "flex"
    if not torch.is_grad_enabled() or q.is_cuda:
        return "sdpa"
    return "fused"


def _sdpa(q, k, v, terms, key_padding_mask, dropout_p):
    """scaled_dot_product_attention with the iRPE logit terms and the padding folded into one
    additive mask."""
    B, H, L, _ = q.shape
    S = k.shape[2]
    full = (B, H, L, S)
    # without autograd on the CPU the mask is built in place in reused scratch buffers: a fresh
    # tensor of this size costs more in page faults than the gather itself
    lean = not torch.is_grad_enabled() and q.device.type == "cpu"
    mask, owned = None, False

    def add(term, is_buffer=False):
        nonlocal mask, owned
        if mask is None:
            mask, owned = term, is_buffer
        elif lean:
            if not owned:
                mask, owned = workspace(full, q, 1).copy_(mask.expand(full)), True
            mask.add_(term)
        else:
            mask = mask + term

    index = terms.get("index")
    if "xk" in terms:
        xk = terms["xk"]
        add(torch.gather(xk.expand(B, H, L, xk.shape[-1]), -1, index.expand(full),
                         out=workspace(full, q, 1) if lean else None), is_buffer=lean)
    if "xq" in terms:
        xq = terms["xq"]
        add(torch.gather(xq.expand(B, H, S, xq.shape[-1]), -1, index.expand(B, H, S, L),
                         out=workspace((B, H, S, L), q, 2) if lean else None).transpose(-1, -2))
    if "bias" in terms:
        add(terms["bias"])
    if key_padding_mask is not None and (key_padding_mask.is_cuda or key_padding_mask.any()):
        pad = torch.zeros(B, 1, 1, S, dtype=q.dtype, device=q.device)
        add(pad.masked_fill_(key_padding_mask[:, None, None, :], float("-inf")))
    # q is already scaled
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=1.0)
