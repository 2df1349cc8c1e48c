"""The architecture of a DETR / iRPE-DETR / Conditional DETR / DAB-DETR read from its weights alone.

A state dict in this project's parameter names (those of the reference codes) tells, by its
names and shapes: the decoder (DAB-DETR's anchors, Conditional DETR's reference-point head, or
DETR's), the backbone (ResNet depth from the block counts and block type, or ``cnn_tiny``
and its width), its norm (batch norm keeps ``num_batches_tracked``, frozen batch norm only the
statistics, group norm neither), hidden size, encoder / decoder layers, feed-forward width, queries,
classes (class-head rows, less DETR's no-object row), DAB-DETR's patterns and PReLU, pre-norm (a final encoder norm), a learned absolute encoding (it has
parameters) and the iRPE: its sides, mode, method (cross keeps rows / cols tables), shared or
per-head tables, and its bucket count, hence the ratio. The number of heads shows only in
contextual iRPE tables (their head dimension) and in per-head bias tables.

What the weights do not tell (:data:`UNTOLD`): the dilation of the last stage (DC5), the number of
heads without such iRPE tables, the sine encoding versus none, the absolute encoding in the encoder
(``encoder_abs_pos``) and the auxiliary outputs, and for DAB-DETR the sine temperature, the
detections kept and the random anchor initialisation; the configuration defaults (for a decoder of
the family, its reference recipe's: :data:`RECIPE_DEFAULTS`) are used unless a value is given. The iRPE ratio is told only up to its bucket count: every ratio r with the same
floor(2 r) gives the same tables, so the ratio is taken from :data:`RATIOS_IN_USE` when exactly one
of them fits, and euc / quant tables are alike, so those must be given (``model.irpe=...``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..config import Config, load_config
from ..core.errors import SourceError
from ..models import build_model
from ..core.names import SIGMOID_DECODERS
from ..core.rpe_spec import METHODS, RPESpec
from ..models.irpe import RelativePositionEncoding

#: iRPE ratios of the paper and the released models (7x7, 9x9, 11x11, 13x13 product tables)
RATIOS_IN_USE = (1.9, 2.0, 2.5, 3.0)

#: config keys whose values the weights never tell, with the values they allow
UNTOLD = {
    "model.backbone.dilation": "true or false (DC5 keeps every shape)",
    "model.nheads": "a divisor of hidden_dim (told only by contextual or per-head iRPE tables)",
    "model.position_embedding": "sine or none (neither has parameters)",
    "model.encoder_abs_pos": "true or false",
    "model.aux_loss": "true or false",
    "model.pe_temperature": "a number > 0 (DAB-DETR's recipe: 20)",
    "model.num_select": "a count > 0 (DAB-DETR's recipe: 300)",
    "model.random_refpoints_xy": "true or false",
}

#: ResNet block counts per stage and block type (torchvision)
RESNET_LAYOUTS = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
}

#: keys every state dict of the family holds
DETR_KEYS = ("backbone.0.body.conv1.weight", "input_proj.weight", "class_embed.weight", "bbox_embed.layers.0.weight",
             "transformer.decoder.norm.weight")
#: keys each decoder's weights hold
DECODER_KEYS = {
    "detr": ("query_embed.weight", "transformer.decoder.layers.0.multihead_attn.in_proj_weight"),
    "conditional": ("query_embed.weight", "transformer.decoder.ref_point_head.layers.0.weight",
                    "transformer.decoder.layers.0.ca_qcontent_proj.weight"),
    "dab": ("refpoint_embed.weight", "transformer.decoder.ref_anchor_head.layers.0.weight",
            "transformer.decoder.layers.0.ca_qcontent_proj.weight"),
}
_CONTENT_PROJ = "transformer.decoder.layers.0.ca_qcontent_proj.weight"


def _own_keys(shapes) -> dict[str, list[str]]:
    """For each decoder, the keys present that no other decoder has (Conditional DETR's: a query
    embedding beside the projected cross-attention, which DETR lacks and DAB-DETR has no embedding for)."""
    return {
        "detr": [k for k in ("transformer.decoder.layers.0.multihead_attn.in_proj_weight",) if k in shapes],
        "conditional": ["query_embed.weight"] if "query_embed.weight" in shapes and _CONTENT_PROJ in shapes else [],
        "dab": [k for k in ("refpoint_embed.weight", "transformer.decoder.ref_anchor_head.layers.0.weight")
                if k in shapes],
    }
#: DN-DETR's denoising groups (its ``scalar``), for weights with a denoising label embedding
DN_GROUPS = 5
#: what a decoder's weights leave open, set as its reference recipe does
RECIPE_DEFAULTS = {
    "dab": {"model.pe_temperature": 20.0, "model.num_select": 300, "model.random_refpoints_xy": False},
}

_BODY = "backbone.0.body."
_ENC_ATTN = "transformer.encoder.layers.0.self_attn."


@dataclass(frozen=True)
class Inferred:
    """``overrides``: ``key=value`` strings that rebuild the weights' architecture (values given
    by the caller included where they settled a choice); ``undetermined``: config keys the weights
    do not tell and nobody gave (the defaults apply; ``model.irpe`` when its ratio was taken from
    :data:`RATIOS_IN_USE`)."""

    overrides: list[str]
    undetermined: list[str]


@dataclass(frozen=True)
class _Fact:
    """What the weights say about one config key."""

    key: str
    #: values to choose from when none is given: one is taken, several or none are an error;
    #: None means the weights do not tell it and the default applies
    choices: tuple | None
    fits: Callable[[object], bool]
    #: what the weights hold, for messages
    shown: str
    told: bool = True
    #: the error when no single choice is left
    hint: str = ""


def infer_overrides(state: dict, *, source: str, given: Sequence[str] = ()) -> list[str]:
    """``key=value`` overrides that rebuild the model whose weights are ``state`` (see
    :func:`infer_architecture`)."""
    return infer_architecture(state, source=source, given=given).overrides


def infer_architecture(state: dict, *, source: str, given: Sequence[str] = ()) -> Inferred:
    """Read the architecture of a DETR state dict (this project's / the reference's names).

    ``given``: ``key=value`` overrides known from elsewhere (a zoo entry, the user); each is checked
    against the weights and settles what they leave open. ``source`` names the weights in errors.
    Raises SourceError for a state dict that is no DETR, a given value the weights contradict, and
    a choice the weights leave open (an iRPE that fits several or no ratio in use) that is not given.
    """
    shapes = _shapes(state, source)
    facts = _architecture_facts(shapes, source)
    told = [f"{f.key}={_format(f.choices[0])}" for f in facts if f.told]
    given = list(given)
    given_keys = [item.split("=", 1)[0].strip() for item in given]
    given_cfg = load_config(None, [*told, *given]) if given else None

    overrides, undetermined = [], []
    settled = {f.key: _settle(f, given_cfg, given_keys, overrides, undetermined, source) for f in facts}
    _settle(_irpe_fact(shapes, settled["model.nheads"]), given_cfg, given_keys, overrides, undetermined, source)
    _check_shapes(shapes, overrides, source)
    return Inferred(overrides=overrides, undetermined=undetermined)


def _settle(fact: _Fact, given_cfg, given_keys, overrides: list, undetermined: list, source: str):
    """The value of ``fact``: the given one (checked), the single choice, or the default."""
    key = fact.key
    if any(g == key or g.startswith(key + ".") or key.startswith(g + ".") for g in given_keys):
        value = _lookup(given_cfg, key)
        if not fact.fits(value):
            raise SourceError(f"{source}: {key}={_format(value)} was given, but the weights have {fact.shown}")
        overrides.append(f"{key}={_format(value)}")
        return value
    if not fact.told:
        undetermined.append(key)
    if fact.choices is None:
        return _lookup(Config(), key)
    if len(fact.choices) != 1:
        raise SourceError(f"{source}: {fact.hint}")
    overrides.append(f"{key}={_format(fact.choices[0])}")
    return fact.choices[0]


def _shapes(state, source: str) -> dict[str, tuple]:
    if not isinstance(state, dict) or not state:
        raise SourceError(f"{source}: expected a state dict (parameter name -> tensor), got {type(state).__name__}")
    missing = [k for k in DETR_KEYS if k not in state]
    if missing:
        keys = list(state)
        hint = ""
        if all(isinstance(k, str) and k.startswith("module.") for k in keys):
            hint = " (its keys start with 'module.': strip that prefix)"
        elif any(isinstance(k, str) and k.startswith("model.backbone.conv_encoder.") for k in keys):
            hint = " (these are Hugging Face DETR names: load the folder with its config.json)"
        raise SourceError(f"{source}: not a DETR state dict{hint}: it has {len(keys)} keys such as "
                          f"{', '.join(map(str, keys[:4]))}; expected {', '.join(missing[:4])}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise SourceError(f"{source}: state dict entry {bad[0]!r} is a {type(state[bad[0]]).__name__}, not a tensor")
    return {k: tuple(v.shape) for k, v in state.items()}


def decoder_of(shapes, source: str) -> str:
    """The decoder whose weights ``shapes`` (keys, or key -> shape) hold; a SourceError when they
    hold none, only part of one, or mix several."""
    own = _own_keys(shapes)
    kinds = [d for d, keys in own.items() if keys]
    if len(kinds) > 1:
        raise SourceError(f"{source}: the weights mix the decoders {' and '.join(kinds)} (e.g. "
                          f"{', '.join(own[d][0] for d in kinds)}); expected the weights of one model")
    if not kinds:
        raise SourceError(f"{source}: not a DETR-family state dict: no decoder's weights (expected e.g. "
                          f"{' or '.join(keys[1] for keys in DECODER_KEYS.values())})")
    missing = [k for k in DECODER_KEYS[kinds[0]] if k not in shapes]
    if missing:
        raise SourceError(f"{source}: the weights of a {kinds[0]} decoder lack {', '.join(missing)}")
    return kinds[0]


def _architecture_facts(shapes: dict[str, tuple], source: str) -> list[_Fact]:
    """Every fact but the iRPE's, which depends on the settled number of heads."""
    facts = _backbone_facts(shapes, source)
    decoder = decoder_of(shapes, source)
    hidden = shapes["input_proj.weight"][0]
    queries_key = "refpoint_embed.weight" if decoder == "dab" else "query_embed.weight"
    queries = shapes[queries_key][0]
    no_object = 0 if decoder in SIGMOID_DECODERS else 1
    classes = shapes["class_embed.weight"][0] - no_object
    if classes < 1:
        raise SourceError(f"{source}: class_embed.weight has {classes + no_object} rows; a {decoder} class head has "
                          f"num_classes{' + 1' if no_object else ''} >= {1 + no_object}")
    enc = _layer_count(shapes, "transformer.encoder.layers.", source)
    dec = _layer_count(shapes, "transformer.decoder.layers.", source)
    if not dec:
        raise SourceError(f"{source}: no transformer.decoder.layers; a DETR has at least one decoder layer")
    linear1 = shapes["transformer.decoder.layers.0.linear1.weight"]
    facts += [
        _told("model.decoder", decoder, f"the weights of the {decoder} decoder"),
        _told("model.hidden_dim", hidden, f"input_proj.weight of shape {shapes['input_proj.weight']}"),
        _told("model.num_queries", queries, f"{queries_key} of shape {shapes[queries_key]}"),
        _told("model.num_classes", classes, f"class_embed.weight of shape {shapes['class_embed.weight']}"),
        _told("model.enc_layers", enc, f"{enc} transformer.encoder.layers"),
        _told("model.dec_layers", dec, f"{dec} transformer.decoder.layers"),
        _told("model.dim_feedforward", linear1[0], f"decoder linear1 of shape {linear1}"),
        _told("model.pre_norm", "transformer.encoder.norm.weight" in shapes,
              "a final encoder norm" if "transformer.encoder.norm.weight" in shapes else "no final encoder norm"),
    ]
    if "backbone.1.row_embed.weight" in shapes:
        facts.append(_told("model.position_embedding", "learned", "learned row / column embeddings"))
    else:
        facts.append(_untold("model.position_embedding", lambda v: v in ("sine", "none"),
                             "no learned position embedding"))
    facts.append(_untold("model.encoder_abs_pos", lambda v: isinstance(v, bool), "no trace of it"))
    facts.append(_untold("model.aux_loss", lambda v: isinstance(v, bool), "no trace of it"))
    facts.append(_heads_fact(shapes, hidden))
    if decoder == "dab":
        facts += _dab_facts(shapes)
    facts.append(_groups_fact(shapes, queries_key, queries))
    return facts


