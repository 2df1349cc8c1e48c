"""How far the encoder looks: the mean attention distance per encoder layer and head, and the
attention mass as a function of the relative offset (dr, dc), over validation images.

Hooks on every encoder self-attention module ask it for its weights (a forward pre-hook sets
``need_weights``) and record them with the padding mask and the feature-map shape, so any model
of this project is measured without changing its forward. Distances are in feature-map cells
(Euclidean between the centres of the query's and the key's cells) and attention-weighted; only
tokens of the image (not of its batch padding) count as queries. The same measure with uniform
attention over the image's tokens is kept beside it: the distance that says "no preference".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.errors import UserError

#: offsets up to this many cells either way are kept in the offset map (the tiny models' maps are
#: 7-10 cells a side; DETR-R50's on COCO about 25 x 34)
MAX_OFFSET = 12


class AttentionError(UserError):
    """A model whose encoder attention cannot be measured (no encoder layers)."""


@dataclass
class AttentionDistance:
    """Per layer and head: the mean attention distance (cells), the same for uniform attention,
    and the mean attention mass of a query at each offset (dr, dc) in [-R, R]^2."""

    distance: np.ndarray  # (layers, heads)
    uniform: np.ndarray  # (layers,)
    offset_mass: np.ndarray  # (layers, heads, 2R + 1, 2R + 1)
    uniform_offset_mass: np.ndarray  # (2R + 1, 2R + 1): the same for uniform attention
    max_offset: int
    images: int
    queries: int
    feature_shapes: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"distance_cells": self.distance.tolist(), "uniform_distance_cells": self.uniform.tolist(),
                "offset_mass": self.offset_mass.tolist(), "uniform_offset_mass": self.uniform_offset_mass.tolist(),
                "max_offset": self.max_offset, "images": self.images,
                "queries": self.queries, "feature_shapes": [list(s) for s in self.feature_shapes],
                "offset_axes": "offset_mass[layer][head][dr + max_offset][dc + max_offset]"}


class EncoderAttentionRecorder:
    """Records the self-attention weights of every encoder layer of ``model`` (a DETR) while it
    is used as a context manager: ``records[layer]`` is a list of (weights (B, heads, L, L),
    key padding mask (B, L) or None, feature shape (H, W)), one per forward."""

    def __init__(self, model):
        self.modules = [layer.self_attn for layer in model.transformer.encoder.layers]
        self.records: list[list] = [[] for _ in self.modules]
        self.handles = []

    def __enter__(self):
        for i, module in enumerate(self.modules):
            self.handles.append(module.register_forward_pre_hook(self._ask_weights, with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._recorder(i), with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        return False

    @staticmethod
    def _ask_weights(module, args, kwargs):
        return args, {**kwargs, "need_weights": True}

    def _recorder(self, i):
        def hook(module, args, kwargs, output):
            self.records[i].append((output[1].detach(), kwargs.get("key_padding_mask"), tuple(kwargs["shape"])))
        return hook

    def clear(self) -> None:
        for r in self.records:
            r.clear()


def _grids(h: int, w: int, max_offset: int):
    """Distances between the cells of an h x w map (L x L) and each pair's index in the
    (2R + 1)^2 offset map (-1 where the offset is beyond R)."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    dr = rows[None, :] - rows[:, None]  # key row - query row
    dc = cols[None, :] - cols[:, None]
    dist = torch.sqrt((dr ** 2 + dc ** 2).double())
    side = 2 * max_offset + 1
    inside = (dr.abs() <= max_offset) & (dc.abs() <= max_offset)
    index = torch.where(inside, (dr + max_offset) * side + (dc + max_offset), torch.full_like(dr, -1))
    return dist, index


