"""DAB-DETR (Liu et al., 2022: dynamic anchor boxes) with the project's encoder, iRPE included.

Each query owns a learned anchor box A = (x, y, w, h) (``refpoint_embed``, stored before the
sigmoid), refined by every decoder layer. Compared with Conditional DETR:

- Encoder: post-norm ``EncoderLayer`` s of ``transformer`` with a PReLU feed-forward; before every
  layer (layer 0 included) the absolute encoding is scaled per token and channel by
  ``encoder.query_scale`` (an MLP of the layer's input), so q = k = src + pos * query_scale(src)
  and v = src. iRPE, when configured, enters that self-attention exactly as in DETR's encoder.
  The image encoding is the sine of ``position_encoding`` at temperature 20 (the caller builds it).
- Decoder, per layer: S = sine(A) has 4 x d/2 features ordered [y, x, w, h] (temperature 10000);
  the positional query is ``ref_point_head(S)`` (2d -> d -> d); the spatial query of the
  cross-attention is S[:d] times 1 at layer 0 and ``query_scale(output)`` after, its x half then
  scaled by w_r / w and its y half by h_r / h with (w_r, h_r) = sigmoid(ref_anchor_head(output))
  (the modulated attention, at every layer). Self- and cross-attention are Conditional DETR's (no
  in-projection; the cross-attention concatenates content and position per head; ``ca_qpos_proj``
  in layer 0 only).
- Refinement: A' = sigmoid(bbox_embed(output) + logit(A)) from the un-normalised output; the next
  layer gets A' detached. The heads read the normalised outputs: box_l = sigmoid(bbox_embed(
  norm(output_l)) + logit(A_l)). One ``bbox_embed`` serves the decoder and the head (the state dict
  holds it twice, ``bbox_embed.*`` and ``transformer.decoder.bbox_embed.*``, the same tensors).
- ``num_patterns`` k > 0: ``transformer.patterns`` (k x d) are the decoder's initial content; the
  queries become pattern-major k x num_queries, each pattern paired with every anchor.
- Classes: sigmoid logits, one per class, no no-object logit (the focal loss reads them).

Parameter names are the reference's (IDEA-Research/DAB-DETR), so its checkpoints load with
``strict=True``. iRPE adds ``rpe_{q,k,v}`` tables to the encoder self-attention only.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.names import ACTIVATIONS
from ..core.rpe_spec import RPESpec
from .backbone import Joiner
from .decoder_parts import ProjectedAttention, decoder_layer_forward, init_sigmoid_heads, inverse_sigmoid
from .denoising import NoisedTargets, attention_mask, denoising_queries, matching_content, noise_targets, split_outputs
from .detr import MLP, as_batch, check_num_groups, group_queries, layer_outputs
from .transformer import EncoderLayer

#: the reference's logit clamps its argument to [1e-3, 1 - 1e-3] (Conditional DETR's to 1e-5)
INVERSE_SIGMOID_EPS = 1e-3
#: the temperature of the anchors' sine embedding (the image encoding's is the caller's: 20)
ANCHOR_TEMPERATURE = 10000.0
#: the encoder's query_scale is 256 wide in the reference whatever the model width, so the
#: reference runs at hidden_dim 256 only; this model follows hidden_dim
REFERENCE_HIDDEN_DIM = 256


def anchor_sine_embedding(anchors: torch.Tensor, d_model: int) -> torch.Tensor:
    """(..., 4) normalised (x, y, w, h) -> (..., 2 * d_model): [sine(y), sine(x), sine(w), sine(h)],
    each d_model / 2 features 2*pi*c / 10000^(2*floor(i/2)/(d_model/2)), sine at even i, cosine at
    odd i."""
    n = d_model // 2
    dim_t = torch.arange(n, dtype=torch.float32, device=anchors.device)
    dim_t = ANCHOR_TEMPERATURE ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / n)

    def embed(c):
        c = (c * (2 * math.pi))[..., None] / dim_t
        return torch.stack((c[..., 0::2].sin(), c[..., 1::2].cos()), dim=-1).flatten(-2)

    x, y, w, h = anchors.unbind(-1)
    return torch.cat((embed(y), embed(x), embed(w), embed(h)), dim=-1)


class DABEncoder(nn.Module):
    """DAB-DETR's encoder: ``layers`` (post-norm ``EncoderLayer`` s, iRPE when configured) and
    ``query_scale``, an MLP d -> d -> d of each layer's input that scales the absolute encoding
    per token and channel, at every layer: q = k = src + pos * query_scale(src), v = src.

    ``encoder_pos`` False (the "relative only" setting): no absolute term at all in the encoder's
    queries and keys (q = k = src; position enters only through iRPE), and no ``query_scale``
    module, which would have nothing to scale. The decoder's cross-attention keys still get the
    absolute encoding."""

    def __init__(self, layer: EncoderLayer, num_layers: int, d_model: int, encoder_pos: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.query_scale = MLP(d_model, d_model, d_model, 2) if encoder_pos else None
        self.encoder_pos = encoder_pos

    def forward(self, src, mask=None, pos=None, shape=None, need_weights=False):
        """src, pos (B, L, C); mask (B, L) True on padding; shape (H, W). Returns (memory, the
        attention weights of each layer or Nones)."""
        weights = []
        for layer in self.layers:
            scaled = pos * self.query_scale(src) if self.encoder_pos else None
            src, w = layer(src, mask, scaled, shape, need_weights)
            weights.append(w)
        return src, weights


class DABDecoderLayer(nn.Module):
    """DAB-DETR's post-norm decoder layer: self-attention of the queries, cross-attention with
    per-head [content ; position] queries and keys, PReLU (or ReLU) feed-forward. ``first`` makes
    the layer-0 variant, whose query and key also get the sum of content and position
    (``ca_qpos_proj``)."""

    def __init__(self, d_model: int, nhead: int, *, dim_feedforward: int = 2048, dropout: float = 0.0,
                 activation: str = "prelu", first: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"decoder activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        linear = lambda: nn.Linear(d_model, d_model)  # noqa: E731
        self.sa_qcontent_proj, self.sa_qpos_proj = linear(), linear()
        self.sa_kcontent_proj, self.sa_kpos_proj = linear(), linear()
        self.sa_v_proj = linear()
        self.self_attn = ProjectedAttention(d_model, d_model, nhead, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.ca_qcontent_proj = linear()
        self.ca_qpos_proj = linear() if first else None
        self.ca_kcontent_proj, self.ca_kpos_proj = linear(), linear()
        self.ca_v_proj = linear()
        self.ca_qpos_sine_proj = linear()
        self.cross_attn = ProjectedAttention(2 * d_model, d_model, nhead, dropout)
        self.nhead = nhead
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.activation = nn.PReLU() if activation == "prelu" else None

    def forward(self, tgt, memory, memory_mask, pos, query_pos, query_sine_embed, self_attn_mask=None,
                num_groups: int = 1):
        """tgt, query_pos, query_sine_embed (B, Q, C); memory, pos (B, S, C); memory_mask (B, S);
        self_attn_mask (Q, Q) bool, True where query i may not attend to query j; ``num_groups``:
        query groups kept apart in the self-attention (Group DETR)."""
        act = F.relu if self.activation is None else self.activation
        return decoder_layer_forward(self, tgt, memory, memory_mask, pos, query_pos, query_sine_embed, act,
                                     self_attn_mask=self_attn_mask, num_groups=num_groups)


class DABDecoder(nn.Module):
    """The decoder stack with ``norm``, ``query_scale`` (d -> d -> d), ``ref_point_head``
    (2d -> d -> d), ``ref_anchor_head`` (d -> d -> 2) and, once the detector attaches it, the
    shared ``bbox_embed`` that refines the anchors between layers."""

    def __init__(self, layer: DABDecoderLayer, num_layers: int, d_model: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"DAB-DETR needs at least one decoder layer, got {num_layers}")
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        for later in self.layers[1:]:
            later.ca_qpos_proj = None
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.ref_anchor_head = MLP(d_model, d_model, 2, 2)
        self.bbox_embed: MLP | None = None  # the detector's box head, attached by DABDETR
        self.d_model = d_model

    def forward(self, tgt, memory, memory_mask, pos, refpoints_unsigmoid, self_attn_mask=None,
                num_groups: int = 1):
        """tgt (B, Q, C) initial content; memory, pos (B, S, C); memory_mask (B, S);
        refpoints_unsigmoid (B, Q, 4); self_attn_mask (Q, Q) bool, True where query i may not
        attend to query j (the denoising groups of ``denoising``); ``num_groups``: query groups
        kept apart in the self-attention (Group DETR). Returns (normalised output of every layer (layers, B, Q, C),
        the anchor each layer used (layers, B, Q, 4), in the graph as the reference returns them)."""
        if self.bbox_embed is None and len(self.layers) > 1:
            raise ValueError("the decoder refines its anchors with the detector's bbox_embed; attach it first")
        d = self.d_model
        anchors = refpoints_unsigmoid.sigmoid()  # what the layer computes with
        used = [anchors]  # what the heads read: the refined anchors before the detach
        outputs = []
        output = tgt
        for i, layer in enumerate(self.layers):
            sine = anchor_sine_embedding(anchors, d)
            query_pos = self.ref_point_head(sine)
            spatial = sine[..., :d] if i == 0 else sine[..., :d] * self.query_scale(output)
            ref_wh = self.ref_anchor_head(output).sigmoid()
            # modulated attention: the y half by h_r / h, the x half by w_r / w
            spatial = torch.cat((spatial[..., : d // 2] * (ref_wh[..., 1] / anchors[..., 3]).unsqueeze(-1),
                                 spatial[..., d // 2:] * (ref_wh[..., 0] / anchors[..., 2]).unsqueeze(-1)), dim=-1)
            output = layer(output, memory, memory_mask, pos, query_pos, spatial, self_attn_mask, num_groups)
            if i < len(self.layers) - 1:  # the last layer's refinement would feed nothing
                refined = (self.bbox_embed(output) + inverse_sigmoid(anchors, INVERSE_SIGMOID_EPS)).sigmoid()
                used.append(refined)
                anchors = refined.detach()
            outputs.append(self.norm(output))
        return torch.stack(outputs), torch.stack(used)


class DABTransformer(nn.Module):
    """DAB-DETR's encoder (``DABEncoder``: the project's encoder layers, iRPE included) and decoder,
    and ``patterns`` when ``num_patterns`` > 0."""

    def __init__(self, d_model: int = REFERENCE_HIDDEN_DIM, nhead: int = 8, *, num_queries: int = 300,
                 num_encoder_layers: int = 6, num_decoder_layers: int = 6, dim_feedforward: int = 2048,
                 dropout: float = 0.0, activation: str = "prelu", rpe: RPESpec | None = None,
                 encoder_pos: bool = True, attention_kernel: str = "auto", num_patterns: int = 0):
        super().__init__()
        if num_patterns < 0:
            raise ValueError(f"num_patterns must be >= 0, got {num_patterns}")
        enc_layer = EncoderLayer(d_model, nhead, dim_feedforward=dim_feedforward, dropout=dropout, rpe=rpe,
                                 attention_kernel=attention_kernel, activation=activation)
        self.encoder = DABEncoder(enc_layer, num_encoder_layers, d_model, encoder_pos)
        dec_layer = DABDecoderLayer(d_model, nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                                    activation=activation)
        self.decoder = DABDecoder(dec_layer, num_decoder_layers, d_model)
        # as the reference: Xavier-uniform on every matrix built so far (the iRPE tables included,
        # as DETR's); the patterns below keep N(0, 1)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.patterns = nn.Embedding(num_patterns, d_model) if num_patterns > 0 else None
        self.d_model, self.nhead, self.num_queries, self.num_patterns = d_model, nhead, num_queries, num_patterns
        self.encoder_pos = encoder_pos

    def forward(self, src, mask, refpoint_embed, pos_embed, need_weights=False, query_content=None, denoising=None,
                num_groups: int = 1):
        """src (B, C, H, W), mask (B, H, W) True on padding, refpoint_embed (Q, 4) before the sigmoid,
        pos_embed like src. Returns (decoder outputs (layers, B, Q', C), anchors (layers, B, Q', 4),
        encoder weights), Q' = num_patterns x Q with patterns (pattern-major), else Q.
        ``query_content`` (C,): the content every query starts from (plus its pattern) instead of
        zeros; ``denoising``: (content (B, P, C), anchor logits (B, P, 4), self-attention mask
        (P + Q', P + Q')) of P denoising queries put before the others (Q' becomes P + Q').
        ``num_groups`` K (Group DETR; not with ``denoising``): the Q anchors are K consecutive
        groups of Q / K, with patterns each group pattern-major on its own (Q' = K x num_patterns x
        Q / K), the groups kept apart in the decoder's self-attention."""
        if pos_embed is None:
            raise ValueError("DAB-DETR's cross-attention keys need the absolute position encoding of the "
                             "feature map; the backbone's position encoding returned none (use sine)")
        B, C, H, W = src.shape
        src = src.flatten(2).transpose(1, 2)
        pos = pos_embed.flatten(2).transpose(1, 2)
        mask = mask.flatten(1)
        memory, weights = self.encoder(src, mask, pos, (H, W), need_weights)
        Q = refpoint_embed.shape[0]
        if self.patterns is None:
            tgt = memory.new_zeros(B, Q, C) if query_content is None else query_content.expand(B, Q, C)
        elif num_groups > 1:
            k, n = self.num_patterns, Q // num_groups
            # query (g * k + p) * n + q: group g, pattern p's content with the group's anchor q
            tgt = self.patterns.weight[None, :, None, :].expand(num_groups, k, n, C).reshape(num_groups * k * n, C)
            tgt = tgt.unsqueeze(0).expand(B, -1, -1)
            if query_content is not None:
                tgt = tgt + query_content
            refpoint_embed = refpoint_embed.view(num_groups, 1, n, 4).expand(-1, k, -1, -1).reshape(-1, 4)
        else:
            k = self.num_patterns
            # query p * Q + q: pattern p's content with anchor q
            tgt = self.patterns.weight[:, None, :].expand(k, Q, C).reshape(k * Q, C).unsqueeze(0).expand(B, -1, -1)
            if query_content is not None:
                tgt = tgt + query_content
            refpoint_embed = refpoint_embed.repeat(k, 1)
        refpoints = refpoint_embed.unsqueeze(0).expand(B, -1, -1)
        self_attn_mask = None
        if denoising is not None:
            if num_groups > 1:
                raise ValueError("query denoising and Group DETR's query groups cannot be combined")
            dn_content, dn_anchors, self_attn_mask = denoising
            tgt, refpoints = torch.cat([dn_content, tgt], dim=1), torch.cat([dn_anchors, refpoints], dim=1)
        hs, anchors = self.decoder(tgt, memory, mask, pos, refpoints, self_attn_mask, num_groups)
        return hs, anchors, weights