def _groups_fact(shapes: dict[str, tuple], queries_key: str, queries: int) -> _Fact:
    """Group DETR's query groups: the extra groups' embedding holds (groups - 1) x queries rows
    (only group 0 runs at inference)."""
    key = "group_" + queries_key
    groups = shapes[key][0] // queries + 1 if key in shapes else 1
    return _told("model.num_groups", groups, f"{key} of shape {shapes[key]}" if key in shapes else "no query groups")


def _dab_facts(shapes: dict[str, tuple]) -> list[_Fact]:
    """DAB-DETR's patterns and activation (told), and what its recipe sets that the weights do not show."""
    patterns = shapes.get("transformer.patterns.weight", (0,))[0]
    prelu = "transformer.decoder.layers.0.activation.weight" in shapes
    facts = [_told("model.num_patterns", patterns, f"{patterns} pattern embeddings"),
             _told("model.activation", "prelu" if prelu else "relu",
                   "PReLU parameters" if prelu else "no PReLU parameters")]
    if "label_enc.weight" in shapes:  # query denoising's label embedding (its group count is training-only)
        facts.append(_Fact("model.dn_groups", (DN_GROUPS,), lambda v: isinstance(v, int) and v > 0,
                           "a denoising label embedding (label_enc); model.dn_groups may be any count > 0",
                           told=False))
    else:
        facts.append(_told("model.dn_groups", 0, "no denoising label embedding"))
    for key, value in RECIPE_DEFAULTS["dab"].items():
        facts.append(_Fact(key, (value,), lambda v: v is not None, f"no trace of it; {key} may be {UNTOLD[key]}",
                           told=False))
    return facts


