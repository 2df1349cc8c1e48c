"""DETR's encoder-decoder transformer; the encoder self-attention optionally carries iRPE.

Post-norm (the reference) or pre-norm layers. Tensors are batch-first. Parameter names follow the
reference checkpoints: ``encoder.layers.N.{self_attn,linear1,linear2,norm1,norm2}``,
``decoder.layers.N.{self_attn,multihead_attn,linear1,linear2,norm1,norm2,norm3}``, ``decoder.norm``
and, with pre-norm, ``encoder.norm``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiheadAttention
from .decoder_parts import fold_groups, unfold_groups
from ..core.names import ACTIVATIONS
from ..core.rpe_spec import RPESpec


def _with_pos(x, pos):
    return x if pos is None else x + pos


def _feed_forward(x, linear1: nn.Linear, dropout: nn.Dropout, linear2: nn.Linear, activation=F.relu):
    return linear2(dropout(activation(linear1(x))))


class EncoderLayer(nn.Module):
    """Encoder layer: self-attention (with optional iRPE) and feed-forward, post- or pre-norm.

    ``activation`` is the feed-forward's: ``relu`` (DETR; no parameter) or ``prelu`` (DAB-DETR: an
    ``activation`` module with one slope, initialised at 0.25, after ``norm2`` in the state dict)."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, pre_norm=False,
                 rpe: RPESpec | None = None, attention_kernel: str = "auto", activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"encoder activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.self_attn = MultiheadAttention(d_model, nhead, dropout, rpe=rpe, kernel=attention_kernel)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout, self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)
        self.pre_norm = pre_norm
        # None (a plain attribute, no state-dict entry) for ReLU
        self.activation = nn.PReLU() if activation == "prelu" else None

    def _feed_forward(self, x):
        act = F.relu if self.activation is None else self.activation
        return _feed_forward(x, self.linear1, self.dropout, self.linear2, act)

    def forward(self, src, mask=None, pos=None, shape=None, need_weights=False):
        """Returns (output, attention weights or None)."""
        if self.pre_norm:
            return self.forward_pre(src, mask, pos, shape, need_weights)
        return self.forward_post(src, mask, pos, shape, need_weights)

    def forward_post(self, src, mask=None, pos=None, shape=None, need_weights=False):
        """Post-norm layer (the reference)."""
        qk = _with_pos(src, pos)
        attn, weights = self.self_attn(qk, qk, src, key_padding_mask=mask, shape=shape, need_weights=need_weights)
        src = self.norm1(src + self.dropout1(attn))
        src = self.norm2(src + self.dropout2(self._feed_forward(src)))
        return src, weights

    def forward_pre(self, src, mask=None, pos=None, shape=None, need_weights=False):
        """Pre-norm layer."""
        x = self.norm1(src)
        qk = _with_pos(x, pos)
        attn, weights = self.self_attn(qk, qk, x, key_padding_mask=mask, shape=shape, need_weights=need_weights)
        src = src + self.dropout1(attn)
        x = self.norm2(src)
        src = src + self.dropout2(self._feed_forward(x))
        return src, weights


class DecoderLayer(nn.Module):
    """Decoder layer: query self-attention, cross-attention to the encoder memory and feed-forward."""

    def __init__(self, d_model, nhead, *, dim_feedforward=2048, dropout=0.1, pre_norm=False,
                 attention_kernel: str = "auto"):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout, kernel=attention_kernel)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout, kernel=attention_kernel)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))
        self.pre_norm = pre_norm

    def forward(self, tgt, memory, memory_mask=None, pos=None, query_pos=None, num_groups: int = 1):
        """Returns the updated queries. ``num_groups`` K > 1 (Group DETR, training): the queries are
        K consecutive groups and the self-attention stays within each (``decoder_parts.fold_groups``:
        the block-diagonal mask, at 1/K of its cost)."""
        if self.pre_norm:
            return self.forward_pre(tgt, memory, memory_mask, pos, query_pos, num_groups)
        return self.forward_post(tgt, memory, memory_mask, pos, query_pos, num_groups)

    def _self_attention(self, qk, v, num_groups: int):
        if num_groups == 1:
            return self.self_attn(qk, qk, v)[0]
        qk, v = fold_groups(qk, num_groups), fold_groups(v, num_groups)
        return unfold_groups(self.self_attn(qk, qk, v)[0], num_groups)

    def forward_post(self, tgt, memory, memory_mask=None, pos=None, query_pos=None, num_groups: int = 1):
        """Post-norm layer (the reference)."""
        qk = _with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + self.dropout1(self._self_attention(qk, tgt, num_groups)))
        attn = self.multihead_attn(_with_pos(tgt, query_pos), _with_pos(memory, pos), memory,
                                   key_padding_mask=memory_mask)[0]
        tgt = self.norm2(tgt + self.dropout2(attn))
        tgt = self.norm3(tgt + self.dropout3(_feed_forward(tgt, self.linear1, self.dropout, self.linear2)))
        return tgt

    def forward_pre(self, tgt, memory, memory_mask=None, pos=None, query_pos=None, num_groups: int = 1):
        """Pre-norm layer."""
        x = self.norm1(tgt)
        qk = _with_pos(x, query_pos)
        tgt = tgt + self.dropout1(self._self_attention(qk, x, num_groups))
        x = self.norm2(tgt)
        attn = self.multihead_attn(_with_pos(x, query_pos), _with_pos(memory, pos), memory,
                                   key_padding_mask=memory_mask)[0]
        tgt = tgt + self.dropout2(attn)
        x = self.norm3(tgt)
        tgt = tgt + self.dropout3(_feed_forward(x, self.linear1, self.dropout, self.linear2))
        return tgt