class DABDETR(nn.Module):
    """DAB-DETR; ``forward`` returns ``pred_logits`` (B, Q', classes: sigmoid logits, no no-object
    class), ``pred_boxes`` (B, Q', 4, normalised cx, cy, w, h), ``anchors`` (decoder layers, B, Q',
    4: the anchor box each layer used, normalised cx, cy, w, h) and, with auxiliary loss,
    ``aux_outputs`` of the earlier layers; Q' = num_patterns x num_queries with patterns, else
    num_queries.

    ``backbone`` is a ``Joiner`` whose position encoding is the sine at temperature 20 for the
    reference's model (``build_position_encoding("sine", hidden_dim, temperature=20)``).
    ``random_refpoints_xy`` initialises the anchors' x, y as logit(U(0, 1)); as in the reference
    they are not frozen (its ``requires_grad = False`` lands on a copy), so they still train.
    ``encoder_pos`` False is the "relative only" encoder of ``DABEncoder``: no absolute term in the
    encoder's queries and keys, no ``transformer.encoder.query_scale``.

    ``dn_groups`` > 0 adds DN-DETR's query denoising (``denoising``): ``label_enc`` (num_classes + 1
    rows of hidden_dim - 1, the reference's name) gives every matching query its content
    (``label_enc(num_classes)``, indicator 0) in training and inference; in training, ``forward``
    with ``targets`` puts ``dn_groups`` groups of noised ground truth (labels flipped with
    probability ``dn_label_noise``, boxes moved by up to ``dn_box_noise`` of their size) before
    the matching queries and returns their outputs under ``dn`` (for
    ``denoising.DenoisingFocalSetCriterion``); the other outputs are the matching queries' alone.

    ``num_groups`` K > 1 (Group DETR; not with ``dn_groups``): in training K groups of
    ``num_queries`` anchors (each with the patterns), group 0 ``refpoint_embed``, groups 1 .. K-1
    ``group_refpoint_embed`` (built only when K > 1, initialised as ``refpoint_embed``), each
    group's self-attention kept to the group; the outputs hold K x Q' queries, group-major. In
    eval mode only group 0 runs: the model is the single-group model."""

    def __init__(self, backbone: Joiner, *, num_classes: int, num_queries: int = 300,
                 hidden_dim: int = REFERENCE_HIDDEN_DIM, nheads: int = 8, enc_layers: int = 6, dec_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.0, activation: str = "prelu",
                 rpe: RPESpec | None = None, encoder_pos: bool = True, attention_kernel: str = "auto",
                 aux_loss: bool = True, num_patterns: int = 0, random_refpoints_xy: bool = False,
                 dn_groups: int = 0, dn_label_noise: float = 0.2, dn_box_noise: float = 0.4,
                 num_groups: int = 1):
        super().__init__()
        check_num_groups(num_groups)
        if num_groups > 1 and dn_groups > 0:
            raise ValueError(f"num_groups={num_groups} (Group DETR) and dn_groups={dn_groups} (query denoising) "
                             f"cannot be combined; set one of them off")
        if hidden_dim % nheads or hidden_dim % 4:
            raise ValueError(f"DAB-DETR needs hidden_dim divisible by nheads ({nheads}) and by 4 (its anchors' sine "
                             f"embedding gives each coordinate hidden_dim / 2 sine-cosine features), got {hidden_dim}")
        self.num_queries, self.num_classes, self.aux_loss = num_queries, num_classes, aux_loss
        self.transformer = DABTransformer(hidden_dim, nheads, num_queries=num_queries, num_encoder_layers=enc_layers,
                                          num_decoder_layers=dec_layers, dim_feedforward=dim_feedforward,
                                          dropout=dropout, activation=activation, rpe=rpe, encoder_pos=encoder_pos,
                                          attention_kernel=attention_kernel, num_patterns=num_patterns)
        self.class_embed = nn.Linear(hidden_dim, num_classes)
        if dn_groups < 0:
            raise ValueError(f"dn_groups must be >= 0, got {dn_groups}")
        self.dn_groups, self.dn_label_noise, self.dn_box_noise = dn_groups, dn_label_noise, dn_box_noise
        # the denoising label embedding (its last feature is the indicator); only with denoising
        self.label_enc = nn.Embedding(num_classes + 1, hidden_dim - 1) if dn_groups > 0 else None
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.refpoint_embed = nn.Embedding(num_queries, 4)
        if random_refpoints_xy:
            _random_xy(self.refpoint_embed)
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden_dim, kernel_size=1)
        self.backbone = backbone
        self.transformer.decoder.bbox_embed = self.bbox_embed  # one box head: refinement and predictions
        # focal-loss prior: every class starts at probability 0.01; boxes start at their anchors
        init_sigmoid_heads(self.class_embed, self.bbox_embed)
        # Group DETR's extra anchor groups, built last, so that every other parameter draws what it
        # would in a single-group model
        self.num_groups = num_groups
        self.group_refpoint_embed = nn.Embedding((num_groups - 1) * num_queries, 4) if num_groups > 1 else None
        if self.group_refpoint_embed is not None and random_refpoints_xy:
            _random_xy(self.group_refpoint_embed)

    def forward(self, images, mask: torch.Tensor | None = None, need_weights: bool = False,
                targets: list[dict] | None = None, noised: NoisedTargets | None = None) -> dict:
        """``images``: a list of CHW tensors (padded here) or a padded (B, 3, H, W) batch with its
        mask (True on padding; None means no padding). ``need_weights`` adds the encoder
        self-attention maps under ``encoder_attention`` (one (B, heads, L, L) tensor per layer) and
        the feature map's (H, W) under ``feature_shape``. ``targets`` (per image ``labels`` and
        normalised ``boxes``): read only in training with denoising, where they are required;
        ``noised``: denoising queries drawn beforehand (``denoising.noise_targets``), used instead
        of drawing from ``targets``."""
        images, mask = as_batch(images, mask)
        dn = None
        if self.dn_groups > 0 and self.training:
            if noised is None:
                if targets is None:
                    raise ValueError("model.dn_groups > 0: training needs the targets for the denoising queries; "
                                     "call model(images, mask, targets=targets)")
                noised = noise_targets(targets, self.dn_groups, self.dn_label_noise, self.dn_box_noise,
                                       self.num_classes)
            if noised.pad_size > 0:
                dn = noised
        feat, mask, pos = self.backbone(images, mask)
        content = None if self.label_enc is None else matching_content(self.label_enc, self.num_classes)
        denoising = None
        if dn is not None:
            queries = self.transformer.num_queries * max(self.transformer.num_patterns, 1)
            counts = [dn.single_pad]  # the mask depends on the largest count only
            denoising = (*denoising_queries(dn, self.label_enc, feat.shape[0]),
                         attention_mask(queries, dn.groups, counts, device=feat.device))
        refpoints, groups = group_queries(self, self.refpoint_embed.weight, self.group_refpoint_embed)
        hs, anchors, weights = self.transformer(self.input_proj(feat), mask, refpoints, pos,
                                                need_weights=need_weights, query_content=content,
                                                denoising=denoising, num_groups=groups)
        logits = self.class_embed(hs)
        boxes = (self.bbox_embed(hs) + inverse_sigmoid(anchors, INVERSE_SIGMOID_EPS)).sigmoid()
        part = None
        if dn is not None:
            logits, boxes, part = split_outputs(logits, boxes, dn, self.aux_loss)
            anchors = anchors[:, :, dn.pad_size:]
        out = layer_outputs(logits, boxes, self.aux_loss, weights if need_weights else None, feat.shape[-2:])
        out["anchors"] = anchors
        if part is not None:
            out["dn"] = part
        return out


def _random_xy(embedding: nn.Embedding) -> None:
    """Anchor centres logit(U(0, 1)) (the reference's ``random_refpoints_xy``)."""
    with torch.no_grad():
        xy = embedding.weight[:, :2]
        xy.copy_(inverse_sigmoid(xy.uniform_(0, 1), INVERSE_SIGMOID_EPS))