def _backbone_facts(shapes: dict[str, tuple], source: str) -> list[_Fact]:
    if _BODY + "layer1.0.conv1.weight" in shapes:
        kind = "bottleneck" if _BODY + "layer1.0.conv3.weight" in shapes else "basic"
        blocks = tuple(_layer_count(shapes, f"{_BODY}layer{s}.", source) for s in range(1, 5))
        name = RESNET_LAYOUTS.get((kind, blocks))
        if name is None:
            known = ", ".join(f"{n} ({k}, {b})" for (k, b), n in RESNET_LAYOUTS.items())
            raise SourceError(f"{source}: backbone is a ResNet with {kind} blocks {blocks} per stage, which is "
                              f"none of {known}")
        facts = [_told("model.backbone.name", name, f"a {name} backbone ({kind} blocks {blocks})")]
        if kind == "basic":
            facts.append(_told("model.backbone.dilation", False, f"a {name} backbone (no dilation)"))
        else:
            facts.append(_untold("model.backbone.dilation", lambda v: isinstance(v, bool), "no trace of it"))
    elif _BODY + "layer1.0.weight" in shapes:
        width = shapes[_BODY + "conv1.weight"][0]
        facts = [_told("model.backbone.name", "cnn_tiny", "a cnn_tiny backbone"),
                 _told("model.backbone.width", width, f"a cnn_tiny backbone of width {width}"),
                 _untold("model.backbone.dilation", lambda v: isinstance(v, bool), "no trace of it")]
    else:
        body = sorted(k[len(_BODY):] for k in shapes if k.startswith(_BODY))
        raise SourceError(f"{source}: backbone layout not recognised (backbone.0.body has {', '.join(body[:4])}, "
                          f"...); expected a torchvision ResNet-18/34/50/101 or cnn_tiny")
    if _BODY + "bn1.num_batches_tracked" in shapes:
        norm, shown = "bn", "batch norm (num_batches_tracked buffers)"
    elif _BODY + "bn1.running_mean" in shapes:
        norm, shown = "frozen_bn", "frozen batch norm (statistics without num_batches_tracked)"
    else:
        norm, shown = "gn", "group norm (no running statistics)"
    facts.append(_told("model.backbone.norm", norm, shown))
    return facts


