"""Typed configuration: dataclasses with defaults, YAML files with ``_base_`` inheritance,
``key=value`` overrides, validation with one-line messages, and the mapping from the reference
code's command-line options.

A YAML file may name one or more base files (paths relative to itself) under ``_base_``; its own
keys are merged over them, mapping by mapping. ``model.irpe`` accepts the reference string
(``rpe-2.0-product-ctx-1-k``), a mapping of the typed fields, or ``null`` / ``""`` for none.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .models.attention import KERNELS, NO_VALUE_TERM
from .models.irpe import RPESpec, RPESpecError
from .data.limits import DEFAULT_MAX_IMAGE_PIXELS
from .errors import UserError
from .evaluation.names import BACKENDS

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "cnn_tiny")
NORMS = ("frozen_bn", "bn", "gn")
#: the optional metric writers of train.writers (detr_irpe.engine.writers)
WRITERS = ("tensorboard", "wandb", "mlflow")
POSITION_EMBEDDINGS = ("sine", "learned", "none")


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used; the message names the file, key and expectation."""


class Section:
    """A config section; once frozen (see :func:`freeze`) setting a field is an error, so that a
    resolved config is a value decided once."""

    def __setattr__(self, name, value):
        if self.__dict__.get("_frozen"):
            raise AttributeError(f"the resolved config is read-only (setting {type(self).__name__}.{name}); "
                                 f"give the value as an override before the config is resolved")
        object.__setattr__(self, name, value)


