"""Conditional DETR (Meng et al., 2021) with the project's DETR encoder, iRPE included.

The encoder is DETR's (``Encoder`` / ``EncoderLayer`` of ``transformer``): post-norm layers whose
self-attention may carry iRPE, the absolute encoding added to its queries and keys unless
``encoder_pos`` is False ("relative only"). The decoder is Conditional DETR's:

- reference points s = sigmoid(ref_point_head(query_embed)), computed once, shared by all layers;
- each layer's spatial query is sine(s) (hidden_dim / 2 features per coordinate: the reference
  hard-codes 128 and runs at hidden_dim 256 only), times 1 at layer 0 and ``query_scale`` of the
  previous layer's un-normalised output after;
- the cross-attention concatenates, per head, the content part and the positional part of queries
  and keys (so its heads are twice as wide as the values'), with no in-projection: the ``sa_*`` and
  ``ca_*`` linear layers project first; the layer-0 query and key also get the DETR-style sum of
  content and position (``ca_qpos_proj`` exists in layer 0 only);
- every layer's output goes through the shared ``decoder.norm`` for the heads; the next layer
  takes the un-normalised output;
- boxes are sigmoid(bbox_embed(h) + [logit(s), 0, 0]); class logits are sigmoid logits, one per
  class, with no no-object logit (the focal loss reads them).

Parameter names are the reference's (Atten4Vis/ConditionalDETR), so its checkpoints load with
``strict=True``: ``transformer.encoder.layers.N.self_attn.in_proj_weight``,
``transformer.decoder.layers.N.sa_qcontent_proj``, ``transformer.decoder.{norm,query_scale,
ref_point_head}``, ``class_embed``, ``bbox_embed.layers.{0,1,2}``, ``query_embed``, ``input_proj``,
``backbone.0.body.*``. iRPE adds ``rpe_{q,k,v}`` tables to the encoder self-attention only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.rpe_spec import RPESpec
from .backbone import Joiner
from .decoder_parts import ProjectedAttention, decoder_layer_forward, init_sigmoid_heads, inverse_sigmoid
from .detr import MLP, as_batch, check_num_groups, group_queries, layer_outputs
from .transformer import Encoder, EncoderLayer

#: the reference's hidden size. Its sine embedding of a reference point has 128 features per
#: coordinate, a constant in its code; here it has hidden_dim // 2, the same math at 256 (the
#: embedding feeds ca_qpos_sine_proj, a hidden_dim -> hidden_dim layer, so the reference only
#: runs at 256), which lets smaller models (the tiny configs' 128) keep the design
REFERENCE_HIDDEN_DIM = 256


#: the reference clamps a reference point to [1e-5, 1 - 1e-5] before its logit
INVERSE_SIGMOID_EPS = 1e-5


def sine_embedding(points: torch.Tensor, num_feats: int = REFERENCE_HIDDEN_DIM // 2) -> torch.Tensor:
    """(..., 2) normalised (x, y) -> (..., 2 * num_feats): [sine(y), sine(x)], each ``num_feats``
    features 2*pi*c / 10000^(2*floor(i/2)/num_feats), sine at even i and cosine at odd i (as the
    image encoding). The reference hard-codes num_feats = 128; the model passes hidden_dim // 2."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=points.device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def embed(c):
        c = (c * (2 * math.pi))[..., None] / dim_t
        return torch.stack((c[..., 0::2].sin(), c[..., 1::2].cos()), dim=-1).flatten(-2)

    return torch.cat((embed(points[..., 1]), embed(points[..., 0])), dim=-1)


