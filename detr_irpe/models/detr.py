"""The DETR detector: backbone, input projection, transformer, class and box heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Joiner
from .transformer import Transformer


class MLP(nn.Module):
    """A plain multi-layer perceptron with ReLU between layers (``layers.{0,1,2}`` as the reference)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


def pad_images(images: list[torch.Tensor], size_divisibility: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad CHW images bottom and right to the batch's largest size (rounded up to a multiple of
    ``size_divisibility`` when > 0); mask is True on padding."""
    if not images:
        raise ValueError("pad_images needs at least one image")
    C = images[0].shape[0]
    H = max(img.shape[1] for img in images)
    W = max(img.shape[2] for img in images)
    if size_divisibility > 0:
        H, W = (-(-H // size_divisibility) * size_divisibility, -(-W // size_divisibility) * size_divisibility)
    batch = images[0].new_zeros((len(images), C, H, W))
    mask = torch.ones((len(images), H, W), dtype=torch.bool, device=images[0].device)
    for i, img in enumerate(images):
        if img.dim() != 3 or img.shape[0] != C:
            raise ValueError(f"image {i} has shape {tuple(img.shape)}; expected ({C}, height, width)")
        batch[i, :, : img.shape[1], : img.shape[2]].copy_(img)
        mask[i, : img.shape[1], : img.shape[2]] = False
    return batch, mask


def as_batch(images, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded (B, 3, H, W) batch and its mask (True on padding) from a list of CHW images, or from
    a padded batch and its mask (None: no padding)."""
    if isinstance(images, (list, tuple)):
        return pad_images(list(images))
    if mask is None:
        mask = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool, device=images.device)
    return images, mask


def layer_outputs(logits: torch.Tensor, boxes: torch.Tensor, aux_loss: bool, encoder_attention=None,
                  feature_shape=None) -> dict:
    """The model's outputs from every decoder layer's (layers, B, Q, ...) logits and boxes: the last
    layer's, the earlier ones' under ``aux_outputs`` with ``aux_loss``, and the encoder attention
    maps and feature-map shape when given."""
    out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
    if aux_loss:
        out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
    if encoder_attention is not None:
        out["encoder_attention"] = encoder_attention
        out["feature_shape"] = tuple(feature_shape)
    return out


def check_num_groups(num_groups: int) -> None:
    if not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups must be an integer >= 1, got {num_groups!r}")


def group_queries(module: nn.Module, first: torch.Tensor, extra: nn.Embedding | None) -> tuple[torch.Tensor, int]:
    """(queries, group count) of a forward pass of ``module`` (Group DETR): in training, the
    group-0 queries ``first`` (Q, ...) followed by the ``extra`` (K - 1) groups' ((K - 1) x Q, ...),
    K groups; in eval mode, or without extra groups, ``first`` alone, one group."""
    if extra is None or not module.training:
        return first, 1
    return torch.cat([first, extra.weight]), extra.weight.shape[0] // first.shape[0] + 1


class DETR(nn.Module):
    """DETR; ``forward`` returns ``pred_logits`` (B, Q, classes + 1), ``pred_boxes`` (B, Q, 4,
    normalised cx, cy, w, h) and, with auxiliary loss, ``aux_outputs`` of the earlier decoder layers.

    ``num_groups`` K > 1 (Group DETR): in training the decoder takes K groups of ``num_queries``
    queries, group 0 the ``query_embed`` and groups 1 .. K-1 ``group_query_embed`` (built only
    when K > 1), each group's self-attention kept to the group; the outputs hold K x Q queries,
    group-major. In eval mode only group 0 runs: the model is the single-group model."""

    def __init__(self, backbone: Joiner, transformer: Transformer, num_classes: int, num_queries: int = 100,
                 aux_loss: bool = True, num_groups: int = 1):
        super().__init__()
        check_num_groups(num_groups)
        hidden = transformer.d_model
        self.num_queries, self.num_classes, self.aux_loss = num_queries, num_classes, aux_loss
        self.transformer = transformer
        self.class_embed = nn.Linear(hidden, num_classes + 1)
        self.bbox_embed = MLP(hidden, hidden, 4, 3)
        self.query_embed = nn.Embedding(num_queries, hidden)
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden, kernel_size=1)
        self.backbone = backbone
        # built last, so that every other parameter draws what it would in a single-group model
        self.num_groups = num_groups
        self.group_query_embed = nn.Embedding((num_groups - 1) * num_queries, hidden) if num_groups > 1 else None

    def forward(self, images, mask: torch.Tensor | None = None, need_weights: bool = False) -> dict:
        """``images``: a list of CHW tensors (padded here) or a padded (B, 3, H, W) batch with its
        mask (True on padding; None means no padding). ``need_weights`` adds the encoder
        self-attention maps under ``encoder_attention`` (one (B, heads, L, L) tensor per layer)."""
        images, mask = as_batch(images, mask)
        feat, mask, pos = self.backbone(images, mask)
        queries, groups = group_queries(self, self.query_embed.weight, self.group_query_embed)
        hs, _, weights = self.transformer(self.input_proj(feat), mask, queries, pos, need_weights=need_weights,
                                          num_groups=groups)
        logits = self.class_embed(hs)
        boxes = self.bbox_embed(hs).sigmoid()
        out = layer_outputs(logits, boxes, self.aux_loss, weights if need_weights else None, feat.shape[-2:])
        return out
