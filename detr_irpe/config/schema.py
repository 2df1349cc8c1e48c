"""The configuration's sections: typed dataclasses with defaults and validation (one-line
messages naming the key), and the read-only state of a resolved config."""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field

from ..core.errors import UserError
from ..core.limits import DEFAULT_MAX_IMAGE_PIXELS
from ..core.names import (ACTIVATIONS, AMP_MODES, BACKBONES, BACKENDS, DATASETS, DECODERS, INVALID_IMAGE_MODES,
                          KERNELS, METRIC_NAMES, NO_VALUE_TERM, NONFINITE_MODES, NORMS, POSITION_EMBEDDINGS,
                          WRITERS)
from ..core.rpe_spec import RPESpec


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
        check_choice(self.name, BACKBONES, f"{at}.name")
        check_choice(self.norm, NORMS, f"{at}.norm")
        layers = ("stem", "layer1", "layer2", "layer3", "layer4")
        for name in self.trainable_layers:
            check_choice(name, layers, f"{at}.trainable_layers")
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
    #: the decoder around the encoder: detr, conditional (Conditional DETR) or dab (DAB-DETR)
    decoder: str = "detr"
    #: feed-forward activation of the encoder and decoder layers: relu, or prelu (DAB-DETR's; dab only)
    activation: str = "relu"
    #: temperature of the sine position encoding (DAB-DETR's recipe: 20)
    pe_temperature: float = 10000.0
    #: conditional and dab: detections kept per image, the best (query, class) pairs by score
    num_select: int = 100
    #: dab: pattern embeddings; the queries become num_patterns x num_queries (0: none)
    num_patterns: int = 0
    #: dab: anchor centres drawn uniformly at initialisation (the reference's "fixxy" models)
    random_refpoints_xy: bool = False
    #: Group DETR: groups of num_queries queries in training, each matched one-to-one and kept
    #: apart in the decoder's self-attention; inference runs group 0 only (1: off)
    num_groups: int = 1
    #: dab: DN-DETR query denoising in training, the number of noised ground-truth groups (0: off)
    dn_groups: int = 0
    #: dab with dn_groups: probability that a denoising query's label is replaced by a random class
    dn_label_noise: float = 0.2
    #: dab with dn_groups: box noise scale (centres move by up to half this of the size, sizes by this)
    dn_box_noise: float = 0.4

    def validate(self, at: str):
        check_choice(self.position_embedding, POSITION_EMBEDDINGS, f"{at}.position_embedding")
        check_choice(self.attention_kernel, KERNELS, f"{at}.attention_kernel")
        check_choice(self.decoder, DECODERS, f"{at}.decoder")
        check_choice(self.activation, ACTIVATIONS, f"{at}.activation")
        if not self.pe_temperature > 0 or not math.isfinite(self.pe_temperature):
            raise ConfigError(f"{at}.pe_temperature must be a finite number > 0, got {self.pe_temperature}")
        check_positive(self.num_select, f"{at}.num_select")
        if not isinstance(self.num_groups, int) or isinstance(self.num_groups, bool) or self.num_groups < 1:
            raise ConfigError(f"{at}.num_groups must be an integer >= 1 (1: no Group DETR query groups), "
                              f"got {self.num_groups!r}")
        if self.num_groups > 1 and getattr(self, "dn_groups", 0) > 0:
            raise ConfigError(f"{at}.num_groups={self.num_groups} (Group DETR) cannot be combined with "
                              f"{at}.dn_groups={self.dn_groups} (query denoising); set one of them off")
        if self.num_patterns < 0:
            raise ConfigError(f"{at}.num_patterns must be >= 0, got {self.num_patterns}")
        if self.dn_groups < 0:
            raise ConfigError(f"{at}.dn_groups must be >= 0, got {self.dn_groups}")
        if not 0 <= self.dn_label_noise <= 1:
            raise ConfigError(f"{at}.dn_label_noise must be in [0, 1], got {self.dn_label_noise}")
        if not (self.dn_box_noise >= 0 and math.isfinite(self.dn_box_noise)):
            raise ConfigError(f"{at}.dn_box_noise must be a finite number >= 0, got {self.dn_box_noise}")
        if self.decoder != "dab":
            for name, off in (("num_patterns", 0), ("random_refpoints_xy", False), ("activation", "relu"),
                              ("dn_groups", 0)):
                if getattr(self, name) != off:
                    raise ConfigError(f"{at}.{name}={getattr(self, name)} is an option of the DAB-DETR decoder; "
                                      f"set {at}.decoder=dab or leave {at}.{name} at {off}")
        if self.decoder != "detr" and self.position_embedding == "none":
            raise ConfigError(f"{at}.position_embedding=none leaves the {self.decoder} decoder without the positions "
                              f"its cross-attention keys need; use sine or learned")
        if self.decoder != "detr" and self.pre_norm:
            raise ConfigError(f"{at}.pre_norm is not an option of the {self.decoder} decoder (post-norm only, as "
                              f"its reference); set {at}.pre_norm=false")
        for name in ("hidden_dim", "nheads", "dim_feedforward", "num_queries", "dec_layers"):
            check_positive(getattr(self, name), f"{at}.{name}")
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
    #: weight of the classification loss (Conditional DETR's recipe: 2)
    ce_loss_coef: float = 1.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    #: detr: weight of the no-object class in the classification loss
    eos_coef: float = 0.1
    #: conditional and dab: alpha of the sigmoid focal loss and of the matcher's focal class cost
    focal_alpha: float = 0.25

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
            check_positive(getattr(self, name), f"{at}.{name}")
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
        check_choice(self.dataset, DATASETS, f"{at}.dataset")
        check_choice(self.invalid_images, INVALID_IMAGE_MODES, f"{at}.invalid_images")
        if self.max_image_pixels is not None:
            check_positive(self.max_image_pixels, f"{at}.max_image_pixels")
        for name in ("max_size", "val_size"):
            check_positive(getattr(self, name), f"{at}.{name}")
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
    #: model EMA: evaluate (and choose checkpoint_best on) an exponential moving average of the
    #: weights, decay ema_decay warmed up over ema_warmup optimizer updates (RT-DETR's schedule)
    ema: bool = False
    ema_decay: float = 0.9999
    ema_warmup: int = 2000
    #: with ema: also evaluate the raw weights (logged as raw_AP, raw_AP50, ...)
    eval_raw: bool = False
    #: early stopping: the validation metric watched (one of METRIC_NAMES; null: off), the
    #: evaluations without an improvement of more than early_stop_min_delta before the run ends
    early_stop_metric: str | None = None
    early_stop_patience: int = 5
    early_stop_min_delta: float = 0.0

    def validate(self, at: str):
        for name in self.writers:
            check_choice(name, WRITERS, f"{at}.writers")
        if len(set(self.writers)) != len(self.writers):
            raise ConfigError(f"{at}.writers names a writer twice: {self.writers}")
        for name in ("epochs", "batch_size", "grad_accum", "eval_every", "log_every"):
            check_positive(getattr(self, name), f"{at}.{name}")
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
        check_choice(self.amp, AMP_MODES, f"{at}.amp")
        check_choice(self.on_nonfinite, NONFINITE_MODES, f"{at}.on_nonfinite")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch <= 0:
            raise ConfigError(f"{at}.max_steps_per_epoch must be > 0 or null, got {self.max_steps_per_epoch}")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"{at}.ema_decay must be in (0, 1), got {self.ema_decay}")
        check_positive(self.ema_warmup, f"{at}.ema_warmup")
        if self.eval_raw and not self.ema:
            raise ConfigError(f"{at}.eval_raw evaluates the raw weights beside the EMA ones; it needs {at}.ema=true")
        if self.early_stop_metric is not None:
            check_choice(self.early_stop_metric, METRIC_NAMES, f"{at}.early_stop_metric")
        check_positive(self.early_stop_patience, f"{at}.early_stop_patience")
        if self.early_stop_min_delta < 0:
            raise ConfigError(f"{at}.early_stop_min_delta must be >= 0, got {self.early_stop_min_delta}")
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
        check_positive(self.batch_size, f"{at}.batch_size")
        check_choice(self.backend, BACKENDS, f"{at}.backend")


@dataclass
class Config(Section):
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def check_choice(value, choices, at: str) -> None:
    if value not in choices:
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigError(f"{at} must be one of {', '.join(map(str, choices))}; got {value!r}{hint}")


def check_positive(value, at: str) -> None:
    if value <= 0:
        raise ConfigError(f"{at} must be > 0, got {value}")