def freeze(cfg):
    """Make ``cfg`` and its sections read-only (lists become tuples); returns ``cfg``."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, Section):
            freeze(value)
        elif isinstance(value, list):
            object.__setattr__(cfg, f.name, tuple(value))
    object.__setattr__(cfg, "_frozen", True)
    return cfg


def is_frozen(cfg) -> bool:
    """Whether ``cfg`` was resolved (see :func:`freeze`)."""
    return bool(cfg.__dict__.get("_frozen"))


@dataclass
class BackboneConfig(Section):
    name: str = "resnet50"
    #: imagenet (torchvision weights, from the local torch hub cache), none, a file path, or
    #: checkpoint (random here: a model checkpoint loaded afterwards holds the backbone)
    weights: str = "imagenet"
    #: start from random weights when the ImageNet weights are not on this machine
    allow_random_init: bool = False
    #: frozen_bn (the reference; needs pretrained weights), bn or gn (trainable)
    norm: str = "frozen_bn"
    #: stages that train (conv1 and bn1 are named "stem"); the reference trains layer2-4
    trainable_layers: list[str] = field(default_factory=lambda: ["layer2", "layer3", "layer4"])
    #: replace the stride of the last stage by dilation (DC5)
    dilation: bool = False
    #: base channel count of cnn_tiny (ignored by the ResNets)
    width: int = 32

    def validate(self, at: str):
        _choice(self.name, BACKBONES, f"{at}.name")
        _choice(self.norm, NORMS, f"{at}.norm")
        layers = ("stem", "layer1", "layer2", "layer3", "layer4")
        for name in self.trainable_layers:
            _choice(name, layers, f"{at}.trainable_layers")
        if self.width <= 0:
            raise ConfigError(f"{at}.width must be > 0, got {self.width}")
        if self.dilation and self.name in ("resnet18", "resnet34"):
            raise ConfigError(f"{at}.dilation is not supported by {self.name} (basic blocks); use resnet50 or resnet101")


@dataclass
class ModelConfig(Section):
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    position_embedding: str = "sine"
    #: False removes the absolute encoding from the encoder only ("relative only")
    encoder_abs_pos: bool = True
    irpe: RPESpec | None = None
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    pre_norm: bool = False
    num_queries: int = 100
    aux_loss: bool = True
    #: largest category id + 1; null takes it from the training dataset (or from the weights)
    num_classes: int | None = 91
    #: class names by class id ("" where no class); null takes them from the dataset
    class_names: list[str] | None = None
    #: attention kernel: auto, plain, fused, sdpa or flex (see detr_irpe.models.attention)
    attention_kernel: str = "auto"

    def validate(self, at: str):
        _choice(self.position_embedding, POSITION_EMBEDDINGS, f"{at}.position_embedding")
        _choice(self.attention_kernel, KERNELS, f"{at}.attention_kernel")
        for name in ("hidden_dim", "nheads", "dim_feedforward", "num_queries", "dec_layers"):
            _positive(getattr(self, name), f"{at}.{name}")
        if self.enc_layers < 0:
            raise ConfigError(f"{at}.enc_layers must be >= 0, got {self.enc_layers}")
        if self.hidden_dim % self.nheads:
            raise ConfigError(f"{at}.hidden_dim ({self.hidden_dim}) must be divisible by {at}.nheads ({self.nheads})")
        if self.position_embedding != "none" and self.hidden_dim % 2:
            raise ConfigError(f"{at}.hidden_dim must be even for a {self.position_embedding} position embedding")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{at}.dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes is not None and self.num_classes <= 0:
            raise ConfigError(f"{at}.num_classes must be > 0 or null, got {self.num_classes}")
        if self.attention_kernel in NO_VALUE_TERM and self.irpe is not None and "v" in self.irpe.rpe_on:
            raise ConfigError(f"{at}.attention_kernel {self.attention_kernel!r} cannot apply iRPE on values; use auto or fused")


@dataclass
class LossConfig(Section):
    set_cost_class: float = 1.0
    set_cost_bbox: float = 5.0
    set_cost_giou: float = 2.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    #: weight of the no-object class in the classification loss
    eos_coef: float = 0.1

    def validate(self, at: str):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value < 0 or not math.isfinite(value):
                raise ConfigError(f"{at}.{f.name} must be a finite number >= 0, got {value}")


@dataclass
class SyntheticConfig(Section):
    """The built-in synthetic COCO-format dataset (see detr_irpe.data.synthetic)."""

    #: where generated datasets are cached (one subfolder per parameter set)
    cache_dir: str = "~/.cache/detr_irpe/synthetic"
    num_train: int = 2000
    num_val: int = 200
    #: shorter and longer image side in pixels (each image draws its size in this range)
    image_size: list[int] = field(default_factory=lambda: [112, 128])
    num_classes: int = 4
    min_objects: int = 1
    max_objects: int = 3
    #: 0 = flat backgrounds, colour tells the class; 1 = cluttered backgrounds, shared colours,
    #: smaller rotated objects
    difficulty: float = 0.0
    seed: int = 0

    def validate(self, at: str):
        for name in ("num_train", "num_val", "num_classes", "min_objects"):
            _positive(getattr(self, name), f"{at}.{name}")
        if self.max_objects < self.min_objects:
            raise ConfigError(f"{at}.max_objects ({self.max_objects}) must be >= min_objects ({self.min_objects})")
        if len(self.image_size) != 2 or not 32 <= self.image_size[0] <= self.image_size[1]:
            raise ConfigError(f"{at}.image_size must be [shorter, longer] with 32 <= shorter <= longer, got {self.image_size}")
        if not 0 <= self.difficulty <= 1:
            raise ConfigError(f"{at}.difficulty must be in [0, 1], got {self.difficulty}")


@dataclass
class DataConfig(Section):
    #: coco (a COCO-format folder) or synthetic (the built-in dataset, generated on first use)
    dataset: str = "synthetic"
    #: COCO layout root: train2017/, val2017/, annotations/instances_{train,val}2017.json
    root: str = "datasets/coco"
    #: explicit folders / files, overriding the layout under ``root``
    train_images: str | None = None
    train_annotations: str | None = None
    val_images: str | None = None
    val_annotations: str | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    #: training resize: shorter side drawn from ``scales``, longer side at most ``max_size``
    scales: list[int] = field(default_factory=lambda: list(range(480, 801, 32)))
    max_size: int = 1333
    #: the random-crop branch: resize to one of ``crop_resize``, crop ``crop_size`` [min, max]
    crop_resize: list[int] = field(default_factory=lambda: [400, 500, 600])
    crop_size: list[int] = field(default_factory=lambda: [384, 600])
    #: probability of the crop branch (the reference: 0.5); 0 disables it
    crop_prob: float = 0.5
    hflip_prob: float = 0.5
    #: validation resize: shorter side, longer side at most ``max_size``
    val_size: int = 800
    #: batches of images with similar aspect ratios (less padding); the reference does not
    aspect_ratio_grouping: bool = False
    #: pad each batch to a multiple of this many pixels (0: to the largest image, as the
    #: reference); fewer distinct shapes let CPU convolution kernels be reused
    size_divisibility: int = 0
    num_workers: int = 2
    #: unreadable or missing images: fail (stop with the file named) or skip (count and go on)
    invalid_images: str = "fail"
    #: images with more pixels are invalid (refused before decoding); null: no limit
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS

    def validate(self, at: str):
        _choice(self.dataset, ("coco", "synthetic"), f"{at}.dataset")
        _choice(self.invalid_images, ("fail", "skip"), f"{at}.invalid_images")
        if self.max_image_pixels is not None:
            _positive(self.max_image_pixels, f"{at}.max_image_pixels")
        for name in ("max_size", "val_size"):
            _positive(getattr(self, name), f"{at}.{name}")
        if not self.scales or min(self.scales) <= 0:
            raise ConfigError(f"{at}.scales must be a non-empty list of positive sizes, got {self.scales}")
        if len(self.crop_size) != 2 or not 0 < self.crop_size[0] <= self.crop_size[1]:
            raise ConfigError(f"{at}.crop_size must be [min, max] with 0 < min <= max, got {self.crop_size}")
        if not self.crop_resize or min(self.crop_resize) <= 0:
            raise ConfigError(f"{at}.crop_resize must be a non-empty list of positive sizes, got {self.crop_resize}")
        for name in ("crop_prob", "hflip_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{at}.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ConfigError(f"{at}.num_workers must be >= 0, got {self.num_workers}")
        if self.size_divisibility < 0:
            raise ConfigError(f"{at}.size_divisibility must be >= 0, got {self.size_divisibility}")


@dataclass
class TrainConfig(Section):
    output_dir: str = "outputs/run"
    epochs: int = 150
    #: epoch after which the learning rate is multiplied by 0.1
    lr_drop: int = 100
    lr: float = 1e-4
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4
    #: images per process per step
    batch_size: int = 2
    #: gradient clipping by total norm (0 disables)
    clip_max_norm: float = 0.1
    #: steps whose gradients are accumulated before each optimizer update
    grad_accum: int = 1
    #: linear learning-rate warm-up over this many optimizer updates (the reference: 0)
    warmup_iters: int = 0
    #: automatic mixed precision on CUDA: none, bf16 or fp16 (with a gradient scaler)
    amp: str = "none"
    seed: int = 42
    #: auto (CUDA when available), cpu, cuda, cuda:N
    device: str = "auto"
    #: evaluate every N epochs (and after the last)
    eval_every: int = 1
    #: stop an epoch after this many steps (null: the whole dataset); for quick runs
    max_steps_per_epoch: int | None = None
    #: console / TensorBoard logging interval in steps
    log_every: int = 20
    #: a non-finite loss: stop (after saving the last good state) or skip the step
    on_nonfinite: str = "stop"
    #: torch.compile the model (CUDA)
    compile: bool = False
    #: TF32 for float32 matmuls and convolutions on CUDA (Ampere and later): faster, with a 10-bit
    #: mantissa in their products; false runs both in full float32, as the reference did
    tf32: bool = False
    #: store tensors in channels-last memory format (faster convolutions on GPU)
    channels_last: bool = False
    #: seconds a process waits in a collective for its peers before failing (a dead peer makes
    #: the others exit with an error instead of hanging)
    dist_timeout_s: float = 1800.0
    #: metric writers beside log.jsonl (always written): any of WRITERS; wandb and mlflow are
    #: imported only when listed (install them separately)
    writers: list[str] = field(default_factory=lambda: ["tensorboard"])
    #: the Weights & Biases project / MLflow experiment the run is logged to
    experiment: str = "detr-irpe"

    def validate(self, at: str):
        for name in self.writers:
            _choice(name, WRITERS, f"{at}.writers")
        if len(set(self.writers)) != len(self.writers):
            raise ConfigError(f"{at}.writers names a writer twice: {self.writers}")
        for name in ("epochs", "batch_size", "grad_accum", "eval_every", "log_every"):
            _positive(getattr(self, name), f"{at}.{name}")
        for name in ("lr", "lr_backbone", "weight_decay", "clip_max_norm"):
            value = getattr(self, name)
            if value < 0 or not math.isfinite(value):
                raise ConfigError(f"{at}.{name} must be a finite number >= 0, got {value}")
        if self.lr == 0:
            raise ConfigError(f"{at}.lr must be > 0, got 0")
        if self.dist_timeout_s <= 0:
            raise ConfigError(f"{at}.dist_timeout_s must be > 0, got {self.dist_timeout_s}")
        if self.lr_drop < 0 or self.warmup_iters < 0:
            raise ConfigError(f"{at}.lr_drop and {at}.warmup_iters must be >= 0")
        _choice(self.amp, ("none", "bf16", "fp16"), f"{at}.amp")
        _choice(self.on_nonfinite, ("stop", "skip"), f"{at}.on_nonfinite")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch <= 0:
            raise ConfigError(f"{at}.max_steps_per_epoch must be > 0 or null, got {self.max_steps_per_epoch}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"{at}.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class EvalConfig(Section):
    #: images per process per evaluation batch; padding changes AP slightly, so every reported
    #: number records it (the reference evaluates with its training batch size, 2)
    batch_size: int = 2
    #: faster_coco_eval (default) or pycocotools (the reference implementation)
    backend: str = "faster_coco_eval"
    #: also report AP per category
    per_category: bool = False

    def validate(self, at: str):
        _positive(self.batch_size, f"{at}.batch_size")
        _choice(self.backend, BACKENDS, f"{at}.backend")


@dataclass
class Config(Section):
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)



# ---------------------------------------------------------------------------------------------
# loading


def config_dir() -> Path:
    """The shipped configs: ``detr_irpe/configs`` in an installed package, ``configs/`` in a checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "configs"
    return installed if installed.is_dir() else here.parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the shipped configs (``tiny/abs_irpe``, ``detr_r50_150e``, ...)."""
    root = config_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def find_config(name: str | os.PathLike) -> Path:
    """A config file by path, or by the name of a shipped config (with or without ``.yaml``, with or
    without a leading ``configs/``)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    text = Path(name).as_posix()
    text = text[len("configs/"):] if text.startswith("configs/") else text
    for candidate in (config_dir() / text, config_dir() / f"{text}.yaml"):
        if candidate.is_file():
            return candidate
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a YAML file")
    names = shipped_configs()
    near = difflib.get_close_matches(text.removesuffix(".yaml"), names, n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else f"; shipped configs: {', '.join(names)}"
    raise ConfigError(f"config file {name} does not exist and is not the name of a shipped config{hint}")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (a path or a shipped config's name, with its ``_base_`` files), apply
    ``key=value`` overrides, validate."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        data = _read_yaml_tree(find_config(path), [])
        source = str(path)
    for item in overrides:
        _apply_override(data, item)
    return config_from_dict(data, source)


def apply_overrides(cfg: Config, overrides, source: str = "config") -> Config:
    """A new Config: ``cfg`` with ``key=value`` overrides applied and validated."""
    data = config_to_dict(cfg)
    for item in overrides:
        _apply_override(data, item)
    return config_from_dict(data, source)


def config_from_dict(data: dict, source: str = "config") -> Config:
    """Build and validate a Config from nested plain data (as read from YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    cfg = _build(Config, data, "", source)
    _validate(cfg, "", source)
    return cfg


def config_to_dict(cfg) -> dict:
    """Plain data of a config (for YAML), the iRPE spec written as its reference string."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, RPESpec):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, RPESpec):
        return str(cfg)
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(x) for x in cfg]
    return cfg


def save_config(cfg, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    from .utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _read_yaml_tree(path: Path, chain: list[Path]) -> dict:
    path = path.expanduser()
    if not path.is_file():
        where = f" (base of {chain[-1]})" if chain else ""
        what = "is a folder, not a YAML file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {path}{where} {what}")
    if path.resolve() in chain:
        raise ConfigError(f"config {path}: _base_ files include each other in a cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config {path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path}: cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, _read_yaml_tree(path.parent / base, chain + [path.resolve()]))
    return _merge(merged, data)


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=50")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------
# typed construction


def _sections(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _build(cls, data: dict, at: str, source: str):
    fields = _sections(cls)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {at or 'config'} must be a mapping, got {_show(data)}")
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        near = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean '{_join(at, near[0])}'?)" if near else f" (known: {', '.join(fields)})"
        raise ConfigError(f"{source}: unknown key '{_join(at, key)}'{hint}")
    kwargs = {}
    for name, tp in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], tp, _join(at, name), source)
        elif dataclasses.is_dataclass(tp):
            kwargs[name] = tp()
    return cls(**kwargs)