class Encoder(nn.Module):
    """Stack of encoder layers, with a final norm for pre-norm."""

    def __init__(self, layer: EncoderLayer, num_layers: int, norm: nn.Module | None = None):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def forward(self, src, mask=None, pos=None, shape=None, need_weights=False):
        weights = []
        for layer in self.layers:
            src, w = layer(src, mask, pos, shape, need_weights)
            weights.append(w)
        if self.norm is not None:
            src = self.norm(src)
        return src, weights


class Decoder(nn.Module):
    """Stack of decoder layers sharing one output norm."""

    def __init__(self, layer: DecoderLayer, num_layers: int, norm: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def forward(self, tgt, memory, memory_mask=None, pos=None, query_pos=None, num_groups: int = 1):
        """Returns the normalised output of every layer: (num_layers, B, Q, C). ``num_groups``: the
        query groups whose self-attention is kept apart (Group DETR; 1: one set of queries)."""
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_mask, pos, query_pos, num_groups)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class Transformer(nn.Module):
    """DETR's encoder-decoder transformer.

    ``encoder_pos`` False keeps the absolute encoding out of the encoder (the "relative only" setting)
    while the decoder's cross-attention keys still get it.
    """

    def __init__(self, d_model=256, nhead=8, *, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, pre_norm=False, rpe: RPESpec | None = None,
                 encoder_pos: bool = True, attention_kernel: str = "auto"):
        super().__init__()
        enc_layer = EncoderLayer(d_model, nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                                 pre_norm=pre_norm, rpe=rpe, attention_kernel=attention_kernel)
        self.encoder = Encoder(enc_layer, num_encoder_layers, nn.LayerNorm(d_model) if pre_norm else None)
        dec_layer = DecoderLayer(d_model, nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                                 pre_norm=pre_norm, attention_kernel=attention_kernel)
        self.decoder = Decoder(dec_layer, num_decoder_layers, nn.LayerNorm(d_model))
        self.d_model, self.nhead, self.encoder_pos = d_model, nhead, encoder_pos
        self._reset_parameters()

    def _reset_parameters(self):
        # as the reference: Xavier-uniform on every matrix, the iRPE tables included
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, mask, query_embed, pos_embed, need_weights=False, num_groups: int = 1):
        """src (B, C, H, W), mask (B, H, W) True on padding, query_embed (Q, C), pos_embed like src
        or None; ``num_groups`` K: the Q queries are K consecutive groups that do not see each other
        in the decoder's self-attention (Group DETR). Returns (decoder outputs (layers, B, Q, C),
        memory (B, C, H, W), encoder weights)."""
        B, C, H, W = src.shape
        src = src.flatten(2).transpose(1, 2)
        pos = None if pos_embed is None else pos_embed.flatten(2).transpose(1, 2)
        mask = mask.flatten(1)
        memory, weights = self.encoder(src, mask, pos if self.encoder_pos else None, (H, W), need_weights)
        query_pos = query_embed.unsqueeze(0).expand(B, -1, -1)
        tgt = torch.zeros_like(query_pos)
        hs = self.decoder(tgt, memory, mask, pos, query_pos, num_groups)
        return hs, memory.transpose(1, 2).reshape(B, C, H, W), weights