class DistanceAccumulator:
    """Sums of attention-weighted distances and offset masses over batches of one model."""

    def __init__(self, layers: int, heads: int, max_offset: int = MAX_OFFSET):
        side = 2 * max_offset + 1
        self.max_offset = max_offset
        self.distance = torch.zeros(layers, heads, dtype=torch.float64)
        self.uniform = torch.zeros(layers, dtype=torch.float64)
        self.mass = torch.zeros(layers, heads, side * side, dtype=torch.float64)
        self.uniform_mass = torch.zeros(side * side, dtype=torch.float64)
        self.queries = 0
        self.images = 0
        self.shapes: set = set()

    def add(self, layer: int, weights: torch.Tensor, padding: torch.Tensor | None, shape: tuple[int, int]) -> None:
        """One batch of one layer: ``weights`` (B, heads, L, L), ``padding`` (B, L) True on padding."""
        b, heads, length, _ = weights.shape
        h, w = shape
        dist, index = _grids(h, w, self.max_offset)
        weights = weights.double().cpu()
        valid = torch.ones(b, length, dtype=torch.bool) if padding is None else ~padding.cpu().bool()
        q = valid[:, None, :, None].double()  # the queries that count
        self.distance[layer] += (weights * dist * q).sum(dim=(0, 2, 3))
        # uniform attention over each image's own tokens
        keys = valid.double()
        uniform = (dist @ keys.T).T / keys.sum(dim=1, keepdim=True).clamp(min=1)  # (B, L): mean distance per query
        self.uniform[layer] += (uniform * valid).sum()
        per_pair = (weights * q).sum(dim=(0,)).reshape(heads, length * length)  # summed over images and queries
        flat = index.flatten()
        keep = flat >= 0
        self.mass[layer].index_add_(1, flat[keep], per_pair[:, keep])
        if layer == 0:
            pairs = torch.einsum("bq,bk->qk", keys, keys / keys.sum(dim=1, keepdim=True).clamp(min=1))
            self.uniform_mass.index_add_(0, flat[keep], pairs.flatten()[keep])
            self.queries += int(valid.sum())
            self.images += b
            self.shapes.add((h, w))

    def result(self) -> AttentionDistance:
        n = max(self.queries, 1)
        side = 2 * self.max_offset + 1
        layers, heads = self.distance.shape
        return AttentionDistance(distance=(self.distance / n).numpy(), uniform=(self.uniform / n).numpy(),
                                 offset_mass=(self.mass / n).reshape(layers, heads, side, side).numpy(),
                                 uniform_offset_mass=(self.uniform_mass / n).reshape(side, side).numpy(),
                                 max_offset=self.max_offset, images=self.images, queries=self.queries,
                                 feature_shapes=sorted(self.shapes))


@torch.no_grad()
def measure(model, loader, device, max_images: int, max_offset: int = MAX_OFFSET) -> AttentionDistance:
    """The attention distance of ``model`` over the first ``max_images`` images of ``loader``
    (batches of images, mask, targets as the project's loaders give them)."""
    model.eval()
    layers = len(model.transformer.encoder.layers)
    if layers == 0:
        raise AttentionError("the model has no encoder layers (model.enc_layers=0): no encoder attention to measure")
    heads = model.transformer.encoder.layers[0].self_attn.num_heads
    acc = DistanceAccumulator(layers, heads, max_offset)
    with EncoderAttentionRecorder(model) as rec:
        for images, mask, _ in loader:
            take = min(len(images), max_images - acc.images)
            if take <= 0:
                break
            model(images[:take].to(device), mask[:take].to(device))
            for layer, records in enumerate(rec.records):
                for weights, padding, shape in records:
                    acc.add(layer, weights, padding, shape)
            rec.clear()
    return acc.result()