def _coerce(value, tp, at: str, source: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if RPESpec in args:
            return _coerce_rpe(value, at, source)
        return _coerce(value, args[0], at, source)
    if tp is RPESpec:
        return _coerce_rpe(value, at, source)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, at, source)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and item is not str:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {at} must be a list, got {_show(value)}")
        return [_coerce(v, item, f"{at}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {at} must be a mapping, got {_show(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {at} must be true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: {at} must be an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: {at} must be a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{source}: {at} must be a string, got {_show(value)}")
    return value


def _coerce_rpe(value, at: str, source: str) -> RPESpec | None:
    try:
        if value is None or value is False:
            return None
        if isinstance(value, RPESpec):
            return value
        if isinstance(value, str):
            return RPESpec.parse(value)
        if isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(RPESpec)}
            unknown = [k for k in value if k not in known]
            if unknown:
                near = difflib.get_close_matches(str(unknown[0]), list(known), n=1)
                hint = f" (did you mean '{at}.{near[0]}'?)" if near else f" (known: {', '.join(sorted(known))})"
                raise ConfigError(f"{source}: unknown key '{at}.{unknown[0]}'{hint}")
            return RPESpec(**value)
    except RPESpecError as exc:
        raise ConfigError(f"{source}: {at}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{source}: {at}: {exc}") from None
    raise ConfigError(f"{source}: {at} must be an iRPE string, a mapping or null, got {_show(value)}")