class ConditionalDecoderLayer(nn.Module):
    """Conditional DETR's post-norm decoder layer (see the module docstring); ``first`` makes the
    layer-0 variant with ``ca_qpos_proj``."""

    def __init__(self, d_model: int, nhead: int, *, dim_feedforward: int = 2048, dropout: float = 0.1,
                 first: bool = False):
        super().__init__()
        linear = lambda: nn.Linear(d_model, d_model)  # noqa: E731
        self.sa_qcontent_proj, self.sa_qpos_proj = linear(), linear()
        self.sa_kcontent_proj, self.sa_kpos_proj = linear(), linear()
        self.sa_v_proj = linear()
        self.self_attn = ProjectedAttention(d_model, d_model, nhead, dropout)
        self.ca_qcontent_proj = linear()
        self.ca_qpos_proj = linear() if first else None
        self.ca_kcontent_proj, self.ca_kpos_proj = linear(), linear()
        self.ca_v_proj = linear()
        self.ca_qpos_sine_proj = linear()
        self.cross_attn = ProjectedAttention(2 * d_model, d_model, nhead, dropout)
        self.nhead = nhead
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))

    def forward(self, tgt, memory, memory_mask, pos, query_pos, query_sine_embed, num_groups: int = 1):
        """tgt, query_pos, query_sine_embed (B, Q, C); memory, pos (B, S, C); memory_mask (B, S);
        ``num_groups``: query groups kept apart in the self-attention (Group DETR)."""
        return decoder_layer_forward(self, tgt, memory, memory_mask, pos, query_pos, query_sine_embed, F.relu,
                                     num_groups=num_groups)


class ConditionalDecoder(nn.Module):
    """The decoder stack with its ``norm``, ``query_scale`` and ``ref_point_head``."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, *, dim_feedforward: int = 2048,
                 dropout: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(
            ConditionalDecoderLayer(d_model, nhead, dim_feedforward=dim_feedforward, dropout=dropout, first=i == 0)
            for i in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(d_model, d_model, 2, 2)

    def forward(self, tgt, memory, memory_mask, pos, query_pos, num_groups: int = 1):
        """Returns (normalised output of every layer (layers, B, Q, C), reference points (B, Q, 2));
        ``num_groups``: query groups kept apart in the self-attention (Group DETR)."""
        reference_points = self.ref_point_head(query_pos).sigmoid()
        sine = sine_embedding(reference_points, query_pos.shape[-1] // 2)
        outputs = []
        for i, layer in enumerate(self.layers):
            query_sine_embed = sine if i == 0 else sine * self.query_scale(tgt)
            tgt = layer(tgt, memory, memory_mask, pos, query_pos, query_sine_embed, num_groups)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs), reference_points


class ConditionalTransformer(nn.Module):
    """DETR's encoder (with iRPE and ``encoder_pos`` as ``transformer.Transformer``) and Conditional
    DETR's decoder."""

    def __init__(self, d_model: int = REFERENCE_HIDDEN_DIM, nhead: int = 8, *, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 rpe: RPESpec | None = None, encoder_pos: bool = True, attention_kernel: str = "auto"):
        super().__init__()
        enc_layer = EncoderLayer(d_model, nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                                 rpe=rpe, attention_kernel=attention_kernel)
        self.encoder = Encoder(enc_layer, num_encoder_layers)
        self.decoder = ConditionalDecoder(d_model, nhead, num_decoder_layers, dim_feedforward=dim_feedforward,
                                          dropout=dropout)
        self.d_model, self.nhead, self.encoder_pos = d_model, nhead, encoder_pos
        # as the reference: Xavier-uniform on every matrix (the iRPE tables included, as DETR's)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, mask, query_embed, pos_embed, need_weights=False, num_groups: int = 1):
        """src (B, C, H, W), mask (B, H, W) True on padding, query_embed (Q, C), pos_embed like src;
        ``num_groups`` K: the Q queries are K consecutive groups kept apart in the decoder's
        self-attention (Group DETR). Returns (decoder outputs (layers, B, Q, C), reference points (B, Q, 2), encoder weights)."""
        if pos_embed is None:
            raise ValueError("Conditional DETR's cross-attention keys need the absolute position encoding of "
                             "the feature map; the backbone's position encoding returned none (use sine)")
        B, C, H, W = src.shape
        src = src.flatten(2).transpose(1, 2)
        pos = pos_embed.flatten(2).transpose(1, 2)
        mask = mask.flatten(1)
        memory, weights = self.encoder(src, mask, pos if self.encoder_pos else None, (H, W), need_weights)
        query_pos = query_embed.unsqueeze(0).expand(B, -1, -1)
        hs, reference_points = self.decoder(torch.zeros_like(query_pos), memory, mask, pos, query_pos, num_groups)
        return hs, reference_points, weights


