"""Absolute position encodings of the feature map: DETR's sine, a learned one, or none."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.errors import UserError


class PositionEmbeddingSine(nn.Module):
    """DETR's 2-D sine encoding, normalised over the unpadded region; y features first, then x."""

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats, self.temperature, self.scale = num_pos_feats, temperature, scale

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """mask (B, H, W), True on padding -> (B, 2 * num_pos_feats, H, W)."""
        not_mask = (~mask).to(torch.float32)
        y = not_mask.cumsum(1)
        x = not_mask.cumsum(2)
        eps = 1e-6
        y = y / (y[:, -1:, :] + eps) * self.scale
        x = x / (x[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x, pos_y = x[..., None] / dim_t, y[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class PositionEmbeddingLearned(nn.Module):
    """Learned row and column embeddings (up to 50 x 50 feature maps, as the reference)."""

    def __init__(self, num_pos_feats: int = 128, max_size: int = 50):
        super().__init__()
        self.row_embed = nn.Embedding(max_size, num_pos_feats)
        self.col_embed = nn.Embedding(max_size, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        B, h, w = mask.shape
        limit = self.row_embed.num_embeddings
        if h > limit or w > limit:
            raise UserError(f"model.position_embedding=learned supports feature maps up to {limit} x {limit}, got "
                            f"{h} x {w}; use smaller images (data.max_size) or the sine embedding")
        x_emb = self.col_embed(torch.arange(w, device=mask.device))
        y_emb = self.row_embed(torch.arange(h, device=mask.device))
        pos = torch.cat([x_emb.unsqueeze(0).expand(h, w, -1), y_emb.unsqueeze(1).expand(h, w, -1)], dim=-1)
        return pos.permute(2, 0, 1).unsqueeze(0).expand(B, -1, -1, -1)


class PositionEmbeddingNone(nn.Module):
    """No absolute encoding."""

    def forward(self, mask: torch.Tensor) -> None:
        return None


def build_position_encoding(kind: str, hidden_dim: int, temperature: float = 10000.0) -> nn.Module:
    """``sine`` (with ``temperature``) | ``learned`` | ``none``."""
    if kind == "sine":
        return PositionEmbeddingSine(hidden_dim // 2, temperature=temperature)
    if kind == "learned":
        return PositionEmbeddingLearned(hidden_dim // 2)
    if kind == "none":
        return PositionEmbeddingNone()
    raise ValueError(f"position_embedding {kind!r} is not one of sine, learned, none")