def _validate(obj, at: str, source: str) -> None:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, RPESpec):
        for name in (f.name for f in dataclasses.fields(obj)):
            _validate(getattr(obj, name), _join(at, name), source)
        if hasattr(obj, "validate"):
            try:
                obj.validate(at)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None


def _choice(value, choices, at: str) -> None:
    if value not in choices:
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigError(f"{at} must be one of {', '.join(map(str, choices))}; got {value!r}{hint}")


def _positive(value, at: str) -> None:
    if value <= 0:
        raise ConfigError(f"{at} must be > 0, got {value}")


def _join(at: str, name) -> str:
    return f"{at}.{name}" if at else str(name)


def _show(value) -> str:
    return f"{value!r} ({type(value).__name__})"


# ---------------------------------------------------------------------------------------------
# the reference code's command-line options


_REFERENCE_MODEL_ARGS = {
    "hidden_dim": "hidden_dim", "nheads": "nheads", "enc_layers": "enc_layers", "dec_layers": "dec_layers",
    "dim_feedforward": "dim_feedforward", "dropout": "dropout", "num_queries": "num_queries",
    "pre_norm": "pre_norm", "aux_loss": "aux_loss", "num_classes": "num_classes",
}
_REFERENCE_LOSS_ARGS = ("set_cost_class", "set_cost_bbox", "set_cost_giou", "bbox_loss_coef",
                        "giou_loss_coef", "eos_coef")