class ConditionalDETR(nn.Module):
    """Conditional DETR; ``forward`` returns ``pred_logits`` (B, Q, classes: sigmoid logits, no
    no-object class), ``pred_boxes`` (B, Q, 4, normalised cx, cy, w, h), ``reference_points``
    (B, Q, 2, normalised x, y) and, with auxiliary loss, ``aux_outputs`` of the earlier layers.

    ``num_groups`` K > 1 (Group DETR): in training K groups of ``num_queries`` queries, group 0
    ``query_embed``, groups 1 .. K-1 ``group_query_embed`` (built only when K > 1), each group's
    self-attention kept to the group; the outputs hold K x Q queries, group-major. In eval mode
    only group 0 runs: the model is the single-group model."""

    def __init__(self, backbone: Joiner, *, num_classes: int, num_queries: int = 300,
                 hidden_dim: int = REFERENCE_HIDDEN_DIM, nheads: int = 8, enc_layers: int = 6, dec_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, rpe: RPESpec | None = None,
                 encoder_pos: bool = True, attention_kernel: str = "auto", aux_loss: bool = True,
                 num_groups: int = 1):
        super().__init__()
        check_num_groups(num_groups)
        if hidden_dim % 4 or hidden_dim % nheads:
            raise ValueError(f"Conditional DETR needs hidden_dim divisible by 4 and by nheads, got hidden_dim "
                             f"{hidden_dim} and nheads {nheads}: the sine embedding of its reference points has "
                             f"hidden_dim / 2 features per coordinate, sine-cosine pairs (the reference: 128 at 256), "
                             f"and each head takes hidden_dim / nheads of them")
        if dec_layers < 1:
            raise ValueError(f"Conditional DETR needs at least one decoder layer, got dec_layers={dec_layers}")
        self.num_queries, self.num_classes, self.aux_loss = num_queries, num_classes, aux_loss
        self.transformer = ConditionalTransformer(hidden_dim, nheads, num_encoder_layers=enc_layers,
                                                  num_decoder_layers=dec_layers, dim_feedforward=dim_feedforward,
                                                  dropout=dropout, rpe=rpe, encoder_pos=encoder_pos,
                                                  attention_kernel=attention_kernel)
        self.class_embed = nn.Linear(hidden_dim, num_classes)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden_dim, kernel_size=1)
        self.backbone = backbone
        # focal-loss prior: every class starts at probability 0.01; boxes start at the reference point
        init_sigmoid_heads(self.class_embed, self.bbox_embed)
        # built last, so that every other parameter draws what it would in a single-group model
        self.num_groups = num_groups
        self.group_query_embed = nn.Embedding((num_groups - 1) * num_queries, hidden_dim) if num_groups > 1 else None

    def forward(self, images, mask: torch.Tensor | None = None, need_weights: bool = False) -> dict:
        """``images``: a list of CHW tensors (padded here) or a padded (B, 3, H, W) batch with its
        mask (True on padding; None means no padding). ``need_weights`` adds the encoder
        self-attention maps under ``encoder_attention`` (one (B, heads, L, L) tensor per layer) and
        the feature map's (H, W) under ``feature_shape``."""
        images, mask = as_batch(images, mask)
        feat, mask, pos = self.backbone(images, mask)
        queries, groups = group_queries(self, self.query_embed.weight, self.group_query_embed)
        hs, reference_points, weights = self.transformer(self.input_proj(feat), mask, queries, pos,
                                                         need_weights=need_weights, num_groups=groups)
        logits = self.class_embed(hs)
        offset = inverse_sigmoid(reference_points, INVERSE_SIGMOID_EPS)
        offset = torch.cat([offset, torch.zeros_like(offset)], dim=-1)
        boxes = (self.bbox_embed(hs) + offset).sigmoid()
        out = layer_outputs(logits, boxes, self.aux_loss, weights if need_weights else None, feat.shape[-2:])
        out["reference_points"] = reference_points
        return out