def _heads_fact(shapes: dict[str, tuple], hidden: int) -> _Fact:
    """The number of heads, told by a contextual table's head dimension or a per-head table."""
    heads, shown = None, ""
    for key, shape in _tables(shapes).items():
        if key.endswith("lookup_table_weight"):
            head_dim = shape[2] if _side(key) == "v" else shape[1]
            if head_dim and hidden % head_dim == 0:
                heads, shown = hidden // head_dim, f"iRPE table {key} of shape {shape} (head_dim {head_dim})"
                break
        elif shape[0] > 1:
            heads, shown = shape[0], f"per-head iRPE table {key} of shape {shape}"
            break
    if heads is not None:
        return _told("model.nheads", heads, shown)
    fits = lambda v: isinstance(v, int) and v > 0 and hidden % v == 0  # noqa: E731
    default = Config().model.nheads
    if fits(default):
        return _untold("model.nheads", fits, f"hidden_dim {hidden}")
    return _Fact("model.nheads", (), fits, f"hidden_dim {hidden}", told=False,
                 hint=f"the weights do not tell model.nheads and the default {default} does not divide hidden_dim "
                      f"{hidden}; pass model.nheads=N (a divisor of {hidden})")


def _irpe_fact(shapes: dict[str, tuple], heads: int) -> _Fact:
    """The iRPE: sides and table names from the keys; mode, method, sharing and ratio from the
    (method, ratio) candidates whose tables have exactly the weights' shapes."""
    if not any(k.startswith("transformer.encoder.layers.") for k in shapes):
        return _Fact("model.irpe", None, lambda v: True, "no encoder layers")
    tables = _tables(shapes)
    if not tables:
        return _told("model.irpe", None, "no iRPE tables")
    sides = "".join(s for s in "qkv" if any(_side(k) == s for k in tables))
    hidden = shapes["input_proj.weight"][0]
    prefixes = {s: f"{_ENC_ATTN}rpe_{s}." for s in sides}
    observed = {s: {k[len(p):]: v for k, v in tables.items() if k.startswith(p)} for s, p in prefixes.items()}

    def fits(spec) -> bool:
        if not isinstance(spec, RPESpec) or spec.rpe_on != sides or hidden % heads:
            return False
        return all(_table_shapes(spec, s, heads, hidden // heads) == observed[s] for s in sides)

    mode = "bias" if any(k.endswith("lookup_table_bias") for k in tables) else "ctx"
    candidates = []
    for method in METHODS:
        for ratio in RATIOS_IN_USE:
            for shared in ((True,) if heads == 1 else (True, False)):
                spec = RPESpec(ratio=ratio, method=method, mode=mode, shared_head=shared, rpe_on=sides)
                if fits(spec):
                    candidates.append(spec)
    shown = "iRPE tables " + ", ".join(f"{k[len(_ENC_ATTN):]} {v}" for k, v in tables.items())
    if len(candidates) > 1:
        hint = (f"the iRPE tables fit each of {', '.join(map(str, candidates))} (the weights cannot tell "
                f"{' from '.join(sorted({c.method for c in candidates}))}); pass the one it was trained with, "
                f"e.g. model.irpe={candidates[0]}")
    else:
        hint = _no_ratio_hint(tables, mode, sides, heads)
    return _Fact("model.irpe", tuple(candidates), fits, shown, told=False, hint=hint)


def _no_ratio_hint(tables: dict[str, tuple], mode: str, sides: str, heads: int) -> str:
    """Why no ratio in use fits: the ratios that give the weights' bucket count."""
    key, shape = next(iter(tables.items()))
    cross = ".rp_rows." in key or ".rp_cols." in key
    buckets = shape[1] if key.endswith("lookup_table_weight") and _side(key) == "v" else shape[-1]
    width = math.isqrt(buckets)
    if not cross and width * width == buckets and width % 2:
        method, half = "product", (width - 1) // 2
    elif buckets % 2:
        method, half = ("cross" if cross else "euc"), (buckets - 1) // 2
    else:
        return f"the iRPE tables ({key[len(_ENC_ATTN):]} {shape}) fit no iRPE spec; expected 2B+1 or (2B+1)^2 buckets"
    ratio = half / 2 if half else 0.25
    shared = int(shape[0] == 1 and heads != 1)
    example = RPESpec(ratio=ratio, method=method, mode=mode, shared_head=bool(shared), rpe_on=sides)
    return (f"the iRPE tables have {buckets} buckets, which no ratio in use ({', '.join(map(str, RATIOS_IN_USE))}) "
            f"gives with {method}{' (or quant)' if method == 'euc' else ''} tables; every ratio r with "
            f"floor(2r) = {half} does: pass the ratio it was "
            f"trained with, e.g. model.irpe={example}")


def _table_shapes(spec: RPESpec, side: str, heads: int, head_dim: int) -> dict[str, tuple]:
    with torch.device("meta"):
        table = RelativePositionEncoding(spec, side, heads, head_dim)
    return {k: tuple(v.shape) for k, v in table.state_dict().items()}


def _side(table_key: str) -> str:
    """q, k or v: the side of an iRPE table key of the first encoder layer."""
    return table_key[len(_ENC_ATTN + "rpe_")]


def _tables(shapes: dict[str, tuple]) -> dict[str, tuple]:
    """The iRPE tables of the first encoder layer (all layers are checked by _check_shapes)."""
    return {k: v for k, v in shapes.items() if k.startswith(_ENC_ATTN + "rpe_")}


def _layer_count(shapes: dict[str, tuple], prefix: str, source: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    if found and found != set(range(len(found))):
        raise SourceError(f"{source}: {prefix}N are numbered {sorted(found)}; expected 0..{len(found) - 1}")
    return len(found)


def _check_shapes(shapes: dict[str, tuple], overrides: list[str], source: str) -> None:
    """Build the inferred model on the meta device and require exactly the weights' keys and shapes."""
    cfg = load_config(None, [*overrides, "model.backbone.weights=checkpoint"])
    with torch.device("meta"):
        model = build_model(cfg)[0]
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k} {shapes[k]} (expected {v})" for k, v in expected.items() if k in shapes and shapes[k] != v]
    if missing or unexpected or wrong:
        parts = [f"{name} {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}"
                 for name, items in (("missing", missing), ("unexpected", unexpected), ("shapes", wrong)) if items]
        raise SourceError(f"{source}: the weights do not fit the model their names suggest "
                          f"({' '.join(overrides)}): {'; '.join(parts)}")


def _told(key: str, value, shown: str) -> _Fact:
    return _Fact(key, (value,), lambda v: v == value, f"{key}={_format(value)} ({shown})")


def _untold(key: str, fits: Callable[[object], bool], shown: str) -> _Fact:
    return _Fact(key, None, fits, f"{shown}; {key} may be {UNTOLD[key]}", told=False)


def _lookup(cfg, key: str):
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _format(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)