_REFERENCE_TRAIN_ARGS = ("lr", "lr_backbone", "weight_decay", "epochs", "lr_drop", "clip_max_norm", "batch_size",
                         "seed")
_REFERENCE_POSITION = {"sine": "sine", "v2": "sine", "learned": "learned", "v3": "learned"}


def config_from_reference_args(args, base: Config | None = None) -> Config:
    """A Config equivalent to the reference code's command-line options (a dict or an
    argparse.Namespace, as stored under ``args`` in its checkpoints); options it does not name keep
    the values of ``base`` (default: this project's defaults). The backbone weights come from the
    checkpoint, so ``model.backbone.weights`` becomes ``none``."""
    a = dict(vars(args)) if not isinstance(args, dict) else dict(args)
    data = config_to_dict(base) if base is not None else {}
    model = data.setdefault("model", {})
    for src, dst in _REFERENCE_MODEL_ARGS.items():
        if src in a and a[src] is not None:
            model[dst] = a[src]
    if "position_embedding" in a:
        pe = a["position_embedding"]
        if pe not in _REFERENCE_POSITION:
            raise ConfigError(f"reference args: position_embedding {pe!r} is not one of {', '.join(_REFERENCE_POSITION)}")
        model["position_embedding"] = _REFERENCE_POSITION[pe]
    backbone = model.setdefault("backbone", {})
    if "backbone" in a:
        backbone["name"] = a["backbone"]
    if "dilation" in a:
        backbone["dilation"] = bool(a["dilation"])
    backbone["weights"] = "none"
    backbone["norm"] = "frozen_bn"
    if "enc_rpe2d" in a:
        model["irpe"] = a["enc_rpe2d"] or None
    loss = data.setdefault("loss", {})
    for name in _REFERENCE_LOSS_ARGS:
        if name in a and a[name] is not None:
            loss[name] = a[name]
    train = data.setdefault("train", {})
    for name in _REFERENCE_TRAIN_ARGS:
        if name in a and a[name] is not None:
            train[name] = a[name]
    return config_from_dict(data, "reference args")