def distance_figure(entries: list[tuple[str, AttentionDistance]]):
    """Mean attention distance against encoder layer: a dot per head, a line for the mean over
    heads, dashed: uniform attention; one colour per model."""
    from .figures import new_figure

    fig = new_figure(7.5, 4.8)
    ax = fig.add_subplot()
    width = 0.6 / len(entries)
    for i, (label, d) in enumerate(entries):
        layers, heads = d.distance.shape
        x = np.arange(1, layers + 1) + (i - (len(entries) - 1) / 2) * width
        line, = ax.plot(x, d.distance.mean(axis=1), marker="o", lw=2, label=f"{label} (mean over {heads} heads)")
        for layer in range(layers):
            ax.scatter(np.full(heads, x[layer]), d.distance[layer], color=line.get_color(), s=14, alpha=0.5)
        ax.plot(x, d.uniform, ls="--", color=line.get_color(), alpha=0.7, label=f"{label}: uniform attention")
    ax.set_xticks(range(1, entries[0][1].distance.shape[0] + 1))
    ax.set(xlabel="encoder layer", ylabel="mean attention distance (feature cells)",
           title=f"attention distance over {entries[0][1].images} validation images (dots: heads)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def offset_figure(entries: list[tuple[str, AttentionDistance]]):
    """The attention mass of a query at each relative offset (dr, dc), averaged over heads, as a
    ratio to uniform attention over the image (above 1: preferred offsets; the plain mass is
    mostly the count of token pairs at each offset): a row per model, a column per encoder layer,
    up to the largest offset the feature maps have."""
    from matplotlib.colors import LogNorm

    from .figures import new_figure

    layers = max(d.offset_mass.shape[0] for _, d in entries)
    fig = new_figure(2.7 * layers + 1.0, 2.6 * len(entries) + 0.6)
    axes = np.atleast_2d(fig.subplots(len(entries), layers, squeeze=False))
    ratios = {}
    for label, d in entries:
        r = min(d.max_offset, max(max(s) for s in d.feature_shapes) - 1)
        window = slice(d.max_offset - r, d.max_offset + r + 1)
        uniform = d.uniform_offset_mass[window, window]
        ratios[label] = (r, [np.divide(d.offset_mass[layer].mean(axis=0)[window, window], uniform,
                                       out=np.full(uniform.shape, np.nan), where=uniform > 0)
                             for layer in range(d.offset_mass.shape[0])])
    finite = np.concatenate([m[np.isfinite(m) & (m > 0)] for _, ms in ratios.values() for m in ms])
    span = float(max(np.abs(np.log10(finite)).max(), 0.1)) if finite.size else 1.0
    norm = LogNorm(vmin=10 ** -span, vmax=10 ** span)
    for row, (label, _) in zip(axes, entries):
        r, maps = ratios[label]
        for layer, ax in enumerate(row):
            if layer >= len(maps):
                ax.set_axis_off()
                continue
            m = maps[layer]
            im = ax.imshow(np.clip(m, 10 ** -span, None), cmap="RdBu_r", norm=norm,
                           extent=(-r - 0.5, r + 0.5, r + 0.5, -r - 0.5))
            ax.set_title(f"{label}, layer {layer + 1}\n(0, 0): {m[r, r]:.2f} x uniform", fontsize=8)
            ax.set_xlabel("dc (cells)", fontsize=7)
            ax.set_ylabel("dr (cells)", fontsize=7)
            ax.tick_params(labelsize=6)
        fig.colorbar(im, ax=row.tolist(), shrink=0.8).ax.tick_params(labelsize=6)
    fig.suptitle("attention mass by relative offset (key - query) / uniform attention's, mean over heads",
                 fontsize=9)
    return fig


def summary_lines(entries: list[tuple[str, AttentionDistance]]) -> list[str]:
    """Per model: the mean distance of each layer (over heads), with the uniform one."""
    lines = []
    for label, d in entries:
        per_layer = ", ".join(f"layer {i + 1} {v:.2f}" for i, v in enumerate(d.distance.mean(axis=1)))
        lines.append(f"{label}: mean attention distance (cells) {per_layer}; uniform {d.uniform.mean():.2f}; "
                     f"{d.images} images, feature maps {', '.join(f'{h}x{w}' for h, w in d.feature_shapes)}")
    return lines

