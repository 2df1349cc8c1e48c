"""What the Conditional DETR and DAB-DETR decoders share: attention over inputs their layers
project beforehand (no in-projection; queries and keys may be wider than values), and the logit
of boxes and points."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: the class probability the sigmoid heads start at (the references' focal-loss prior)
CLASS_PRIOR = 0.01


def init_sigmoid_heads(class_embed: nn.Linear, bbox_embed: nn.Module) -> None:
    """The references' start: every class at probability CLASS_PRIOR, boxes at their reference
    point or anchor (the box head's last layer zero)."""
    nn.init.constant_(class_embed.bias, -math.log((1 - CLASS_PRIOR) / CLASS_PRIOR))
    nn.init.zeros_(bbox_embed.layers[-1].weight)
    nn.init.zeros_(bbox_embed.layers[-1].bias)


def inverse_sigmoid(x: torch.Tensor, eps: float) -> torch.Tensor:
    """logit(x), with x clamped to [0, 1] and both x and 1 - x to at least ``eps`` (each reference
    has its own: Conditional DETR 1e-5, DAB-DETR 1e-3)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class ProjectedAttention(nn.Module):
    """Multi-head attention over queries, keys and values projected beforehand: no in-projection,
    an output projection of the value width. Queries and keys may be wider than values (per head
    ``query_dim / heads`` against ``value_dim / heads``); the scale is ``(query_dim / heads)^-0.5``.
    Tensors are batch-first."""

    def __init__(self, query_dim: int, value_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if query_dim % num_heads or value_dim % num_heads:
            raise ValueError(f"attention widths {query_dim} (queries, keys) and {value_dim} (values) "
                             f"must be divisible by the {num_heads} heads")
        self.num_heads, self.dropout = num_heads, dropout
        self.scaling = (query_dim // num_heads) ** -0.5
        self.out_proj = nn.Linear(value_dim, value_dim)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
        """query (B, L, Eq), key (B, S, Eq), value (B, S, Ev); key_padding_mask (B, S) True on
        padding; ``attn_mask`` (L, S), (B, L, S) or (B, heads, L, S): boolean, True where a query
        may not attend to a key (as torch.nn.MultiheadAttention), or float, added to the logits.
        Returns (B, L, Ev)."""
        B, L, _ = query.shape
        S, Ev = value.shape[1], value.shape[2]
        h = self.num_heads

        def heads(x, n):
            return x.reshape(B, n, h, -1).transpose(1, 2)

        q, k, v = heads(query * self.scaling, L), heads(key, S), heads(value, S)
        scores = q @ k.transpose(-1, -2)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        if attn_mask is not None:
            mask = attn_mask[:, None] if attn_mask.dim() == 3 else attn_mask
            scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        weights = F.dropout(scores.softmax(-1), self.dropout, self.training)
        out = (weights @ v).transpose(1, 2).reshape(B, L, Ev)
        return self.out_proj(out)


def group_attn_mask(num_groups: int, group_size: int, device=None) -> torch.Tensor:
    """The (K * n, K * n) boolean self-attention mask of ``num_groups`` K consecutive groups of
    ``group_size`` n queries (Group DETR): True (blocked) between queries of different groups."""
    group = torch.arange(num_groups * group_size, device=device) // group_size
    return group[:, None] != group[None, :]


def fold_groups(x: torch.Tensor, num_groups: int) -> torch.Tensor:
    """(B, K * n, C) -> (B * K, n, C): each of the K consecutive query groups its own batch row, so
    that attention over the result is attention within each group (the block-diagonal
    ``group_attn_mask``, at 1/K of its cost, as the Group DETR implementations do)."""
    B, N, C = x.shape
    return x.reshape(B * num_groups, N // num_groups, C)


def unfold_groups(x: torch.Tensor, num_groups: int) -> torch.Tensor:
    """The inverse of ``fold_groups``: (B * K, n, C) -> (B, K * n, C)."""
    BK, n, C = x.shape
    return x.reshape(BK // num_groups, num_groups * n, C)


def concat_heads(content: torch.Tensor, position: torch.Tensor, nhead: int) -> torch.Tensor:
    """(B, N, C) twice -> (B, N, 2C): per head, the head's content features then its position's."""
    B, N, C = content.shape
    return torch.cat([content.view(B, N, nhead, C // nhead), position.view(B, N, nhead, C // nhead)],
                     dim=-1).view(B, N, 2 * C)


def decoder_layer_forward(layer: nn.Module, tgt, memory, memory_mask, pos, query_pos, query_sine_embed, activation,
                          num_groups: int = 1, self_attn_mask=None):
    """One post-norm decoder layer of Conditional DETR or DAB-DETR (``layer`` holds their
    ``sa_*`` / ``ca_*`` projections, ``self_attn``, ``cross_attn``, ``linear1/2``, ``norm1-3`` and
    dropouts): query self-attention, cross-attention with per-head [content ; position] queries and
    keys, feed-forward with ``activation``. tgt, query_pos, query_sine_embed (B, Q, C); memory, pos
    (B, S, C); memory_mask (B, S). ``num_groups`` K > 1 (Group DETR, training): the Q queries are K
    consecutive groups and the self-attention stays within each (see ``fold_groups``);
    ``self_attn_mask``: the self-attention's ``attn_mask`` (of ProjectedAttention; with K > 1 one
    group's (Q / K, Q / K))."""
    q = layer.sa_qcontent_proj(tgt) + layer.sa_qpos_proj(query_pos)
    k = layer.sa_kcontent_proj(tgt) + layer.sa_kpos_proj(query_pos)
    v = layer.sa_v_proj(tgt)
    if num_groups > 1:
        q, k, v = (fold_groups(x, num_groups) for x in (q, k, v))
        attn = unfold_groups(layer.self_attn(q, k, v, attn_mask=self_attn_mask), num_groups)
    else:
        attn = layer.self_attn(q, k, v, attn_mask=self_attn_mask)
    tgt = layer.norm1(tgt + layer.dropout1(attn))

    q = layer.ca_qcontent_proj(tgt)
    k = layer.ca_kcontent_proj(memory)
    k_pos = layer.ca_kpos_proj(pos)
    if layer.ca_qpos_proj is not None:  # layer 0: k_pos is in both halves of the key
        q = q + layer.ca_qpos_proj(query_pos)
        k = k + k_pos
    q = concat_heads(q, layer.ca_qpos_sine_proj(query_sine_embed), layer.nhead)
    k = concat_heads(k, k_pos, layer.nhead)
    attn = layer.cross_attn(q, k, layer.ca_v_proj(memory), key_padding_mask=memory_mask)
    tgt = layer.norm2(tgt + layer.dropout2(attn))
    ffn = layer.linear2(layer.dropout(activation(layer.linear1(tgt))))
    return layer.norm3(tgt + layer.dropout3(ffn))
